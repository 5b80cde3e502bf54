"""Tiny stand-ins for the datasets, written by the tests (random pixels, the real formats)."""

from __future__ import annotations

import io
import pickle
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from usdh.data import CIFAR10_CLASSES, NUSWIDE21_CLASSES, ArrayStore, ImageDataset

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CIFAR_JPEG_TAR = SHARED / "cifar10-jpeg.tar.gz"
OXFORD_TAR = SHARED / "oxford17-256.tar.gz"


def jpeg_bytes(rng: np.random.Generator, size: tuple[int, int] = (12, 10)) -> bytes:
    """A small random RGB JPEG, ``size`` = (width, height)."""
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_jpeg(path: Path, rng: np.random.Generator, size: tuple[int, int] = (12, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg_bytes(rng, size))
    return path


def make_tar(src: Path, out: Path, arcname: str | None = None) -> Path:
    """Pack folder ``src`` into the .tar.gz ``out`` (under ``arcname``; default: its contents)."""
    with tarfile.open(out, "w:gz") as tf:
        if arcname is not None:
            tf.add(src, arcname=arcname)
        else:
            for child in sorted(src.iterdir()):
                tf.add(child, arcname=child.name)
    return out


# -- CIFAR-10 ------------------------------------------------------------------------------------
def write_cifar_batches(root: Path, per_batch: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    """A fake ``cifar-10-batches-py`` under ``root`` (5 training batches and a test batch of
    ``per_batch`` images each), pickled the way the real one is; returns the expected arrays."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    images, labels = [], []
    names = [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]
    for name in names:
        hwc = rng.integers(0, 256, size=(per_batch, 32, 32, 3), dtype=np.uint8)
        lab = rng.integers(0, 10, size=per_batch).tolist()
        batch = {
            b"batch_label": name.encode(),
            b"labels": lab,
            b"data": hwc.transpose(0, 3, 1, 2).reshape(per_batch, 3072).copy(),
            b"filenames": [f"img_{name}_{i}.png".encode() for i in range(per_batch)],
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        images.append(hwc)
        labels.extend(lab)
    meta = {b"label_names": [c.encode() for c in CIFAR10_CLASSES], b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    is_test = np.zeros(6 * per_batch, dtype=bool)
    is_test[5 * per_batch :] = True
    return {
        "images": np.concatenate(images),
        "labels": np.array(labels, dtype=np.int64),
        "is_test": is_test,
    }


def write_cifar_jpeg_tree(root: Path, train: int = 3, test: int = 2, seed: int = 0) -> Path:
    """``root/train/<class>/NNNN.jpg`` and ``root/test/<class>/NNNN.jpg``, 32x32."""
    rng = np.random.default_rng(seed)
    for split, k in (("train", train), ("test", test)):
        for cls in CIFAR10_CLASSES:
            for i in range(k):
                write_jpeg(root / split / cls / f"{i:04d}.jpg", rng, (32, 32))
    return root


# -- Oxford-17, image folders, NUS-WIDE ------------------------------------------------------------
def write_class_tree(
    root: Path, counts: Mapping[str, int], seed: int = 0, sizes: Sequence[tuple[int, int]] = ()
) -> Path:
    """``root/<class>/image_NNNN.jpg`` with ``counts[class]`` random JPEGs of varying sizes."""
    rng = np.random.default_rng(seed)
    sizes = list(sizes) or [(12, 10), (9, 14), (16, 16)]
    k = 0
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for _ in range(n):
            k += 1
            write_jpeg(root / cls / f"image_{k:04d}.jpg", rng, sizes[k % len(sizes)])
    return root


def write_nuswide(
    root: Path,
    n: int = 60,
    seed: int = 0,
    names: tuple[str, str] = ("images.txt", "labels.txt"),
    density: float = 0.3,
) -> np.ndarray:
    """A tiny NUS-WIDE-21 folder: ``images/<k>.jpg``, an image list and a 0/1 label matrix (every
    image carries at least one concept); returns the label matrix."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, len(NUSWIDE21_CLASSES))) < density).astype(np.uint8)
    labels[np.arange(n), rng.integers(0, len(NUSWIDE21_CLASSES), n)] = 1
    paths = []
    for i in range(n):
        rel = f"images/{i:05d}.jpg"
        write_jpeg(root / rel, rng, (8 + i % 5, 8 + i % 3))
        paths.append(rel)
    (root / names[0]).write_text("\n".join(paths) + "\n")
    (root / names[1]).write_text("\n".join(" ".join(map(str, row)) for row in labels) + "\n")
    return labels


# -- label-only datasets for protocol tests --------------------------------------------------
def synthetic(
    name: str,
    labels: np.ndarray,
    classes: Sequence[str] | None = None,
    is_test: np.ndarray | None = None,
) -> ImageDataset:
    """A dataset of 1x1 black images with the given labels (protocols only look at labels)."""
    n = labels.shape[0]
    n_classes = labels.shape[1] if labels.ndim == 2 else int(labels.max()) + 1
    return ImageDataset(
        name=name,
        source=f"synthetic {name}",
        classes=list(classes) if classes is not None else [f"c{k}" for k in range(n_classes)],
        labels=labels,
        store=ArrayStore(np.zeros((n, 1, 1, 3), dtype=np.uint8)),
        official_split=is_test,
    )


def synthetic_cifar(grouped: bool = True) -> ImageDataset:
    """60,000 labels as CIFAR-10's JPEG copy orders them: train then test, class by class."""
    train = np.repeat(np.arange(10), 5000)
    test = np.repeat(np.arange(10), 1000)
    labels = np.concatenate([train, test])
    is_test = np.arange(60000) >= 50000
    if not grouped:
        perm = np.random.default_rng(1).permutation(60000)
        labels, is_test = labels[perm], is_test[perm]
    return synthetic("cifar10", labels, CIFAR10_CLASSES, is_test)


def synthetic_nuswide(n: int = 20000, seed: int = 0) -> ImageDataset:
    """Multi-label NUS-WIDE-like labels: concept frequencies from common to rare."""
    rng = np.random.default_rng(seed)
    freq = np.linspace(0.3, 0.05, len(NUSWIDE21_CLASSES))
    labels = (rng.random((n, len(NUSWIDE21_CLASSES))) < freq).astype(np.uint8)
    return synthetic("nuswide", labels, NUSWIDE21_CLASSES)
