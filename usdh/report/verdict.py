"""The verdict: the judged method against every other, per protocol, metric and code length, decided
by a paired bootstrap over the test queries (the spread over seeds is shown beside it, not used)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from usdh.report.markdown import protocol_title, section
from usdh.report.queries import per_query
from usdh.report.results import cell

__all__ = [
    "VERDICT_METRICS",
    "paired_bootstrap",
    "verdict_grid",
    "verdict_section",
    "verdict_table",
]

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


#: a method's per-query arrays at a code length, on the protocol of a part of the results
Queries = Callable[[pd.DataFrame, str, int], dict[str, np.ndarray]]


def _rows(
    part: pd.DataFrame, target: str, queries: Queries, level: float, seed: int
) -> list[dict[str, Any]]:
    """The verdict rows of one dataset and protocol (``part`` of the results)."""
    rows = []
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
                qa = queries(part, target, int(bits))[key]
                qb = queries(part, other, int(bits))[key]
                diff, lo, hi = paired_bootstrap((qa - qb) * 100, level, seed=seed)
                word = "wins" if lo > 0 else "loses" if hi < 0 else "no difference"
                rows.append(
                    {
                        "dataset": part["dataset"].iloc[0],
                        "protocol": part["protocol"].iloc[0],
                        "metric": label,
                        "bits": int(bits),
                        "vs": other,
                        target: cell(a),
                        "opponent": cell(b),
                        "difference [95% CI]": f"{diff:+.2f} [{lo:+.2f}, {hi:+.2f}]",
                        "verdict": f"{target} {word}",
                    }
                )
    return rows


def verdict_table(
    root: Path, df: pd.DataFrame, target: str = "usdh", level: float = 0.95, seed: int = 0
) -> pd.DataFrame:
    """``target`` against every other method, per protocol, metric and code length: both methods'
    mean ± std over seeds, the mean per-query difference (seeds averaged per query) with a 95%
    paired bootstrap interval over queries, and the word the interval decides ("wins" when it
    lies above 0, "loses" below, else "no difference"). A protocol whose cut-off is the whole
    database has its mAP once."""
    if target not in set(df["method"]):
        return pd.DataFrame()
    loaded: dict[tuple[str, str, str, int], dict[str, np.ndarray]] = {}

    def queries(part: pd.DataFrame, method: str, bits: int) -> dict[str, np.ndarray]:
        key = (str(part["dataset"].iloc[0]), str(part["protocol"].iloc[0]), method, bits)
        if key not in loaded:  # each run's file is read once, not once per metric
            loaded[key] = per_query(root, part, method, bits)
        return loaded[key]

    rows = []
    for _, part in df.groupby(["dataset", "protocol"], sort=False):
        rows += _rows(part, target, queries, level, seed)
    return pd.DataFrame(rows)


def verdict_grid(verdict: pd.DataFrame) -> pd.DataFrame:
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


def verdict_section(df: pd.DataFrame, verdict: pd.DataFrame, target: str) -> list[str]:
    """The README's verdict: how it is decided, then one grid per protocol."""
    lines = [
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
    for protocol in df["protocol"].drop_duplicates():
        part = verdict[verdict["protocol"] == protocol]
        if len(part):
            lines += section(f"### {protocol_title(df, protocol)}", verdict_grid(part))
    return lines
