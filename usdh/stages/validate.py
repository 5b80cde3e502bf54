"""``python -m usdh validate <method>``: model selection on a split that mirrors the test protocol.

The validation split is part of the protocol's index files (``val_query``: seeded training images;
``val_database``: the rest of the training pool, which validation fits also train on), so the
cut-off covers the same share of the database as at test and the protocol's queries are never
looked at. Every deep method gets the same budget (``validation`` in params.yaml): a coordinate
search over its declared space (learning rate, main loss weight, head width, epochs), one knob at
a time in the order listed, starting from each knob's first candidate and keeping the best value
of each knob before trying the next; a setting is scored as the mean over ``seeds`` of the
validation mAP, which is also logged after every epoch. With the same number of candidates per
knob every method tries the same number of settings. Every score is written under
``reports/validation/`` and the winner is printed as the params.yaml lines to use; choosing is a
person's commit, not a side effect.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from usdh import layout
from usdh.data import PROTOCOLS, load_prepared, load_split
from usdh.feature_store import load_features
from usdh.fitting import bank_for, fit_on_rows, merge_params, views_from_features
from usdh.io import atomic_path, save_json
from usdh.metrics import mean_average_precision
from usdh.paramcheck import method_checker
from usdh.params import ParamsError, nested, section
from usdh.stages.common import method_params, run_context
from usdh.train import NonFiniteLossError

log = logging.getLogger("usdh")

#: the whole file, with the class checks of this stage's method only (usdh.paramcheck)
check_params = method_checker()

SUMMARY = "summary.json"


def check_space(space: Mapping[str, Any]) -> dict[str, list[Any]]:
    """The space, checked: knob -> a non-empty list of candidates (the first is the start)."""
    for k, values in space.items():
        if not isinstance(values, list) or not values:
            raise ParamsError(f"validation.space: {k!r} must list its candidate values")
    return {k: list(v) for k, v in space.items()}


def budget(space: Mapping[str, list[Any]]) -> int:
    """How many settings a coordinate search over ``space`` tries."""
    return 1 + sum(len(v) - 1 for v in space.values())


def outputs(params: dict[str, Any], method: str) -> list[Path]:
    ctx = run_context(params, method, 0, 0)
    return [layout.validation_dir(ctx.run.dataset, ctx.run.protocol, method)]


@dataclass(frozen=True)
class _ValidationData:
    """What every validation fit of one method shares: the features, the rows it trains on, the
    views, the scorer on the validation queries and database, and the split's sizes."""

    features: np.ndarray
    fit_split: dict[str, np.ndarray]
    views: Any
    val_map: Callable[[Any], float]
    topk: int | None
    n_query: int
    n_database: int


def _validation_data(ctx: Any, method: str) -> _ValidationData:
    """Load the features, labels and validation split of ``ctx``'s protocol for ``method``."""
    fs = load_features(ctx.features_dir, mmap_mode="r")
    features = np.asarray(fs.features)
    labels = load_prepared(ctx.prepared_dir).labels
    split = load_split(ctx.split_dir)
    if "val_query" not in split:
        raise ParamsError(
            f"the {ctx.run.protocol} split has no validation part; set "
            f"datasets.{ctx.run.dataset}.validation_queries and rerun the split stage"
        )
    q_rows, db_rows = split["val_query"], split["val_database"]
    # validation fits train on the validation database; rotated views only of the split's subset
    fit_split = {"train": db_rows}
    for subset in ("rotation_subset", "augmentation_subset"):
        if subset in split:
            fit_split[subset] = split[subset]
    views = views_from_features(fs, bank_for([method], ctx.bank_dir))
    topk = PROTOCOLS[ctx.run.protocol].topk
    q_x, db_x = features[q_rows], features[db_rows]
    q_y, db_y = labels[q_rows], labels[db_rows]

    def val_map(encode: Any) -> float:
        return mean_average_precision(encode(q_x), encode(db_x), q_y, db_y, topk=topk)

    return _ValidationData(
        features, fit_split, views, val_map, topk, n_query=len(q_rows), n_database=len(db_rows)
    )


