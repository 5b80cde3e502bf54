"""Collect metrics into one table, summarise over seeds, write tables, figures and the README."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from usdh.io import atomic_path

__all__ = ["REPORTED_CIFAR10", "build_report", "collect_results", "summarise"]

#: mAP@1000 in % on CIFAR-10 (10,000 queries, 50,000 database) at 16 / 32 / 64 bits, as listed in
#: DeepBit's public README (Lin et al., CVPR 2016). USDH's own numbers are not available here.
REPORTED_CIFAR10: dict[str, tuple[float, float, float]] = {
    "lsh": (12.55, 13.76, 15.07),
    "sh": (12.95, 14.09, 13.89),
    "pcah": (12.91, 12.60, 12.10),
    "itq": (15.67, 16.20, 16.64),
    "deepbit": (19.43, 24.86, 27.73),
}
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
    "n_query",
    "n_db",
]
METHOD_ORDER = ["lsh", "pcah", "itq", "sh", "deepbit", "usdh"]


def collect_results(metrics_root: str | Path) -> pd.DataFrame:
    """One row per metrics JSON (dataset x method x bits x seed), plus precision@N columns."""
    rows = []
    for path in sorted(Path(metrics_root).glob("*/*/*/*.json")):
        m = json.loads(path.read_text())
        row = {c: m.get(c) for c in COLUMNS}
        for n, p in (m.get("precision_at_n") or {}).items():
            row[f"P@{n}"] = p
        rows.append(row)
    if not rows:
        raise ValueError(
            f"no metrics files under {metrics_root}; run the evaluate stages first (dvc repro)"
        )
    df = pd.DataFrame(rows)
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    df["_order"] = df["method"].map(lambda m: order.get(m, len(order)))
    df = df.sort_values(["dataset", "protocol", "_order", "method", "bits", "seed"])
    return df.drop(columns="_order").reset_index(drop=True)


def summarise(df: pd.DataFrame, value: str = "mAP") -> pd.DataFrame:
    """Mean and sample std over seeds, per dataset x protocol x method x bits."""
    keys = ["dataset", "protocol", "method", "bits"]
    g = df.groupby(keys, sort=False)[value]
    out = g.agg(["mean", "std", "count"]).reset_index()
    out["std"] = out["std"].fillna(0.0)
    return out


def _fmt(mean: float, std: float, count: int, scale: float = 100.0) -> str:
    if count > 1:
        return f"{mean * scale:.2f} ± {std * scale:.2f}"
    return f"{mean * scale:.2f}"


def main_table(df: pd.DataFrame, value: str = "mAP") -> pd.DataFrame:
    """Methods as rows, bit lengths as columns, 'mean ± std' of ``value`` in %."""
    s = summarise(df, value)
    s["cell"] = [_fmt(m, sd, c) for m, sd, c in zip(s["mean"], s["std"], s["count"], strict=True)]
    table = s.pivot_table(
        index=["dataset", "protocol", "method"], columns="bits", values="cell", aggfunc="first"
    )
    table.columns = [f"{b} bits" for b in table.columns]
    table = table.reset_index()
    rank = {m: i for i, m in enumerate(METHOD_ORDER)}
    table["_rank"] = table["method"].map(lambda m: rank.get(m, len(rank)))
    return table.sort_values(["dataset", "protocol", "_rank"]).drop(columns="_rank")


def reported_vs_reproduced(df: pd.DataFrame) -> pd.DataFrame:
    """DeepBit's listed CIFAR-10 mAP@1000 beside ours (mean over seeds), in %."""
    ours = summarise(df[(df["dataset"] == "cifar10") & (df["protocol"] == "deepbit")])
    rows = []
    for method in METHOD_ORDER:
        row: dict[str, Any] = {"method": method}
        for i, bits in enumerate(REPORTED_BITS):
            reported = REPORTED_CIFAR10.get(method)
            row[f"reported {bits}"] = f"{reported[i]:.2f}" if reported else "n/a"
            hit = ours[(ours["method"] == method) & (ours["bits"] == bits)]
            row[f"ours {bits}"] = f"{hit['mean'].iloc[0] * 100:.2f}" if len(hit) else "-"
        rows.append(row)
    return pd.DataFrame(rows)


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


