"""Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017, arXiv 1708.07747): 70,000 greyscale 28x28
images of clothing, 10 classes, 7,000 per class, in an official 60,000/10,000 train/test split.

Upstream distributes four IDX files; they are read gzip'd (as distributed) or decompressed, from:

* a tar archive holding them, e.g. ``fashion-mnist.tar`` (``fmnist/*.gz``), whose sha256 is
  checked like every archive we know by name;
* a folder holding them (or one of its sub-folders ``fmnist/``, ``fashion-mnist/``,
  ``fashion_mnist/``, ``FashionMNIST/raw/``): ``data/raw/fashion_mnist/``, what
  :func:`download_fashion_mnist` writes, or Debian's ``dataset-fashion-mnist`` package
  (``/usr/share/datasets/fashion-mnist/``, searched by default).

The IDX format is parsed here (it is a few lines; no torchvision or idx2numpy): the magic number,
the number of dimensions and the exact byte count the header promises are checked, labels must
lie in 0..9, and each image file must hold as many images as its label file holds labels. Each
decompressed file is then compared with upstream's SHA-256 (copies differ in their gzip
wrappers, e.g. Debian recompressed them, never in the IDX bytes): a mismatch is an error, unless
``verify=False``, which reads a derived copy and labels it "Fashion-MNIST (unofficial copy)".

Images come in the official order (the 60,000 training images, then the 10,000 test images),
``official_split`` is True for the test images, labels follow upstream's order (T-shirt/top=0 ...
ankle boot=9).

**Storage: grey.** The images stay one uint8 array ``(70000, 28, 28)``, the IDX bytes as they
are, not replicated into three channels: 55 MB instead of 165 MB, in memory and in the prepared
cache's ``images.npy``. The ``ArrayStore`` hands each image out as RGB with the grey value in all
three channels (PIL's ``L`` to ``RGB`` conversion copies the value exactly), so everything
downstream, ``usdh.features.prepare_image`` (resize to the backbone's input, 3 channels), the
augmentations and GIST, sees what a replicated array would give it; tests/test_fashion_mnist.py
checks that prepare_image's three channels come out equal.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import urllib.request
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from numpy.typing import NDArray

from usdh.data._files import KNOWN_SHA256, is_archive, read_tar, verify_archive
from usdh.data.cifar10 import single_tree
from usdh.data.dataset import ArrayStore, ImageDataset
from usdh.data.errors import DataError, DataNotFoundError
from usdh.io import atomic_paths

__all__ = [
    "FASHION_MNIST_ARCHIVE",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_SHA256",
    "FASHION_MNIST_SYSTEM_FOLDER",
    "FASHION_MNIST_URLS",
    "download_fashion_mnist",
    "fashion_mnist_candidates",
    "parse_idx",
    "read_fashion_mnist",
]

FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
]
FASHION_MNIST_ARCHIVE = "fashion-mnist.tar"
#: the folder download_fashion_mnist writes under its root
FASHION_MNIST_FOLDER = "fashion-mnist"
#: where Debian's dataset-fashion-mnist package installs the four .gz files
FASHION_MNIST_SYSTEM_FOLDER = Path("/usr/share/datasets/fashion-mnist")
#: upstream's host, then its GitHub repository: each serves the four ``<file>.gz``
FASHION_MNIST_URLS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
)
#: SHA-256 of upstream's decompressed IDX files (../shared/data/README.md)
FASHION_MNIST_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
FILES = tuple(FASHION_MNIST_SHA256)
#: (images file, labels file) of the training split, then of the test split: the official order
_SPLITS = (FILES[0:2], FILES[2:4])
IMAGES_MAGIC = 0x00000803  # 2051: unsigned bytes, 3 dimensions (n, rows, columns)
LABELS_MAGIC = 0x00000801  # 2049: unsigned bytes, 1 dimension (n)
SIDE = 28
SHAPE = (SIDE, SIDE, 3)  # of the RGB image(i); the store keeps (28, 28) grey
SOURCE = "Fashion-MNIST"
SOURCE_UNOFFICIAL = "Fashion-MNIST (unofficial copy)"
_SUBFOLDERS = ("", "fmnist", "fashion-mnist", "fashion_mnist", "FashionMNIST/raw")
_DOWNLOAD_TIMEOUT_S = 60.0
_AGAIN = (
    f"copy {FASHION_MNIST_ARCHIVE} (or the four IDX files) again, or download them again, and "
    f"compare checksums (`sha256sum -c SHA256SUMS` for the archive; the SHA-256 of the "
    f"decompressed files are in docs/data.md)"
)
_FIX = f"the copy is damaged: {_AGAIN}"


# -- the IDX format ------------------------------------------------------------------------------
def _gunzip(data: bytes, where: str) -> bytes:
    """``data`` decompressed when it is gzip (by its magic bytes, not its name), else as is."""
    if not data.startswith(b"\x1f\x8b"):
        return data
    try:
        return gzip.decompress(data)  # checks the CRC-32 and the length
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot decompress {where}: {exc}; {_FIX}") from exc


def parse_idx(data: bytes, where: str, magic: int) -> NDArray[np.uint8]:
    """The array of an unsigned-byte IDX file whose magic number must be ``magic``.

    The header is ``00 00 08 <ndim>`` (big-endian ``magic``), then one big-endian uint32 per
    dimension; the body must hold exactly their product of bytes: a byte short or extra means a
    damaged file, and is refused rather than reshaped into something plausible.
    """
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(
            f"{where} holds {len(data)} bytes, less than an IDX header ({header} bytes): it is "
            f"truncated or empty; {_FIX}"
        )
    got = int.from_bytes(data[:4], "big")
    if got >> 8 != magic >> 8:
        raise DataError(
            f"{where} is not an unsigned-byte IDX file: magic number {got} (0x{got:08x}), "
            f"expected {magic} (0x{magic:08x}); {_FIX}"
        )
    if got != magic:
        raise DataError(
            f"{where} is an IDX file of {got & 0xFF} dimension(s) (magic number {got}), "
            f"expected {ndim} (magic number {magic}): is it the "
            f"{'labels' if ndim == 3 else 'images'} file under the wrong name? {_FIX}"
        )
    dims = tuple(int.from_bytes(data[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim))
    body, want = len(data) - header, math.prod(dims)
    if body != want:
        state = "truncated" if body < want else "longer than its header says"
        raise DataError(
            f"{where}: its IDX header says {' x '.join(map(str, dims))} = {want} bytes of data, "
            f"but it holds {body}: it is {state}; {_FIX}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _base(name: str) -> str | None:
    """Which of the four files ``name`` is (gzip'd or not), or None."""
    stem = name[:-3] if name.endswith(".gz") else name
    return stem if stem in FASHION_MNIST_SHA256 else None


def _read_file(base: str, where: str, content: bytes | Path, verify: bool) -> tuple[Any, bool]:
    """One file's array (checked) and whether its decompressed bytes are upstream's."""
    if isinstance(content, Path):
        try:
            content = content.read_bytes()
        except OSError as exc:
            raise DataError(f"cannot read {where}: {exc.strerror or exc}; {_FIX}") from exc
    raw = _gunzip(content, where)
    is_images = "images" in base
    arr = parse_idx(raw, where, IMAGES_MAGIC if is_images else LABELS_MAGIC)
    if is_images and arr.shape[1:] != (SIDE, SIDE):
        raise DataError(
            f"{where} holds {arr.shape[1]}x{arr.shape[2]} images; Fashion-MNIST's are "
            f"{SIDE}x{SIDE}: it is another dataset's file; {_FIX}"
        )
    if not is_images and arr.size and arr.max() >= len(FASHION_MNIST_CLASSES):
        bad = int(np.flatnonzero(arr >= len(FASHION_MNIST_CLASSES))[0])
        raise DataError(
            f"{where}: label {int(arr[bad])} at position {bad} lies outside 0..9 (Fashion-MNIST "
            f"has 10 classes); {_FIX}"
        )
    digest = _sha256(raw)
    official = digest == FASHION_MNIST_SHA256[base]
    if verify and not official:
        raise DataError(
            f"{where} is a valid IDX file but not upstream's {base}: the decompressed file's "
            f"sha256 is {digest}, expected {FASHION_MNIST_SHA256[base]} (MNIST's files have the "
            f"same names: is it MNIST?). Copy the official file again, or read a derived copy "
            f"with verify=False (its results are labelled {SOURCE_UNOFFICIAL!r})"
        )
    return arr, official


def _load(
    files: Mapping[str, tuple[str, bytes | Path]],
    location: str,
    origin: dict[str, Any],
    verify: bool,
) -> ImageDataset:
    """The dataset from the four files: ``files[base] = (name for messages, bytes or path)``."""
    missing = [b for b in FILES if b not in files]
    if missing:
        raise DataError(
            f"{location} lacks Fashion-MNIST file(s) {', '.join(m + '[.gz]' for m in missing)}; a "
            f"complete copy has all four ({', '.join(FILES)}, gzip'd or not): {_AGAIN}"
        )
    arrays: dict[str, Any] = {}
    official = True
    for base in FILES:
        arrays[base], ok = _read_file(base, *files[base], verify)
        official = official and ok
    for images, labels in _SPLITS:
        n_img, n_lab = arrays[images].shape[0], arrays[labels].shape[0]
        if n_img != n_lab:
            raise DataError(
                f"{files[images][0]} holds {n_img} images but {files[labels][0]} holds {n_lab} "
                f"labels: one of them is from another copy or damaged; {_FIX}"
            )
    pixels = np.concatenate([arrays[images] for images, _ in _SPLITS])
    labels = np.concatenate([arrays[lab] for _, lab in _SPLITS]).astype(np.int64)
    n_train = arrays[FILES[0]].shape[0]
    is_test = np.arange(labels.shape[0]) >= n_train
    names = [f"{images}:{i}" for images, _ in _SPLITS for i in range(arrays[images].shape[0])]
    return ImageDataset(
        name="fashion_mnist",
        source=SOURCE if official else SOURCE_UNOFFICIAL,
        classes=list(FASHION_MNIST_CLASSES),
        labels=labels,
        store=ArrayStore(pixels, names=names),
        official_split=is_test,
        origin=origin,
        image_shape=SHAPE,
    )


def _idx_folder(path: Path) -> Path | None:
    """The first of ``path`` and its usual sub-folders that holds any of the four files."""
    for sub in _SUBFOLDERS:
        d = path / sub if sub else path
        if any((d / f).is_file() or (d / f"{f}.gz").is_file() for f in FILES):
            return d
    return None


def _from_folder(folder: Path, verify: bool) -> ImageDataset:
    files: dict[str, tuple[str, bytes | Path]] = {}
    for base in FILES:
        for name in (base, f"{base}.gz"):  # the decompressed file, when both are there
            if (folder / name).is_file():
                files[base] = (str(folder / name), folder / name)
                break
    return _load(files, str(folder), {"kind": "folder", "location": str(folder)}, verify)


def _from_archive(path: Path, verify: bool) -> ImageDataset:
    digest = verify_archive(path, what="Fashion-MNIST archive")
    blobs = read_tar(path, lambda n: _base(PurePosixPath(n).name) is not None)
    by_prefix: dict[str, list[str]] = {}
    for member in blobs:
        parent = str(PurePosixPath(member).parent)
        by_prefix.setdefault("" if parent == "." else parent, []).append(member)
    prefix, members = single_tree(
        by_prefix,
        missing=(
            f"{path} holds none of Fashion-MNIST's files ({', '.join(FILES)}, gzip'd or not); "
            f"is it the right archive? {_FIX}"
        ),
        several=f"{path} holds more than one set of Fashion-MNIST files",
        pick="unpack the one you want and point the path at its folder",
    )
    files: dict[str, tuple[str, bytes | Path]] = {}
    for member in sorted(members, key=lambda m: m.endswith(".gz")):  # decompressed first
        base = _base(PurePosixPath(member).name)
        if base is not None and base not in files:
            files[base] = (f"{path}:{member}", blobs[member])
    origin = {
        "kind": "archive",
        "location": str(path),
        "archive": path.name,
        "archive_sha256": digest,
    }
    return _load(files, f"{path}:{prefix or '.'}", origin, verify)


# -- entry points -------------------------------------------------------------------------------
def read_fashion_mnist(path: str | Path, *, verify: bool = True) -> ImageDataset:
    """Read Fashion-MNIST from a tar archive or a folder of its four IDX files (module doc).

    ``verify``: each decompressed file must be upstream's (SHA-256); False reads a derived copy
    (a subset, a relabelling), labelled "Fashion-MNIST (unofficial copy)" unless it is upstream's.
    The IDX structure is checked either way.
    """
    path = Path(path)
    if not path.exists():
        raise DataNotFoundError(f"{path} does not exist")
    if path.is_dir():
        folder = _idx_folder(path)
        if folder is None:
            raise DataError(
                f"{path} holds no Fashion-MNIST files: expected {', '.join(FILES)} (gzip'd or "
                f"not) in it or in one of {', '.join(s + '/' for s in _SUBFOLDERS if s)}, or "
                f"the archive {FASHION_MNIST_ARCHIVE}"
            )
        return _from_folder(folder, verify)
    if not is_archive(path):
        raise DataError(
            f"{path} is neither a folder nor a tar archive of Fashion-MNIST: point the path at "
            f"the folder that holds the four IDX files, or at {FASHION_MNIST_ARCHIVE}"
        )
    return _from_archive(path, verify)


def fashion_mnist_candidates(folder: Path) -> list[tuple[int, Path]]:
    """Copies of Fashion-MNIST in ``folder``, ranked: 0 a folder of the IDX files, 1 an archive
    (both hold the same checked bytes; the folder is read without the archive's extra pass)."""
    out: list[tuple[int, Path]] = []
    if not folder.is_dir():
        return out
    found = _idx_folder(folder)
    if found is not None:
        out.append((0, found))
    for name in (FASHION_MNIST_ARCHIVE, "fashion_mnist.tar", "fmnist.tar", "fashion-mnist.tar.gz"):
        if (folder / name).is_file():
            out.append((1, folder / name))
    return out


def _fetch(url: str) -> bytes:
    """The body served at ``url`` (the one place that touches the network: tests replace it)."""
    with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response:
        return response.read()


def _is_good(path: Path, base: str) -> bool:
    """Whether ``path`` exists and decompresses to upstream's ``base``."""
    try:
        return _sha256(_gunzip(path.read_bytes(), str(path))) == FASHION_MNIST_SHA256[base]
    except (OSError, DataError):
        return False


def _fetch_checked(name: str, base: str, urls: Sequence[str], folder: Path) -> bytes:
    """``name`` from the first mirror that serves upstream's bytes; one clear error if none."""
    problems: list[str] = []
    damaged = False
    for mirror in urls:
        url = mirror.rstrip("/") + "/" + name
        try:
            data = _fetch(url)
        except Exception as exc:  # network and HTTP errors come in many types
            problems.append(f"{url}: {type(exc).__name__}: {exc}")
            continue
        try:
            digest = _sha256(_gunzip(data, url))
        except DataError as exc:
            damaged = True
            problems.append(f"{url}: {exc.__cause__ or exc} (not a valid gzip file)")
            continue
        if digest != FASHION_MNIST_SHA256[base]:
            damaged = True
            problems.append(
                f"{url}: decompressed sha256 {digest}, expected {FASHION_MNIST_SHA256[base]}"
            )
            continue
        return data
    error = DataError if damaged else DataNotFoundError
    tried = "\n".join(f"  - {p}" for p in problems)
    raise error(
        f"downloading Fashion-MNIST's {name} into {folder} failed; nothing was written:\n{tried}\n"
        f"{'A mirror served a damaged or different file: try again later. ' if damaged else ''}"
        f"Without a network, copy {FASHION_MNIST_ARCHIVE} (sha256 "
        f"{KNOWN_SHA256[FASHION_MNIST_ARCHIVE]}) or the four files {', '.join(FILES)} (.gz or "
        f"not) into {folder.parent}, or install Debian's dataset-fashion-mnist package, and run "
        f"again"
    )


def download_fashion_mnist(root: str | Path, urls: Sequence[str] = FASHION_MNIST_URLS) -> Path:
    """Download upstream's four ``.gz`` files into ``root/fashion-mnist/`` and return that folder.

    Each file is taken from the first of ``urls`` that serves it decompressing to upstream's
    SHA-256 (the check that matters: gzip wrappers differ between copies). The four are written
    together, as temporary files renamed into place once all are good, so a failure leaves no
    partial, damaged or half-new copy; files already there and good are kept, not fetched again.
    """
    folder = Path(root) / FASHION_MNIST_FOLDER
    fetched: dict[str, bytes] = {}
    for base in FILES:
        name = f"{base}.gz"
        if not _is_good(folder / name, base):
            fetched[name] = _fetch_checked(name, base, urls, folder)
    if fetched:
        with atomic_paths(*(folder / name for name in fetched)) as tmps:
            for tmp, data in zip(tmps, fetched.values(), strict=True):
                tmp.write_bytes(data)
    return folder