def run(params: dict[str, Any], method: str) -> None:
    """Score the method's budget of settings on the validation split; write every record."""
    cfg = section(params, "validation")
    # a method without a space (the shallow ones) is scored once with its params.yaml setting,
    # as a reference on the same validation split
    space = check_space((cfg.get("space") or {}).get(method) or {})
    bits, seeds = int(cfg["bits"]), list(cfg["seeds"])
    ctx = run_context(params, method, bits, seeds[0])
    data = _validation_data(ctx, method)
    out = outputs(params, method)[0]
    record = {
        **ctx.record,
        # which features the fits saw (their record's digest): a resumed search never mixes two
        "features_record": _file_digest(Path(ctx.features_dir) / "provenance.json"),
        "topk": data.topk,
        "n_val_query": data.n_query,
        "n_val_database": data.n_database,
    }
    rows: list[dict[str, Any]] = []

    def score(setting: dict[str, Any]) -> dict[str, Any]:
        """Fit and score one setting on every seed (once; a repeat returns the first row)."""
        for row in rows:
            if all(row[k] == v for k, v in setting.items()):
                return row
        i = len(rows)
        chosen = merge_params(method_params(params, method), nested(setting))
        scores = [
            _fit_and_score(
                method,
                bits,
                seed,
                i,
                setting,
                chosen,
                data.features,
                data.fit_split,
                data.views,
                data.val_map,
                out,
                record,
            )
            for seed in seeds
        ]
        row = _score_row(i, setting, scores, seeds)
        rows.append(row)
        return row

    best = _coordinate_search(space, score)
    summary = {
        "method": method,
        "bits": bits,
        "seeds": seeds,
        "search": "coordinate, knobs in the order listed, first candidate = start",
        "n_settings": len(rows),
        "space": space,
        "settings": rows,
        "best": best,
        "chosen_params": nested({k: best[k] for k in space}),
    }
    save_json(out / SUMMARY, summary)
    write_table(out.parent)
    if not space:
        print(
            f"{method}: nothing to select (validation.space has no {method!r} entry); its "
            f"params.yaml setting scores val mAP {best['val_mAP_mean']:.4f}, as a reference"
        )
        return
    print(f"{method}: best setting {best['setting']} (val mAP {best['val_mAP_mean']:.4f}):")
    print(json.dumps(summary["chosen_params"], indent=2))


def _score_row(
    i: int, setting: dict[str, Any], scores: list[float], seeds: list[Any]
) -> dict[str, Any]:
    """Setting ``i``'s row: the setting, the mean and std of its scores over the seeds."""
    finite = bool(np.isfinite(scores).all())
    return {
        "setting": i,
        **setting,
        # a setting that diverged on any seed has no score (None), and is never chosen
        "val_mAP_mean": float(np.mean(scores)) if finite else None,
        "val_mAP_std": float(np.std(scores, ddof=1)) if finite and len(scores) > 1 else 0.0,
        "seeds": seeds,
    }


def _coordinate_search(
    space: Mapping[str, list[Any]], score: Callable[[dict[str, Any]], dict[str, Any]]
) -> dict[str, Any]:
    """One knob at a time in the order listed, from each knob's first candidate, keeping the best
    value of each knob before trying the next; the best row ``score`` returned."""
    current = {k: v[0] for k, v in space.items()}
    best = score(current)
    for knob, values in space.items():
        for value in values[1:]:
            row = score({**current, knob: value})
            if _score_of(row) > _score_of(best):
                best = row
        current = {k: best[k] for k in space}
    return best


