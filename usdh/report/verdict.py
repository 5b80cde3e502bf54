"""The verdict: the judged method against every other, per protocol, metric and code length.

Its interval counts both things a reader would redo: the training seeds (another five seeds give
other models) and the test queries (other queries from the same distribution). A method's result
is modelled as its mean plus a per-seed offset, a per-query effect (shared between the methods:
the queries are the same) and noise; the difference of the two methods' grand means then has
variance ``s_a^2 / n_a + s_b^2 / n_b + s_q^2 / Q`` (the spread of each method's per-seed means,
and of the per-query differences of the seed-averaged values), and the interval is Student's
with Welch-Satterthwaite degrees of freedom. With five seeds a bootstrap over seeds would
understate the seed term by a factor (n - 1) / n and use normal-like quantiles where t with about
four degrees of freedom is needed; ``tests/test_verdict.py`` simulates both (docs/reliability.md).
A method that does not depend on the seed (PCAH, SH: ``MethodSpec.seeded``) has no seed term.

The query-only interval (seeds averaged per query, queries resampled: a paired bootstrap) stays
beside it in ``tables/verdict.md``, labelled as what it is: sure for these trained models only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from usdh.registry import methods
from usdh.report.markdown import protocol_title, section
from usdh.report.queries import per_seed
from usdh.report.results import cell

__all__ = [
    "VERDICT_METRICS",
    "WORDS",
    "interval_text",
    "paired_bootstrap",
    "seed_query_interval",
    "verdict_grid",
    "verdict_section",
    "verdict_table",
    "welch_interval",
]

#: the verdict's metrics: (results.csv column, per-query array, label); the tie-aware mAP figures
#: do not depend on how the database is stored
VERDICT_METRICS = (
    ("mAP_tie_aware", "ap_tie_aware", "mAP at the cut-off (tie-aware)"),
    ("mAP_all_tie_aware", "ap_all_tie_aware", "mAP over the database (tie-aware)"),
    ("precision_r2", "precision_r2", "precision within Hamming radius 2"),
)


#: what an interval decides: above 0, below 0, or containing 0 (never "no difference": an
#: interval that merely contains 0 does not show the methods equal)
WORDS = ("wins", "loses", "not resolved")


def word(lo: float, hi: float) -> str:
    """The verdict word of an interval for target minus opponent."""
    if np.isnan(lo) or np.isnan(hi):
        return WORDS[2]
    return WORDS[0] if lo > 0 else WORDS[1] if hi < 0 else WORDS[2]


def seed_query_interval(
    a: np.ndarray,
    b: np.ndarray,
    level: float = 0.95,
    *,
    fixed: tuple[bool, bool] = (False, False),
) -> tuple[float, float, float]:
    """Difference of the grand means of ``a`` and ``b`` (seeds x queries, the same queries in the
    same order) and its interval over seeds and queries together (see the module's docstring).

    ``fixed``: which of the two does not depend on the seed (its seed term is 0). A seeded method
    with one seed gives no estimate of its seed spread: the bounds are NaN ("not resolved")."""
    a, b = np.atleast_2d(np.asarray(a, np.float64)), np.atleast_2d(np.asarray(b, np.float64))
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or a.shape[1] < 2:
        raise ValueError(
            f"seeds x queries arrays over the same queries (two or more) expected, got shapes "
            f"{a.shape} and {b.shape}"
        )
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("per-query values hold NaN or infinity; rerun the evaluate stage")
    diff = float(a.mean() - b.mean())
    terms = []  # (variance of the difference's estimate, its degrees of freedom)
    for x, is_fixed in zip((a, b), fixed, strict=True):
        if is_fixed:
            continue
        n = x.shape[0]
        if n < 2:
            return diff, float("nan"), float("nan")
        terms.append((float(x.mean(axis=1).var(ddof=1)) / n, n - 1))
    per_query = a.mean(axis=0) - b.mean(axis=0)
    terms.append((float(per_query.var(ddof=1)) / len(per_query), len(per_query) - 1))
    return welch_interval(diff, terms, level)


def welch_interval(
    diff: float, terms: list[tuple[float, int]], level: float = 0.95
) -> tuple[float, float, float]:
    """``diff`` and its Student-t interval from independent variance terms (each the variance it
    adds to ``diff`` and its degrees of freedom), the degrees of freedom of the sum by
    Welch-Satterthwaite; no spread at all gives the point itself."""
    from scipy import stats

    var = sum(v for v, _ in terms)
    if var == 0:
        return diff, diff, diff
    dof = var**2 / sum(v**2 / d for v, d in terms if v > 0)
    half = float(stats.t.ppf(0.5 + level / 2, dof)) * var**0.5
    return diff, diff - half, diff + half


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


#: a method's per-query arrays at a code length (seeds x queries), on the protocol of a part of
#: the results
Queries = Callable[[pd.DataFrame, str, int], dict[str, np.ndarray]]


def interval_text(lo_hi: tuple[float, float, float]) -> str:
    """'+1.23 [+0.45, +2.01]': a difference and its interval, in points (NaN bounds: one seed)."""
    diff, lo, hi = lo_hi
    if np.isnan(lo):
        return f"{diff:+.2f} [one seed: no interval]"
    return f"{diff:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def _rows(
    part: pd.DataFrame, target: str, queries: Queries, level: float, seed: int
) -> list[dict[str, Any]]:
    """The verdict rows of one dataset and protocol (``part`` of the results)."""
    rows = []
    whole = (part["topk"].isna() | (part["topk"] == part["n_db"])).all()
    specs = methods()
    fixed = {m: m in specs and not specs[m].seeded for m in part["method"].drop_duplicates()}
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
                qa = queries(part, target, int(bits))[key] * 100
                qb = queries(part, other, int(bits))[key] * 100
                both = seed_query_interval(qa, qb, level, fixed=(fixed[target], fixed[other]))
                models = paired_bootstrap(qa.mean(axis=0) - qb.mean(axis=0), level, seed=seed)
                rows.append(
                    {
                        "dataset": part["dataset"].iloc[0],
                        "protocol": part["protocol"].iloc[0],
                        "metric": label,
                        "bits": int(bits),
                        "vs": other,
                        "seeds": f"{len(qa)} / {len(qb)}",
                        target: cell(a),
                        "opponent": cell(b),
                        "difference [95% CI, seeds and queries]": interval_text(both),
                        **dict(zip(NUMBERS, both, strict=True)),
                        "verdict": f"{target} {word(both[1], both[2])}",
                        "these models only [95% CI, queries]": interval_text(models),
                        "these models only": f"{target} {word(models[1], models[2])}",
                    }
                )
    return rows


#: the verdict's difference and interval as numbers (reports/verdict.csv, read by
#: ``python -m usdh compare``); the Markdown table shows them as text
NUMBERS = ("difference", "lo", "hi")


def verdict_table(
    root: Path, df: pd.DataFrame, target: str = "usdh", level: float = 0.95, seed: int = 0
) -> pd.DataFrame:
    """``target`` against every other method, per protocol, metric and code length: both methods'
    mean ± std over seeds, the difference of their means with the interval over seeds and queries
    (:func:`seed_query_interval`) and the word it decides (:data:`WORDS`), then the interval over
    queries alone (seeds averaged per query, paired bootstrap) and its word, which hold for these
    trained models only. A protocol whose cut-off is the whole database has its mAP once."""
    if target not in set(df["method"]):
        return pd.DataFrame()
    loaded: dict[tuple[str, str, str, int], dict[str, np.ndarray]] = {}

    def queries(part: pd.DataFrame, method: str, bits: int) -> dict[str, np.ndarray]:
        key = (str(part["dataset"].iloc[0]), str(part["protocol"].iloc[0]), method, bits)
        if key not in loaded:  # each run's file is read once, not once per metric
            loaded[key] = per_seed(root, part, method, bits)
        return loaded[key]

    rows = []
    for _, part in df.groupby(["dataset", "protocol"], sort=False):
        rows += _rows(part, target, queries, level, seed)
    return pd.DataFrame(rows)


def verdict_grid(verdict: pd.DataFrame, notes: dict[str, str] | None = None) -> pd.DataFrame:
    """The verdict of one protocol as (metric, opponent) rows and one column per code length;
    ``notes`` adds a remark to an opponent's name (``cibhash (trains on ...)``)."""
    notes = notes or {}
    verdict = verdict.assign(vs=[f"{m} ({notes[m]})" if m in notes else m for m in verdict["vs"]])
    v = verdict.assign(
        cell=[
            f"{d} {w.split(' ', 1)[1]}"
            for d, w in zip(
                verdict["difference [95% CI, seeds and queries]"], verdict["verdict"], strict=True
            )
        ]
    )
    grid = v.pivot_table(
        index=["metric", "vs"], columns="bits", values="cell", aggfunc="first", sort=False
    )
    grid.columns = [f"{b} bits" for b in grid.columns]
    return grid.reset_index()


def verdict_section(
    df: pd.DataFrame, verdict: pd.DataFrame, target: str, notes: dict[str, str] | None = None
) -> list[str]:
    """The README's verdict: how it is decided, then one grid per protocol (``notes``: remarks
    on opponents, :func:`verdict_grid`)."""
    lines = [
        f"## Verdict: {target} against each method",
        "",
        f"Difference of the means, {target} minus the other method, in points (%), over every "
        "seed and test query, with a 95% interval that counts both the training seed and the "
        "query: another set of seeds and another draw of queries could give another figure, "
        "and the interval says how far (Student's t over the spread of each method's per-seed "
        "means and of the per-query differences, Welch-Satterthwaite degrees of freedom; "
        "methods that do not depend on the seed, PCAH and SH, have no seed term; "
        "`usdh/report/verdict.py`, coverage checked by simulation in docs/reliability.md). "
        "'wins'/'loses' when the interval excludes 0, else 'not resolved': an interval that "
        "contains 0 does not show the methods equal. The mAP figures are the tie-aware ones "
        "(independent of how the database is stored); on a protocol whose cut-off is the "
        "whole database, mAP appears once. Precision within radius 2 counts an empty lookup "
        "as 0. `tables/verdict.md` also gives each method's mean ± std over seeds and the "
        "narrower interval over queries alone, which holds only for these trained models.",
        "",
    ]
    for protocol in df["protocol"].drop_duplicates():
        part = verdict[verdict["protocol"] == protocol]
        if len(part):
            lines += section(f"### {protocol_title(df, protocol)}", verdict_grid(part, notes))
    return lines
