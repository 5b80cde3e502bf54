"""Evaluation protocols: named, seeded splits of a dataset into query, database and training sets.

``make_split(ds, protocol, seed)`` returns a ``Split``: a dict of int64 index arrays into ``ds``
(``query``, ``database``, ``train``, ...) plus what made it. Rules every protocol keeps:

* **Seeded.** ``numpy.random.default_rng(seed)`` draws everything, in a fixed order: the same
  dataset, protocol, parameters and seed give identical arrays on any machine.
* **Never grouped by class.** Every array is stored in a seeded random order. Hamming ranking
  breaks ties by database index, so a database stored class by class would turn ties into
  correct answers and inflate index-order mAP (see ``usdh.metrics``).
* **Query and database disjoint** in every retrieval protocol.
* ``train_subset=m`` adds ``train_subset``: ``m`` images drawn from ``train`` without looking at
  labels, from a generator of its own (``default_rng([seed, 2])``), so asking for it changes no
  other array. Every method then trains on it.
* ``rotation_subset=m`` adds ``rotation_subset``: ``m`` of the training images (``train_subset``
  if drawn, else ``train``; ``default_rng([seed, 1])``; ``m`` a count or, as a float in
  (0, 1], a share of them, like ``train_subset`` and ``validation_queries``) whose rotated views
  the features stage computes (four backbone passes per image: the rotation term draws on a
  subset, every other term sees all training images).
* ``augmentation_subset=m`` adds ``augmentation_subset``: ``m`` of the training images
  (``default_rng([seed, 4])``, a count or a share) whose bank of augmented views the features
  stage computes when a listed method trains on augmented views (``usdh.augment``); such a
  method trains on these images only.
* ``validation_queries=m`` adds the model-selection split that mirrors the protocol: ``val_query``,
  ``m`` training images (``default_rng([seed, 3])``, labels unused in the draw), and
  ``val_database``, the other training images, which the validation fits also train on; the
  protocol's own queries are never part of it.

Protocols (``PROTOCOLS[name]`` holds ``dataset``, ``topk``, ``description``, ``parts`` and the
default parameters, which ``make_split`` accepts as keyword arguments):

* ``deepbit`` (CIFAR-10, the default): query = the 10,000 official test images, database = the
  50,000 training images, train = the same 50,000 (same order as the database); mAP@1000.
* ``1k-5k-59k`` (CIFAR-10): 100 queries and 500 training images per class drawn from all 60,000,
  database = the other 59,000 (training images included); mAP over the whole database.
* ``1k-69k`` (Fashion-MNIST, the default): 100 queries per class drawn from all 70,000 images,
  database = the other 69,000, train = the database (the whole training pool, as in
  ``deepbit``; same order); mAP over the whole database (the pipeline records mAP@1000 apart).
* ``nuswide21`` (NUS-WIDE-21): 100 queries and 500 training images per concept, database = every
  image that is not a query (training images included); mAP@5000. Multi-label sampling: the
  concepts are visited from the rarest to the most common (ties by column) and each draws its
  quota uniformly from the images carrying it that no earlier draw took, queries first for all
  concepts, then training images. So there are exactly 21 x 100 distinct queries, each concept
  contributed 100 of them, and an image drawn for one concept may carry others as well.
* ``retrieval`` (Oxford-17): 40 / 20 / 20 images per class drawn as train / val / test;
  query = test, database = train + val, train = train (val also stored); mAP over the database.
* ``classification`` (Oxford-17): the same draw, stored as train / val / test (with the same
  seed, the same images as ``retrieval``'s train / val / query).
* ``per-class`` (any single-label dataset, image folders' default): per class, ``query`` images,
  then ``train`` and ``val`` images from the rest (an int is a count, a float in (0, 1] a
  fraction, rounded, at least 1); database = every image that is not a query.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from usdh.data.dataset import ImageDataset
from usdh.data.errors import DataError, DataNotFoundError
from usdh.io import save_json, save_npy, staged_dir

__all__ = [
    "DEFAULT_PROTOCOLS",
    "PROTOCOLS",
    "Split",
    "SplitProtocol",
    "default_protocol",
    "get_protocol",
    "labels_fingerprint",
    "load_split",
    "make_split",
    "save_split",
    "training_part",
    "training_rows",
]

SPLIT_FORMAT = "usdh-split/1"
SPLIT_FILE = "split.json"
# the streams of the seeded label-free draws: rotation_subset keeps stream 1, which drew the deep
# methods' 5,000-image train_subset whose rotated views the features stage has always stored, so
# the same images keep their rotated views; train_subset (now for every method) moved to stream 2
_ROTATION_STREAM = 1  # default_rng([seed, 1]) draws rotation_subset
_SUBSET_STREAM = 2  # default_rng([seed, 2]) draws train_subset
_VALIDATION_STREAM = 3  # default_rng([seed, 3]) draws val_query
_AUGMENTATION_STREAM = 4  # default_rng([seed, 4]) draws augmentation_subset

Parts = dict[str, NDArray[np.int64]]
Builder = Callable[[ImageDataset, np.random.Generator, dict[str, Any], str], Parts]


@dataclass(frozen=True)
class SplitProtocol:
    """A named evaluation protocol: which dataset, which parts, which cut-off, which defaults."""

    name: str
    dataset: str | None  # None: any single-label dataset
    topk: int | None  # mAP cut-off results report; None: mAP over the whole database
    description: str
    parts: tuple[str, ...]
    defaults: Mapping[str, Any]
    kind: str = "retrieval"  # or "classification"
    build: Builder = field(repr=False, compare=False, default=None)  # type: ignore[assignment]


class Split(dict[str, NDArray[np.int64]]):
    """Index arrays by part name, with the protocol, seed and parameters that drew them."""

    def __init__(
        self,
        parts: Mapping[str, NDArray[np.int64]],
        *,
        protocol: str,
        seed: int,
        dataset: str,
        n_images: int,
        params: Mapping[str, Any] | None = None,
        train_subset: int | None = None,
        source: str | None = None,
        labels_sha256: str | None = None,
    ) -> None:
        super().__init__(parts)
        self.protocol = protocol
        self.seed = seed
        self.dataset = dataset
        self.n_images = n_images
        self.params = dict(params or {})
        self.train_subset = train_subset
        self.source = source
        self.labels_sha256 = labels_sha256

    @property
    def topk(self) -> int | None:
        """The protocol's mAP cut-off (None: mAP over the whole database)."""
        return PROTOCOLS[self.protocol].topk if self.protocol in PROTOCOLS else None

    @property
    def sizes(self) -> dict[str, int]:
        return {k: int(v.shape[0]) for k, v in self.items()}

    def info(self) -> dict[str, Any]:
        """What ``save_split`` records in ``split.json``."""
        return {
            "format": SPLIT_FORMAT,
            "protocol": self.protocol,
            "seed": self.seed,
            "dataset": self.dataset,
            "source": self.source,
            "topk": self.topk,
            "params": self.params,
            "train_subset": self.train_subset,
            "n_images": self.n_images,
            "labels_sha256": self.labels_sha256,
            "sizes": self.sizes,
        }

    def __repr__(self) -> str:
        return f"Split(protocol={self.protocol!r}, seed={self.seed}, sizes={self.sizes})"


