"""Build the report: each section's tables and figures in turn, then the README that shows them in
reading order (usdh.report.readme).

All or nothing: the report is built in a hidden folder beside reports/ (``.reports.*.tmp``) and
its outputs are moved into reports/ only once every one of them is written, so a missing or
damaged input leaves reports/ as it was. reports/ also holds committed inputs the report reads
(``validation/``, ``hardware.csv``, ``machines.csv``): they are read where they are and never
moved.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from usdh.io import atomic_path, sweep
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
from usdh.report.settings import (
    across_figure,
    across_section,
    across_table,
    settings_training,
    verdict_in_words,
)
from usdh.report.training import cost_figure, training_figures, training_table
from usdh.report.verdict import NUMBERS, verdict_table

__all__ = ["OUTPUTS", "build_report", "staged_report", "write_tables"]

#: what the report writes under reports/: files, and the folders replaced whole (the README
#: last, once the figures it shows are in place)
FOLDERS = ("tables", "figures")
OUTPUTS = (
    "results.csv",
    "ablations.csv",
    "matched.csv",
    "verdict.csv",
    "classification.csv",
    "calibration.csv",
    *FOLDERS,
    "README.md",
)


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


def _move_in(stage: Path, reports_root: Path, names: list[str]) -> None:
    """Move each of ``names`` from ``stage`` into ``reports_root``, replacing the old one (a
    folder whole). The old ones wait in a hidden folder until every move is done; if one fails,
    those already moved are put back."""
    reports_root.mkdir(parents=True, exist_ok=True)
    trash = reports_root.parent / f".{reports_root.name}.old-{uuid.uuid4().hex[:8]}"
    trash.mkdir()
    kept: list[str] = []  # old outputs moved to the trash
    placed: list[str] = []  # new outputs moved into reports_root
    try:
        for name in names:
            target = reports_root / name
            if target.exists() or target.is_symlink():
                os.replace(target, trash / name)
                kept.append(name)
            os.replace(stage / name, target)
            placed.append(name)
    except BaseException:
        for name in reversed(placed):
            os.replace(reports_root / name, stage / name)
        for name in reversed(kept):
            os.replace(trash / name, reports_root / name)
        trash.rmdir()
        raise
    shutil.rmtree(trash, ignore_errors=True)


@contextlib.contextmanager
def staged_report(reports_root: str | Path) -> Iterator[Path]:
    """Yield an empty hidden folder beside ``reports_root`` to write the report's outputs in;
    only if the block succeeds is each output there (:data:`OUTPUTS`, and whatever else the
    block wrote) moved into ``reports_root``, the folders replacing theirs whole. On failure
    ``reports_root`` is left as it was."""
    reports_root = Path(reports_root)
    reports_root.parent.mkdir(parents=True, exist_ok=True)
    sweep(reports_root.parent, reports_root.name)  # what a killed report left
    stage = Path(
        tempfile.mkdtemp(dir=reports_root.parent, prefix=f".{reports_root.name}.", suffix=".tmp")
    )
    try:
        for folder in FOLDERS:
            (stage / folder).mkdir()
        yield stage
        written = {p.name for p in stage.iterdir()}
        names = [n for n in OUTPUTS if n in written]
        names = [*names, *sorted(written - set(names))]
        if "README.md" in names:  # last: what it shows is in place before it
            names = [*(n for n in names if n != "README.md"), "README.md"]
        _move_in(stage, reports_root, names)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def build_report(
    root: str | Path,
    reports_root: str | Path,
    context: dict[str, Any],
    also: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Write results.csv, ablations.csv, classification.csv, tables/ and figures/ under
    ``reports_root`` and the README, from the metrics, per-query files, curves and fit records of
    the project folder ``root`` (and its prepared images, for the examples); return what was
    written. ``context``: the setup to state, ``target`` (the judged method), ``protocol`` (the
    main one), ``bits`` (the per-class and example figures' code length), and
    ``backbone_images_per_s``. ``also``: more text files to write beside them (name -> text).

    All or nothing (:func:`staged_report`): if any input is missing or damaged, nothing under
    ``reports_root`` changes."""
    reports_root = Path(reports_root)
    with staged_report(reports_root) as stage:
        summary = _build(Path(root), stage, reports_root, context)
        for name, text in (also or {}).items():
            _write_text(stage / name, text)
    shown = [str(reports_root / Path(p).relative_to(stage)) for p in summary["figures"]]
    return {**summary, "figures": shown}


def _grouped(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The frames (each with a ``group`` column) as one, ``group`` first: the key of every row
    of results.csv and verdict.csv."""
    out = pd.concat(frames, ignore_index=True)
    return out[["group", *(c for c in out.columns if c != "group")]]


def _build(root: Path, reports_root: Path, inputs: Path, context: dict[str, Any]) -> dict[str, Any]:
    """:func:`build_report`, writing into ``reports_root`` (the staging folder) and reading the
    committed inputs of the reports folder (hardware.csv, machines.csv) from ``inputs``."""
    figures_dir = reports_root / "figures"
    df = collect_results(root, context.get("protocol"))
    target = context.get("target", "usdh")
    # every setting's rows: the retrieval table's protocols, then the entries of `settings`
    every = _grouped(
        [
            df.assign(group="retrieval"),
            collect_results(root, group="settings").assign(group="settings"),
        ]
    )
    _write_csv(every, reports_root / "results.csv")
    protocols = list(df["protocol"].drop_duplicates())
    main = context.get("protocol") if context.get("protocol") in protocols else protocols[0]
    tables, cut = _results_tables(root, df, context, target)
    # the verdict with its numbers, for `python -m usdh compare`; the tables show them as text
    verdict = tables.get("verdict", pd.DataFrame(columns=["protocol", *NUMBERS]))
    settings = every[every["group"] == "settings"]
    verdicts = [verdict.assign(group="retrieval")]
    if len(settings) and target in set(settings["method"]):
        verdicts.append(verdict_table(root, settings, target).assign(group="settings"))
    all_verdicts = _grouped(verdicts)
    _write_csv(all_verdicts, reports_root / "verdict.csv")
    if "verdict" in tables:
        tables["verdict"] = verdict.drop(columns=list(NUMBERS))
    figures = {"protocol": protocol_figures(df, root, figures_dir, summarise, target)}
    n_settings = len(every[["group", "dataset", "protocol"]].drop_duplicates())
    if n_settings > 1 and "verdict" in tables:
        across = across_table(all_verdicts, every, target)
        tables["across_settings"] = across
        figures["settings"] = across_figure(every, figures_dir, int(context.get("bits", 32)))
        context = {
            **context,
            "in_words": verdict_in_words(across, target, n_settings),
            "across": across_section(across, settings_training(every), target),
        }
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
    hardware = read_hardware(inputs / "hardware.csv")
    if hardware is not None:
        machines = inputs / "machines.csv"
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
