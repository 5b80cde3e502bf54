"""Classification on codes: how much of the class information each method's codes keep, against
the same classifier on the real-valued features."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from usdh.io import read_json
from usdh.layout import features_references
from usdh.report.inputs import rerun
from usdh.report.markdown import section
from usdh.report.results import by_bits, fmt_cells, mean_std, method_rank, run_records

__all__ = [
    "CLASSIFICATION_COLUMNS",
    "accuracy_interval",
    "classification_section",
    "classification_summary",
    "classification_table",
    "collect_classification",
]

CLASSIFICATION_COLUMNS = ["dataset", "method", "bits", "seed", "accuracy", "C", "n_test"]


def collect_classification(root: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Per-run test accuracies of classifiers on codes, and the features reference per dataset."""
    rows = [
        {c: m.get(c) for c in CLASSIFICATION_COLUMNS} for m in run_records(root, "classification")
    ]
    refs = {}
    for path in features_references(Path(root)):
        m = read_json(path, rerun("classify-features"), ("dataset", "accuracy"))
        refs[m["dataset"]] = m
    df = pd.DataFrame(rows, columns=CLASSIFICATION_COLUMNS)
    df["_o"] = method_rank(df["method"])
    df = df.sort_values(["dataset", "_o", "bits", "seed"]).drop(columns="_o")
    return df.reset_index(drop=True), refs


def classification_table(df: pd.DataFrame, refs: dict[str, Any]) -> pd.DataFrame:
    """Methods as rows, code lengths as columns, accuracy 'mean ± std' in %; a last row per
    dataset for the real-valued features."""
    s = mean_std(df, ["dataset", "method", "bits"], "accuracy")
    s["cell"] = fmt_cells(s)
    table = by_bits(s, ["dataset", "method"])
    for dataset, ref in refs.items():
        row = {"dataset": dataset, "method": f"features ({ref.get('dim')}-d, real-valued)"}
        row.update({c: f"{ref['accuracy'] * 100:.2f}" for c in table.columns[2:]})
        table = pd.concat([table, pd.DataFrame([row])], ignore_index=True)
    return table


def accuracy_interval(
    a: pd.Series, b: pd.Series, n_test: int, level: float = 0.95
) -> tuple[float, float, float]:
    """Difference of two methods' mean test accuracies (per-seed values) and its interval over
    seeds and test images: each method's seed spread, plus the binomial variance of each
    accuracy on ``n_test`` images (the two methods' errors counted as independent, which
    overstates the variance of a difference on shared images: a conservative interval; the
    per-image predictions are not stored)."""
    from usdh.report.verdict import welch_interval

    diff = float(a.mean() - b.mean())
    terms = [(float(x.var(ddof=1)) / len(x), len(x) - 1) for x in (a, b) if len(x) > 1]
    binomial = sum(float(x.mean()) * (1 - float(x.mean())) for x in (a, b)) / n_test
    terms.append((binomial, n_test - 1))
    return welch_interval(diff, terms, level)


def classification_summary(df: pd.DataFrame, refs: dict[str, Any], target: str) -> str:
    """What the classification numbers show, in words, per dataset and code length: which
    methods ``target`` is resolved above and below (:func:`accuracy_interval`, 95%), and which
    not; no rank where the intervals do not resolve one; then the real-valued reference."""
    parts = []
    for (dataset, bits), g in df.groupby(["dataset", "bits"], sort=True):
        mine = g[g["method"] == target]["accuracy"]
        n_test = int(g["n_test"].dropna().min()) if g["n_test"].notna().any() else 0
        if mine.empty or n_test < 2:
            continue
        above, below, unresolved = [], [], []
        for other, h in g[g["method"] != target].groupby("method", sort=False):
            _, lo, hi = accuracy_interval(mine, h["accuracy"], n_test)
            (above if lo > 0 else below if hi < 0 else unresolved).append(str(other))
        said = [
            f"{dataset} at {bits} bits ({n_test} test images): {target} {mine.mean() * 100:.1f} %"
        ]
        said += [f"resolved above {', '.join(above)}"] if above else []
        said += [f"resolved below {', '.join(below)}"] if below else []
        said += [f"not resolved against {', '.join(unresolved)}"] if unresolved else []
        parts.append(", ".join(said))
    ref = "; ".join(
        f"the real-valued {r.get('dim')}-d features reach {r['accuracy'] * 100:.1f} %"
        for r in refs.values()
    )
    how = (
        " (95% intervals over seeds and test images, conservative: the test images are few, "
        "so a rank is stated only where the intervals resolve it)"
    )
    return "In these numbers" + how + ": " + "; ".join(parts) + (f"; {ref}." if ref else ".")


def classification_section(table: pd.DataFrame, summary: str) -> list[str]:
    """The README's classification table, how it was scored and ``summary`` (in words)."""
    return section(
        "## Classification on codes: test accuracy (%)",
        table,
        "A multinomial logistic regression on each method's codes (bits standardised), its "
        "regularisation chosen on the validation images, refitted on train + val, scored on "
        "test; the last row is the same classifier on the real-valued features. " + summary,
    )