class _Registry(dict[str, SplitProtocol]):
    def __missing__(self, key: str) -> SplitProtocol:
        raise KeyError(f"unknown protocol {key!r}; known protocols: {', '.join(self)}")


# -- drawing helpers -------------------------------------------------------------------------
def _perm(rng: np.random.Generator, idx: NDArray[Any]) -> NDArray[np.int64]:
    return rng.permutation(np.asarray(idx, dtype=np.int64))


def _count(value: Any, n: int, key: str) -> int:
    """A per-class count: an int as is, a float in (0, 1] as a rounded fraction (at least 1)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise DataError(f"{key} must be a count or a fraction, got {value!r}")
    if isinstance(value, int | np.integer):
        if value < 0:
            raise DataError(f"{key} must be >= 0, got {value}")
        return int(value)
    if not 0.0 <= value <= 1.0:
        raise DataError(f"{key} as a fraction must lie in [0, 1], got {value}")
    return 0 if value == 0 else max(1, round(value * n))


def _int_param(p: dict[str, Any], key: str) -> int:
    value = p[key]
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise DataError(f"{key} must be a non-negative integer count, got {value!r}")
    return int(value)


def _per_class(
    ds: ImageDataset,
    rng: np.random.Generator,
    quotas: list[tuple[str, Any]],
    protocol: str,
) -> Parts:
    """For each class, a seeded draw of each part's quota (disjoint); each part then shuffled."""
    if ds.multilabel:
        raise DataError(
            f"protocol {protocol!r} splits by class and needs single-label data; {ds.name} is "
            f"multi-label (use {DEFAULT_PROTOCOLS.get(ds.name, 'nuswide21')!r})"
        )
    drawn: dict[str, list[NDArray[np.int64]]] = {part: [] for part, _ in quotas}
    for c, cls in enumerate(ds.classes):
        idx = np.flatnonzero(ds.labels == c)
        if idx.size == 0:
            raise DataError(
                f"class {cls!r} of {ds.name} has no images, so protocol {protocol!r} cannot draw "
                f"from it; add images or remove the class folder"
            )
        counts = [_count(q, idx.size, f"{part} per class") for part, q in quotas]
        if sum(counts) > idx.size:
            wanted = " + ".join(f"{k} {part}" for (part, _), k in zip(quotas, counts, strict=True))
            raise DataError(
                f"class {cls!r} of {ds.name} has {idx.size} images, but protocol {protocol!r} "
                f"takes {wanted} = {sum(counts)} per class; lower the per-class counts "
                f"({', '.join(str(p) for p in PROTOCOLS[protocol].defaults)})"
            )
        order = rng.permutation(idx)
        start = 0
        for (part, _), k in zip(quotas, counts, strict=True):
            drawn[part].append(order[start : start + k])
            start += k
    return {part: _perm(rng, np.concatenate(chunks)) for part, chunks in drawn.items()}