def _savefig(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        # no timestamp in the file, so an unchanged report is byte-identical
        fig.savefig(fh, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


def write_figures(df: pd.DataFrame, metrics_root: Path, out_dir: Path) -> list[Path]:
    """mAP against bits, and PR and precision@N curves per bit length (seed-averaged)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for (dataset, protocol), part in df.groupby(["dataset", "protocol"], sort=False):
        s = summarise(part)
        fig, ax = plt.subplots(figsize=(5, 3.6))
        for method, g in s.groupby("method", sort=False):
            ax.errorbar(
                g["bits"], g["mean"] * 100, yerr=g["std"] * 100, marker="o", label=method, capsize=3
            )
        ax.set_xscale("log", base=2)
        bits = sorted(s["bits"].unique())
        ax.set_xticks(bits, [str(b) for b in bits])
        topk = part["topk"].iloc[0]
        ax.set_xlabel("bits")
        ax.set_ylabel(f"mAP@{topk if topk else 'all'} (%)")
        ax.set_title(f"{dataset} ({protocol})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        path = out_dir / f"map_vs_bits_{dataset}_{protocol}.png"
        _savefig(fig, path)
        written.append(path)
        for bits_value in bits:
            fig, (ax_pr, ax_pn) = plt.subplots(1, 2, figsize=(9, 3.6))
            for method in part["method"].drop_duplicates():
                sel = part[(part["method"] == method) & (part["bits"] == bits_value)]
                pr, pn = _mean_curves(metrics_root, dataset, method, bits_value, sel["seed"])
                if pr is not None:
                    ax_pr.plot(pr["recall"], pr["precision"], marker=".", label=method)
                if pn is not None:
                    ax_pn.plot(pn["n"], pn["precision"], marker="o", label=method)
            ax_pr.set(
                xlabel="recall",
                ylabel="precision",
                title=f"PR by Hamming radius, {bits_value} bits",
            )
            ax_pn.set(xlabel="N", ylabel="precision@N", title=f"precision@N, {bits_value} bits")
            for ax in (ax_pr, ax_pn):
                ax.grid(alpha=0.3)
                ax.legend(fontsize=8)
            path = out_dir / f"curves_{dataset}_{protocol}_{bits_value}bits.png"
            _savefig(fig, path)
            written.append(path)
    return written


def _mean_curves(
    root: Path, dataset: str, method: str, bits: int, seeds: Sequence[int]
) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    prs, pns = [], []
    for seed in seeds:
        base = root / dataset / method / str(bits)
        if (base / f"{seed}_pr.csv").exists():
            prs.append(pd.read_csv(base / f"{seed}_pr.csv"))
        if (base / f"{seed}_pn.csv").exists():
            pns.append(pd.read_csv(base / f"{seed}_pn.csv"))
    pr = pd.concat(prs).groupby("radius").mean().reset_index() if prs else None
    pn = pd.concat(pns).groupby("n").mean().reset_index() if pns else None
    return pr, pn


def build_report(
    metrics_root: str | Path, reports_root: str | Path, context: dict[str, Any]
) -> dict[str, Any]:
    """Write results.csv, tables/ and figures/ under ``reports_root``; return what was written."""
    metrics_root, reports_root = Path(metrics_root), Path(reports_root)
    df = collect_results(metrics_root)
    with atomic_path(reports_root / "results.csv") as tmp:
        df.to_csv(tmp, index=False, float_format="%.6f")
    tables = {
        "main_map": main_table(df, "mAP"),
        "main_map_tie_aware": main_table(df, "mAP_tie_aware"),
        "main_map_all": main_table(df, "mAP_all"),
        "reported_vs_reproduced": reported_vs_reproduced(df),
    }
    write_tables(tables, reports_root / "tables")
    figures = write_figures(df, metrics_root, reports_root / "figures")
    tie_gap = float(np.max(np.abs(df["mAP"] - df["mAP_tie_aware"])))
    summary = {"rows": len(df), "figures": [str(p) for p in figures], "max_tie_gap": tie_gap}
    _write_text(
        reports_root / "README.md",
        render_readme(df, tables, figures, reports_root, context, tie_gap),
    )
    return summary


def render_readme(
    df: pd.DataFrame,
    tables: dict[str, pd.DataFrame],
    figures: list[Path],
    reports_root: Path,
    context: dict[str, Any],
    tie_gap: float,
) -> str:
    """The report a reader opens first: setup, main tables, figures, reported vs reproduced."""
    seeds = sorted(int(s) for s in df["seed"].unique())
    sources = ", ".join(sorted(str(s) for s in df["source"].dropna().unique()))
    lines = [
        "# Results",
        "",
        "Written by `python -m usdh report` (the `report` stage of `dvc repro`) from `metrics/`"
        " only.",
        "",
        "## Setup",
        "",
        f"* Data: {sources}; protocol(s): {', '.join(sorted(df['protocol'].unique()))}.",
        f"* Backbone features: {context.get('backbone')} at {context.get('input_size')} px "
        f"({context.get('weights')} weights), frozen.",
        f"* Seeds: {', '.join(map(str, seeds))} (tables show mean ± sample std over seeds when "
        "there is more than one).",
        f"* Software: {context.get('versions')}; device: {context.get('device')}.",
        "* Ranking ties are broken by database index (the usual convention); the tie-aware table "
        "gives the exact expected value over all orders of tied items. Largest gap between the two "
        f"over all rows: {tie_gap * 100:.2f} points of mAP.",
        "",
        "## mAP at the protocol's cut-off (%)",
        "",
        tables["main_map"].to_markdown(index=False, disable_numparse=True),
        "",
        "## The same, tie-aware (%)",
        "",
        tables["main_map_tie_aware"].to_markdown(index=False, disable_numparse=True),
        "",
        "## mAP over the whole database (%)",
        "",
        tables["main_map_all"].to_markdown(index=False, disable_numparse=True),
        "",
        "## Reported vs reproduced: CIFAR-10, mAP@1000 (%)",
        "",
        "Reported numbers are those listed in DeepBit's public README (10,000 queries, 50,000 "
        "database). USDH's own numbers are not available here, so none are shown. Our setting "
        "differs: the images are the lossy JPEG copy of CIFAR-10, and every method here hashes "
        f"{context.get('backbone')} features at {context.get('input_size')} px, whereas the "
        "shallow baselines in that table used hand-crafted features and DeepBit fine-tuned "
        "VGG-16 at 224 px. The comparison shows the direction of effects, not equal numbers.",
        "",
        tables["reported_vs_reproduced"].to_markdown(index=False, disable_numparse=True),
        "",
        "## Figures",
        "",
    ]
    for fig in figures:
        rel = fig.relative_to(reports_root)
        lines.append(f"![{fig.stem}]({rel.as_posix()})")
        lines.append("")
    return "\n".join(lines)
