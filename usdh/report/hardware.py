"""The report's Hardware section: what changes when the pipeline is regenerated on another CPU
model, as recorded by ``python -m usdh compare A B --record`` in reports/hardware.csv, and the
contract that holds (bitwise on one CPU model with the same software, reports/machines.csv)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from usdh.report.markdown import section

__all__ = ["hardware_section", "hardware_table", "read_hardware"]


def read_hardware(path: Path) -> pd.DataFrame | None:
    """The recorded cross-machine comparisons (None: none recorded)."""
    if not path.is_file():
        return None
    df = pd.read_csv(path)
    return df if len(df) else None


def hardware_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per method, one column per recorded comparison: the largest change of any of the
    method's runs' mAP figures between the two machines (points), and where."""
    label = [
        f"{a} → {b} ({fa} → {fb}; {f})"
        for a, b, fa, fb, f in zip(
            df["a"], df["b"], df["a_machine"], df["b_machine"], df["features"], strict=True
        )
    ]
    cells = [f"{v:+.2f} ({w})" for v, w in zip(df["largest"], df["where"], strict=True)]
    wide = df.assign(comparison=label, cell=cells).pivot_table(
        index="method", columns="comparison", values="cell", aggfunc="first", sort=False
    )
    # the methods that move most first (by their largest change anywhere)
    order = df.assign(size=df["largest"].abs()).groupby("method")["size"].max()
    wide = wide.loc[order.sort_values(ascending=False).index]
    return wide.fillna("-").reset_index()


def hardware_section(
    df: pd.DataFrame, results: pd.DataFrame, machines: pd.DataFrame | None
) -> list[str]:
    """The README's Hardware section: the contract, the recorded changes, and on how many
    machines the present verdict has been computed."""
    kinds = sorted(str(c) for c in results.get("cpu_id", pd.Series(dtype=str)).dropna().unique())
    verdicts = []
    for r in df.drop_duplicates(["a", "b"]).itertuples():
        n = r.verdict_cells_changed
        what = "not recorded (a side has no reports/verdict.csv)" if pd.isna(n) else int(n)
        verdicts.append(f"{r.a} → {r.b}: verdict cells that changed word or sign: {what}")
    rows = 0 if machines is None else len(machines)
    models = 0 if machines is None or "cpu_id" not in machines else machines["cpu_id"].nunique()
    pinned = (
        0 if machines is None or "pin" not in machines else int((machines["pin"] != "none").sum())
    )
    text = (
        "The contract (README, 'Reproducibility: the contract'): on the same CPU model with the "
        "same software every stage writes the same bytes (checked on each machine kind by "
        f"`python -m usdh fingerprint` against reports/machines.csv: {rows} row(s) of "
        f"{models} CPU model(s), {pinned} of them under a pin of the math libraries, README); on "
        "another CPU model the shallow methods agree to the last digits and the deep heads move "
        "by up to the changes below, the same order as their seed-to-seed spread, which is why "
        "the verdict's interval counts the seed. Each column compares two full regenerations "
        "of the same code on two machines (`python -m usdh compare A B --record`): the largest "
        "change of any run's mAP figure (any cut-off, tie-aware or not), in points, and where. "
        + " ".join(f"{v}." for v in verdicts)
        + f" The results of this report were computed on {len(kinds)} CPU model(s) "
        f"({', '.join(kinds) or 'not recorded'}). A verdict cell whose interval lies closer to 0 "
        "than the changes above may read otherwise on another CPU model; `compare` lists such "
        "cells when two regenerations are compared."
    )
    return section("## Hardware: what another CPU model changes", hardware_table(df), text)