def _rest(ds: ImageDataset, rng: np.random.Generator, taken: NDArray[np.int64]) -> NDArray:
    mask = np.ones(len(ds), dtype=bool)
    mask[taken] = False
    return _perm(rng, np.flatnonzero(mask))


# -- the protocols ---------------------------------------------------------------------------
def _deepbit(ds: ImageDataset, rng: np.random.Generator, p: dict[str, Any], name: str) -> Parts:
    if ds.official_split is None:
        raise DataError(
            f"protocol {name!r} needs the official train/test split; {ds.name} has none"
        )
    test = np.flatnonzero(ds.official_split)
    train = np.flatnonzero(~ds.official_split)
    if test.size == 0 or train.size == 0:
        raise DataError(
            f"{ds.name}'s official split has {train.size} train, {test.size} test images"
        )
    query = _perm(rng, test)
    database = _perm(rng, train)
    return {"query": query, "database": database, "train": database.copy()}


def _cifar_1k5k(ds: ImageDataset, rng: np.random.Generator, p: dict[str, Any], name: str) -> Parts:
    quotas = [
        ("query", _int_param(p, "n_query_per_class")),
        ("train", _int_param(p, "n_train_per_class")),
    ]
    parts = _per_class(ds, rng, quotas, name)
    return {
        "query": parts["query"],
        "database": _rest(ds, rng, parts["query"]),
        "train": parts["train"],
    }


