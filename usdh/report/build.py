"""Build the report: each section's tables and figures in turn, written under reports/, then the
README that shows them in reading order (usdh.report.readme)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from usdh.io import atomic_path
from usdh.report.ablations import (
    ablation_changes,
    ablation_figure,
    ablation_table,
    collect_ablations,
)
from usdh.report.calibration import calibration_report, read_calibration
from usdh.report.classification import (
    classification_summary,
    classification_table,
    collect_classification,
)
from usdh.report.diagnostics import diagnostics_table
from usdh.report.figures import map_crossings, protocol_figures, seed_figures
from usdh.report.hardware import hardware_section, read_hardware
from usdh.report.lookup import lookup_table
from usdh.report.matched import matched_display, matched_table
from usdh.report.modes import low_seeds
from usdh.report.queries import query_figures, shown_bits
from usdh.report.readme import render_readme
from usdh.report.reported import reported_vs_reproduced
from usdh.report.results import collect_results, main_tables, summarise
from usdh.report.selection import read_selection, selection_context, selection_figure
from usdh.report.training import cost_figure, training_figures, training_table
from usdh.report.verdict import NUMBERS, verdict_table

__all__ = ["build_report", "write_tables"]


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)  # full precision: rounding flips last digits


def write_tables(tables: dict[str, pd.DataFrame], out_dir: Path) -> None:
    """Each table as Markdown and LaTeX."""
    for name, table in tables.items():
        _write_text(
            out_dir / f"{name}.md", table.to_markdown(index=False, disable_numparse=True) + "\n"
        )
        _write_text(out_dir / f"{name}.tex", table.to_latex(index=False, escape=True))


def _results_tables(
    root: Path, df: pd.DataFrame, context: dict[str, Any], target: str
) -> tuple[dict[str, pd.DataFrame], str]:
    """The tables read off the results of every protocol (those with rows): main tables,
    reported vs reproduced, cost, verdict, hash lookup, diagnosis; and the main tables' cut-off."""
    tables, cut = main_tables(df)
    tables["reported_vs_reproduced"] = reported_vs_reproduced(df)
    optional = {
        "training": training_table(root, df, context.get("backbone_images_per_s")),
        "verdict": verdict_table(root, df, target),
        "hash_lookup": lookup_table(df),
        "diagnostics": diagnostics_table(root),
    }
    tables.update({name: table for name, table in optional.items() if len(table)})
    return tables, cut


def _ablations(
    root: Path, df: pd.DataFrame, reports_root: Path
) -> tuple[dict[str, pd.DataFrame], list[Path]]:
    """ablations.csv (a header alone when there are none), its table and figure, and the
    matched-data verdict (matched.csv) of the variants that train on another part of the split."""
    ablations = collect_ablations(root, df)
    _write_csv(ablations, reports_root / "ablations.csv")
    matched = matched_table(root)
    _write_csv(matched, reports_root / "matched.csv")
    if not len(ablations):
        return {}, []
    changes = ablation_changes(root)
    figures = ablation_figure(changes, reports_root / "figures")
    tables = {"ablations": ablation_table(ablations, changes)}
    if len(matched):
        tables["matched"] = matched_display(matched)
    return tables, figures


def _classification(
    root: Path, reports_root: Path, target: str
) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """classification.csv (a header alone when there is none), its table and summary."""
    classification, refs = collect_classification(root)
    _write_csv(classification, reports_root / "classification.csv")
    if not len(classification):
        return {}, {}
    table = classification_table(classification, refs)
    summary = classification_summary(classification, refs, target)
    return {"classification": table}, {"classification_summary": summary}


def _calibration(root: Path, reports_root: Path) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """calibration.csv (a header alone when there is none), its tables and counts."""
    calibration, train = read_calibration(root)
    _write_csv(calibration, reports_root / "calibration.csv")
    return calibration_report(calibration, train)


def build_report(
    root: str | Path, reports_root: str | Path, context: dict[str, Any]
) -> dict[str, Any]:
    """Write results.csv, ablations.csv, classification.csv, tables/ and figures/ under
    ``reports_root`` and the README, from the metrics, per-query files, curves and fit records of
    the project folder ``root`` (and its prepared images, for the examples); return what was
    written. ``context``: the setup to state, ``target`` (the judged method), ``protocol`` (the
    main one), ``bits`` (the per-class and example figures' code length), and
    ``backbone_images_per_s``."""
    root, reports_root = Path(root), Path(reports_root)
    figures_dir = reports_root / "figures"
    df = collect_results(root, context.get("protocol"))
    _write_csv(df, reports_root / "results.csv")
    target = context.get("target", "usdh")
    protocols = list(df["protocol"].drop_duplicates())
    main = context.get("protocol") if context.get("protocol") in protocols else protocols[0]
    tables, cut = _results_tables(root, df, context, target)
    # the verdict with its numbers, for `python -m usdh compare`; the tables show them as text
    verdict = tables.get("verdict", pd.DataFrame(columns=["protocol", *NUMBERS]))
    _write_csv(verdict, reports_root / "verdict.csv")
    if "verdict" in tables:
        tables["verdict"] = verdict.drop(columns=list(NUMBERS))
    figures = {"protocol": protocol_figures(df, root, figures_dir, summarise, target)}
    figures["seeds"] = seed_figures(df, f"{cut}_tie_aware", figures_dir)
    low = low_seeds(df, f"{cut}_tie_aware")
    if len(low):
        tables["low_seeds"] = low
    figures["cost"] = cost_figure(df, cut, figures_dir, target)
    main_part = df[df["protocol"] == main]
    bits = shown_bits(main_part, int(context.get("bits", 32)))
    per_query_tables, per_query_figures = query_figures(root, main_part, bits, figures_dir)
    tables.update(per_query_tables)
    figures.update(per_query_figures)
    ablation_tables, figures["ablations"] = _ablations(root, df, reports_root)
    classification_tables, classification_context = _classification(root, reports_root, target)
    calibration_tables, calibration_context = _calibration(root, reports_root)
    tables = {**tables, **ablation_tables, **classification_tables, **calibration_tables}
    context = {**context, **classification_context, **calibration_context}
    figures["training"] = training_figures(root, figures_dir, main)
    dataset = str(main_part["dataset"].iloc[0])
    selection = read_selection(root, dataset, main)
    figure = selection_figure(selection, figures_dir / f"selection_{dataset}_{main}.png")
    figures["selection"] = [figure] if figure else []
    if figure:
        context = {**context, "selection": selection_context(selection)}
    write_tables(tables, reports_root / "tables")
    tie_gap = float(np.max(np.abs(df["mAP"] - df["mAP_tie_aware"])))
    context = {**context, "main": main, "cut": cut, "bits_shown": bits}
    hardware = read_hardware(reports_root / "hardware.csv")
    if hardware is not None:
        machines = reports_root / "machines.csv"
        context["hardware"] = hardware_section(
            hardware, df, pd.read_csv(machines) if machines.is_file() else None
        )
    if target in set(df["method"]):
        context["crossings"] = map_crossings(root, df, target)
    every = [p for group in figures.values() for p in group]
    summary = {"rows": len(df), "figures": [str(p) for p in every], "max_tie_gap": tie_gap}
    _write_text(
        reports_root / "README.md",
        render_readme(df, tables, figures, reports_root, context, tie_gap),
    )
    return summary
