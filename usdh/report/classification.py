"""Classification on codes: how much of the class information each method's codes keep, against
the same classifier on the real-valued features."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from usdh.layout import features_references
from usdh.report.markdown import section
from usdh.report.results import by_bits, fmt_cells, mean_std, method_rank, run_records

__all__ = [
    "CLASSIFICATION_COLUMNS",
    "classification_section",
    "classification_summary",
    "classification_table",
    "collect_classification",
]

CLASSIFICATION_COLUMNS = ["dataset", "method", "bits", "seed", "accuracy", "C"]


def collect_classification(root: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Per-run test accuracies of classifiers on codes, and the features reference per dataset."""
    rows = [
        {c: m.get(c) for c in CLASSIFICATION_COLUMNS} for m in run_records(root, "classification")
    ]
    refs = {}
    for path in features_references(Path(root)):
        m = json.loads(path.read_text())
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


def classification_summary(df: pd.DataFrame, refs: dict[str, Any], target: str) -> str:
    """What the classification numbers show, in words: the best method and where ``target``
    ranks at each code length (by mean accuracy over seeds), and the real-valued reference."""
    s = mean_std(df, ["dataset", "method", "bits"], "accuracy")
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


def classification_section(table: pd.DataFrame, summary: str) -> list[str]:
    """The README's classification table, how it was scored and ``summary`` (in words)."""
    return section(
        "## Classification on codes: test accuracy (%)",
        table,
        "A multinomial logistic regression on each method's codes (bits standardised), its "
        "regularisation chosen on the validation images, refitted on train + val, scored on "
        "test; the last row is the same classifier on the real-valued features. " + summary,
    )
