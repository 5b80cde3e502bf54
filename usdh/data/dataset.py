"""The one dataset object every loader returns, and the image stores behind it.

A dataset is labels plus a way to get the i-th image as an RGB ``PIL.Image``. Where the pixels live
differs (a uint8 array, encoded bytes read from an archive or a prepared blob, files on disk), so
that part is a small *store*; everything downstream sees only ``len(ds)`` and ``ds.image(i)``
(the ``usdh.features.ImageSource`` face). Stores opened from a path re-open it after pickling, so a
dataset can go to DataLoader worker processes without copying gigabytes.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from usdh.data.errors import DataError

__all__ = [
    "ArrayStore",
    "EncodedStore",
    "FileStore",
    "ImageDataset",
    "ImageStore",
    "decode_image",
]


def decode_image(data: bytes | memoryview, name: str) -> Image.Image:
    """Decode encoded image bytes to RGB; a bad image raises a ``DataError`` naming ``name``."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.convert("RGB")  # convert() loads fully, so truncation surfaces here
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(
            f"cannot read image {name}: {exc}. Replace it with a valid image file (or remove it "
            f"and its label), then run again"
        ) from exc


@runtime_checkable
class ImageStore(Protocol):
    """Where a dataset's pixels live: ``len``, the i-th image, and a name for messages."""

    def __len__(self) -> int: ...

    def get(self, i: int) -> Image.Image: ...

    def name(self, i: int) -> str: ...

    def key(self, i: int) -> str: ...


class ArrayStore:
    """Images in a uint8 array ``(n, H, W, 3)`` (CIFAR's pickles, a prepared ``images.npy``), or
    ``(n, H, W)`` for greyscale data (Fashion-MNIST): a third of the bytes, and each image still
    comes out RGB, its grey value in all three channels, as every consumer expects.

    Give either ``array`` or ``path`` (an ``.npy`` file, memory-mapped lazily and re-mapped after
    pickling).
    """

    def __init__(
        self,
        array: NDArray[np.uint8] | None = None,
        *,
        path: str | os.PathLike[str] | None = None,
        names: Sequence[str] | None = None,
    ) -> None:
        if (array is None) == (path is None):
            raise ValueError("give exactly one of array or path")
        self.path = None if path is None else Path(path)
        self._array = array
        if array is not None:
            _check_image_array(array, "array")
        self.names = None if names is None else list(names)

    @property
    def array(self) -> NDArray[np.uint8]:
        """The whole ``(n, H, W, 3)`` or ``(n, H, W)`` array (memory-mapped when opened from a
        file)."""
        if self._array is None:
            assert self.path is not None
            arr = np.load(self.path, mmap_mode="r", allow_pickle=False)
            _check_image_array(arr, str(self.path))
            self._array = arr
        return self._array

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def get(self, i: int) -> Image.Image:
        img = Image.fromarray(np.ascontiguousarray(self.array[i]))
        return img if img.mode == "RGB" else img.convert("RGB")  # grey "L": the value thrice

    def name(self, i: int) -> str:
        if self.names is not None:
            return self.names[i]
        where = self.path if self.path is not None else "array"
        return f"{where}[{i}]"

    def key(self, i: int) -> str:
        return self.names[i] if self.names is not None else str(i)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if self.path is not None:
            state["_array"] = None
        return state


def _check_image_array(arr: np.ndarray, what: str) -> None:
    if arr.dtype != np.uint8 or arr.ndim not in (3, 4) or (arr.ndim == 4 and arr.shape[3] != 3):
        raise DataError(
            f"{what}: expected uint8 images (n, H, W, 3) or greyscale (n, H, W), got "
            f"{arr.dtype} {arr.shape}"
        )


