"""reports/README.md, the report a reader opens first: its sections in reading order (each section
module writes its own; the setup, the main tables and the figures are written here)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from usdh.registry import methods
from usdh.report.ablations import ablations_section
from usdh.report.calibration import calibration_section
from usdh.report.classification import classification_section
from usdh.report.diagnostics import diagnostics_section
from usdh.report.figures import caption
from usdh.report.lookup import lookup_section
from usdh.report.markdown import protocol_title, section
from usdh.report.matched import matched_section
from usdh.report.modes import low_seeds_section
from usdh.report.reported import reported_section
from usdh.report.selection import selection_section
from usdh.report.training import cost_section
from usdh.report.verdict import verdict_section

__all__ = ["render_readme"]

INTRO = [
    "# Results",
    "",
    "Written by `python -m usdh report` (the `report` stage of `dvc repro`) from the "
    "pipeline's files: `metrics/`, the per-query files (`queries/`), the curves (`plots/`), "
    "the fit records (`models/.../fit.json`) and, for the thumbnails and class names, the "
    "prepared images.",
    "",
]


@dataclass(frozen=True)
class _Figures:
    """The figures written, by group, shown as Markdown images with their captions."""

    paths: dict[str, list[Path]]
    reports_root: Path
    seeds: str

    def lines(self, group: str, kind: str = "") -> list[str]:
        """The figures of ``group`` whose file name starts with ``kind``."""
        return self.show([f for f in self.paths.get(group, []) if f.stem.startswith(kind)])

    def show(self, paths: Sequence[Path]) -> list[str]:
        lines = []
        for fig in paths:
            lines += [f"![{fig.stem}]({fig.relative_to(self.reports_root).as_posix()})", ""]
            lines += [caption(fig.stem, self.seeds), ""]
        return lines


def _validation_links(df: pd.DataFrame) -> list[str]:
    """Links to the selection records of each dataset and protocol of the results."""
    pairs = df[["dataset", "protocol"]].drop_duplicates().itertuples(index=False)
    return [f"[validation/{d}/{p}/README.md](validation/{d}/{p}/README.md)" for d, p in pairs]


def _deterministic(df: pd.DataFrame) -> list[str]:
    """Methods of the table that do not depend on the seed (``MethodSpec.seeded`` False): the
    pipeline runs them once per code length."""
    known = methods()
    return [m for m in df["method"].drop_duplicates() if m in known and not known[m].seeded]


def _machines(df: pd.DataFrame) -> str:
    """Which machine every number came from (results are bitwise repeatable only on one CPU
    model with the same software): one line when there is one, else which runs came from which."""
    if "cpu_id" not in df or df["cpu_id"].isna().all():
        return "* Machine: not recorded in the fit records (results made before they named it)."
    keys = ["cpu", "cpu_id", "isa", "cores", "software"]
    groups = list(df.fillna({k: "?" for k in keys}).groupby(keys, sort=False))
    features = sorted(str(c) for c in df["features_cpu_id"].dropna().unique())

    def name(key: tuple[Any, ...]) -> str:
        cpu, kind, isa, cores, software = key
        return f"{cpu} ({kind}; {isa}; {cores} cores), {software}"

    feats = f"Features computed on: {', '.join(features) or 'not recorded'}."
    if len(groups) == 1:
        return f"* Machine: every run was fitted on {name(groups[0][0])}. {feats}"
    parts = []
    for key, g in groups:
        runs = ", ".join(
            f"{m} ({', '.join(sorted(set(g[g['method'] == m]['protocol'])))})"
            for m in g["method"].drop_duplicates()
        )
        parts.append(f"{name(key)}: {len(g)} runs: {runs}")
    return (
        f"* Machines: **these results mix {len(groups)} machines or software sets**, and deep "
        "methods' numbers move between CPU models: " + "; ".join(parts) + f". {feats}"
    )


def _setup(df: pd.DataFrame, context: dict[str, Any], main: str, tie_gap: float) -> list[str]:
    """Data, protocols, features, seeds, software, tie rule and where hyperparameters came
    from."""
    seeds = ", ".join(map(str, sorted(int(s) for s in df["seed"].unique())))
    sources = ", ".join(sorted(str(s) for s in df["source"].dropna().unique()))
    protocols = list(df["protocol"].drop_duplicates())
    return [
        "## Setup",
        "",
        f"* Data: {sources}; protocols: "
        + "; ".join(protocol_title(df, p) for p in protocols)
        + f". The main protocol (ablations, diagnosis, per-class and example figures, model "
        f"selection) is `{main}`.",
        f"* Backbone features: {context.get('backbone')} at {context.get('input_size')} px "
        f"({context.get('weights')} weights), frozen.",
        f"* Seeds: {seeds} (tables show mean ± sample std over seeds when there is more than one).",
        _machines(df),
        f"* The report itself ran with {context.get('versions')}; device: {context.get('device')}.",
        "* Ranking ties are broken by database index (the usual convention); the tie-aware table "
        "gives the exact expected value over all orders of tied items. Largest gap between the two "
        f"over all rows: {tie_gap * 100:.2f} points of mAP.",
        "* Hyperparameters of the deep methods were chosen on the main protocol's validation "
        f"split ({', '.join(_validation_links(df[df['protocol'] == main]))}) and used unchanged "
        "on every protocol: no protocol's test queries were used for any choice.",
        "",
    ]


def _main_tables(df: pd.DataFrame, tables: dict[str, pd.DataFrame], cut: str) -> list[str]:
    """The three mAP tables; a footnote names the methods run once (no spread)."""
    cut_name = cut if cut != "mAP" else "mAP at the protocol's cut-off"
    fixed = _deterministic(df)
    footnote = (
        f"No spread: {', '.join(fixed)} make no random choice when fitting (a PCA and, for SH, "
        "the eigenfunctions of the training data), so every seed gives the same codes; the "
        "pipeline fits and evaluates them once per code length, and the verdict's interval has "
        "no seed term for them."
        if fixed
        else None
    )
    lines = section(f"## {cut_name} (%)", tables["main_map"], footnote)
    lines += section(f"## {cut_name}, tie-aware (%)", tables["main_map_tie_aware"])
    lines += section("## mAP over the whole database (%)", tables["main_map_all"])
    return lines


def _figures(figures: _Figures, target: str, crossings: Sequence[str] | None) -> list[str]:
    """The curves, where the judged method's mAP@k crosses another's, the per-class and
    example figures, PR by radius and mAP against code length."""
    lines = ["## Figures", ""]
    for kind in ("precision_at_n", "map_at_k"):
        lines += figures.lines("protocol", kind)
    if crossings:
        lines += [
            f"Where {target}'s mean mAP@k curve crosses another method's (between the two k "
            "shown; the grid is the figures'), so that which of the two ranks higher depends on "
            "the cut-off: " + "; ".join(crossings) + ". Everywhere else the order holds for every "
            "k from 100 to the whole database.",
            "",
        ]
    lines += figures.lines("per_class")
    lines += figures.lines("examples")
    for kind in ("pr_", "map_vs_bits"):
        lines += figures.lines("protocol", kind)
    return lines


def _analyses(
    tables: dict[str, pd.DataFrame], figures: _Figures, context: dict[str, Any], main: str
) -> list[str]:
    """The sections after the figures that exist for this run of the pipeline: AP per class,
    ablations, diagnosis, classification, calibration."""
    lines = []
    if "per_class" in tables:
        lines += section(
            f"### AP per query class at {context.get('bits_shown')} bits (%), `{main}`",
            tables["per_class"],
        )
    if "ablations" in tables:
        lines += ablations_section(tables["ablations"], main)
        lines += figures.lines("ablations")
    if "diagnostics" in tables:
        lines += diagnostics_section(tables["diagnostics"])
    if "classification" in tables:
        summary = context.get("classification_summary", "")
        lines += classification_section(tables["classification"], summary)
    if "calibration" in tables:
        lines += calibration_section(tables, context)
    return lines


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
    seeds = ", ".join(map(str, sorted(int(s) for s in df["seed"].unique())))
    shown = _Figures(figures, reports_root, seeds)
    target = context.get("target", "usdh")
    main = context.get("main", df["protocol"].iloc[0])
    lines = list(INTRO)
    lines += list(context.get("in_words") or [])
    if "verdict" in tables:
        # say in the cells that one opponent trained on fewer images, and where to look
        notes = (
            {"cibhash": "trains on 5,000 images: see matched data"} if "matched" in tables else {}
        )
        lines += verdict_section(df, tables["verdict"], target, notes)
        lines += shown.lines("seeds")
    if context.get("across"):
        lines += list(context["across"])
        lines += shown.lines("settings")
    if "low_seeds" in tables:
        cut = context.get("cut", "mAP")
        lines += low_seeds_section(tables["low_seeds"], main, f"{cut} (tie-aware)")
    if "matched" in tables:
        lines += matched_section(tables["matched"])
    lines += _setup(df, context, main, tie_gap)
    lines += _main_tables(df, tables, context.get("cut", "mAP"))
    if "training" in tables:
        lines += cost_section(tables["training"], context)
        lines += shown.lines("cost")
    if "hash_lookup" in tables:
        lines += lookup_section(tables["hash_lookup"], main)
        lines += shown.lines("protocol", "hash_lookup")
    lines += _figures(shown, target, context.get("crossings"))
    lines += _analyses(tables, shown, context, main)
    lines += reported_section(df, tables["reported_vs_reproduced"], context)
    lines += selection_section(context, shown.lines("selection"))
    if figures.get("training"):
        lines += ["## Training curves", "", *shown.lines("training")]
    lines += list(context.get("hardware") or [])
    if context.get("timings"):
        lines += ["## What the pipeline cost", "", str(context["timings"]), ""]
    return "\n".join(lines)
