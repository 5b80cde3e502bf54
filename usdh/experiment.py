"""fit -> encode -> evaluate for any method, written once for shallow and deep hashers alike.

Methods differ only in their class and their params.yaml section; this module decides what each is
trained on (shallow methods: the protocol's whole training pool; deep methods: its seeded
``train_subset``, with the rotated-view features the features stage stored for exactly those rows)
and writes the artifacts of the house layout:

    models/<dataset>/<method>/<bits>/<seed>/   model.npz, fit.json (+ a deep trainer's log)
    codes/<dataset>/<method>/<bits>/<seed>/    query.npy, database.npy (packed uint8 codes)
    metrics/<dataset>/<method>/<bits>/<seed>.json, <seed>_pr.csv, <seed>_pn.csv (dvc plots)
"""

from __future__ import annotations

import csv
import importlib
import inspect
import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from usdh.codes import check_codes
from usdh.hasher import BaseHasher
from usdh.io import atomic_path, save_json, save_npy
from usdh.metrics import evaluate_retrieval
from usdh.provenance import environment

__all__ = ["METHODS", "ExperimentPaths", "encode_method", "evaluate_method", "fit_method"]

#: method name (params.yaml, reports) -> "module:Class"; imported on use, so the shallow methods
#: never pay for importing torch
METHODS: dict[str, str] = {
    "lsh": "baselines.lsh:LSH",
    "pcah": "baselines.pcah:PCAH",
    "itq": "baselines.itq:ITQ",
    "sh": "baselines.sh:SH",
    "deepbit": "baselines.deepbit:DeepBit",
    "usdh": "usdh.method:USDH",
}


def method_class(name: str) -> type[BaseHasher]:
    """The hasher class registered under ``name``."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(METHODS)}")
    module, cls = METHODS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def is_deep(cls: type[BaseHasher]) -> bool:
    """Deep hashers take rotated views in ``fit``; they train on the seeded training subset."""
    return "rotations" in inspect.signature(cls.fit).parameters


class ExperimentPaths:
    """Where one (dataset, method, bits, seed) run keeps its artifacts."""

    def __init__(
        self,
        dataset: str,
        method: str,
        bits: int,
        seed: int,
        root: Path = Path(),
        group: str | None = None,
    ):
        # a group (ablations) keeps its runs apart from the main experiment's:
        # models/<dataset>/<group>/<variant>/..., metrics/<group>/<dataset>/<variant>/...
        tail = Path(dataset) / (group or "") / method / str(bits)
        metrics_tail = Path(group or "") / dataset / method / str(bits)
        self.model_dir = root / "models" / tail / str(seed)
        self.codes_dir = root / "codes" / tail / str(seed)
        self.metrics = root / "metrics" / metrics_tail / f"{seed}.json"
        self.pr_curve = root / "metrics" / metrics_tail / f"{seed}_pr.csv"
        self.p_at_n = root / "metrics" / metrics_tail / f"{seed}_pn.csv"

    @property
    def model(self) -> Path:
        return self.model_dir / "model.npz"


def _training_rows(split: dict[str, np.ndarray], deep: bool) -> np.ndarray:
    if deep and "train_subset" in split:
        return split["train_subset"]
    return split["train"]


def _rotation_kwargs(
    rows: np.ndarray,
    rotations: np.ndarray | None,
    rotation_indices: np.ndarray | None,
    angles: list[float] | None,
) -> dict[str, Any]:
    """A deep method's rotated views, once checked to be those of the rows it trains on."""
    if rotations is None:
        return {}
    if rotation_indices is None or not np.array_equal(rotation_indices, rows):
        raise ValueError(
            "the stored rotated views are not those of the training subset this run "
            "trains on; rerun the features stage after changing the split"
        )
    return {"rotations": rotations, "angles": angles}


def fit_method(
    name: str,
    bits: int,
    seed: int,
    features: np.ndarray,
    split: dict[str, np.ndarray],
    paths: ExperimentPaths,
    method_params: dict[str, Any] | None = None,
    rotations: np.ndarray | None = None,
    rotation_indices: np.ndarray | None = None,
    angles: list[float] | None = None,
    record: dict[str, Any] | None = None,
) -> BaseHasher:
    """Fit one method on the protocol's training rows and save it with a record of the run."""
    cls = method_class(name)
    hasher = cls(n_bits=bits, random_state=seed, **(method_params or {}))
    deep = is_deep(cls)
    rows = _training_rows(split, deep)
    kwargs: dict[str, Any] = {}
    if deep:
        kwargs.update(_rotation_kwargs(rows, rotations, rotation_indices, angles))
        kwargs.update(checkpoint_dir=paths.model_dir / "checkpoints", resume=True)
    start = time.perf_counter()
    hasher.fit(features[rows], **kwargs)
    seconds = time.perf_counter() - start
    hasher.save(paths.model)
    save_json(
        paths.model_dir / "fit.json",
        {
            "method": name,
            "bits": bits,
            "seed": seed,
            "params": hasher.get_params(),
            "n_train": len(rows),
            "train_rows": "train_subset" if deep and "train_subset" in split else "train",
            "fit_seconds": round(seconds, 3),
            "environment": environment(getattr(hasher, "device_", None)),
            **(record or {}),
        },
    )
    return hasher


def encode_method(
    name: str, features: np.ndarray, split: dict[str, np.ndarray], paths: ExperimentPaths
) -> dict[str, float]:
    """Encode the protocol's queries and database with a saved hasher; return the timings."""
    hasher = method_class(name).load(paths.model)
    out: dict[str, float] = {}
    for part in ("query", "database"):
        start = time.perf_counter()
        codes = hasher.encode(features[split[part]])
        out[f"{part}_codes_per_s"] = len(codes) / max(time.perf_counter() - start, 1e-9)
        save_npy(paths.codes_dir / f"{part}.npy", codes)
    return out


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