def _queries_rest(
    ds: ImageDataset, rng: np.random.Generator, p: dict[str, Any], name: str
) -> Parts:
    """Per-class queries from the whole dataset; database = train = every other image (an
    unsupervised method may train on the whole unlabelled pool, as in ``deepbit``)."""
    parts = _per_class(ds, rng, [("query", _int_param(p, "n_query_per_class"))], name)
    if parts["query"].size == 0:
        raise DataError("n_query_per_class is 0: a retrieval split needs queries")
    database = _rest(ds, rng, parts["query"])
    return {"query": parts["query"], "database": database, "train": database.copy()}


def _nuswide21(ds: ImageDataset, rng: np.random.Generator, p: dict[str, Any], name: str) -> Parts:
    if not ds.multilabel:
        raise DataError(f"protocol {name!r} is for multi-label data; {ds.name} is single-label")
    labels = ds.labels.astype(bool)
    counts = labels.sum(axis=0)
    order = np.argsort(counts, kind="stable")  # rarest concept first
    taken = np.zeros(len(ds), dtype=bool)
    nq = _int_param(p, "n_query_per_class")
    nt = _int_param(p, "n_train_per_class")
    if nq == 0:
        raise DataError("n_query_per_class must be at least 1")

    def draw(k: int, part: str) -> NDArray[np.int64]:
        chunks = []
        for c in order:
            free = np.flatnonzero(labels[:, c] & ~taken)
            if free.size < k:
                raise DataError(
                    f"concept {ds.classes[c]!r} of {ds.name} has {counts[c]} images, {free.size} "
                    f"of them not drawn yet, but protocol {name!r} takes {nq} query + {nt} train "
                    f"images per concept (drawing {part} now); lower n_query_per_class / "
                    f"n_train_per_class"
                )
            pick = rng.choice(free, size=k, replace=False)
            taken[pick] = True
            chunks.append(pick)
        return _perm(rng, np.concatenate(chunks) if chunks else np.zeros(0, np.int64))

    query = draw(nq, "query")
    train = draw(nt, "train")
    return {"query": query, "database": _rest(ds, rng, query), "train": train}


def _flowers(ds: ImageDataset, rng: np.random.Generator, p: dict[str, Any], name: str) -> Parts:
    quotas = [(part, _int_param(p, f"n_{part}")) for part in ("train", "val", "test")]
    return _per_class(ds, rng, quotas, name)


def _flowers_retrieval(
    ds: ImageDataset, rng: np.random.Generator, p: dict[str, Any], name: str
) -> Parts:
    parts = _flowers(ds, rng, p, name)
    database = _perm(rng, np.concatenate([parts["train"], parts["val"]]))
    return {
        "query": parts["test"],
        "database": database,
        "train": parts["train"],
        "val": parts["val"],
    }


def _generic(ds: ImageDataset, rng: np.random.Generator, p: dict[str, Any], name: str) -> Parts:
    quotas = [("query", p["query"]), ("train", p["train"]), ("val", p["val"])]
    parts = _per_class(ds, rng, quotas, name)
    if parts["query"].size == 0:
        raise DataError("query per class is 0: a retrieval split needs queries")
    return {
        "query": parts["query"],
        "database": _rest(ds, rng, parts["query"]),
        "train": parts["train"],
        "val": parts["val"],
    }


