"""One entry point for every dataset: find a copy, read it, or say exactly how to provide one.

``load_dataset(name, path=None)`` reads ``path`` when given (and only it: an explicit path that is
wrong is an error, never a silent fallback). Otherwise it searches, in order: the folders in the
``USDH_DATA`` environment variable (``os.pathsep``-separated), ``data/raw/<name>/``, ``data/raw/``
and ``../shared/data/`` (relative to the project root: the nearest folder above the working
directory with a ``pyproject.toml``, ``dvc.yaml`` or ``.dvc``), then where a system package
installs the dataset (Debian's ``dataset-fashion-mnist``). When a dataset has several kinds
of copy, the best kind found anywhere wins (CIFAR-10's canonical pickles over a JPEG copy), then
the earlier folder. ``path`` may also be a prepared folder (see ``usdh.data.prepared``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from usdh.data._files import KNOWN_SHA256
from usdh.data.cifar10 import (
    CIFAR10_ARCHIVE,
    CIFAR10_MD5,
    cifar10_candidates,
    download_cifar10,
    read_cifar10,
)
from usdh.data.dataset import ImageDataset
from usdh.data.errors import DataError, DataNotFoundError
from usdh.data.fashion_mnist import (
    FASHION_MNIST_ARCHIVE,
    FASHION_MNIST_FOLDER,
    FASHION_MNIST_SYSTEM_FOLDER,
    download_fashion_mnist,
    fashion_mnist_candidates,
    read_fashion_mnist,
)
from usdh.data.imagefolder import read_imagefolder
from usdh.data.nuswide import NUSWIDE_FILE_PAIRS, nuswide_candidates, read_nuswide
from usdh.data.oxford17 import OXFORD17_URL, oxford17_candidates, read_oxford17
from usdh.data.prepared import is_prepared, load_prepared

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "canonical_name",
    "default_search_dirs",
    "find_dataset",
    "load_dataset",
    "project_root",
]

ENV_VAR = "USDH_DATA"


@dataclass(frozen=True)
class DatasetInfo:
    """What we know about a dataset name: how to read it, where to look, how to get it."""

    name: str
    description: str
    read: Callable[..., ImageDataset]
    candidates: Callable[[Path], list[tuple[int, Path]]] | None  # None: path= is required
    how_to_provide: tuple[str, ...]
    can_download: bool = False
    #: fetches the dataset into the given folder and returns the copy to read (online only)
    download: Callable[[Path], Path] | None = None
    #: where system packages install it, searched after ../shared/data
    system_dirs: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        if self.can_download and self.download is None:
            raise ValueError(f"{self.name}: can_download needs a download function")


DATASETS: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo(
        "cifar10",
        "CIFAR-10: 60,000 32x32 images, 10 classes, official 50,000/10,000 train/test split",
        read_cifar10,
        cifar10_candidates,
        (
            f"online: pass download=True to fetch {CIFAR10_ARCHIVE} (163 MB) through torchvision "
            f"into data/raw/",
            f"the canonical archive: put {CIFAR10_ARCHIVE} (md5 {CIFAR10_MD5}) or its unpacked "
            f"cifar-10-batches-py/ folder into data/raw/",
            "a class-folder copy: train/<class>/*.jpg and test/<class>/*.jpg, as a folder or a "
            ".tar.gz such as cifar10-jpeg.tar.gz, in data/raw/ (results are then labelled "
            "'CIFAR-10 (JPEG copy)')",
        ),
        can_download=True,
        download=download_cifar10,
    ),
    "fashion_mnist": DatasetInfo(
        "fashion_mnist",
        "Fashion-MNIST: 70,000 28x28 greyscale images, 10 classes, official 60,000/10,000 "
        "train/test split",
        read_fashion_mnist,
        fashion_mnist_candidates,
        (
            f"online: pass download=True to fetch upstream's four .gz files (30 MB, each checked "
            f"against upstream's SHA-256) into data/raw/{FASHION_MNIST_FOLDER}/",
            f"the archive: put {FASHION_MNIST_ARCHIVE} (sha256 "
            f"{KNOWN_SHA256[FASHION_MNIST_ARCHIVE]}) into data/raw/",
            "a folder data/raw/fashion_mnist/ holding the four IDX files train-images-idx3-ubyte, "
            "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (gzip'd as "
            "upstream distributes them, or not)",
            f"Debian/Ubuntu: apt-get install dataset-fashion-mnist (installs them into "
            f"{FASHION_MNIST_SYSTEM_FOLDER}/, searched by default)",
        ),
        can_download=True,
        download=download_fashion_mnist,
        system_dirs=(FASHION_MNIST_SYSTEM_FOLDER,),
    ),
    "oxford17": DatasetInfo(
        "oxford17",
        "Oxford 17 Category Flowers: 1,360 images, 80 per class, 17 classes",
        read_oxford17,
        oxford17_candidates,
        (
            f"the original archive: download 17flowers.tgz ({OXFORD17_URL}) into data/raw/",
            "a class-folder copy: c1/ ... c17/ (official category order), as a folder or a "
            ".tar.gz such as oxford17-256.tar.gz, in data/raw/",
        ),
    ),
    "nuswide": DatasetInfo(
        "nuswide",
        "NUS-WIDE-21: multi-label Flickr images of the 21 most frequent concepts",
        read_nuswide,
        nuswide_candidates,
        (
            "a folder data/raw/nuswide/ with an image list and a 0/1 label matrix (21 columns), "
            "named "
            + " or ".join(f"{a} + {b}" for a, b in NUSWIDE_FILE_PAIRS)
            + ", the listed image paths relative to that folder (or to images/ or Flickr/ in it)",
        ),
    ),
    "imagefolder": DatasetInfo(
        "imagefolder",
        "any folder (or .tar.gz) of class sub-folders; labels by sorted folder name",
        read_imagefolder,
        None,
        ("a folder or .tar.gz of class sub-folders: <class>/<image>",),
    ),
}
_ALIASES = {
    "nuswide21": "nuswide",
    "flowers17": "oxford17",
    "17flowers": "oxford17",
    # names lose '-' and '_' before the lookup, so "fashion_mnist" itself arrives as this
    "fashionmnist": "fashion_mnist",
    "fmnist": "fashion_mnist",
}


def canonical_name(name: str) -> str:
    """``"CIFAR-10"``, ``"cifar_10"`` -> ``"cifar10"``, ``"Fashion-MNIST"`` ->
    ``"fashion_mnist"``; unknown names raise, listing the known."""
    key = str(name).lower().replace("-", "").replace("_", "").replace(" ", "")
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    return key


def project_root(start: str | os.PathLike[str] | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: the working directory) that holds a
    ``pyproject.toml``, ``dvc.yaml`` or ``.dvc``; ``start`` itself when there is none."""
    here = Path(start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if any((d / marker).exists() for marker in ("pyproject.toml", "dvc.yaml", ".dvc")):
            return d
    return here


def default_search_dirs(name: str, root: str | os.PathLike[str] | None = None) -> list[Path]:
    """Where ``load_dataset`` looks for ``name`` when no path is given (see the module doc)."""
    key = canonical_name(name)
    base = project_root(root)
    env = [Path(p) for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p]
    return [
        *env,
        base / "data" / "raw" / key,
        base / "data" / "raw",
        base.parent / "shared" / "data",
        *DATASETS[key].system_dirs,
    ]


def _not_found(info: DatasetInfo, looked: Sequence[Path], extra: str = "") -> DataNotFoundError:
    lines = [f"{info.name} not found{extra}."]
    if looked:
        lines.append("Looked in:")
        lines.extend(f"  - {p}{'' if p.exists() else ' (does not exist)'}" for p in looked)
    lines.append("Provide it in one of these ways:")
    lines.extend(f"  - {way}" for way in info.how_to_provide)
    lines.append(
        f"  - the path argument: point at any such copy, or set {ENV_VAR} to a folder holding one"
    )
    return DataNotFoundError("\n".join(lines))


def find_dataset(name: str, search_dirs: Sequence[str | os.PathLike[str]] | None = None) -> Path:
    """The best copy of ``name`` in ``search_dirs`` (default ``default_search_dirs``), or the one
    clear not-found error."""
    info = DATASETS[canonical_name(name)]
    dirs = [
        Path(d) for d in (default_search_dirs(info.name) if search_dirs is None else search_dirs)
    ]
    if info.candidates is None:
        raise _not_found(info, [], " (it is not searched for: give its path)")
    found: list[tuple[int, int, Path]] = []
    for order, d in enumerate(dirs):
        found.extend((rank, order, p) for rank, p in info.candidates(d))
    if not found:
        raise _not_found(info, dirs)
    return min(found, key=lambda t: (t[0], t[1]))[2]


def load_dataset(
    name: str,
    path: str | os.PathLike[str] | None = None,
    search_dirs: Sequence[str | os.PathLike[str]] | None = None,
    download: bool = False,
    **options: Any,
) -> ImageDataset:
    """Read dataset ``name`` (``cifar10``, ``fashion_mnist``, ``oxford17``, ``nuswide``,
    ``imagefolder``).

    ``path``: a copy (folder or archive), a folder holding one, or a prepared folder; when None,
    the search described in the module doc. ``download``: when nothing is found, fetch the
    canonical copy where the dataset allows it (CIFAR-10, Fashion-MNIST; into ``data/raw/`` or the
    first search folder). ``options`` go to the reader (e.g. ``image_list=`` for NUS-WIDE).
    """
    info = DATASETS[canonical_name(name)]
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise _not_found(info, [], f": the given path {p} does not exist")
        if is_prepared(p):
            ds = load_prepared(p)
            if ds.name != info.name and info.name != "imagefolder":
                raise DataError(f"{p} holds the prepared dataset {ds.name!r}, not {info.name!r}")
            return ds
        if p.is_dir() and info.candidates is not None:
            ranked = sorted(info.candidates(p), key=lambda t: t[0])
            if ranked:
                p = ranked[0][1]
        return info.read(p, **options)
    try:
        found = find_dataset(info.name, search_dirs)
    except DataNotFoundError as exc:
        if not download:
            raise
        if not info.can_download or info.download is None:
            raise DataNotFoundError(
                f"{exc}\n({info.name} cannot be downloaded by script)"
            ) from None
        target = Path(search_dirs[0]) if search_dirs else project_root() / "data" / "raw"
        found = info.download(target)
    return info.read(found, **options)
