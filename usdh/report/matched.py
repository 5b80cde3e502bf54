"""The verdict on matched data: a method that trains on a few images (CIBHash learns from the
5,000 images of its bank of augmented views) against the others trained on the same images (the
ablation variants with ``train_on``), beside the same comparison with the others on every
training image."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from usdh.layout import Run
from usdh.registry import methods
from usdh.report.ablations import ablation_groups, per_query_ap, run_record
from usdh.report.markdown import section
from usdh.report.verdict import interval_text, seed_query_interval, word

__all__ = ["matched_display", "matched_section", "matched_table"]

#: the verdict's main metric: per-query tie-aware AP at the protocol's cut-off
KEY = "ap_tie_aware"


def matched_table(
    root: str | Path, reference: str = "cibhash", level: float = 0.95
) -> pd.DataFrame:
    """Per matched-data variant and code length: the method minus ``reference`` (its main runs),
    trained on the reference's images (the variant) and on the whole pool (the main runs), each
    with the verdict's interval over seeds and queries and its word. The same seeds are used on
    both sides of the full-data comparison as on the matched one."""
    root = Path(root)
    specs = methods()
    rows = []
    for (dataset, protocol, _variant, bits), runs in ablation_groups(root):
        if not all(r.metrics.is_file() for r in runs):
            continue
        record = run_record(runs[0])
        part, method = record.get("train_on"), record["method"]
        if part is None:
            continue
        # the main runs of the reference and of the method with the variant's seeds
        seeds = sorted(r.seed for r in runs)
        ref, full = (
            [Run("retrieval", dataset, protocol, m, bits, s, root) for s in seeds]
            for m in (reference, method)
        )
        # runs that were never made are left out; a run with metrics but no per-query file is
        # an error (per_query_ap names it)
        ref = [r for r in ref if r.metrics.is_file()]
        full = [r for r in full if r.metrics.is_file()]
        if not ref or len(full) != len(runs):
            continue
        fixed = (not specs[method].seeded, not specs[reference].seeded)
        q_ref = per_query_ap(ref, KEY)
        row = {
            "dataset": dataset,
            "protocol": protocol,
            "method": method,
            "bits": bits,
            "train_on": part,
            "seeds": f"{len(runs)} / {len(ref)}",
        }
        for label, q in (("matched", per_query_ap(runs, KEY)), ("full", per_query_ap(full, KEY))):
            diff, lo, hi = seed_query_interval(q, q_ref, level, fixed=fixed)
            row[f"{label}_change"], row[f"{label}_lo"], row[f"{label}_hi"] = diff, lo, hi
            row[label] = f"{interval_text((diff, lo, hi))} {word(lo, hi)}"
        rows.append(row)
    return pd.DataFrame(rows)


def matched_display(table: pd.DataFrame, reference: str = "cibhash") -> pd.DataFrame:
    """The table as the README shows it: the two cells of each method and code length."""
    return table[["protocol", "method", "bits", "full", "matched"]].rename(
        columns={
            "full": "others on every training image",
            "matched": f"others on {reference}'s images",
        }
    )


def matched_section(shown: pd.DataFrame, reference: str = "cibhash") -> list[str]:
    """The README's matched-data verdict (:func:`matched_display`): one row per method and code
    length."""
    protocols = ", ".join(f"`{p}`" for p in dict.fromkeys(shown["protocol"]))
    return section(
        f"## Matched data: each method against {reference} on {reference}'s own training images",
        shown,
        f"{reference} trains on the images of its bank of augmented views only (the protocol's "
        f"`augmentation_subset`, 5,000 of `deepbit`'s 50,000), every other method on all of "
        "them, so the verdict above compares unequal training sets. Here each method is also "
        f"trained on exactly {reference}'s images (the ablation variants `<method>_matched`, "
        "same seeds; rotated views only of those images that have them, as in the full runs). "
        f"Each cell: the method minus {reference}, mAP at the cut-off (tie-aware), in points, "
        "with the verdict's 95% interval over seeds and queries, and the word it decides "
        f"(for the method: 'wins' means it beats {reference}). On {protocols}.",
    )
