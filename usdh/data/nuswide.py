"""NUS-WIDE-21 in the usual deep-hashing layout: an image list plus a 0/1 label matrix.

NUS-WIDE cannot be downloaded by script (the images come from Flickr, the lists from the NUS
site), so the user gives a folder holding:

* an **image list**: one image path per line, relative to the image root;
* a **label matrix**: one line per image, 21 whitespace-separated 0/1 values, the concepts in the
  order of ``NUSWIDE21_CLASSES`` (or of a ``classes.txt`` / ``concepts.txt`` beside, one name a
  line);

under one of these name pairs (tried in order): ``images.txt`` + ``labels.txt``,
``img_tc21.txt`` + ``targets_onehot_tc21.txt``, ``image_list.txt`` + ``label_matrix.txt``; or
any names through ``image_list=`` / ``label_file=``. (Lists that hold only a pre-drawn part, such as
``database_img.txt``, are not the whole dataset: concatenate the parts first, since the protocols
draw their own split.) A single file whose lines read ``path l1 ... l21`` also works: pass it as
``image_list=`` without ``label_file``.

The image root is ``image_root=`` if given, else the first of the folder, ``folder/images`` and
``folder/Flickr`` under which the listed files exist. Images are multi-label: ``labels`` is uint8
``(n, 21)``. Rows with no concept are kept (they are never relevant to any query).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from usdh.data._files import FileTree
from usdh.data.dataset import ImageDataset
from usdh.data.errors import DataError, DataNotFoundError

__all__ = ["NUSWIDE21_CLASSES", "NUSWIDE_FILE_PAIRS", "nuswide_candidates", "read_nuswide"]

#: the 21 most frequent concepts, in the order they keep in NUS-WIDE's Concepts81 list
NUSWIDE21_CLASSES = [
    "animal",
    "beach",
    "buildings",
    "clouds",
    "flowers",
    "grass",
    "lake",
    "mountain",
    "ocean",
    "person",
    "plants",
    "reflection",
    "road",
    "rocks",
    "sky",
    "snow",
    "sunset",
    "tree",
    "vehicle",
    "water",
    "window",
]
NUSWIDE_FILE_PAIRS = (
    ("images.txt", "labels.txt"),
    ("img_tc21.txt", "targets_onehot_tc21.txt"),
    ("image_list.txt", "label_matrix.txt"),
)
_CLASS_FILES = ("classes.txt", "concepts.txt")


def _lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    return [line.strip() for line in text.splitlines() if line.strip()]


def _parse_labels(rows: list[list[str]], where: Path, first_line: int = 1) -> np.ndarray:
    widths = {len(r) for r in rows}
    if len(widths) > 1:
        for i, r in enumerate(rows):
            if len(r) != len(rows[0]):
                raise DataError(
                    f"{where}: line {i + first_line} has {len(r)} label values, line {first_line} "
                    f"has {len(rows[0])}; every row needs one 0/1 value per concept"
                )
    try:
        labels = np.array(rows, dtype=np.int64)
    except ValueError as exc:
        raise DataError(f"{where}: label values must be 0 or 1 ({exc})") from exc
    if labels.ndim != 2 or labels.shape[1] == 0:
        raise DataError(f"{where}: no label columns")
    bad = np.flatnonzero(~np.isin(labels, (0, 1)).all(axis=1))
    if bad.size:
        raise DataError(
            f"{where}: line {bad[0] + first_line} holds values other than 0 and 1; the label file "
            f"must be a 0/1 matrix (one column per concept)"
        )
    return labels.astype(np.uint8)


def _find_pair(folder: Path) -> tuple[Path, Path] | None:
    for images, labels in NUSWIDE_FILE_PAIRS:
        if (folder / images).is_file() and (folder / labels).is_file():
            return folder / images, folder / labels
    return None


def read_nuswide(
    path: str | Path,
    *,
    image_list: str | Path | None = None,
    label_file: str | Path | None = None,
    image_root: str | Path | None = None,
    classes: list[str] | None = None,
) -> ImageDataset:
    """Read NUS-WIDE-21 from ``path``: a folder (see the module doc for the files it holds), or
    the image list itself.

    ``image_list`` / ``label_file`` (relative to ``path`` or absolute) override the file names;
    ``classes`` overrides the concept names (default: ``classes.txt`` beside, else the 21 usual).
    """
    folder, list_path, label_path = _find_files(path, image_list, label_file)
    paths, labels = _read_lists(list_path, label_path)
    classes = _class_names(classes, folder, labels, label_path or list_path)
    relpaths = [p.removeprefix("./") for p in paths]
    root = _image_root(folder, image_root, relpaths, list_path)
    tree = FileTree("folder", root, relpaths)
    origin = tree.origin()
    origin["image_list"] = str(list_path)
    origin["label_file"] = None if label_path is None else str(label_path)
    return ImageDataset(
        name="nuswide",
        source="NUS-WIDE-21" if labels.shape[1] == 21 else f"NUS-WIDE ({labels.shape[1]} concepts)",
        classes=list(classes),
        labels=labels,
        store=tree.store(relpaths),
        origin=origin,
    )


def _find_files(
    path: str | Path, image_list: str | Path | None, label_file: str | Path | None
) -> tuple[Path, Path, Path | None]:
    """The folder, the image list and the label matrix (None: the list holds the labels)."""
    folder = Path(path)
    if folder.is_file() and image_list is None:  # the image list itself
        folder, image_list = folder.parent, folder.name
    if not folder.is_dir():
        raise DataNotFoundError(f"NUS-WIDE folder {folder} does not exist")
    if image_list is not None:
        list_path = folder / image_list
        label_path = None if label_file is None else folder / label_file
    elif label_file is not None:
        raise DataError("label_file given without image_list; give both (or neither)")
    else:
        pair = _find_pair(folder)
        if pair is None:
            names = "; ".join(f"{a} + {b}" for a, b in NUSWIDE_FILE_PAIRS)
            raise DataNotFoundError(
                f"{folder} holds no NUS-WIDE image list and label matrix; expected one of these "
                f"file pairs: {names} (or pass image_list= and label_file=)"
            )
        list_path, label_path = pair
    for p in (list_path, label_path):
        if p is not None and not p.is_file():
            raise DataNotFoundError(f"NUS-WIDE file {p} does not exist")
    return folder, list_path, label_path


def _read_lists(list_path: Path, label_path: Path | None) -> tuple[list[str], np.ndarray]:
    """The listed image paths and their label matrix, one row per image."""
    lines = _lines(list_path)
    if label_path is None:  # one file: "path l1 ... lC" per line
        split = [line.split() for line in lines]
        paths = [s[0] for s in split]
        labels = _parse_labels([s[1:] for s in split], list_path)
    else:
        paths = lines
        labels = _parse_labels([line.split() for line in _lines(label_path)], label_path)
        if labels.shape[0] != len(paths):
            raise DataError(
                f"{list_path} lists {len(paths)} images but {label_path} has {labels.shape[0]} "
                f"label rows; the two files must have one line per image, in the same order"
            )
    if not paths:
        raise DataError(f"{list_path} lists no images")
    return paths, labels


def _class_names(
    classes: list[str] | None, folder: Path, labels: np.ndarray, label_source: Path
) -> list[str]:
    """The concept names: ``classes``, else a class file in ``folder``, else the 21 usual ones;
    one per column of ``labels`` (read from ``label_source``)."""
    if classes is None:
        class_file = next((folder / c for c in _CLASS_FILES if (folder / c).is_file()), None)
        if class_file is not None:
            classes = _lines(class_file)
        elif labels.shape[1] == len(NUSWIDE21_CLASSES):
            classes = list(NUSWIDE21_CLASSES)
        else:
            raise DataError(
                f"{label_source} has {labels.shape[1]} label columns; NUS-WIDE-21 has "
                f"21. For another concept set, give the names (classes=, or classes.txt beside)"
            )
    if len(classes) != labels.shape[1]:
        raise DataError(
            f"{len(classes)} concept names for {labels.shape[1]} label columns in {label_source}"
        )
    return classes


def _image_root(
    folder: Path, image_root: str | Path | None, relpaths: list[str], list_path: Path
) -> Path:
    """``image_root`` or the first of ``folder``, ``folder/images``, ``folder/Flickr`` under
    which the first listed images exist."""
    roots = [Path(image_root)] if image_root is not None else [folder, folder / "images"]
    if image_root is None:
        roots.append(folder / "Flickr")
    probe = relpaths[: min(5, len(relpaths))]
    root = next((r for r in roots if all((r / p).is_file() for p in probe)), None)
    if root is None:
        looked = ", ".join(str(r) for r in roots)
        raise DataNotFoundError(
            f"NUS-WIDE image {probe[0]!r} (first line of {list_path}) is not under {looked}; pass "
            f"image_root= (the folder the listed paths are relative to)"
        )
    return root


def nuswide_candidates(folder: Path) -> list[tuple[int, Path]]:
    """Folders under ``folder`` (or itself) that hold a NUS-WIDE image list and label matrix."""
    out: list[tuple[int, Path]] = []
    for sub in ("", "nuswide", "nus-wide", "NUS-WIDE", "nuswide21", "nus_wide", "NUS_WIDE"):
        d = folder / sub if sub else folder
        if d.is_dir() and _find_pair(d) is not None:
            out.append((0, d))
    return out
