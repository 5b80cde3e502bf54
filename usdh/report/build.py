"""Collect metrics into one table, summarise over seeds, write tables, figures and the README."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from usdh.io import atomic_path
from usdh.layout import Run, features_references, find_runs
from usdh.registry import methods
from usdh.report.calibration import (
    TOLERANCE,
    calibration_summary,
    calibration_table,
    collect_calibration,
    gap_readings,
)
from usdh.report.figures import (
    caption,
    display_name,
    example_figures,
    mean_curve,
    per_class_figure,
    protocol_figures,
    pyplot,
    retrieval_runs,
    savefig,
)

__all__ = [
    "REPORTED_CIFAR10",
    "build_report",
    "collect_ablations",
    "collect_classification",
    "collect_results",
    "summarise",
]

#: mAP@1000 in % on CIFAR-10 (10,000 queries, 50,000 database, which is also the training set)
#: at 16 / 32 / 64 bits: (method, row label, values, where published). None: not reported at that
#: length. USDH's own numbers are not available here. DeepBit's README
#: (github.com/kevinlin311tw/cvpr16-deepbit) lists two rows of its own, dated, and the baselines
#: without saying which features they hashed; its release trains only the hash layer on VGG-16
#: (every VGG layer has lr_mult 0 in examples/deepbit-cifar10-32/vgg_train32_stage1.prototxt).
_DEEPBIT_README = "DeepBit README (features not stated)"
REPORTED_CIFAR10: tuple[tuple[str, str, tuple[float | None, ...], str], ...] = (
    ("lsh", "lsh", (12.55, 13.76, 15.07), _DEEPBIT_README),
    ("pcah", "pcah", (12.91, 12.60, 12.10), _DEEPBIT_README),
    ("itq", "itq", (15.67, 16.20, 16.64), _DEEPBIT_README),
    ("sh", "sh", (12.95, 14.09, 13.89), _DEEPBIT_README),
    (
        "deepbit",
        "deepbit (Nov. 2015)",
        (19.43, 24.86, 27.73),
        "DeepBit README (hash layer trained on frozen VGG-16, 224 px)",
    ),
    (
        "deepbit",
        "deepbit (Apr. 2016)",
        (20.53, 25.44, 29.49),
        "DeepBit README (hash layer trained on frozen VGG-16, 224 px)",
    ),
    (
        "greedyhash",
        "greedyhash",
        (41.0, 46.7, 47.6),
        "DeepHash-pytorch, Unsupervised_GreedyHash.py (frozen VGG-16 fc7; best epoch on the test "
        "queries)",
    ),
    (
        "bihalf",
        "bihalf",
        (None, None, 59.3),
        "DeepHash-pytorch, Unsupervised_BiHalf.py (frozen VGG-16 fc7; epoch 40)",
    ),
    (
        "cibhash",
        "cibhash",
        (None, None, None),
        "not read: the paper's table is not readable here and its release "
        "(github.com/qiuzx2/CIBHash) states no numbers; the release's protocol: 5,000 training "
        "images, 5,000 test queries, the 50,000 training images as database, mAP@1000",
    ),
)
REPORTED_BITS = (16, 32, 64)

#: columns of results.csv, in order (the curves stay in their CSV files)
COLUMNS = [
    "dataset",
    "protocol",
    "source",
    "backbone",
    "method",
    "bits",
    "seed",
    "topk",
    "mAP",
    "mAP_tie_aware",
    "mAP_all",
    "mAP_all_tie_aware",
    "precision_r2",
    "precision_r2_nonempty",
    "recall_r2",
    "empty_r2",
    "n_query",
    "n_db",
    "train_images",
    "fit_seconds",
    "codes_per_s",
    "model_bytes",
]
#: what a fit record (models/.../fit.json) adds to a run's row
FIT_COLUMNS = {"n_train": "train_images", "fit_seconds": "fit_seconds"}
#: ... and its encoding record (the fit stage's encode of the database from cached features)
ENCODE_COLUMNS = {"database_codes_per_s": "codes_per_s", "model_bytes": "model_bytes"}


def _run_records(root: str | Path, group: str) -> list[dict[str, Any]]:
    """Every run's metrics JSON of ``group`` under the project folder ``root`` (usdh.layout)."""
    return [json.loads(run.metrics.read_text()) for run in find_runs(group, root=Path(root))]


def _method_rank(names: pd.Series) -> pd.Series:
    """Position in the registry's order (the reports' method order; unknown names last)."""
    rank = {m: i for i, m in enumerate(methods())}
    return names.map(lambda m: rank.get(m, len(rank)))


def _mean_std(df: pd.DataFrame, keys: list[str], value: str) -> pd.DataFrame:
    """Mean, sample std (0 for a single seed) and count of ``value`` per ``keys``."""
    out = df.groupby(keys, sort=False)[value].agg(["mean", "std", "count"]).reset_index()
    out["std"] = out["std"].fillna(0.0)
    return out


def _by_bits(s: pd.DataFrame, index: list[str], sort: bool = False) -> pd.DataFrame:
    """The ``cell`` column of ``s`` pivoted to one column per code length ("16 bits", ...); a
    length without a value shows "-"."""
    table = s.pivot_table(index=index, columns="bits", values="cell", aggfunc="first", sort=sort)
    table.columns = [f"{b} bits" for b in table.columns]
    return table.fillna("-").reset_index()


def _protocol_rank(df: pd.DataFrame, protocols: pd.Series) -> pd.Series:
    """Position of each protocol in the order of ``df`` (collect_results puts the main first)."""
    order = list(df["protocol"].drop_duplicates())
    return protocols.map(lambda p: order.index(p) if p in order else len(order))


def collect_results(root: str | Path, main: str | None = None) -> pd.DataFrame:
    """One row per retrieval run's metrics (dataset x protocol x method x bits x seed), plus
    mAP@k and precision@N columns; the ``main`` protocol's rows first."""
    rows = []
    for run in find_runs("retrieval", root=Path(root)):
        m = json.loads(run.metrics.read_text())
        if run.fit_record.is_file():
            fit = json.loads(run.fit_record.read_text())
            m.update({ours: fit.get(theirs) for theirs, ours in FIT_COLUMNS.items()})
            enc = fit.get("encode") or {}
            m.update({ours: enc.get(theirs) for theirs, ours in ENCODE_COLUMNS.items()})
        row = {c: m.get(c) for c in COLUMNS}
        for k, v in (m.get("mAP_at") or {}).items():
            row[f"mAP@{k}"] = v
        for k, v in (m.get("mAP_tie_aware_at") or {}).items():
            row[f"mAP@{k}_tie_aware"] = v
        for n, p in (m.get("precision_at_n") or {}).items():
            row[f"P@{n}"] = p
        rows.append(row)
    if not rows:
        raise ValueError(
            f"no metrics files under {Path(root) / 'metrics' / 'retrieval'}; run the evaluate "
            f"stages first (dvc repro)"
        )
    df = pd.DataFrame(rows)
    df["_order"] = _method_rank(df["method"])
    df["_main"] = df["protocol"] != main
    df = df.sort_values(["dataset", "_main", "protocol", "_order", "method", "bits", "seed"])
    return df.drop(columns=["_order", "_main"]).reset_index(drop=True)


