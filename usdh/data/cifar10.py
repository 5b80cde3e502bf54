"""CIFAR-10: the canonical pickled batches, or a class-folder copy of JPEG files.

Two layouts are read, from a folder or straight from a tar archive:

* **canonical** (source "CIFAR-10"): ``cifar-10-batches-py/`` with ``data_batch_1..5`` and
  ``test_batch``, or the ``cifar-10-python.tar.gz`` that holds it (md5 checked, as torchvision
  does). The pixels are the original bytes.
* **JPEG copy** (source "CIFAR-10 (JPEG copy)"): ``train/<class>/*.jpg`` and
  ``test/<class>/*.jpg``, e.g. ``cifar10-jpeg.tar.gz``. JPEG is lossy, so results on it are
  labelled apart.

Either way the images come in the official order of the split (the 50,000 training images, then
the 10,000 test images; within the JPEG copy by class, then file name), labels follow CIFAR-10's
order (airplane=0 ... truck=9) and ``official_split`` is True for the test images. The order of
the dataset does not matter downstream: every split stores its indices in a seeded random order.

The pickles are untrusted input, so they are read with an unpickler that only builds numpy arrays.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import numpy as np

from usdh.data._files import (
    FileTree,
    is_archive,
    is_image_name,
    natural_key,
    open_tree,
    read_tar,
    verify_archive,
)
from usdh.data.dataset import ArrayStore, ImageDataset
from usdh.data.errors import DataError, DataNotFoundError

_E = TypeVar("_E")

__all__ = [
    "CIFAR10_ARCHIVE",
    "CIFAR10_CLASSES",
    "CIFAR10_MD5",
    "CIFAR10_URL",
    "cifar10_candidates",
    "download_cifar10",
    "read_cifar10",
]

CIFAR10_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
_BATCHES = (*TRAIN_BATCHES, TEST_BATCH)
SOURCE = "CIFAR-10"
SOURCE_JPEG = "CIFAR-10 (JPEG copy)"
SHAPE = (32, 32, 3)


# -- the canonical pickles -------------------------------------------------------------------
def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The only callables a CIFAR batch pickle may name (numpy 1 and 2 module paths)."""
    reconstruct = np.zeros(1).__reduce__()[0]
    scalar = np.float64(0).__reduce__()[0]
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): __import__("codecs").encode,
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return allowed


class _ArrayUnpickler(pickle.Unpickler):
    _allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: a CIFAR batch holds only arrays and lists"
            ) from None


def _get(d: dict[Any, Any], key: str) -> Any:
    if key in d:
        return d[key]
    return d.get(key.encode())


def _read_batch(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    try:
        obj = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as exc:  # a corrupt pickle can raise almost anything
        raise DataError(
            f"cannot read CIFAR-10 batch {name}: {exc}. The file is corrupt or not a CIFAR-10 "
            f"python batch: copy or download {CIFAR10_ARCHIVE} again"
        ) from exc
    if not isinstance(obj, dict):
        raise DataError(f"CIFAR-10 batch {name} holds a {type(obj).__name__}, not a dict")
    pixels = _get(obj, "data")
    labels = _get(obj, "labels")
    if not isinstance(pixels, np.ndarray) or labels is None:
        raise DataError(f"CIFAR-10 batch {name} has no 'data' array or no 'labels'")
    if pixels.dtype != np.uint8 or pixels.ndim != 2 or pixels.shape[1] != 3072:
        raise DataError(
            f"CIFAR-10 batch {name}: expected uint8 data of shape (n, 3072), got "
            f"{pixels.dtype} {pixels.shape}"
        )
    labels_arr = np.asarray(labels, dtype=np.int64)
    if labels_arr.shape != (pixels.shape[0],):
        raise DataError(
            f"CIFAR-10 batch {name}: {labels_arr.shape[0]} labels for {pixels.shape[0]} images"
        )
    if labels_arr.size and (labels_arr.min() < 0 or labels_arr.max() > 9):
        raise DataError(f"CIFAR-10 batch {name}: labels outside 0..9")
    images = pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    files = _get(obj, "filenames")
    names = None
    if files is not None and len(files) == pixels.shape[0]:
        names = [
            f"{name}:{f.decode('utf-8', 'replace') if isinstance(f, bytes) else f}" for f in files
        ]
    return images, labels_arr, names


def _check_meta(data: bytes | None, where: str) -> None:
    """``batches.meta`` (if present) must list the classes in CIFAR-10's order."""
    if data is None:
        return
    try:
        meta = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in _get(meta, "label_names")]
    except Exception as exc:
        raise DataError(f"cannot read {where}/batches.meta: {exc}") from exc
    if names != CIFAR10_CLASSES:
        raise DataError(f"{where}/batches.meta lists classes {names}, expected {CIFAR10_CLASSES}")


