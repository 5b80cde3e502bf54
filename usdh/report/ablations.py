"""The ablations: USDH with one criterion switched off or reweighted, beside the full objective
(the main experiment's runs), on the main protocol."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from usdh.layout import find_runs
from usdh.report.figures import pyplot, savefig
from usdh.report.markdown import section
from usdh.report.results import by_bits, fmt, mean_std, run_records

__all__ = [
    "ABLATION_COLUMNS",
    "ablation_figure",
    "ablation_table",
    "ablations_section",
    "collect_ablations",
]

ABLATION_COLUMNS = ["dataset", "variant", "bits", "seed", "mAP", "mAP_tie_aware", "mAP_all"]


def collect_ablations(
    root: str | Path, results: pd.DataFrame, method: str = "usdh"
) -> pd.DataFrame:
    """One row per ablation run, plus the ``full`` objective: the main experiment's runs of
    ``method`` on the same datasets (same parameters, so the same numbers)."""
    records = run_records(root, "ablations")
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
    s = mean_std(df, ["dataset", "variant", "bits"], "mAP")
    full = s[s["variant"] == "full"].set_index(["dataset", "bits"])["mean"]
    cells = []
    for r in s.itertuples():
        cell = fmt(r.mean, r.std, r.count)
        if r.variant != "full" and (r.dataset, r.bits) in full.index:
            cell += f" ({(r.mean - full[(r.dataset, r.bits)]) * 100:+.2f})"
        cells.append(cell)
    s["cell"] = cells
    return by_bits(s, ["dataset", "variant"])


def ablation_figure(df: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Per dataset: each variant's mAP as bars, one per code length, with the std over seeds."""
    plt = pyplot()

    written = []
    for dataset, part in df.groupby("dataset", sort=False):
        s = mean_std(part, ["variant", "bits"], "mAP")
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


def ablations_section(table: pd.DataFrame, main: str) -> list[str]:
    """The README's ablation table and what each variant changes."""
    return section(
        "## Ablations: USDH without each criterion (mAP %, change from the full objective)",
        table,
        f"On the main protocol (`{main}`). `full` is the main table's USDH; `no_<term>` "
        "switches one term off (weight 0), `semantic_only` keeps the semantic term alone, "
        "`semantic_weight_<w>` changes its weight (the default is chosen on a validation "
        "split, docs/usdh.md), `bihalf_binarizer` trains USDH's objective on the bi-half "
        "layer's codes instead of its relaxed codes, `init_itq` starts the linear head from "
        "ITQ's projection. Same seeds and training images; the change is not a verdict (no "
        "interval), and no variant was chosen on these test-query numbers.",
    )