def summarise(df: pd.DataFrame, value: str = "mAP") -> pd.DataFrame:
    """Mean and sample std over seeds, per dataset x protocol x method x bits."""
    return _mean_std(df, ["dataset", "protocol", "method", "bits"], value)


def _fmt(mean: float, std: float, count: int, scale: float = 100.0) -> str:
    if count > 1:
        return f"{mean * scale:.2f} ± {std * scale:.2f}"
    return f"{mean * scale:.2f}"


def main_table(df: pd.DataFrame, value: str = "mAP") -> pd.DataFrame:
    """Methods as rows, bit lengths as columns, 'mean ± std' of ``value`` in %."""
    s = summarise(df, value)
    s["cell"] = [_fmt(m, sd, c) for m, sd, c in zip(s["mean"], s["std"], s["count"], strict=True)]
    table = _by_bits(s, ["dataset", "protocol", "method"], sort=True)
    table["_rank"] = _method_rank(table["method"])
    table["_p"] = _protocol_rank(df, table["protocol"])
    return table.sort_values(["dataset", "_p", "_rank"]).drop(columns=["_p", "_rank"])


def reported_vs_reproduced(df: pd.DataFrame) -> pd.DataFrame:
    """DeepBit's listed CIFAR-10 mAP@1000 beside ours (mean over seeds), in %."""
    ours = summarise(df[(df["dataset"] == "cifar10") & (df["protocol"] == "deepbit")])
    rows = []
    reported = {m: [r for r in REPORTED_CIFAR10 if r[0] == m] for m in methods()}
    for method in methods():
        for _, label, values, source in reported[method] or [
            (method, method, (None,) * len(REPORTED_BITS), "not available")
        ]:
            row: dict[str, Any] = {"method": label}
            for i, bits in enumerate(REPORTED_BITS):
                row[f"reported {bits}"] = f"{values[i]:.2f}" if values[i] is not None else "n/a"
                hit = ours[(ours["method"] == method) & (ours["bits"] == bits)]
                row[f"ours {bits}"] = f"{hit['mean'].iloc[0] * 100:.2f}" if len(hit) else "-"
            row["reported in"] = source
            rows.append(row)
    return pd.DataFrame(rows)


def order_changes(df: pd.DataFrame) -> list[str]:
    """Pairs of methods reported in the same publication (the latest row of a method) whose
    order at some length differs from ours (mean over seeds), as sentences; rows of different
    publications used different features and protocols, so their order is not compared."""
    ours = summarise(df[(df["dataset"] == "cifar10") & (df["protocol"] == "deepbit")])
    latest = {m: v for m, _, v, _ in REPORTED_CIFAR10}  # a later row replaces an earlier one
    where = {m: src.split(" (")[0] for m, _, _, src in REPORTED_CIFAR10}
    names = [m for m in methods() if m in latest]
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if where[a] != where[b]:
                continue
            flips = []
            for k, bits in enumerate(REPORTED_BITS):
                ra, rb = latest[a][k], latest[b][k]
                oa = ours[(ours["method"] == a) & (ours["bits"] == bits)]["mean"]
                ob = ours[(ours["method"] == b) & (ours["bits"] == bits)]["mean"]
                if ra is None or rb is None or oa.empty or ob.empty:
                    continue
                if (ra > rb) != (float(oa.iloc[0]) > float(ob.iloc[0])):
                    flips.append(bits)
            if flips:
                k = REPORTED_BITS.index(flips[0])
                hi, lo = (a, b) if latest[a][k] > latest[b][k] else (b, a)
                out.append(
                    f"{hi} is reported above {lo} but scores below it here at "
                    f"{', '.join(map(str, flips))} bits"
                )
    return out


def below_reported(df: pd.DataFrame) -> list[str]:
    """Reported rows that our run of the method does not exceed, at each such length."""
    ours = summarise(df[(df["dataset"] == "cifar10") & (df["protocol"] == "deepbit")])
    out = []
    for method, label, values, _ in REPORTED_CIFAR10:
        for k, bits in enumerate(REPORTED_BITS):
            hit = ours[(ours["method"] == method) & (ours["bits"] == bits)]["mean"]
            if values[k] is not None and not hit.empty and float(hit.iloc[0]) * 100 <= values[k]:
                out.append(f"{label} at {bits} bits")
    return out


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_tables(tables: dict[str, pd.DataFrame], out_dir: Path) -> None:
    """Each table as Markdown and LaTeX."""
    for name, table in tables.items():
        _write_text(
            out_dir / f"{name}.md", table.to_markdown(index=False, disable_numparse=True) + "\n"
        )
        _write_text(out_dir / f"{name}.tex", table.to_latex(index=False, escape=True))


# -- what each method trained on, and the verdict -------------------------------------------------
def training_table(
    root: Path, df: pd.DataFrame, backbone_images_per_s: float | None = None
) -> pd.DataFrame:
    """Per protocol and method, what it trained on and what it costs: training images, epochs,
    SGD steps, batch, lr and head width (deep methods) from the fit records; fit seconds, encode
    throughput from cached features, images/s including the backbone (when its throughput is
    known) and model size on disk, each as the mean over seeds per code length."""
    rows = []
    for run in find_runs("retrieval", kind="models", root=root):
        if not run.fit_record.is_file():
            continue
        fit = json.loads(run.fit_record.read_text())
        params = fit.get("params") or {}
        enc = fit.get("encode") or {}
        rows.append(
            {
                "protocol": run.protocol,
                "method": run.name,
                "bits": run.bits,
                "train_images": fit.get("n_train"),
                "epochs": fit.get("epochs"),
                "steps": fit.get("steps"),
                "batch_size": params.get("batch_size"),
                "lr": params.get("lr"),
                "hidden": str(params.get("hidden") or "none"),
                "fit_seconds": fit.get("fit_seconds"),
                "codes_per_s": enc.get("database_codes_per_s"),
                "model_bytes": enc.get("model_bytes"),
            }
        )
    if not rows:
        return pd.DataFrame()
    t = pd.DataFrame(rows)
    t["_order"] = _method_rank(t["method"])
    protocols = list(df["protocol"].drop_duplicates())
    t["_p"] = t["protocol"].map(lambda p: protocols.index(p) if p in protocols else len(protocols))
    bits = sorted(t["bits"].unique())
    lengths = " / ".join(str(b) for b in bits)

    def per_bits(g: pd.DataFrame, column: str, fmt: Any) -> str:
        means = [g[g["bits"] == b][column].mean() for b in bits]
        return " / ".join("-" if pd.isna(v) else fmt(v) for v in means)

    out = []
    for (protocol, method), g in t.sort_values(["_p", "_order"]).groupby(
        ["protocol", "method"], sort=False
    ):
        deep = g["epochs"].notna().any()
        row = {
            "protocol": protocol,
            "method": method,
            "train images": ", ".join(str(int(v)) for v in sorted(g["train_images"].unique())),
            "epochs": _int_range(g["epochs"]) if deep else "-",
            "SGD steps": _int_range(g["steps"]) if deep else "-",
            "batch": _int_range(g["batch_size"]) if deep else "-",
            "lr": ", ".join(f"{v:g}" for v in sorted(g["lr"].dropna().unique())) or "-",
            "hidden": g["hidden"].iloc[0] if deep else "-",
            f"fit s ({lengths} bits)": per_bits(g, "fit_seconds", lambda v: f"{v:.1f}"),
            "codes/s from features": per_bits(g, "codes_per_s", _rate),
        }
        if backbone_images_per_s:
            row["images/s with the backbone"] = per_bits(
                g, "codes_per_s", lambda v: f"{1 / (1 / backbone_images_per_s + 1 / v):.1f}"
            )
        row["model on disk"] = per_bits(g, "model_bytes", _size)
        out.append(row)
    return pd.DataFrame(out)