def _from_batches(
    batches: dict[str, bytes], meta: bytes | None, where: str, origin: dict[str, Any]
) -> ImageDataset:
    missing = [b for b in _BATCHES if b not in batches]
    if missing:
        raise DataError(
            f"{where} lacks CIFAR-10 batch file(s) {', '.join(missing)}; a complete "
            f"{CIFAR10_FOLDER} folder has {', '.join(_BATCHES)} (download {CIFAR10_ARCHIVE} again)"
        )
    _check_meta(meta, where)
    parts = [_read_batch(batches[b], b) for b in _BATCHES]
    images = np.ascontiguousarray(np.concatenate([p[0] for p in parts]))
    labels = np.concatenate([p[1] for p in parts])
    is_test = np.zeros(labels.shape[0], dtype=bool)
    is_test[-parts[-1][1].shape[0] :] = True
    names: list[str] | None = []
    for p in parts:
        if p[2] is None:
            names = None
            break
        names.extend(p[2])  # type: ignore[union-attr]
    return ImageDataset(
        name="cifar10",
        source=SOURCE,
        classes=list(CIFAR10_CLASSES),
        labels=labels,
        store=ArrayStore(images, names=names),
        official_split=is_test,
        origin=origin,
        image_shape=SHAPE,
    )


def _batches_folder(path: Path) -> Path | None:
    for folder in (path, path / CIFAR10_FOLDER):
        if (folder / TRAIN_BATCHES[0]).is_file():
            return folder
    return None


# -- the JPEG class folders ------------------------------------------------------------------
def single_tree(
    found: dict[str, list[_E]], *, missing: str, several: str, pick: str
) -> tuple[str, list[_E]]:
    """The one image tree of an archive or folder: ``found`` maps each tree's prefix to its
    entries. DataError ``missing`` when there is none; when there are more, DataError
    ``"<several> (<the prefixes>); <pick>"``."""
    if not found:
        raise DataError(missing)
    if len(found) > 1:
        roots = ", ".join(repr(k or ".") for k in sorted(found))
        raise DataError(f"{several} ({roots}); {pick}")
    return next(iter(found.items()))


def _from_class_folders(tree: FileTree) -> ImageDataset:
    # group by prefix: <prefix>/<train|test>/<class>/<file>
    found: dict[str, list[tuple[int, int, str, str]]] = {}
    for p in tree.paths:
        parts = p.split("/")
        if len(parts) < 3 or parts[-3] not in ("train", "test"):
            continue
        if parts[-2] not in CIFAR10_CLASSES:
            continue
        prefix = "/".join(parts[:-3])
        split = 0 if parts[-3] == "train" else 1
        found.setdefault(prefix, []).append((split, CIFAR10_CLASSES.index(parts[-2]), p, parts[-1]))
    prefix, entries = single_tree(
        found,
        missing=(
            f"{tree.location} holds no CIFAR-10 images in either layout: expected "
            f"{CIFAR10_FOLDER}/ (or {CIFAR10_ARCHIVE}) or class folders train/<class>/*.jpg and "
            f"test/<class>/*.jpg with classes {', '.join(CIFAR10_CLASSES)}"
        ),
        several=f"{tree.location} holds more than one CIFAR-10 class-folder tree",
        pick="point the path at one of them",
    )
    counts = np.zeros((2, 10), dtype=np.int64)
    for split, label, _, _ in entries:
        counts[split, label] += 1
    empty = [
        f"{('train', 'test')[s]}/{CIFAR10_CLASSES[c]}"
        for s in range(2)
        for c in range(10)
        if counts[s, c] == 0
    ]
    if empty:
        base = f"{tree.location}/{prefix}" if prefix else str(tree.location)
        raise DataError(
            f"CIFAR-10 class folder(s) {', '.join(empty)} under {base} are missing or hold no "
            f"images; the copy is incomplete: copy it again"
        )
    entries.sort(key=lambda e: (e[0], e[1], natural_key(e[3])))
    labels = np.array([e[1] for e in entries], dtype=np.int64)
    is_test = np.array([e[0] == 1 for e in entries], dtype=bool)
    return ImageDataset(
        name="cifar10",
        source=SOURCE_JPEG,
        classes=list(CIFAR10_CLASSES),
        labels=labels,
        store=tree.store([e[2] for e in entries]),
        official_split=is_test,
        origin=tree.origin(),
        image_shape=SHAPE,
    )


