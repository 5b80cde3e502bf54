"""Any folder (or tar archive) of class sub-folders: ``root/<class>/**/<image>``.

Labels follow the sorted class-folder names (as torchvision's ImageFolder), images within a class
are found recursively and sorted by name. Files directly in the root and non-image files are
ignored; hidden files are skipped. An archive whose contents sit in one top folder is read from
inside it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from usdh.data._files import IMAGE_EXTENSIONS, natural_key, open_tree
from usdh.data.dataset import ImageDataset
from usdh.data.errors import DataError, DataNotFoundError

__all__ = ["read_imagefolder"]


def read_imagefolder(
    path: str | Path, *, name: str = "imagefolder", source: str | None = None
) -> ImageDataset:
    """Read a class-folder tree; ``source`` defaults to ``"image folder <folder name>"``."""
    path = Path(path)
    if not path.exists():
        raise DataNotFoundError(f"image folder {path} does not exist")
    tree = open_tree(path, keep=lambda _: True)
    prefix = ""
    if tree.kind == "archive":
        tops = {p.split("/", 1)[0] for p in tree.paths}
        if len(tops) == 1 and all("/" in p for p in tree.paths):
            prefix = tops.pop() + "/"
    by_class: dict[str, list[str]] = {}
    for p in tree.paths:
        rel = p[len(prefix) :]
        if "/" not in rel:
            continue
        by_class.setdefault(rel.split("/", 1)[0], []).append(rel)
    if path.is_dir():  # a class folder holding no files at all is not in the tree: look for it
        for d in path.iterdir():
            if d.is_dir() and not d.name.startswith(".") and d.name != "__MACOSX":
                by_class.setdefault(d.name, [])
    if not by_class:
        raise DataError(
            f"{path} holds no class folders: expected <class>/<image> files, e.g. "
            f"{path}/cats/0001.jpg"
        )
    classes = sorted(by_class)
    entries: list[tuple[int, str]] = []
    for label, cls in enumerate(classes):
        images = [p for p in by_class[cls] if Path(p).suffix.lower() in IMAGE_EXTENSIONS]
        if not images:
            raise DataError(
                f"class folder {cls!r} in {path} holds no images (extensions: "
                f"{', '.join(sorted(IMAGE_EXTENSIONS))}); add images or remove the folder"
            )
        entries.extend((label, p) for p in sorted(images, key=natural_key))
    label_name = path.name.removesuffix(".gz").removesuffix(".tar").removesuffix(".tgz")
    return ImageDataset(
        name=name,
        source=source or f"image folder {label_name}",
        classes=classes,
        labels=np.array([e[0] for e in entries], dtype=np.int64),
        store=tree.store([e[1] for e in entries], prefix=prefix),
        origin=tree.origin(),
    )