def _fit_and_score(
    method: str,
    bits: int,
    seed: int,
    i: int,
    setting: dict[str, Any],
    chosen: dict[str, Any],
    features: np.ndarray,
    fit_split: dict[str, np.ndarray],
    views: Any,
    val_map: Any,
    out: Path,
    record: dict[str, Any],
) -> float:
    """Fit one setting on the validation database rows with one seed, write its record and
    training log, return its validation mAP (NaN when training diverged). A record that an
    interrupted search already wrote for the same setting, parameters and data is reused."""
    # the merged parameters, as JSON reads them back: what a resumed record must match
    base = {
        **record,
        "seed": seed,
        "setting": setting,
        "method_params": json.loads(json.dumps(chosen, sort_keys=True)),
    }
    done = _finished(out / f"{i}_{seed}.json", base)
    if done is not None:
        log.info("%s setting %d %s seed %d: reused its record", method, i, setting, seed)
        return done
    try:
        fitted = fit_on_rows(
            method,
            bits,
            seed,
            features,
            fit_split,
            method_params=chosen,
            views=views,
            monitor=val_map,
        )
    except NonFiniteLossError as exc:  # a diverged setting scores nothing, recorded
        save_json(out / f"{i}_{seed}.json", {**base, "diverged": str(exc)})
        log.info("%s setting %d %s seed %d: diverged", method, i, setting, seed)
        return float("nan")
    hasher = fitted.hasher
    value = val_map(hasher.encode)
    save_json(
        out / f"{i}_{seed}.json",
        {
            **base,
            "params": hasher.get_params(),
            "val_mAP": value,
            "val_mAP_per_epoch": _curve(hasher),
            "train_images": fitted.n_train,
            "fit_seconds": round(fitted.seconds, 3),
        },
    )
    if hasattr(hasher, "write_log"):
        hasher.write_log(out / f"{i}_{seed}_train_log.csv")
    log.info("%s setting %d %s seed %d: val mAP %.4f", method, i, setting, seed, value)
    return value


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _finished(path: Path, base: Mapping[str, Any]) -> float | None:
    """The score in ``path`` when it records this very fit (every field of ``base`` equal),
    else None: a search resumes where it stopped, and never reuses a fit of other params."""
    try:
        done = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(done, dict) or any(done.get(k) != v for k, v in base.items()):
        return None
    if "diverged" in done:
        return float("nan")
    value = done.get("val_mAP")
    return float(value) if isinstance(value, (int, float)) else None


def _score_of(row: Mapping[str, Any]) -> float:
    """A setting's mean validation mAP; minus infinity when it diverged."""
    return -np.inf if row["val_mAP_mean"] is None else float(row["val_mAP_mean"])


def _curve(hasher: Any) -> list[float]:
    """The validation mAP after each epoch, from the hasher's training log."""
    columns = [str(c) for c in getattr(hasher, "log_columns_", [])]
    if "val_mAP" not in columns:
        return []
    j = columns.index("val_mAP")
    return [round(float(r[j]), 6) for r in hasher.log_]


def write_table(folder: Path) -> None:
    """``README.md`` in ``folder``: every method's settings and scores, best first."""
    lines = [
        "# Model selection on the validation split",
        "",
        "Written by `python -m usdh validate <method>` (see `usdh/stages/validate.py`): each",
        "setting's validation mAP at the protocol's cut-off, mean +- std over the seeds; the",
        "protocol's test queries are never used. The chosen settings are in params.yaml.",
        "",
    ]
    for path in sorted(folder.glob(f"*/{SUMMARY}")):
        s = json.loads(path.read_text())
        keys = list(s["space"])
        how = s["search"] if keys else "its params.yaml setting, no search (a reference)"
        lines += [
            f"## {s['method']} ({s['bits']} bits, seeds {s['seeds']}, {s['n_settings']} "
            f"settings, {how})",
            "",
            "| " + " | ".join(["setting", *keys, "val mAP"]) + " |",
            "| " + " | ".join("---" for _ in range(len(keys) + 2)) + " |",
        ]
        for r in sorted(s["settings"], key=lambda r: -_score_of(r)):
            mark = " **(chosen)**" if r["setting"] == s["best"]["setting"] and keys else ""
            cells = "".join(f"{r[k]} | " for k in keys)
            score = (
                "diverged"
                if r["val_mAP_mean"] is None
                else f"{100 * r['val_mAP_mean']:.2f} +- {100 * r['val_mAP_std']:.2f}"
            )
            lines.append(f"| {r['setting']}{mark} | {cells}{score} |")
        lines.append("")
    with atomic_path(folder / "README.md") as tmp:
        tmp.write_text("\n".join(lines))
