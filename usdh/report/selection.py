"""How sensitive each deep method's validation score is to each knob of its selection budget,
read from the committed selection records (``reports/validation/<dataset>/<protocol>/<method>/``,
written by ``python -m usdh validate``; never the test queries)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from usdh.io import read_json
from usdh.report.figures import pyplot, savefig

__all__ = [
    "read_selection",
    "selection_context",
    "selection_figure",
    "selection_section",
]

VALIDATION = Path("reports") / "validation"


def read_selection(root: Path, dataset: str, protocol: str) -> pd.DataFrame:
    """One row per selection run: method, setting number, seed, bits, each knob's value (as
    text) and the validation mAP at the protocol's cut-off (NaN: the run diverged)."""
    folder = root / VALIDATION / dataset / protocol
    rows = []
    for path in sorted(folder.glob("*/*.json")) if folder.is_dir() else []:
        fix = (
            f"restore it from git (git checkout -- {path}) or rerun "
            f"python -m usdh validate {path.parent.name}"
        )
        record = read_json(path, fix)
        setting = record.get("setting")
        if not isinstance(setting, dict):
            continue
        number = path.stem.split("_")[0]
        value = record.get("val_mAP")
        rows.append(
            {
                "method": record.get("method", path.parent.name),
                "setting": int(number) if number.isdigit() else -1,
                "seed": record.get("seed"),
                "bits": record.get("bits"),
                **{f"knob:{k}": str(v) for k, v in setting.items()},
                "val_mAP": float(value) if value is not None else np.nan,
            }
        )
    return pd.DataFrame(rows)


def _chosen(g: pd.DataFrame, knobs: list[str]) -> pd.Series:
    """The method's chosen setting: the best mean validation mAP over seeds."""
    means = g.groupby("setting")["val_mAP"].mean()
    best = means.idxmax()
    return g[g["setting"] == best].iloc[0][knobs]


def selection_figure(runs: pd.DataFrame, path: Path) -> Path | None:
    """Methods as rows, knobs as columns: the validation mAP of every setting tried (grey), the
    settings that differ from the chosen one in that knob alone (coloured, mean ± std over
    seeds), the chosen one starred."""
    if runs.empty:
        return None
    plt = pyplot()
    knob_sets = {
        m: [
            c
            for c in runs.columns
            if c.startswith("knob:") and runs.loc[runs.method == m, c].notna().any()
        ]
        for m in dict.fromkeys(runs["method"])
        if runs.loc[runs.method == m, "val_mAP"].notna().any()
    }
    methods = [m for m, knobs in knob_sets.items() if knobs]  # shallow methods have none
    if not methods:
        return None
    width = max(len(knob_sets[m]) for m in methods)
    fig, axes = plt.subplots(
        len(methods), width, figsize=(2.6 * width + 0.8, 2.1 * len(methods)), squeeze=False
    )
    for r, method in enumerate(methods):
        g = runs[runs["method"] == method]
        knobs = knob_sets[method]
        chosen = _chosen(g, knobs)
        per_setting = g.groupby("setting").agg(
            mean=("val_mAP", "mean"), std=("val_mAP", "std"), **{k: (k, "first") for k in knobs}
        )
        for c in range(width):
            ax = axes[r][c]
            if c >= len(knobs):
                ax.axis("off")
                continue
            knob = knobs[c]
            values = list(dict.fromkeys(g[knob]))
            x = {v: i for i, v in enumerate(values)}
            others = [k for k in knobs if k != knob]
            for _, s in per_setting.iterrows():
                alone = all(s[k] == chosen[k] for k in others)
                is_chosen = all(s[k] == chosen[k] for k in knobs)
                xs, ys = x[s[knob]], s["mean"] * 100
                if np.isnan(ys):
                    ax.annotate(
                        "diverged",
                        (xs, 0.02),
                        xycoords=("data", "axes fraction"),
                        ha="center",
                        fontsize=6,
                        color="tab:red",
                    )
                    continue
                if is_chosen:
                    ax.plot(xs, ys, "*", color="black", markersize=11, zorder=4)
                elif alone:
                    ax.errorbar(
                        xs, ys, yerr=s["std"] * 100, fmt="o", color="C0", capsize=2, zorder=3
                    )
                else:
                    ax.plot(xs, ys, ".", color="0.7", zorder=2)
            ax.set_xticks(range(len(values)), values, fontsize=7)
            ax.set_xlim(-0.5, len(values) - 0.5)
            ax.set_title(knob.removeprefix("knob:"), fontsize=8)
            ax.grid(axis="y", alpha=0.3)
            if c == 0:
                ax.set_ylabel(f"{method}\nval. mAP (%)", fontsize=8)
    bits = sorted(runs["bits"].dropna().unique())
    fig.suptitle(
        f"Selection: validation mAP against each knob ({', '.join(map(str, bits))} bits)",
        fontsize=10,
    )
    fig.tight_layout()
    savefig(fig, path)
    return path


def selection_section(context: dict[str, Any], shown: list[str]) -> list[str]:
    """The README's selection paragraph and figure (``context["selection"]``: its bits, seeds)."""
    sel = context.get("selection")
    if not sel or not shown:
        return []
    return [
        "## Selection: how much each knob mattered",
        "",
        f"Every deep method's hyperparameters were chosen at {sel['bits']} bits on the main "
        f"protocol's validation split with seeds {sel['seeds']} (the same budget of settings "
        "for every method); the other code lengths reuse the choice made there, untuned. The "
        "figure shows the validation mAP of each setting tried, per knob.",
        "",
        *shown,
    ]


def selection_context(runs: pd.DataFrame) -> dict[str, str]:
    """The bits and seeds of the selection runs, as the README states them."""
    return {
        "bits": ", ".join(str(int(b)) for b in sorted(runs["bits"].dropna().unique())),
        "seeds": ", ".join(str(int(s)) for s in sorted(runs["seed"].dropna().unique())),
    }
