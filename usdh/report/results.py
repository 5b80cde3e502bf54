"""The results table (one row per retrieval run), its summaries over seeds and the main tables;
the helpers every other table of the report formats its cells with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from usdh.io import read_json
from usdh.layout import Run, features_dir, find_runs
from usdh.provenance import cpu_id, machine_columns
from usdh.registry import methods
from usdh.report.inputs import read_fit_record, read_metrics

__all__ = [
    "COLUMNS",
    "MACHINE_COLUMNS",
    "by_bits",
    "cell",
    "collect_results",
    "cpu_id",
    "fmt",
    "fmt_cells",
    "machine_columns",
    "main_tables",
    "mean_std",
    "method_rank",
    "protocol_rank",
    "run_records",
    "summarise",
]

#: the machine and software a run was fitted on (its fit record's environment), and the machine
#: its features were computed on: results are bitwise repeatable only on one CPU model with the
#: same software, so every row says where it came from (docs/reliability.md)
MACHINE_COLUMNS = [
    "cpu",
    "cpu_id",
    "isa",
    "cores",
    "os",
    "software",
    "math_libraries",
    "features_cpu_id",
]

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
    *MACHINE_COLUMNS,
]
#: what a fit record (models/.../fit.json) adds to a run's row
FIT_COLUMNS = {"n_train": "train_images", "fit_seconds": "fit_seconds"}
#: ... and its encoding record (the fit stage's encode of the database from cached features)
ENCODE_COLUMNS = {"database_codes_per_s": "codes_per_s", "model_bytes": "model_bytes"}
#: the per-run dictionaries of a metrics file that become columns: (key, column name of an item)
LISTED = (
    ("mAP_at", "mAP@{}"),
    ("mAP_tie_aware_at", "mAP@{}_tie_aware"),
    ("precision_at_n", "P@{}"),
)


def run_records(root: str | Path, group: str) -> list[dict[str, Any]]:
    """Every run's metrics JSON of ``group`` under the project folder ``root`` (usdh.layout),
    each checked to hold the keys the report reads (usdh.report.inputs)."""
    return [read_metrics(run) for run in find_runs(group, root=Path(root))]


def method_rank(names: pd.Series) -> pd.Series:
    """Position in the registry's order (the reports' method order; unknown names last)."""
    rank = {m: i for i, m in enumerate(methods())}
    return names.map(lambda m: rank.get(m, len(rank)))


def protocol_rank(df: pd.DataFrame, protocols: pd.Series) -> pd.Series:
    """Position of each protocol in the order of ``df`` (collect_results puts the main first)."""
    order = list(df["protocol"].drop_duplicates())
    return protocols.map(lambda p: order.index(p) if p in order else len(order))


def mean_std(df: pd.DataFrame, keys: list[str], value: str) -> pd.DataFrame:
    """Mean, sample std (0 for a single seed) and count of ``value`` per ``keys``."""
    out = df.groupby(keys, sort=False)[value].agg(["mean", "std", "count"]).reset_index()
    out["std"] = out["std"].fillna(0.0)
    return out


def by_bits(s: pd.DataFrame, index: list[str], sort: bool = False) -> pd.DataFrame:
    """The ``cell`` column of ``s`` pivoted to one column per code length ("16 bits", ...); a
    length without a value shows "-"."""
    table = s.pivot_table(index=index, columns="bits", values="cell", aggfunc="first", sort=sort)
    table.columns = [f"{b} bits" for b in table.columns]
    return table.fillna("-").reset_index()


def fmt(mean: float, std: float, count: int, scale: float = 100.0) -> str:
    """'mean ± std' scaled to %, or the mean alone for a single run (no spread to show)."""
    if count > 1:
        return f"{mean * scale:.2f} ± {std * scale:.2f}"
    return f"{mean * scale:.2f}"


def fmt_cells(s: pd.DataFrame) -> list[str]:
    """:func:`fmt` of every row of a :func:`mean_std` table."""
    return [fmt(m, sd, c) for m, sd, c in zip(s["mean"], s["std"], s["count"], strict=True)]


def cell(values: pd.Series) -> str:
    """:func:`fmt` of values already in %: 'mean ± std' over seeds, or the one value of a method
    run once."""
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return fmt(values.mean(), std, len(values), scale=1.0)


def _features_cpu(provenance: Path, seen: dict[Path, str | None]) -> str | None:
    """The processor kind a features folder was computed on (its provenance record), each
    record read once per table."""
    if provenance not in seen:
        env = {}
        if provenance.is_file():
            dataset = provenance.parent.parent.name
            fix = (
                f"rerun the features stage of {dataset} that writes it (dvc repro -s "
                f"features@{dataset}, or features-calibration; see dvc.yaml), or dvc pull"
            )
            env = read_json(provenance, fix).get("environment") or {}
        seen[provenance] = cpu_id(env.get("cpu") or {})
    return seen[provenance]


def _row(run: Run, seen: dict[Path, str | None]) -> dict[str, Any]:
    """A retrieval run's row: its metrics, what its fit record adds (times, the machine), mAP@k
    and P@N columns."""
    m = read_metrics(run)
    if run.fit_record.is_file():
        fit = read_fit_record(run)
        m.update({ours: fit.get(theirs) for theirs, ours in FIT_COLUMNS.items()})
        enc = fit.get("encode") or {}
        m.update({ours: enc.get(theirs) for theirs, ours in ENCODE_COLUMNS.items()})
        m.update(machine_columns(fit.get("environment") or {}))
        backbone = fit.get("backbone") or m.get("backbone")
        if backbone:
            folder = features_dir(run.dataset, str(backbone), run.root)
            m["features_cpu_id"] = _features_cpu(folder / "provenance.json", seen)
    row = {c: m.get(c) for c in COLUMNS}
    for key, name in LISTED:
        row.update({name.format(k): v for k, v in (m.get(key) or {}).items()})
    return row


def collect_results(
    root: str | Path, main: str | None = None, group: str = "retrieval"
) -> pd.DataFrame:
    """One row per retrieval run's metrics (dataset x protocol x method x bits x seed), plus
    mAP@k and precision@N columns; the ``main`` protocol's rows first. ``group``: the retrieval
    table's runs (which must exist), or the settings' (none: an empty table)."""
    seen: dict[Path, str | None] = {}
    rows = [_row(run, seen) for run in find_runs(group, root=Path(root))]
    if not rows and group != "retrieval":
        return pd.DataFrame(columns=COLUMNS)
    if not rows:
        raise ValueError(
            f"no metrics files under {Path(root) / 'metrics' / 'retrieval'}; run the evaluate "
            f"stages first (dvc repro)"
        )
    df = pd.DataFrame(rows)
    df["_order"] = method_rank(df["method"])
    df["_main"] = df["protocol"] != main
    df = df.sort_values(["dataset", "_main", "protocol", "_order", "method", "bits", "seed"])
    return df.drop(columns=["_order", "_main"]).reset_index(drop=True)


def summarise(df: pd.DataFrame, value: str = "mAP") -> pd.DataFrame:
    """Mean and sample std over seeds, per dataset x protocol x method x bits."""
    return mean_std(df, ["dataset", "protocol", "method", "bits"], value)


def main_table(df: pd.DataFrame, value: str = "mAP") -> pd.DataFrame:
    """Methods as rows, bit lengths as columns, 'mean ± std' of ``value`` in %."""
    s = summarise(df, value)
    s["cell"] = fmt_cells(s)
    table = by_bits(s, ["dataset", "protocol", "method"], sort=True)
    table["_rank"] = method_rank(table["method"])
    table["_p"] = protocol_rank(df, table["protocol"])
    return table.sort_values(["dataset", "_p", "_rank"]).drop(columns=["_p", "_rank"])


def main_tables(df: pd.DataFrame) -> tuple[dict[str, pd.DataFrame], str]:
    """mAP at the protocols' cut-off (the first mAP@k column, else the protocol's own), the
    same tie-aware, and over the whole database; and the name of that cut-off's column."""
    at = [c for c in df.columns if c.startswith("mAP@") and not c.endswith("_tie_aware")]
    cut = at[0] if at else "mAP"
    tables = {
        "main_map": main_table(df, cut),
        "main_map_tie_aware": main_table(df, f"{cut}_tie_aware" if at else "mAP_tie_aware"),
        "main_map_all": main_table(df, "mAP_all"),
    }
    return tables, cut
