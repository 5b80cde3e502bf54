"""``python -m usdh validate <method> <bits> <seed> [--set key=value ...]``: score a setting on a
validation split of the training pool (never the protocol's queries), to choose defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from usdh import layout
from usdh.data import PROTOCOLS, load_prepared, load_split
from usdh.evaluation import validation_split
from usdh.features import load_features
from usdh.fitting import fit_on_rows, views_from_features
from usdh.io import save_json
from usdh.metrics import mean_average_precision
from usdh.params import section
from usdh.stages.common import method_params, run_context


def apply_override(target: dict[str, Any], text: str) -> None:
    """``a.b.c=value`` (value parsed as YAML) into nested dicts."""
    import yaml

    if "=" not in text:
        raise ValueError(f"an override looks like key.sub=value, got {text!r}")
    key, value = text.split("=", 1)
    *path, last = key.split(".")
    node = target
    for part in path:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {text!r}: {part!r} is not a mapping")
    node[last] = yaml.safe_load(value)


def outputs(
    params: dict[str, Any], method: str, bits: int, seed: int, overrides: list[str] = ()
) -> list[Path]:
    ctx = run_context(params, method, bits, seed)
    tag = "-".join(o.replace("/", "_") for o in overrides) or "default"
    return [layout.validation_record(ctx.run.dataset, method, bits, seed, tag)]


def run(
    params: dict[str, Any], method: str, bits: int, seed: int, overrides: list[str] = ()
) -> None:
    """Score a method on a validation split of the training pool (for choosing hyperparameters)."""
    ctx = run_context(params, method, bits, seed)
    chosen = method_params(params, method)
    for text in overrides:
        apply_override(chosen, text)
    fs = load_features(ctx.features_dir, mmap_mode="r")
    features = np.asarray(fs.features)
    labels = load_prepared(ctx.prepared_dir).labels
    split = load_split(ctx.split_dir)
    val = validation_split(split, int(section(params, "split_seed")))
    topk = PROTOCOLS[ctx.run.protocol].topk
    fitted = fit_on_rows(
        method, bits, seed, features, split, method_params=chosen, views=views_from_features(fs)
    )
    q = fitted.hasher.encode(features[val["query"]])
    db = fitted.hasher.encode(features[val["database"]])
    val_map = mean_average_precision(
        q, db, labels[val["query"]], labels[val["database"]], topk=topk
    )
    result = {
        "method": method,
        "bits": bits,
        "seed": seed,
        "params": fitted.hasher.get_params(),
        "val_mAP": float(val_map),
        "topk": topk,
        "n_val_query": len(val["query"]),
        "n_val_database": len(val["database"]),
        "fit_seconds": round(fitted.seconds, 3),
        **ctx.record,
        "overrides": list(overrides),
    }
    (out,) = outputs(params, method, bits, seed, overrides)
    save_json(out, result)
    print(f"{method} {bits} bits seed {seed} {list(overrides)}: val mAP {val_map:.4f}")