PROTOCOLS: dict[str, SplitProtocol] = _Registry(
    (p.name, p)
    for p in (
        SplitProtocol(
            "deepbit",
            "cifar10",
            1000,
            "CIFAR-10 as DeepBit evaluates it: query = the 10,000 official test images, "
            "database = train = the 50,000 training images; mAP@1000",
            ("query", "database", "train"),
            {},
            build=_deepbit,
        ),
        SplitProtocol(
            "1k-5k-59k",
            "cifar10",
            None,
            "CIFAR-10: 100 queries and 500 training images per class from all 60,000; "
            "database = the other 59,000 (training images included); mAP over the database",
            ("query", "database", "train"),
            {"n_query_per_class": 100, "n_train_per_class": 500},
            build=_cifar_1k5k,
        ),
        SplitProtocol(
            "1k-69k",
            "fashion_mnist",
            None,
            "Fashion-MNIST: 100 queries per class drawn from all 70,000 images; database = "
            "train = the other 69,000; mAP over the database",
            ("query", "database", "train"),
            {"n_query_per_class": 100},
            build=_queries_rest,
        ),
        SplitProtocol(
            "nuswide21",
            "nuswide",
            5000,
            "NUS-WIDE-21: 100 queries and 500 training images per concept (rarest concept "
            "first, each from its images not yet drawn); database = all but the queries; mAP@5000",
            ("query", "database", "train"),
            {"n_query_per_class": 100, "n_train_per_class": 500},
            build=_nuswide21,
        ),
        SplitProtocol(
            "retrieval",
            "oxford17",
            None,
            "Oxford-17: 40/20/20 per class train/val/test; query = test, database = train + val, "
            "train = train; mAP over the database",
            ("query", "database", "train", "val"),
            {"n_train": 40, "n_val": 20, "n_test": 20},
            build=_flowers_retrieval,
        ),
        SplitProtocol(
            "classification",
            "oxford17",
            None,
            "Oxford-17: 40/20/20 per class train/val/test (the draw 'retrieval' makes)",
            ("train", "val", "test"),
            {"n_train": 40, "n_val": 20, "n_test": 20},
            kind="classification",
            build=_flowers,
        ),
        SplitProtocol(
            "per-class",
            None,
            None,
            "any single-label dataset: per class, query then train and val (counts or "
            "fractions); database = all but the queries; mAP over the database",
            ("query", "database", "train", "val"),
            {"query": 0.1, "train": 0.5, "val": 0},
            build=_generic,
        ),
    )
)
DEFAULT_PROTOCOLS: dict[str, str] = {
    "cifar10": "deepbit",
    "fashion_mnist": "1k-69k",
    "nuswide": "nuswide21",
    "oxford17": "retrieval",
    "imagefolder": "per-class",
}


