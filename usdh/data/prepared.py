"""The compact cache: decode (or check) every image once, then read it back fast.

``prepare_dataset(ds, out_dir)`` writes one folder:

* ``images.npy``: uint8 ``(n, H, W, 3)`` when every image has one size (CIFAR-10: 32x32; the
  ``"array"`` storage), or ``(n, H, W)`` for a greyscale array dataset (Fashion-MNIST: 28x28,
  kept grey, a third of the bytes; read back as RGB). 60,000 JPEG decodes happen here, once;
  later reads are a memory map.
* ``images.bin`` + ``offsets.npy`` + ``sizes.npy`` for images of varying size (the ``"encoded"``
  storage: Oxford-17, NUS-WIDE, image folders): the original encoded files, byte for byte,
  packed one after another (image ``i`` is ``images.bin[offsets[i]:offsets[i + 1]]``), and each
  image's (width, height). Why not resize to one size and store an array? Because the size and
  the crop are the feature extractor's choice, not the cache's (``usdh.features`` squashes the
  whole image, never crops), re-encoding would lose pixels, and an array of 256 px crops is
  several times larger than the JPEGs. One blob instead of a file per image keeps DVC fast. Every
  image is still decoded once here, so an unreadable file fails now, by name.
* ``labels.npy`` (int64 ``(n,)`` or uint8 ``(n, C)``), ``is_test.npy`` (bool, only with an
  official split), ``ids.json`` (each image's path in the original copy) and ``meta.json``
  (name, source, classes, n, storage, the archive's sha256 when read from one, and the size and
  sha256 of every file).

The folder is written as a whole (a hidden sibling renamed into place), so a failure leaves the
old folder or none, never a mix; it must hold nothing else. ``load_prepared(out_dir)`` returns
an ``ImageDataset`` whose ``image(i)`` gives the same pixels as the dataset that was prepared.
"""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from tqdm.auto import tqdm

from usdh.data._files import file_digest
from usdh.data.dataset import ArrayStore, EncodedStore, FileStore, ImageDataset, decode_image
from usdh.data.errors import DataError, DataNotFoundError
from usdh.io import atomic_path, save_json, save_npy, staged_dir

__all__ = [
    "PREPARED_FORMAT",
    "STORAGES",
    "image_sizes",
    "is_prepared",
    "load_prepared",
    "prepare_dataset",
]

PREPARED_FORMAT = "usdh-prepared/1"
STORAGES = ("auto", "array", "encoded")
META_FILE = "meta.json"
IMAGES_NPY = "images.npy"
IMAGES_BIN = "images.bin"
OFFSETS_FILE = "offsets.npy"
SIZES_FILE = "sizes.npy"
LABELS_FILE = "labels.npy"
IS_TEST_FILE = "is_test.npy"
IDS_FILE = "ids.json"
_OURS = frozenset(
    {
        META_FILE,
        IMAGES_NPY,
        IMAGES_BIN,
        OFFSETS_FILE,
        SIZES_FILE,
        LABELS_FILE,
        IS_TEST_FILE,
        IDS_FILE,
    }
)


def _bar(total: int, desc: str, progress: bool) -> tqdm:
    return tqdm(total=total, desc=desc, unit="img", disable=not progress, mininterval=0.5)


def _as_array(ds: ImageDataset, progress: bool) -> NDArray[np.uint8]:
    """All images in one uint8 array; decodes each image unless they already are an array."""
    if ds.array is not None:
        return np.ascontiguousarray(ds.array)
    n = len(ds)
    shape = ds.image_shape or np.asarray(ds.image(0)).shape
    out = np.empty((n, *shape), dtype=np.uint8)
    with _bar(n, f"decoding {ds.name}", progress) as bar:
        for i in range(n):
            pixels = np.asarray(ds.image(i))
            if pixels.shape != tuple(shape):
                raise DataError(
                    f"image {ds.image_name(i)} is {pixels.shape[1]}x{pixels.shape[0]}, not "
                    f"{shape[1]}x{shape[0]} like the others; storage='array' needs one size "
                    f"(use storage='encoded')"
                )
            out[i] = pixels
            bar.update()
    return out


def _raw(ds: ImageDataset, i: int) -> bytes:
    store = ds.store
    if isinstance(store, EncodedStore | FileStore):
        return store.raw(i)
    buf = io.BytesIO()  # an array store: encode losslessly
    ds.image(i).save(buf, format="PNG")
    return buf.getvalue()


