"""Oxford 17 Category Flowers (Nilsback and Zisserman, 2006): 1,360 images, 80 per class.

Two layouts, from a folder or a tar archive:

* class folders ``c1/ ... c17/`` (optionally under one top folder, e.g. ``oxford17/``), as in the
  256 px copy ``oxford17-256.tar.gz``: folder ``cK`` is category ``K``;
* the original ``17flowers.tgz`` layout, ``jpg/image_0001.jpg ... image_1360.jpg``: the files
  are ordered by category, 80 each, so ``image_N`` is category ``(N - 1) // 80 + 1``.

Labels follow the official category order (daffodil=0 ... pansy=16). There is no official
train/test flag per image (the official ``datasplits.mat`` is three random 40/20/20 draws), so
``official_split`` is None and the protocols draw seeded 40/20/20 splits.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
from PIL import Image

from usdh.data._files import KNOWN_SHA256, FileTree, natural_key, open_tree
from usdh.data.cifar10 import single_tree
from usdh.data.dataset import ImageDataset
from usdh.data.errors import DataError, DataNotFoundError

__all__ = ["OXFORD17_CLASSES", "OXFORD17_URL", "oxford17_candidates", "read_oxford17"]

OXFORD17_CLASSES = [
    "daffodil",
    "snowdrop",
    "lily of the valley",
    "bluebell",
    "crocus",
    "iris",
    "tigerlily",
    "tulip",
    "fritillary",
    "sunflower",
    "daisy",
    "colts' foot",
    "dandelion",
    "cowslip",
    "buttercup",
    "windflower",
    "pansy",
]
OXFORD17_URL = "https://www.robots.ox.ac.uk/~vgg/data/flowers/17/17flowers.tgz"
PER_CLASS = 80
_CLASS_DIR = re.compile(r"c(\d+)")
_ORIGINAL = re.compile(r"image_(\d+)\.jpe?g", re.IGNORECASE)


def _entries(tree: FileTree) -> list[tuple[int, str, str]]:
    """(label, path, file name) for each image, from whichever layout the tree has."""
    by_prefix: dict[str, list[tuple[int, str, str]]] = {}
    for p in tree.paths:
        parts = p.split("/")
        if len(parts) < 2:
            continue
        m = _CLASS_DIR.fullmatch(parts[-2])
        if m and 1 <= int(m.group(1)) <= len(OXFORD17_CLASSES):
            by_prefix.setdefault("/".join(parts[:-2]), []).append(
                (int(m.group(1)) - 1, p, parts[-1])
            )
            continue
        m = _ORIGINAL.fullmatch(parts[-1])
        if parts[-2] == "jpg" and m and 1 <= int(m.group(1)) <= PER_CLASS * 17:
            label = (int(m.group(1)) - 1) // PER_CLASS
            by_prefix.setdefault("/".join(parts[:-1]) + " (original)", []).append(
                (label, p, parts[-1])
            )
    _, entries = single_tree(
        by_prefix,
        missing=(
            f"{tree.location} holds no Oxford-17 images: expected class folders c1/ ... c17/ "
            f"(e.g. oxford17/c1/image_0001.jpg) or the original jpg/image_0001.jpg ... "
            f"image_1360.jpg"
        ),
        several=f"{tree.location} holds more than one Oxford-17 tree",
        pick="point the path at one",
    )
    return entries


def read_oxford17(path: str | Path) -> ImageDataset:
    """Read Oxford-17 from a folder or a tar archive in either layout (see the module doc)."""
    path = Path(path)
    if not path.exists():
        raise DataNotFoundError(f"{path} does not exist")
    tree = open_tree(path)
    entries = _entries(tree)
    counts = np.bincount([e[0] for e in entries], minlength=len(OXFORD17_CLASSES))
    empty = [f"c{k + 1} ({OXFORD17_CLASSES[k]})" for k in np.flatnonzero(counts == 0)]
    if empty:
        raise DataError(
            f"Oxford-17 under {path}: class folder(s) {', '.join(empty)} are missing or hold no "
            f"images; the copy is incomplete: copy it again"
        )
    entries.sort(key=lambda e: (e[0], natural_key(e[2])))
    resized = tree.sha256 == KNOWN_SHA256["oxford17-256.tar.gz"] or _shorter_side_256(tree, entries)
    return ImageDataset(
        name="oxford17",
        source="Oxford-17 (256 px copy)" if resized else "Oxford-17",
        classes=list(OXFORD17_CLASSES),
        labels=np.array([e[0] for e in entries], dtype=np.int64),
        store=tree.store([e[1] for e in entries]),
        origin=tree.origin(),
    )


def _shorter_side_256(tree: FileTree, entries: list[tuple[int, str, str]]) -> bool:
    """Whether every image's shorter side is 256 px (our copy's), from the files' headers: the
    label says what the pixels are, whatever the file is called."""
    store = tree.store([e[1] for e in entries])
    for i in range(len(entries)):
        try:
            with Image.open(io.BytesIO(store.raw(i))) as img:  # the header only
                if min(img.size) != 256:
                    return False
        except (OSError, ValueError):
            return False  # decoding reports the broken file later, with its name
    return True


def oxford17_candidates(folder: Path) -> list[tuple[int, Path]]:
    """Copies of Oxford-17 in ``folder``, ranked: 0 the original, 1 a class-folder copy."""
    out: list[tuple[int, Path]] = []
    if not folder.is_dir():
        return out
    for name in ("17flowers.tgz", "17flowers.tar.gz"):
        if (folder / name).is_file():
            out.append((0, folder / name))
    for sub in ("17flowers", "oxford17", "oxford17-256", "flowers17", ""):
        d = folder / sub if sub else folder
        if (d / "jpg" / "image_0001.jpg").is_file():
            out.append((0, d))
        if (d / "c1").is_dir() and (d / "c17").is_dir():
            out.append((1, d))
    for name in ("oxford17-256.tar.gz", "oxford17.tar.gz", "oxford17.tgz"):
        if (folder / name).is_file():
            out.append((1, folder / name))
    return out