def get_protocol(name: str) -> SplitProtocol:
    """The protocol called ``name``; unknown names raise a ``DataError`` listing the known."""
    if name not in PROTOCOLS:
        raise DataError(f"unknown protocol {name!r}; known protocols: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def default_protocol(dataset: str) -> str:
    """The protocol a dataset is evaluated with unless told otherwise (image folders: per-class)."""
    return DEFAULT_PROTOCOLS.get(dataset, "per-class")


def labels_fingerprint(ds: ImageDataset) -> str:
    """sha256 of the labels in dataset order: a split only fits the dataset order it was drawn on
    (CIFAR-10's pickles and its JPEG copy list the images in different orders)."""
    labels = np.ascontiguousarray(ds.labels)
    h = hashlib.sha256(f"{labels.dtype.str}{labels.shape}".encode())
    h.update(labels.tobytes())
    return h.hexdigest()


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise DataError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def make_split(
    ds: ImageDataset,
    protocol: str | None = None,
    seed: int = 0,
    train_subset: float | None = None,
    rotation_subset: float | None = None,
    validation_queries: float | None = None,
    augmentation_subset: float | None = None,
    **params: Any,
) -> Split:
    """Draw the ``protocol`` split of ``ds`` with ``seed`` (see the module doc for each protocol).

    ``protocol`` defaults to the dataset's (``DEFAULT_PROTOCOLS``); ``params`` override the
    protocol's defaults (e.g. ``n_query_per_class=10`` for a small copy); ``train_subset``,
    ``rotation_subset``, ``validation_queries`` and ``augmentation_subset`` add the seeded,
    label-free parts the module doc describes.
    """
    proto = get_protocol(protocol if protocol is not None else default_protocol(ds.name))
    if proto.dataset is not None and proto.dataset != ds.name:
        mine = [p.name for p in PROTOCOLS.values() if p.dataset in (ds.name, None)]
        raise DataError(
            f"protocol {proto.name!r} is for {proto.dataset}, not {ds.name}; protocols for "
            f"{ds.name}: {', '.join(mine)}"
        )
    unknown = sorted(set(params) - set(proto.defaults))
    if unknown:
        allowed = ", ".join(proto.defaults) or "none"
        raise DataError(
            f"unknown parameter(s) {', '.join(unknown)} for protocol {proto.name!r}; it takes: "
            f"{allowed}"
        )
    seed = _check_seed(seed)
    merged = {k: v.item() if isinstance(v, np.generic) else v for k, v in params.items()}
    merged = {**proto.defaults, **merged}
    parts = proto.build(ds, np.random.default_rng(seed), merged, proto.name)
    parts = {k: np.ascontiguousarray(v, dtype=np.int64) for k, v in parts.items()}
    pool = parts["train"]
    if train_subset is not None:
        parts["train_subset"] = _draw(pool, train_subset, "train_subset", seed, _SUBSET_STREAM)
        pool = parts["train_subset"]
    if rotation_subset is not None:
        parts["rotation_subset"] = _draw(
            pool, rotation_subset, "rotation_subset", seed, _ROTATION_STREAM
        )
    if augmentation_subset is not None:
        parts["augmentation_subset"] = _draw(
            pool, augmentation_subset, "augmentation_subset", seed, _AUGMENTATION_STREAM
        )
    if validation_queries is not None:
        drawn = _draw(pool, validation_queries, "validation_queries", seed, _VALIDATION_STREAM)
        if drawn.size == pool.size:
            raise DataError(
                f"validation_queries={validation_queries} leaves no training image for the "
                f"validation database; choose fewer than {pool.size}"
            )
        parts["val_query"] = drawn
        parts["val_database"] = pool[~np.isin(pool, drawn)]
    return Split(
        parts,
        protocol=proto.name,
        seed=seed,
        dataset=ds.name,
        n_images=len(ds),
        params=merged,
        train_subset=None if train_subset is None else int(parts["train_subset"].size),
        source=ds.source,
        labels_sha256=labels_fingerprint(ds),
    )


def training_part(split: Mapping[str, NDArray[np.int64]]) -> str:
    """The split part every method trains on: ``train_subset`` when drawn, else ``train``."""
    return "train_subset" if "train_subset" in split else "train"


def training_rows(split: Mapping[str, NDArray[np.int64]]) -> NDArray[np.int64]:
    """The rows every method trains on (:func:`training_part`)."""
    return split[training_part(split)]


def _draw(pool: NDArray[np.int64], m: Any, name: str, seed: int, stream: int) -> NDArray[np.int64]:
    """``m`` of ``pool`` without replacement, from the generator ``default_rng([seed, stream])``;
    a float ``m`` in (0, 1] is a share of the pool (rounded, at least one image)."""
    if isinstance(m, float | np.floating) and not isinstance(m, bool):
        if not 0.0 < m <= 1.0:
            raise DataError(f"{name} as a share of the pool must lie in (0, 1], got {m!r}")
        m = max(1, round(float(m) * pool.size))
    if isinstance(m, bool) or not isinstance(m, int | np.integer):
        raise DataError(f"{name} must be a count or a share in (0, 1], got {m!r}")
    if not 1 <= m <= pool.size:
        raise DataError(
            f"{name}={m} but there are {pool.size} training images; choose 1..{pool.size}"
        )
    rng = np.random.default_rng([seed, stream])
    return np.ascontiguousarray(rng.choice(pool, size=int(m), replace=False), dtype=np.int64)


# -- storage ---------------------------------------------------------------------------------
def _owned(name: str) -> bool:
    return name == SPLIT_FILE or name.endswith(".npy")


def save_split(
    split: Mapping[str, NDArray[Any]],
    out_dir: str | os.PathLike[str],
    *,
    protocol: str | None = None,
    seed: int | None = None,
) -> Path:
    """Write each part as ``<part>.npy`` and ``split.json`` (protocol, seed, sizes, ...) to
    ``out_dir``, as a whole (a failure leaves the old folder or none; it must hold nothing else).

    A plain mapping needs ``protocol`` and ``seed``; a ``Split`` carries its own.
    """
    if isinstance(split, Split):
        info = split.info()
    else:
        if protocol is None or seed is None:
            raise DataError("save_split of a plain mapping needs protocol= and seed=")
        info = {
            "format": SPLIT_FORMAT,
            "protocol": protocol,
            "seed": _check_seed(seed),
            "topk": PROTOCOLS[protocol].topk if protocol in PROTOCOLS else None,
            "sizes": {k: int(np.asarray(v).shape[0]) for k, v in split.items()},
        }
    arrays = {}
    for part, arr in split.items():
        a = np.asarray(arr)
        if a.ndim != 1 or a.dtype.kind not in "iu" or not part.isidentifier():
            raise DataError(f"split part {part!r} must be a 1-D integer array with a plain name")
        arrays[part] = a.astype(np.int64)
    out = Path(out_dir)
    with staged_dir(out, owned=_owned) as stage:
        for part, a in arrays.items():
            save_npy(stage / f"{part}.npy", a)
        save_json(stage / SPLIT_FILE, info)
    return out


def load_split(out_dir: str | os.PathLike[str], ds: ImageDataset | None = None) -> Split:
    """Read a folder written by ``save_split``; with ``ds``, check the split was drawn on it."""
    folder = Path(out_dir)
    path = folder / SPLIT_FILE
    if not path.is_file():
        raise DataNotFoundError(f"{folder} holds no split ({SPLIT_FILE} missing); make it first")
    try:
        info = json.loads(path.read_text())
    except ValueError as exc:
        raise DataError(f"{path} is not valid JSON ({exc}); make the split again") from exc
    if not isinstance(info, dict) or info.get("format") != SPLIT_FORMAT:
        raise DataError(f"{path} is not a split file of format {SPLIT_FORMAT!r}")
    parts: dict[str, NDArray[np.int64]] = {}
    for part, size in info["sizes"].items():
        f = folder / f"{part}.npy"
        if not f.is_file():
            raise DataError(f"{f} is missing; make the split again")
        arr = np.load(f, allow_pickle=False)
        if arr.shape != (size,):
            raise DataError(f"{f} holds {arr.shape} indices, {SPLIT_FILE} says ({size},)")
        parts[part] = arr.astype(np.int64, copy=False)
    n = info.get("n_images")
    if n is not None:
        for part, arr in parts.items():
            if arr.size and (arr.min() < 0 or arr.max() >= n):
                raise DataError(f"{folder}/{part}.npy indexes outside 0..{n - 1}")
    split = Split(
        parts,
        protocol=info["protocol"],
        seed=info["seed"],
        dataset=info.get("dataset", ""),
        n_images=n if n is not None else -1,
        params=info.get("params"),
        train_subset=info.get("train_subset"),
        source=info.get("source"),
        labels_sha256=info.get("labels_sha256"),
    )
    if ds is not None:
        if n is not None and n != len(ds):
            raise DataError(
                f"the split in {folder} was drawn on {n} images, {ds.name} has {len(ds)}; make the "
                f"split again for this copy"
            )
        fp = info.get("labels_sha256")
        if fp is not None and fp != labels_fingerprint(ds):
            raise DataError(
                f"the split in {folder} was drawn on another copy or order of {ds.name} (its "
                f"labels differ); make the split again for this copy"
            )
    return split