def _write_encoded(ds: ImageDataset, path: Path, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """Append every image's encoded bytes to ``path``; decode each once to check it."""
    n = len(ds)
    offsets = np.zeros(n + 1, dtype=np.int64)
    sizes = np.zeros((n, 2), dtype=np.int32)
    with (
        atomic_path(path) as tmp,
        open(tmp, "wb") as fh,
        _bar(n, f"checking {ds.name}", progress) as bar,
    ):
        for i in range(n):
            data = _raw(ds, i)
            sizes[i] = decode_image(data, ds.image_name(i)).size
            fh.write(data)
            offsets[i + 1] = offsets[i] + len(data)
            bar.update()
    return offsets, sizes


def prepare_dataset(
    ds: ImageDataset,
    out_dir: str | os.PathLike[str],
    *,
    storage: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """Write ``ds`` to ``out_dir`` in the compact form (see the module doc); return a summary.

    ``storage``: ``"array"`` (one uint8 array; all images one size), ``"encoded"`` (the original
    files packed), or ``"auto"``: array when the dataset declares a fixed image size (CIFAR-10),
    else encoded. The summary holds ``seconds`` (the wall time of decoding and writing).
    """
    if storage not in STORAGES:
        raise DataError(f"storage must be one of {', '.join(STORAGES)}, got {storage!r}")
    if len(ds) == 0:
        raise DataError(f"{ds.name} has no images to prepare")
    if storage == "auto":
        storage = "array" if ds.image_shape is not None or ds.array is not None else "encoded"
    start = time.perf_counter()
    out = Path(out_dir)
    image_shape: list[int] | None = None
    with staged_dir(out, owned=lambda name: name in _OURS) as stage:
        if storage == "array":
            images = _as_array(ds, progress)
            image_shape = [*images.shape[1:3], 3]  # of the RGB image(i), grey arrays too
            save_npy(stage / IMAGES_NPY, images)
        else:
            offsets, sizes = _write_encoded(ds, stage / IMAGES_BIN, progress)
            save_npy(stage / OFFSETS_FILE, offsets)
            save_npy(stage / SIZES_FILE, sizes)
        save_npy(stage / LABELS_FILE, ds.labels)
        if ds.official_split is not None:
            save_npy(stage / IS_TEST_FILE, ds.official_split)
        save_json(stage / IDS_FILE, [ds.image_id(i) for i in range(len(ds))])
        files = {
            p.name: {"bytes": p.stat().st_size, "sha256": file_digest(p)}
            for p in sorted(stage.iterdir())
        }
        meta = {
            "format": PREPARED_FORMAT,
            "name": ds.name,
            "source": ds.source,
            "classes": ds.classes,
            "n": len(ds),
            "multilabel": ds.multilabel,
            "class_counts": ds.class_counts().tolist(),
            "storage": storage,
            "image_shape": image_shape,
            "official_split": IS_TEST_FILE if ds.official_split is not None else None,
            "archive": ds.origin.get("archive"),
            "archive_sha256": ds.origin.get("archive_sha256"),
            # where the files were read from stays out: two clones in different folders must
            # write the same bytes, or DVC reruns every stage below (the stage's timing record
            # is the place for such facts)
            "origin": {
                k: v for k, v in ds.origin.items() if k != "location" and not _is_local_path(v)
            },
            "files": files,
        }
        save_json(stage / META_FILE, meta)
    seconds = time.perf_counter() - start
    return {
        "out_dir": str(out),
        "name": ds.name,
        "source": ds.source,
        "n": len(ds),
        "storage": storage,
        "bytes": sum(f["bytes"] for f in files.values()),
        "seconds": seconds,
    }


def _is_local_path(value: object) -> bool:
    """An absolute path, or a ``location`` of this machine (not an archive's name or a URL)."""
    return isinstance(value, str) and os.path.isabs(value)


def is_prepared(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder written by ``prepare_dataset``."""
    meta = Path(path) / META_FILE
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text()).get("format") == PREPARED_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def load_prepared(out_dir: str | os.PathLike[str], *, verify: bool = False) -> ImageDataset:
    """Read a folder written by ``prepare_dataset``; images stay on disk (memory-mapped).

    Each file's size is checked against ``meta.json``; ``verify=True`` also checks each sha256.
    """
    folder = Path(out_dir)
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise DataNotFoundError(
            f"{folder} is not a prepared dataset ({META_FILE} missing); run the prepare step "
            f"(usdh.data.prepare_dataset) first"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError as exc:
        raise DataError(
            f"{meta_path} is not valid JSON ({exc}); prepare the dataset again"
        ) from exc
    if not isinstance(meta, dict) or meta.get("format") != PREPARED_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise DataError(
            f"{meta_path} has format {found!r}, expected {PREPARED_FORMAT!r}; prepare the "
            f"dataset again with this version"
        )
    for name, info in meta["files"].items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != info["bytes"]:
            raise DataError(
                f"{path} is missing or not the file {META_FILE} describes; prepare the dataset "
                f"again"
            )
        if verify and file_digest(path) != info["sha256"]:
            raise DataError(f"checksum mismatch for {path}; prepare the dataset again")
    labels = np.load(folder / LABELS_FILE, allow_pickle=False)
    ids = json.loads((folder / IDS_FILE).read_text())
    if meta["storage"] == "array":
        store: Any = ArrayStore(path=folder / IMAGES_NPY, names=ids)
    else:
        offsets = np.load(folder / OFFSETS_FILE, allow_pickle=False)
        store = EncodedStore(offsets, ids, path=folder / IMAGES_BIN)
    is_test = None
    if meta.get("official_split"):
        is_test = np.load(folder / meta["official_split"], allow_pickle=False)
    shape = meta.get("image_shape")
    origin = {
        "kind": "prepared",
        "location": str(folder),
        "archive": meta.get("archive"),
        "archive_sha256": meta.get("archive_sha256"),
        "prepared_from": meta.get("origin"),
    }
    ds = ImageDataset(
        name=meta["name"],
        source=meta["source"],
        classes=meta["classes"],
        labels=labels,
        store=store,
        official_split=is_test,
        origin=origin,
        image_shape=None if shape is None else tuple(shape),
    )
    if len(store) != meta["n"]:
        raise DataError(f"{folder}: {len(store)} images, {META_FILE} says {meta['n']}")
    return ds


def image_sizes(out_dir: str | os.PathLike[str]) -> NDArray[np.int32] | None:
    """(width, height) of each image of an encoded prepared folder (None for array storage)."""
    path = Path(out_dir) / SIZES_FILE
    return np.load(path, allow_pickle=False) if path.is_file() else None