class EncodedStore:
    """Encoded image files (JPEG, PNG, ...) packed in one buffer, decoded on demand.

    Image ``i`` is ``data[offsets[i]:offsets[i + 1]]``. ``data`` is bytes (read from an archive)
    or, with ``path``, a raw file memory-mapped lazily (a prepared ``images.bin``). ``names`` are
    the images' paths inside ``where`` (the archive or file, for messages).
    """

    def __init__(
        self,
        offsets: NDArray[np.int64],
        names: Sequence[str],
        *,
        data: bytes | bytearray | None = None,
        path: str | os.PathLike[str] | None = None,
        where: str | None = None,
    ) -> None:
        if (data is None) == (path is None):
            raise ValueError("give exactly one of data or path")
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.names = list(names)
        if self.offsets.ndim != 1 or self.offsets.shape[0] != len(self.names) + 1:
            raise DataError(f"{len(self.names)} names need {len(self.names) + 1} offsets")
        if self.offsets.shape[0] and (self.offsets[0] != 0 or np.any(np.diff(self.offsets) < 0)):
            raise DataError("offsets must start at 0 and never decrease")
        self.path = None if path is None else Path(path)
        self.where = where if where is not None else (None if path is None else str(path))
        self._data: Any = data
        if data is not None and len(data) != int(self.offsets[-1]):
            raise DataError(f"buffer holds {len(data)} bytes, offsets say {int(self.offsets[-1])}")

    @classmethod
    def from_blobs(
        cls, blobs: Sequence[bytes], names: Sequence[str], where: str | None = None
    ) -> EncodedStore:
        """Pack a list of encoded files (e.g. read from a tar archive)."""
        offsets = np.zeros(len(blobs) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in blobs], out=offsets[1:])
        return cls(offsets, names, data=b"".join(blobs), where=where)

    @property
    def data(self) -> Any:
        if self._data is None:
            assert self.path is not None
            size = self.path.stat().st_size
            if size != int(self.offsets[-1]):
                raise DataError(
                    f"{self.path} holds {size} bytes, its offsets say {int(self.offsets[-1])}: "
                    f"it is incomplete or from another run; prepare the dataset again"
                )
            # np.memmap cannot map an empty file
            self._data = np.memmap(self.path, dtype=np.uint8, mode="r") if size else b""
        return self._data

    def __len__(self) -> int:
        return len(self.names)

    def raw(self, i: int) -> bytes:
        """The encoded bytes of image ``i``, as stored."""
        lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
        return bytes(self.data[lo:hi])

    def get(self, i: int) -> Image.Image:
        return decode_image(self.raw(i), self.name(i))

    def name(self, i: int) -> str:
        return f"{self.where}:{self.names[i]}" if self.where else self.names[i]

    def key(self, i: int) -> str:
        return self.names[i]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if self.path is not None:
            state["_data"] = None
        return state


class FileStore:
    """Image files on disk under ``root``, read and decoded on demand."""

    def __init__(self, root: str | os.PathLike[str], relpaths: Sequence[str]) -> None:
        self.root = Path(root)
        self.relpaths = list(relpaths)

    def __len__(self) -> int:
        return len(self.relpaths)

    def raw(self, i: int) -> bytes:
        path = self.root / self.relpaths[i]
        try:
            return path.read_bytes()
        except OSError as exc:
            raise DataError(
                f"cannot read image file {path}: {exc.strerror or exc}. Restore the file or fix "
                f"the path, then run again"
            ) from exc

    def get(self, i: int) -> Image.Image:
        return decode_image(self.raw(i), self.name(i))

    def name(self, i: int) -> str:
        return str(self.root / self.relpaths[i])

    def key(self, i: int) -> str:
        return self.relpaths[i]