# -- entry points -------------------------------------------------------------------------------
def read_cifar10(path: str | Path, *, md5: str | None = None) -> ImageDataset:
    """Read CIFAR-10 from ``path``: a batches folder, class folders, or a tar archive of either.

    ``md5``: the archive's expected md5; by default the official one when the file is named
    ``cifar-10-python.tar.gz`` (so a broken download is caught), else none.
    """
    path = Path(path)
    if not path.exists():
        raise DataNotFoundError(f"{path} does not exist")
    if path.is_dir():
        folder = _batches_folder(path)
        if folder is not None:
            batches = {b: (folder / b).read_bytes() for b in _BATCHES if (folder / b).is_file()}
            meta_path = folder / "batches.meta"
            meta = meta_path.read_bytes() if meta_path.is_file() else None
            origin = {"kind": "folder", "location": str(folder)}
            return _from_batches(batches, meta, str(folder), origin)
        return _from_class_folders(open_tree(path))
    if not is_archive(path):
        raise DataError(f"{path} is neither a folder nor a tar archive of CIFAR-10")
    if md5 is None and path.name == CIFAR10_ARCHIVE:
        md5 = CIFAR10_MD5
    digest = verify_archive(path, md5=md5, what="CIFAR-10 archive")
    wanted = {*_BATCHES, "batches.meta"}
    blobs = read_tar(path, lambda n: PurePosixPath(n).name in wanted or is_image_name(n))
    batch_blobs = {
        PurePosixPath(n).name: b for n, b in blobs.items() if PurePosixPath(n).name in wanted
    }
    origin = {
        "kind": "archive",
        "location": str(path),
        "archive": path.name,
        "archive_sha256": digest,
    }
    if batch_blobs:
        meta = batch_blobs.pop("batches.meta", None)
        return _from_batches(batch_blobs, meta, str(path), origin)
    images = {n: b for n, b in blobs.items() if is_image_name(n)}
    return _from_class_folders(FileTree("archive", path, sorted(images), images, digest))


def cifar10_candidates(folder: Path) -> list[tuple[int, Path]]:
    """Copies of CIFAR-10 in ``folder``, ranked: 0 canonical folder, 1 canonical archive,
    2 class folders, 3 class-folder archive (the canonical bytes win wherever they are)."""
    out: list[tuple[int, Path]] = []
    if not folder.is_dir():
        return out
    batches = _batches_folder(folder)
    if batches is not None:
        out.append((0, batches))
    if (folder / CIFAR10_ARCHIVE).is_file():
        out.append((1, folder / CIFAR10_ARCHIVE))
    for sub in ("", "cifar10", "cifar10-jpeg", "CIFAR-10-images", "cifar-10-images"):
        d = folder / sub if sub else folder
        if (d / "train" / CIFAR10_CLASSES[0]).is_dir() and (d / "test").is_dir():
            out.append((2, d))
    for name in ("cifar10-jpeg.tar.gz", "cifar10-jpeg.tgz", "cifar10.tar.gz"):
        if (folder / name).is_file():
            out.append((3, folder / name))
    return out


def download_cifar10(root: str | Path) -> Path:
    """Download and unpack the canonical archive into ``root`` through torchvision (online only).

    torchvision checks the md5 and unpacks ``cifar-10-batches-py/`` beside the archive; the
    returned folder is then read like any other copy.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    try:
        import torchvision

        torchvision.datasets.CIFAR10(str(root), train=True, download=True)
    except Exception as exc:  # network and HTTP errors come in many types
        raise DataNotFoundError(
            f"downloading CIFAR-10 ({CIFAR10_URL}) into {root} failed: {exc}. Without a network, "
            f"copy {CIFAR10_ARCHIVE} (md5 {CIFAR10_MD5}) or a class-folder copy "
            f"(train/<class>/*.jpg, test/<class>/*.jpg) into {root} and run again"
        ) from exc
    folder = root / CIFAR10_FOLDER
    if _batches_folder(folder) is None:
        raise DataError(f"torchvision reported success but {folder} holds no CIFAR-10 batches")
    return folder