def evaluate_method(
    labels: np.ndarray,
    split: dict[str, np.ndarray],
    paths: ExperimentPaths,
    topk: int | None,
    ns: list[int],
    radius: int,
    record: dict[str, Any],
) -> dict[str, Any]:
    """Every retrieval metric of saved codes, written as JSON plus CSV curves for dvc plots."""
    q = check_codes(np.load(paths.codes_dir / "query.npy"), "query codes")
    db = check_codes(np.load(paths.codes_dir / "database.npy"), "database codes")
    n_db = len(split["database"])
    ns = [n for n in ns if n <= n_db]
    result = evaluate_retrieval(
        q, db, labels[split["query"]], labels[split["database"]], topk=topk, ns=ns, radius=radius
    )
    pr = result.pop("pr_curve")
    pn = result.pop("precision_at_n")
    _write_csv(
        paths.pr_curve,
        ["radius", "precision", "recall"],
        [[r, p, c] for r, p, c in zip(pr["radius"], pr["precision"], pr["recall"], strict=True)],
    )
    _write_csv(
        paths.p_at_n,
        ["n", "precision", "precision_tie_aware"],
        [list(t) for t in zip(pn["n"], pn["precision"], pn["precision_tie_aware"], strict=True)],
    )
    metrics = {**record, **result}
    metrics["precision_at_n"] = dict(zip(map(str, pn["n"]), pn["precision"], strict=True))
    save_json(paths.metrics, metrics)
    return metrics


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def validation_split(
    split: dict[str, np.ndarray], seed: int, n_query: int = 1000, n_database: int = 10000
) -> dict[str, np.ndarray]:
    """Queries and a database drawn from the training pool, outside the deep methods' subset.

    Hyperparameters (a loss weight, the semantic construction) are chosen on this split, so the
    protocol's queries are never looked at before the final evaluation. Training rows of the
    shallow methods may fall in it, as training images fall in the database of the ``deepbit``
    protocol itself.
    """
    pool = split["train"]
    if "train_subset" in split:
        pool = np.setdiff1d(pool, split["train_subset"])
    if len(pool) < n_query + n_database:
        n_query = max(1, len(pool) // 10)
        n_database = len(pool) - n_query
    rng = np.random.default_rng([seed, 0x5E1EC7])
    drawn = rng.permutation(pool)
    return {"query": drawn[:n_query], "database": drawn[n_query : n_query + n_database]}


def validate_method(
    name: str,
    bits: int,
    seed: int,
    features: np.ndarray,
    labels: np.ndarray,
    split: dict[str, np.ndarray],
    val_split: dict[str, np.ndarray],
    method_params: dict[str, Any] | None = None,
    rotations: np.ndarray | None = None,
    rotation_indices: np.ndarray | None = None,
    angles: list[float] | None = None,
    topk: int | None = None,
) -> dict[str, Any]:
    """Fit on the usual training rows and score mAP on the validation split (never the queries)."""
    from usdh.metrics import mean_average_precision

    cls = method_class(name)
    hasher = cls(n_bits=bits, random_state=seed, **(method_params or {}))
    deep = is_deep(cls)
    rows = _training_rows(split, deep)
    kwargs = _rotation_kwargs(rows, rotations, rotation_indices, angles) if deep else {}
    start = time.perf_counter()
    hasher.fit(features[rows], **kwargs)
    seconds = time.perf_counter() - start
    q = hasher.encode(features[val_split["query"]])
    db = hasher.encode(features[val_split["database"]])
    val_map = mean_average_precision(
        q, db, labels[val_split["query"]], labels[val_split["database"]], topk=topk
    )
    return {
        "method": name,
        "bits": bits,
        "seed": seed,
        "params": hasher.get_params(),
        "val_mAP": float(val_map),
        "topk": topk,
        "n_val_query": len(val_split["query"]),
        "n_val_database": len(val_split["database"]),
        "fit_seconds": round(seconds, 3),
    }


def merge_params(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` merged in, recursively for nested mappings (copies)."""
    out = {k: (merge_params(v, {}) if isinstance(v, dict) else v) for k, v in base.items()}
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_params(out[key], value)
        else:
            out[key] = merge_params(value, {}) if isinstance(value, dict) else value
    return out


def classify_codes(
    train: np.ndarray,
    y_train: np.ndarray,
    val: np.ndarray,
    y_val: np.ndarray,
    test: np.ndarray,
    y_test: np.ndarray,
    seed: int,
    cs: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0),
) -> dict[str, Any]:
    """Test accuracy of a linear classifier (multinomial logistic regression) on ``train``.

    The inverse regularisation ``C`` is chosen on ``val``; the classifier is then refitted on train
    and val together. Inputs are standardised with the training statistics (for codes: the
    unpacked bits as 0/1 columns).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def model(c: float) -> Any:
        return make_pipeline(
            StandardScaler(), LogisticRegression(C=c, max_iter=2000, random_state=seed)
        )

    scores = {c: float(model(c).fit(train, y_train).score(val, y_val)) for c in cs}
    best = max(cs, key=lambda c: (scores[c], -c))  # ties: the stronger regularisation
    final = model(best).fit(np.concatenate([train, val]), np.concatenate([y_train, y_val]))
    return {
        "accuracy": float(final.score(test, y_test)),
        "C": best,
        "val_accuracy": {str(c): v for c, v in scores.items()},
    }