def _rate(v: float) -> str:
    return f"{v / 1e6:.1f}M" if v >= 1e6 else f"{v / 1e3:.0f}k" if v >= 1e3 else f"{v:.0f}"


def _size(v: float) -> str:
    return f"{v / 2**20:.1f} MiB" if v >= 2**20 else f"{v / 2**10:.0f} KiB"


def _int_range(values: pd.Series) -> str:
    v = sorted({int(x) for x in values.dropna()})
    if not v:
        return "-"
    return str(v[0]) if v[0] == v[-1] else f"{v[0]}-{v[-1]}"


#: the verdict's metrics: (results.csv column, per-query array, label); the tie-aware mAP figures
#: do not depend on how the database is stored
VERDICT_METRICS = (
    ("mAP_tie_aware", "ap_tie_aware", "mAP at the cut-off (tie-aware)"),
    ("mAP_all_tie_aware", "ap_all_tie_aware", "mAP over the database (tie-aware)"),
    ("precision_r2", "precision_r2", "precision within Hamming radius 2"),
)


def paired_bootstrap(
    diff: np.ndarray, level: float = 0.95, n_resamples: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of per-query differences and its percentile bootstrap interval (queries resampled
    with replacement, the two methods' values of a query kept together: a paired bootstrap)."""
    from scipy import stats

    diff = np.asarray(diff, dtype=np.float64)
    if np.ptp(diff) == 0:  # every query differs by the same amount: no uncertainty
        return float(diff.mean()), float(diff[0]), float(diff[0])
    res = stats.bootstrap(
        (diff,),
        np.mean,
        confidence_level=level,
        n_resamples=n_resamples,
        method="percentile",
        random_state=np.random.default_rng(seed),
        batch=100,
    )
    ci = res.confidence_interval
    return float(diff.mean()), float(ci.low), float(ci.high)


def _per_query(root: Path, df: pd.DataFrame, method: str, bits: int) -> dict[str, np.ndarray]:
    """A method's per-query arrays at one code length on the one protocol of ``df``, each
    averaged over its seeds (``query``, ``label`` and the examples' arrays, the same for every
    seed, are the first seed's)."""
    rows = df[(df["method"] == method) & (df["bits"] == bits)]
    if rows[["dataset", "protocol"]].drop_duplicates().shape[0] > 1:
        raise ValueError("per-query arrays are compared within one dataset and protocol")
    arrays: dict[str, list[np.ndarray]] = {}
    queries = None
    for r in rows.itertuples():
        run = Run("retrieval", r.dataset, r.protocol, method, bits, int(r.seed), root)
        with np.load(run.per_query) as data:
            if queries is not None and not np.array_equal(queries, data["query"]):
                raise ValueError(f"{run.per_query}: the queries differ between seeds")
            queries = data["query"]
            for key in data.files:
                arrays.setdefault(key, []).append(data[key])
    first = {"query", "label", "example_query", "example_top"}
    return {
        key: values[0] if key in first else np.mean(values, axis=0)
        for key, values in arrays.items()
    }


def verdict_table(
    root: Path, df: pd.DataFrame, target: str = "usdh", level: float = 0.95, seed: int = 0
) -> pd.DataFrame:
    """``target`` against every other method, per protocol, metric and code length: both methods'
    mean ± std over seeds, the mean per-query difference (seeds averaged per query) with a 95%
    paired bootstrap interval over queries, and the word the interval decides ("wins" when it
    lies above 0, "loses" below, else "no difference"). A protocol whose cut-off is the whole
    database has its mAP once."""
    rows = []
    if target not in set(df["method"]):
        return pd.DataFrame()
    loaded: dict[tuple[str, str, str, int], dict[str, np.ndarray]] = {}

    def per_query(part: pd.DataFrame, method: str, bits: int) -> dict[str, np.ndarray]:
        key = (str(part["dataset"].iloc[0]), str(part["protocol"].iloc[0]), method, bits)
        if key not in loaded:  # each run's file is read once, not once per metric
            loaded[key] = _per_query(root, part, method, bits)
        return loaded[key]

    for (dataset, protocol), part in df.groupby(["dataset", "protocol"], sort=False):
        whole = (part["topk"].isna() | (part["topk"] == part["n_db"])).all()
        for column, key, label in VERDICT_METRICS:
            if whole and column == "mAP_tie_aware":
                continue
            for other in [m for m in part["method"].drop_duplicates() if m != target]:
                for bits in sorted(part["bits"].unique()):
                    sel = part[part["bits"] == bits]
                    a = sel[sel["method"] == target][column].dropna() * 100
                    b = sel[sel["method"] == other][column].dropna() * 100
                    if len(a) == 0 or len(b) == 0:
                        continue
                    qa = per_query(part, target, int(bits))[key]
                    qb = per_query(part, other, int(bits))[key]
                    diff, lo, hi = paired_bootstrap((qa - qb) * 100, level, seed=seed)
                    word = "wins" if lo > 0 else "loses" if hi < 0 else "no difference"
                    rows.append(
                        {
                            "dataset": dataset,
                            "protocol": protocol,
                            "metric": label,
                            "bits": int(bits),
                            "vs": other,
                            target: f"{a.mean():.2f} ± {_std(a):.2f}",
                            "opponent": f"{b.mean():.2f} ± {_std(b):.2f}",
                            "difference [95% CI]": f"{diff:+.2f} [{lo:+.2f}, {hi:+.2f}]",
                            "verdict": f"{target} {word}",
                        }
                    )
    return pd.DataFrame(rows)


def _std(values: pd.Series) -> float:
    return float(values.std(ddof=1)) if len(values) > 1 else 0.0


def lookup_table(df: pd.DataFrame) -> pd.DataFrame:
    """Hash lookup within Hamming radius 2, per protocol, method and code length (mean ± std over
    seeds, %): precision over all queries (an empty lookup counts 0), precision over the
    non-empty lookups, recall, and the share of queries that retrieve nothing."""
    out = []
    for column, name in (
        ("precision_r2", "precision"),
        ("precision_r2_nonempty", "precision, non-empty lookups"),
        ("recall_r2", "recall"),
        ("empty_r2", "empty lookups"),
    ):
        if column not in df or df[column].isna().all():
            continue
        s = summarise(df.dropna(subset=[column]), column)
        s["cell"] = [
            _fmt(m, sd, c) for m, sd, c in zip(s["mean"], s["std"], s["count"], strict=True)
        ]
        t = _by_bits(s, ["protocol", "method"], sort=False)
        t.insert(2, "figure", name)
        out.append(t)
    if not out:
        return pd.DataFrame()
    table = pd.concat(out, ignore_index=True)
    protocols = list(df["protocol"].drop_duplicates())
    table["_p"] = table["protocol"].map(protocols.index)
    table["_rank"] = _method_rank(table["method"])
    return table.sort_values(["_p", "_rank"], kind="stable").drop(columns=["_p", "_rank"])


def _validation_links(df: pd.DataFrame) -> list[str]:
    """Links to the selection records of each dataset and protocol of the results."""
    pairs = df[["dataset", "protocol"]].drop_duplicates().itertuples(index=False)
    return [f"[validation/{d}/{p}/README.md](validation/{d}/{p}/README.md)" for d, p in pairs]


def _verdict_grid(verdict: pd.DataFrame) -> pd.DataFrame:
    """The verdict of one protocol as (metric, opponent) rows and one column per code length."""
    v = verdict.assign(
        cell=[
            f"{d} {w.split(' ', 1)[1]}"
            for d, w in zip(verdict["difference [95% CI]"], verdict["verdict"], strict=True)
        ]
    )
    grid = v.pivot_table(
        index=["metric", "vs"], columns="bits", values="cell", aggfunc="first", sort=False
    )
    grid.columns = [f"{b} bits" for b in grid.columns]
    return grid.reset_index()


def diagnostics_table(root: Path) -> pd.DataFrame:
    """The diagnose stage's record: the target method's loss on each method's codes, per code
    length, mean over seeds (lower = the objective prefers those codes)."""
    rows = []
    for path in sorted((root / "metrics" / "diagnostics").glob("*/*/*_loss.json")):
        rec = json.loads(path.read_text())
        for r in rec["runs"]:
            for method, terms in r["loss"].items():
                rows.append({"bits": r["bits"], "seed": r["seed"], "codes of": method, **terms})
    if not rows:
        return pd.DataFrame()
    d = pd.DataFrame(rows)
    value_cols = [c for c in d.columns if c not in ("bits", "seed", "codes of")]
    mean = d.groupby(["codes of", "bits"], sort=False)[value_cols].mean().reset_index()
    mean = mean.pivot_table(index="codes of", columns="bits", values="total", sort=False)
    mean.columns = [f"{b} bits" for b in mean.columns]
    return mean.reset_index().map(lambda v: f"{v:.4f}" if isinstance(v, float) else v)


# -- ablations -------------------------------------------------------------------------------------
ABLATION_COLUMNS = ["dataset", "variant", "bits", "seed", "mAP", "mAP_tie_aware", "mAP_all"]


def collect_ablations(
    root: str | Path, results: pd.DataFrame, method: str = "usdh"
) -> pd.DataFrame:
    """One row per ablation run, plus the ``full`` objective: the main experiment's runs of
    ``method`` on the same datasets (same parameters, so the same numbers)."""
    records = _run_records(root, "ablations")
    rows = [{c: m.get(c) for c in ABLATION_COLUMNS} for m in records]
    if not rows:
        return pd.DataFrame(columns=ABLATION_COLUMNS)
    df = pd.DataFrame(rows)
    protocols = {run.protocol for run in find_runs("ablations", root=Path(root))}
    full = results[(results["method"] == method) & results["dataset"].isin(df["dataset"])]
    full = full[full["protocol"].isin(protocols)]
    full = full[full["bits"].isin(df["bits"]) & full["seed"].isin(df["seed"])]
    full = full.assign(variant="full")[ABLATION_COLUMNS]
    df = pd.concat([full, df], ignore_index=True)
    order = {v: i for i, v in enumerate(["full", *sorted(set(df["variant"]) - {"full"})])}
    df["_o"] = df["variant"].map(order)
    return df.sort_values(["dataset", "_o", "bits", "seed"]).drop(columns="_o")


def ablation_table(df: pd.DataFrame) -> pd.DataFrame:
    """Variants as rows, bit lengths as columns: mAP 'mean ± std' in %, and the change from full."""
    s = _mean_std(df, ["dataset", "variant", "bits"], "mAP")
    full = s[s["variant"] == "full"].set_index(["dataset", "bits"])["mean"]
    cells = []
    for r in s.itertuples():
        cell = _fmt(r.mean, r.std, r.count)
        if r.variant != "full" and (r.dataset, r.bits) in full.index:
            cell += f" ({(r.mean - full[(r.dataset, r.bits)]) * 100:+.2f})"
        cells.append(cell)
    s["cell"] = cells
    return _by_bits(s, ["dataset", "variant"])


def ablation_figure(df: pd.DataFrame, out_dir: Path) -> list[Path]:
    plt = pyplot()

    written = []
    for dataset, part in df.groupby("dataset", sort=False):
        s = _mean_std(part, ["variant", "bits"], "mAP")
        variants = list(dict.fromkeys(part["variant"]))
        bits = sorted(s["bits"].unique())
        fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(variants)), 3.8))
        width = 0.8 / len(bits)
        x = np.arange(len(variants))
        for i, b in enumerate(bits):
            g = s[s["bits"] == b].set_index("variant").reindex(variants)
            ax.bar(
                x + (i - (len(bits) - 1) / 2) * width,
                g["mean"] * 100,
                width,
                yerr=g["std"] * 100,
                capsize=2,
                label=f"{b} bits",
            )
        ax.set_xticks(x, variants, rotation=30, ha="right")
        ax.set_ylabel("mAP at the protocol's cut-off (%)")
        ax.set_title(f"USDH variants (ablations), {dataset}")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
        path = out_dir / f"ablations_{dataset}.png"
        savefig(fig, path)
        written.append(path)
    return written


