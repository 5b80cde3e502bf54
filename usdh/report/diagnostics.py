"""Why USDH lands where it lands: its objective evaluated on every method's codes (the diagnose
stage's record)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from usdh.io import read_json
from usdh.report.inputs import rerun
from usdh.report.markdown import section

__all__ = ["diagnostics_section", "diagnostics_table"]


def diagnostics_table(root: Path) -> pd.DataFrame:
    """The diagnose stage's record: the target method's loss on each method's codes, per code
    length, mean over seeds (lower = the objective prefers those codes)."""
    rows = []
    for path in sorted((root / "metrics" / "diagnostics").glob("*/*/*_loss.json")):
        fix = rerun("diagnose")
        rec = read_json(path, fix, ("runs",))
        runs = rec["runs"]
        if not isinstance(runs, list) or not all(
            isinstance(r, dict) and {"bits", "seed", "loss"} <= set(r) for r in runs
        ):
            raise ValueError(
                f"{path}: 'runs' is not a list of records with 'bits', 'seed' and 'loss' "
                f"(damaged?); {fix}"
            )
        for r in runs:
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


def diagnostics_section(table: pd.DataFrame) -> list[str]:
    """The README's table of the objective on every method's codes."""
    return section(
        "## Why USDH lands where it lands: its loss on every method's codes",
        table,
        "The USDH objective (as configured for the main runs) evaluated on each method's "
        "binary codes of the same seeded batches of training images, mean over seeds "
        "(`usdh_relaxed`: USDH's own relaxed codes, as trained). Lower is what the objective "
        'prefers; see docs/usdh.md, section "Why USDH lands where it lands".',
    )