@dataclass(eq=False, repr=False)
class ImageDataset:
    """Labels, class names and images of one dataset, with where they came from.

    * ``labels``: int64 ``(n,)`` class indices (single-label) or uint8 0/1 ``(n, C)`` (multi-label,
      e.g. NUS-WIDE); ``classes`` names the ``C`` classes in label order.
    * ``official_split``: bool ``(n,)``, True for the official *test* images (CIFAR-10), or None
      where the dataset has no official split.
    * ``source``: the human label recorded with every result ("CIFAR-10", "CIFAR-10 (JPEG copy)",
      ...): lossy copies must never be reported as the canonical data.
    * ``origin``: how it was read: ``kind`` ("archive", "folder", "prepared", "download"),
      ``location`` (the path), ``archive`` (file name) and ``archive_sha256`` when read from one.
    * ``image_shape``: ``(H, W, 3)`` when every image has that size (CIFAR, Fashion-MNIST: the
      shape of the RGB image ``image(i)`` gives, whatever the store keeps), else None.
    """

    name: str
    source: str
    classes: list[str]
    labels: NDArray[Any]
    store: ImageStore
    official_split: NDArray[np.bool_] | None = None
    origin: dict[str, Any] = field(default_factory=dict)
    image_shape: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        self.classes = [str(c) for c in self.classes]
        n_classes = len(self.classes)
        if n_classes == 0:
            raise DataError(f"{self.name}: no classes")
        if len(set(self.classes)) != n_classes:
            raise DataError(f"{self.name}: class names repeat: {self.classes}")
        labels = np.asarray(self.labels)
        n = len(self.store)
        if labels.ndim == 1:
            if labels.dtype.kind not in "iu":
                raise DataError(f"{self.name}: labels must be integers, got {labels.dtype}")
            labels = labels.astype(np.int64, copy=False)
            if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
                raise DataError(
                    f"{self.name}: labels must lie in 0..{n_classes - 1}, got "
                    f"{labels.min()}..{labels.max()}"
                )
        elif labels.ndim == 2:
            if labels.shape[1] != n_classes:
                raise DataError(
                    f"{self.name}: the label matrix has {labels.shape[1]} columns for "
                    f"{n_classes} classes"
                )
            if labels.size and not np.isin(labels, (0, 1)).all():
                raise DataError(f"{self.name}: a multi-label matrix must hold only 0 and 1")
            labels = labels.astype(np.uint8, copy=False)
        else:
            raise DataError(f"{self.name}: labels must be (n,) or (n, C), got {labels.shape}")
        if labels.shape[0] != n:
            raise DataError(f"{self.name}: {labels.shape[0]} labels for {n} images")
        self.labels = labels
        if self.official_split is not None:
            split = np.asarray(self.official_split)
            if split.dtype != np.bool_ or split.shape != (n,):
                raise DataError(
                    f"{self.name}: official_split must be bool ({n},), got {split.dtype} "
                    f"{split.shape}"
                )
            self.official_split = split
        if self.image_shape is not None:
            self.image_shape = tuple(int(s) for s in self.image_shape)  # type: ignore[assignment]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def image(self, i: int) -> Image.Image:
        """The ``i``-th image, RGB."""
        n = len(self)
        j = int(i)
        if not 0 <= j < n:
            raise IndexError(f"image index {i} out of range for {self.name} ({n} images)")
        return self.store.get(j)

    def image_name(self, i: int) -> str:
        """Where image ``i`` came from (a file, or archive:member), for messages."""
        return self.store.name(int(i))

    def image_id(self, i: int) -> str:
        """A stable id of image ``i``: its path inside the dataset's folder or archive."""
        return self.store.key(int(i))

    @property
    def multilabel(self) -> bool:
        return self.labels.ndim == 2

    @property
    def is_test(self) -> NDArray[np.bool_] | None:
        """Alias of ``official_split``: True for official test images."""
        return self.official_split

    @property
    def array(self) -> NDArray[np.uint8] | None:
        """All images as one uint8 array when stored that way, else None: ``(n, H, W, 3)``, or
        ``(n, H, W)`` for greyscale data (:class:`ArrayStore`)."""
        return self.store.array if isinstance(self.store, ArrayStore) else None

    def class_counts(self) -> NDArray[np.int64]:
        """Images per class (for multi-label: images carrying each class)."""
        if self.multilabel:
            return self.labels.sum(axis=0, dtype=np.int64)
        return np.bincount(self.labels, minlength=len(self.classes)).astype(np.int64)

    def __repr__(self) -> str:
        kind = "multi-label" if self.multilabel else "single-label"
        return (
            f"ImageDataset(name={self.name!r}, source={self.source!r}, n={len(self)}, "
            f"classes={len(self.classes)} ({kind}), origin={self.origin.get('kind')!r})"
        )