# -- classification --------------------------------------------------------------------------------
CLASSIFICATION_COLUMNS = ["dataset", "method", "bits", "seed", "accuracy", "C"]


def collect_classification(root: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Per-run test accuracies of classifiers on codes, and the features reference per dataset."""
    rows = [
        {c: m.get(c) for c in CLASSIFICATION_COLUMNS} for m in _run_records(root, "classification")
    ]
    refs = {}
    for path in features_references(Path(root)):
        m = json.loads(path.read_text())
        refs[m["dataset"]] = m
    df = pd.DataFrame(rows, columns=CLASSIFICATION_COLUMNS)
    df["_o"] = _method_rank(df["method"])
    df = df.sort_values(["dataset", "_o", "bits", "seed"]).drop(columns="_o")
    return df.reset_index(drop=True), refs


def classification_table(df: pd.DataFrame, refs: dict[str, Any]) -> pd.DataFrame:
    s = _mean_std(df, ["dataset", "method", "bits"], "accuracy")
    s["cell"] = [_fmt(m, sd, c) for m, sd, c in zip(s["mean"], s["std"], s["count"], strict=True)]
    table = _by_bits(s, ["dataset", "method"])
    for dataset, ref in refs.items():
        row = {"dataset": dataset, "method": f"features ({ref.get('dim')}-d, real-valued)"}
        row.update({c: f"{ref['accuracy'] * 100:.2f}" for c in table.columns[2:]})
        table = pd.concat([table, pd.DataFrame([row])], ignore_index=True)
    return table


def classification_summary(df: pd.DataFrame, refs: dict[str, Any], target: str) -> str:
    """What the classification numbers show, in words: the best method and where ``target``
    ranks at each code length (by mean accuracy over seeds), and the real-valued reference."""
    s = _mean_std(df, ["dataset", "method", "bits"], "accuracy")
    parts = []
    for (dataset, bits), g in s.groupby(["dataset", "bits"], sort=True):
        name = f"{dataset}, " if s["dataset"].nunique() > 1 else ""
        g = g.sort_values("mean", ascending=False).reset_index(drop=True)
        best = g.iloc[0]
        rank = g.index[g["method"] == target]
        where = f"{target} ranks {int(rank[0]) + 1} of {len(g)}" if len(rank) else ""
        parts.append(
            f"{name}at {bits} bits {best['method']} is best ({best['mean'] * 100:.1f} %)"
            + (f" and {where} ({g.loc[rank[0], 'mean'] * 100:.1f} %)" if where else "")
        )
    ref = "; ".join(
        f"the real-valued {r.get('dim')}-d features reach {r['accuracy'] * 100:.1f} %"
        for r in refs.values()
    )
    return "In these numbers, " + "; ".join(parts) + (f"; {ref}." if ref else ".")


# -- training curves -------------------------------------------------------------------------------
def training_figures(root: Path, out_dir: Path, protocol: str | None = None) -> list[Path]:
    """Per deep method: each term's training loss and the validation total, per epoch, of the
    lowest seed that has a training log (named in the figure), on ``protocol`` (default: all)."""
    plt = pyplot()
    logs: dict[tuple[str, str], dict[int, tuple[int, pd.DataFrame]]] = {}
    for run in find_runs("retrieval", kind="models", root=root):
        if protocol is not None and run.protocol != protocol:
            continue
        by_bits = logs.setdefault((run.dataset, run.name), {})
        if run.train_log.is_file() and (run.bits not in by_bits or run.seed < by_bits[run.bits][0]):
            by_bits[run.bits] = (run.seed, pd.read_csv(run.train_log))
    written = []
    for (dataset, method), by_bits in logs.items():
        if not by_bits:
            continue
        bits = sorted(by_bits)
        fig, axes = plt.subplots(1, len(bits), figsize=(4.2 * len(bits), 3.4), squeeze=False)
        for ax, b in zip(axes[0], bits, strict=True):
            seed, log = by_bits[b]
            fixed = {"epoch", "stage", "lr", "total", "seconds"}
            terms = [c for c in log.columns if c not in fixed and not c.startswith("val_")]
            for term in terms:
                ax.plot(log["epoch"], log[term], label=term)
            # dash-dotted: a term that is nearly the whole total stays visible beneath it
            ax.plot(log["epoch"], log["total"], color="black", linestyle="-.", label="total")
            if "val_total" in log and log["val_total"].notna().any():
                ax.plot(log["epoch"], log["val_total"], "k--", label="validation total")
            ax.xaxis.get_major_locator().set_params(integer=True)
            for e in log["epoch"][log["stage"].diff().fillna(0) > 0]:
                ax.axvline(e - 0.5, color="grey", lw=0.8, ls=":")
            ax.set(xlabel="epoch", title=f"{method}, {b} bits, seed {seed}")
            ax.set_yscale("log")
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("loss (terms unweighted; total weighted)")
        axes[0][0].legend(fontsize=7)
        path = out_dir / f"training_{dataset}_{method}.png"
        savefig(fig, path)
        written.append(path)
    return written


def per_class_table(
    root: Path, part: pd.DataFrame, classes: Sequence[str] | None, bits: int
) -> pd.DataFrame:
    """Methods x classes: the mean AP (tie-aware, at the protocol's cut-off, %) of each class's
    queries at ``bits``, seeds averaged per query (single-label data; empty otherwise)."""
    rows = {}
    for method in part["method"].drop_duplicates():
        if part[(part["method"] == method) & (part["bits"] == bits)].empty:
            continue
        pq = _per_query(root, part, method, bits)
        if "label" not in pq or np.asarray(pq["label"]).ndim != 1:
            return pd.DataFrame()
        labels = np.asarray(pq["label"]).astype(int)
        ap = pd.Series(pq["ap_tie_aware"] * 100).groupby(labels).mean()
        rows[method] = ap
    if not rows:
        return pd.DataFrame()
    table = pd.DataFrame(rows).T.sort_index(axis=1)
    if classes is not None:
        table.columns = [classes[int(c)] for c in table.columns]
    return table


def map_crossings(root: Path, df: pd.DataFrame, target: str) -> list[str]:
    """Where ``target``'s mean mAP@k curve (tie-aware, seeds averaged) crosses another method's,
    per protocol and code length, as sentences: the ranking of two methods that a paper reports
    depends on its cut-off exactly there."""
    out = []
    for protocol, part in df.groupby("protocol", sort=False):
        for bits in sorted(part["bits"].unique()):
            mine = mean_curve(retrieval_runs(part, target, bits, root), "map_at_k", "k")
            if mine is None:
                continue
            for other in part["method"].drop_duplicates():
                theirs = mean_curve(retrieval_runs(part, other, bits, root), "map_at_k", "k")
                if other == target or theirs is None:
                    continue
                both = mine.merge(theirs, on="k", suffixes=("", "_o"))
                d = np.sign(both["mAP_tie_aware"] - both["mAP_tie_aware_o"]).to_numpy()
                ks = both["k"].to_numpy()
                flips = [
                    f"{'above' if d[i + 1] > 0 else 'below'} it from k = {ks[i]:,}-{ks[i + 1]:,}"
                    for i in range(len(d) - 1)
                    if d[i] != 0 and d[i + 1] != 0 and d[i] != d[i + 1]
                ]
                if flips:
                    start = "above" if d[0] > 0 else "below"
                    out.append(
                        f"`{protocol}`, {bits} bits, {other}: {target} starts {start}, "
                        + ", then ".join(flips)
                    )
    return out


def _deterministic(df: pd.DataFrame, column: str = "mAP") -> list[str]:
    """Methods whose every result is the same for every seed (more than one seed run)."""
    s = summarise(df, column)
    g = s.groupby("method", sort=False).agg(std=("std", "max"), count=("count", "min"))
    return [m for m, r in g.iterrows() if r["count"] > 1 and r["std"] == 0]


def _load_images(root: Path, dataset: str) -> Any:
    """The prepared dataset (classes and images) when it is on disk, for the figures that show
    class names and thumbnails; None otherwise (a report from metrics alone)."""
    from usdh.data import load_prepared
    from usdh.layout import prepared_dir

    folder = prepared_dir(dataset, root)
    return load_prepared(folder) if (folder / "meta.json").is_file() else None


def build_report(
    root: str | Path, reports_root: str | Path, context: dict[str, Any]
) -> dict[str, Any]:
    """Write results.csv, ablations.csv, classification.csv, tables/ and figures/ under
    ``reports_root`` and the README, from the metrics, per-query files, curves and fit records of
    the project folder ``root`` (and its prepared images, for the examples); return what was
    written. ``context``: the setup to state, ``target`` (the judged method), ``protocol`` (the
    main one), ``bits`` (the per-class and example figures' code length), and
    ``backbone_images_per_s``."""
    root, reports_root = Path(root), Path(reports_root)
    figures_dir = reports_root / "figures"
    df = collect_results(root, context.get("protocol"))
    with atomic_path(reports_root / "results.csv") as tmp:
        df.to_csv(tmp, index=False, float_format="%.6f")
    target = context.get("target", "usdh")
    protocols = list(df["protocol"].drop_duplicates())
    main = context.get("protocol") if context.get("protocol") in protocols else protocols[0]
    at = [c for c in df.columns if c.startswith("mAP@") and not c.endswith("_tie_aware")]
    cut = at[0] if at else "mAP"
    tables = {
        "main_map": main_table(df, cut),
        "main_map_tie_aware": main_table(df, f"{cut}_tie_aware" if at else "mAP_tie_aware"),
        "main_map_all": main_table(df, "mAP_all"),
        "reported_vs_reproduced": reported_vs_reproduced(df),
    }
    training = training_table(root, df, context.get("backbone_images_per_s"))
    if len(training):
        tables["training"] = training
    verdict = verdict_table(root, df, target)
    if len(verdict):
        tables["verdict"] = verdict
    lookup = lookup_table(df)
    if len(lookup):
        tables["hash_lookup"] = lookup
    diagnostics = diagnostics_table(root)
    if len(diagnostics):
        tables["diagnostics"] = diagnostics
    figures = {"protocol": protocol_figures(df, root, figures_dir, summarise)}
    main_part = df[df["protocol"] == main]
    bits = int(context.get("bits", 32))
    if bits not in set(main_part["bits"]):
        bits = int(sorted(main_part["bits"].unique())[len(main_part["bits"].unique()) // 2])
    dataset = str(main_part["dataset"].iloc[0])
    images = _load_images(root, dataset)
    classes = images.classes if images is not None else None
    per_class = per_class_table(root, main_part, classes, bits)
    figures["per_class"] = []
    if len(per_class):
        tables["per_class"] = per_class.map(lambda v: f"{v:.2f}").reset_index(names="method")
        figures["per_class"].append(
            per_class_figure(
                per_class,
                f"{display_name(main_part)}: AP per query class (%), {bits} bits",
                figures_dir / f"per_class_{dataset}_{main}_{bits}bits.png",
            )
        )
    figures["examples"] = []
    if images is not None and np.asarray(images.labels).ndim == 1:
        examples, query_ids = {}, None
        for method in main_part["method"].drop_duplicates():
            pq = _per_query(root, main_part, method, bits)
            if "example_top" in pq:
                examples[method] = (pq["example_query"], pq["example_top"])
                query_ids = pq["query"]
        if examples:
            figures["examples"] = example_figures(
                examples,
                query_ids,
                np.asarray(images.labels),
                images.image,
                images.classes,
                f"{display_name(main_part)}: top 10 at {bits} bits",
                figures_dir / f"examples_{dataset}_{main}_{bits}bits",
            )
    ablations = collect_ablations(root, df, context.get("ablated", "usdh"))
    # both CSVs are always written (with just a header when there is nothing), so the stage's
    # outputs exist for every configuration
    with atomic_path(reports_root / "ablations.csv") as tmp:
        ablations.to_csv(tmp, index=False, float_format="%.6f")
    figures["ablations"] = []
    if len(ablations):
        tables["ablations"] = ablation_table(ablations)
        figures["ablations"] = ablation_figure(ablations, figures_dir)
    classification, refs = collect_classification(root)
    with atomic_path(reports_root / "classification.csv") as tmp:
        classification.to_csv(tmp, index=False, float_format="%.6f")
    if len(classification):
        tables["classification"] = classification_table(classification, refs)
        context = {
            **context,
            "classification_summary": classification_summary(classification, refs, target),
        }
    calibration = collect_calibration(root)
    with atomic_path(reports_root / "calibration.csv") as tmp:
        calibration.to_csv(tmp, index=False, float_format="%.6f")
    compared = calibration_table(calibration) if len(calibration) else pd.DataFrame()
    if len(compared):  # published numbers exist for this dataset and protocol
        tables["calibration"] = compared
        gaps = gap_readings(calibration)
        if len(gaps):
            tables["calibration_gaps"] = gaps
        ties = (calibration["mAP"] - calibration["mAP_tie_aware"]).abs().max()
        context = {
            **context,
            "calibration_counts": calibration_summary(calibration),
            "calibration_tie_gap": float(ties) * 100,
            "calibration_train": {
                p: sorted({int(n) for n in g["n_train"].dropna()})
                for p, g in _calibration_train(root, calibration).groupby("protocol")
            },
        }
    figures["training"] = training_figures(root, figures_dir, main)
    write_tables(tables, reports_root / "tables")
    tie_gap = float(np.max(np.abs(df["mAP"] - df["mAP_tie_aware"])))
    context = {**context, "main": main, "cut": cut, "bits_shown": bits}
    if target in set(df["method"]):
        context["crossings"] = map_crossings(root, df, target)
    every = [p for group in figures.values() for p in group]
    summary = {"rows": len(df), "figures": [str(p) for p in every], "max_tie_gap": tie_gap}
    _write_text(
        reports_root / "README.md",
        render_readme(df, tables, figures, reports_root, context, tie_gap),
    )
    return summary


def _calibration_train(root: Path, calibration: pd.DataFrame) -> pd.DataFrame:
    """The training-set size of every calibration run (its fit record)."""
    rows = []
    for run in find_runs("calibration", root=root):
        fit = json.loads(run.fit_record.read_text()) if run.fit_record.is_file() else {}
        rows.append({"protocol": run.protocol, "n_train": fit.get("n_train")})
    return pd.DataFrame(rows, columns=["protocol", "n_train"])


def _calibration_section(tables: dict[str, pd.DataFrame], context: dict[str, Any]) -> list[str]:
    """The like-for-like comparison with published numbers, and what explains the gaps."""
    cal = context.get("calibration") or {}
    counts = context.get("calibration_counts") or {}
    train = context.get("calibration_train") or {}
    trained = "; ".join(
        f"`{p}`: {', '.join(f'{n:,}' for n in ns)} images" for p, ns in sorted(train.items())
    )
    lines = _section(
        "## Calibration: the classic baselines on GIST-512 against published numbers",
        tables["calibration"],
        "The rows below compare like with like: our LSH, PCAH, ITQ and SH hash GIST descriptors "
        f"({cal.get('layer', 'GIST')}; grey, as LMgist computes them: `usdh/gist.py`, "
        f"docs/features.md) of the same images, split and scored as each source states, over "
        f"the seeds of the calibration section. Each cell: published / ours, mean ± std over "
        "seeds (ours minus published), in points of mAP. Training images per fit: "
        f"{trained or 'see calibration.csv'}. Sources, in full: `usdh/report/calibration.py`. "
        f"GIST extraction ran at {cal.get('images_per_s', 'n/a')} images/s on this machine. "
        f"As stated, {counts.get('as_stated', 0)} of {counts.get('cells', 0)} published cells "
        f"are within {TOLERANCE:g} point of ours; reading every published number as mAP over "
        f"the whole database of the stated split, {counts.get('whole_database', 0)} of "
        f"{counts.get('cells', 0)} are.",
    )
    if "calibration_gaps" in tables:
        lines += _section(
            "### What explains the gaps",
            tables["calibration_gaps"],
            f"Every published row with a cell more than {TOLERANCE:g} point from ours, against "
            "ours under other readings of what the source did (each one a run of the pipeline, "
            "none tuned toward the published number):",
        )
    deepbit = (counts.get("sources") or {}).get("DeepBit README")
    between, lsh_cells = counts.get("lsh_between", (0, 0))
    lines += [
        "* **The metric.** The DeepBit README calls its table 'mAP of top 1000 returned images', "
        "and it states the 10,000 / 50,000 split for DeepBit's own run, not how the baseline "
        "rows were computed, nor on which features."
        + (
            f" Read as mAP@1000 on that split, ours differ from its rows by "
            f"{deepbit['diff_stated']:+.2f} points on average ({deepbit['as_stated']} of "
            f"{deepbit['cells']} cells within {TOLERANCE:g} point); read as mAP over the whole "
            f"database, by {deepbit['diff_whole']:+.2f} ({deepbit['whole_database']} of "
            f"{deepbit['cells']} within). If the second reading is the closer one, the likeliest "
            "explanation is that those rows are whole-database mAP taken from an earlier paper; "
            "we could not read that paper here, so this stays a reading, not a finding."
            if deepbit
            else ""
        ),
        "* **Which row is spectral hashing.** The README has both an 'SH' and an 'SpeH' row and "
        "expands neither; both are compared with our spectral hashing.",
        "* **Centring (LSH).** The re-implementation's loader standardises every feature with "
        "one scalar mean and std and its LSH projects them without per-dimension centring "
        "(TreezzZ/LSH_PyTorch, data/dataloader.py and lsh.py); ours centres each dimension "
        "(`methods.lsh.center`). The `lsh_uncentred` variant is the same LSH without centring; "
        f"{between} of {lsh_cells} cells of the re-implementation's LSH row lie between our "
        "two means, and a "
        "single-seed number of a random projection carries the seed spread shown in the ± "
        "column.",
        "* **Tie order.** Breaking Hamming ties by database index or exactly (tie-aware) moves "
        f"no calibration run by more than {context.get('calibration_tie_gap', 0.0):.2f} points: "
        "ties explain none of the gaps.",
        "* **Not tested here.** Our images are the JPEG copy of CIFAR-10 (the original pixels "
        "are not on this machine), and no source states its GIST image size or colour handling "
        "(ours: 32 px, grey); how far either moves a number is not measured here.",
        "",
    ]
    return lines


def _section(heading: str, table: pd.DataFrame, intro: str | None = None) -> list[str]:
    """A README section: heading, an optional paragraph, the table in Markdown."""
    text = [intro, ""] if intro is not None else []
    return [heading, "", *text, table.to_markdown(index=False, disable_numparse=True), ""]


def _figures(paths: Sequence[Path], reports_root: Path, seeds: str) -> list[str]:
    """Each figure as a Markdown image with its caption."""
    lines = []
    for fig in paths:
        lines += [f"![{fig.stem}]({fig.relative_to(reports_root).as_posix()})", ""]
        lines += [caption(fig.stem, seeds), ""]
    return lines


def _protocol_title(df: pd.DataFrame, protocol: str) -> str:
    return f"{display_name(df[df['protocol'] == protocol])} (protocol `{protocol}`)"


def render_readme(
    df: pd.DataFrame,
    tables: dict[str, pd.DataFrame],
    figures: dict[str, list[Path]],
    reports_root: Path,
    context: dict[str, Any],
    tie_gap: float,
) -> str:
    """The report a reader opens first: the verdict, the setup, the main tables of every
    protocol, cost, hash lookup, figures, ablations, classification, reported vs reproduced."""
    seeds = sorted(int(s) for s in df["seed"].unique())
    seeds_text = ", ".join(map(str, seeds))
    sources = ", ".join(sorted(str(s) for s in df["source"].dropna().unique()))
    target = context.get("target", "usdh")
    protocols = list(df["protocol"].drop_duplicates())
    main, cut = context.get("main", protocols[0]), context.get("cut", "mAP")
    cut_name = cut if cut != "mAP" else "mAP at the protocol's cut-off"
    lines = [
        "# Results",
        "",
        "Written by `python -m usdh report` (the `report` stage of `dvc repro`) from the "
        "pipeline's files: `metrics/`, the per-query files (`queries/`), the curves (`plots/`), "
        "the fit records (`models/.../fit.json`) and, for the thumbnails and class names, the "
        "prepared images.",
        "",
    ]
    if "verdict" in tables:
        v = tables["verdict"]
        lines += [
            f"## Verdict: {target} against each method",
            "",
            f"Mean difference {target} minus the other method over the test queries, in points "
            "(%), each query's value averaged over the seeds first, with a 95% paired bootstrap "
            "interval over queries (percentile, 2,000 resamples, seeded); 'wins'/'loses' when the "
            "interval excludes 0, else 'no difference'. The mAP figures are the tie-aware ones "
            "(independent of how the database is stored); on a protocol whose cut-off is the "
            "whole database, mAP appears once. Precision within radius 2 counts an empty lookup "
            "as 0. The interval says how sure the difference is for these queries and these "
            "trained models; the spread over seeds is beside it, as mean ± std, in "
            "`tables/verdict.md`.",
            "",
        ]
        for protocol in protocols:
            part = v[v["protocol"] == protocol]
            if len(part):
                lines += _section(f"### {_protocol_title(df, protocol)}", _verdict_grid(part))
    lines += [
        "## Setup",
        "",
        f"* Data: {sources}; protocols: "
        + "; ".join(_protocol_title(df, p) for p in protocols)
        + f". The main protocol (ablations, diagnosis, per-class and example figures, model "
        f"selection) is `{main}`.",
        f"* Backbone features: {context.get('backbone')} at {context.get('input_size')} px "
        f"({context.get('weights')} weights), frozen.",
        f"* Seeds: {seeds_text} (tables show mean ± sample std over seeds when there is more "
        "than one).",
        f"* Software: {context.get('versions')}; device: {context.get('device')}.",
        "* Ranking ties are broken by database index (the usual convention); the tie-aware table "
        "gives the exact expected value over all orders of tied items. Largest gap between the two "
        f"over all rows: {tie_gap * 100:.2f} points of mAP.",
        "* Hyperparameters of the deep methods were chosen on the main protocol's validation "
        f"split ({', '.join(_validation_links(df[df['protocol'] == main]))}) and used unchanged "
        "on every protocol: no protocol's test queries were used for any choice.",
        "",
    ]
    fixed = _deterministic(df)
    footnote = (
        f"± 0.00: {', '.join(fixed)} make no random choice when fitting (a PCA and, for SH, "
        "the eigenfunctions of the training data), so every seed gives the same codes."
        if fixed
        else None
    )
    lines += _section(f"## {cut_name} (%)", tables["main_map"], footnote)
    lines += _section(f"## {cut_name}, tie-aware (%)", tables["main_map_tie_aware"])
    lines += _section("## mAP over the whole database (%)", tables["main_map_all"])
    if "training" in tables:
        lines += _section(
            "## What each method trained on, and what it costs",
            tables["training"],
            "Every method fits on the same training images of a protocol, except CIBHash, which "
            "learns from two views of an image and trains on the images of its bank of augmented "
            "views (the protocol's `augmentation_subset`, computed once by the bank stage, "
            f"{context.get('bank_views') or 'n/a'} views each; 'train images' shows their "
            "number). Deep methods: a hash "
            "head on the frozen features, trained by the one trainer for the epochs shown "
            "(DeepBit: three stages of that many epochs each) at the batch size shown. Fit "
            "seconds are wall-clock on the machine above. Codes/s: the fit stage's one timed "
            "encode of the database from the cached feature file, reading the rows included (so "
            "a single pass, with its noise; `reports/benchmarks/` times the hashers alone, "
            "repeated). Images/s add the backbone's measured throughput "
            f"({context.get('backbone_images_per_s') or 'n/a'} images/s in the features stage), "
            "which dominates for every method. The model is its saved file (BiHalf's hidden "
            "layer makes it the largest). Each is the mean over seeds at 16 / 32 / 64 bits.",
        )
    if "hash_lookup" in tables:
        lookup = tables["hash_lookup"]
        lines += _section(
            "## Hash lookup within Hamming radius 2 (%)",
            lookup[lookup["protocol"] == main].drop(columns="protocol"),
            "Every database item within distance 2 of the query is returned: precision and recall "
            "of that set averaged over queries ('precision' counts an empty lookup as 0, the "
            "convention of the SH and ITQ evaluations; 'precision, non-empty lookups' leaves "
            "those queries out; '-' where every lookup was empty), and the share of queries whose "
            f"lookup returns nothing. Mean ± std over seeds, on `{main}`; every protocol's are in "
            "[tables/hash_lookup.md](tables/hash_lookup.md) and the figures below.",
        )
        lines += _figures(
            [f for f in figures["protocol"] if f.stem.startswith("hash_lookup")],
            reports_root,
            seeds_text,
        )
    lines += ["## Figures", ""]
    for kind in ("precision_at_n", "map_at_k"):
        lines += _figures(
            [f for f in figures["protocol"] if f.stem.startswith(kind)], reports_root, seeds_text
        )
    crossings = context.get("crossings")
    if crossings:
        lines += [
            f"Where {target}'s mean mAP@k curve crosses another method's (between the two k "
            "shown; the grid is the figures'), so that which of the two ranks higher depends on "
            "the cut-off: " + "; ".join(crossings) + ". Everywhere else the order holds for every "
            "k from 100 to the whole database.",
            "",
        ]
    lines += _figures(figures.get("per_class", []), reports_root, seeds_text)
    lines += _figures(figures.get("examples", []), reports_root, seeds_text)
    for kind in ("pr_", "map_vs_bits"):
        lines += _figures(
            [f for f in figures["protocol"] if f.stem.startswith(kind)], reports_root, seeds_text
        )
    if "per_class" in tables:
        lines += _section(
            f"### AP per query class at {context.get('bits_shown')} bits (%), `{main}`",
            tables["per_class"],
        )
    if "ablations" in tables:
        lines += _section(
            "## Ablations: USDH without each criterion (mAP %, change from the full objective)",
            tables["ablations"],
            f"On the main protocol (`{main}`). `full` is the main table's USDH; `no_<term>` "
            "switches one term off (weight 0), `semantic_only` keeps the semantic term alone, "
            "`semantic_weight_<w>` changes its weight (the default is chosen on a validation "
            "split, docs/usdh.md), `bihalf_binarizer` trains USDH's objective on the bi-half "
            "layer's codes instead of its relaxed codes, `init_itq` starts the linear head from "
            "ITQ's projection. Same seeds and training images; the change is not a verdict (no "
            "interval), and no variant was chosen on these test-query numbers.",
        )
        lines += _figures(figures.get("ablations", []), reports_root, seeds_text)
    if "diagnostics" in tables:
        lines += _section(
            "## Why USDH lands where it lands: its loss on every method's codes",
            tables["diagnostics"],
            "The USDH objective (as configured for the main runs) evaluated on each method's "
            "binary codes of the same seeded batches of training images, mean over seeds "
            "(`usdh_relaxed`: USDH's own relaxed codes, as trained). Lower is what the objective "
            'prefers; see docs/usdh.md, section "Why USDH lands where it lands".',
        )
    if "classification" in tables:
        lines += _section(
            "## Classification on codes: test accuracy (%)",
            tables["classification"],
            "A multinomial logistic regression on each method's codes (bits standardised), its "
            "regularisation chosen on the validation images, refitted on train + val, scored on "
            "test; the last row is the same classifier on the real-valued features. "
            + context.get("classification_summary", ""),
        )
    if "calibration" in tables:
        lines += _calibration_section(tables, context)
    below = below_reported(df)
    lines += _section(
        "## Reported vs reproduced: CIFAR-10, mAP@1000 (%)",
        tables["reported_vs_reproduced"],
        "Every reported row uses 10,000 queries against a 50,000-image database; its source is "
        "in the last column. USDH's own numbers are not available here, so none are shown. Our "
        "setting differs: the images are the lossy JPEG copy of CIFAR-10, and every method here "
        f"hashes {context.get('backbone')} features at {context.get('input_size')} px, whereas "
        "DeepBit's README does not say which features its shallow rows hashed, DeepBit trained "
        "only a hash layer on a frozen VGG-16 at 224 px (its release sets lr_mult 0 on every VGG "
        "layer), and the GreedyHash and BiHalf rows trained a hash layer on frozen VGG-16 fc7 (a "
        "random split of the 60,000 images; GreedyHash's figure is its best epoch on the test "
        "queries, so optimistic). The like-for-like comparison of the shallow baselines is the "
        "calibration above. So only these statements are made: "
        + (
            "every reported row is exceeded here"
            if not below
            else "the reported rows exceeded here are all but " + "; ".join(below)
        )
        + ". Within the DeepBit README's table, the order of two methods changes where "
        + ("; ".join(order_changes(df)) or "nowhere")
        + ", and holds for every other pair.",
    )
    if figures.get("training"):
        lines += ["## Training curves", ""]
        lines += _figures(figures["training"], reports_root, seeds_text)
    if context.get("timings"):
        lines += ["## What the pipeline cost", "", str(context["timings"]), ""]
    return "\n".join(lines)
