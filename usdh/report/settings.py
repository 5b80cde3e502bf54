"""Across settings: does the verdict of the main setting hold on another protocol, another dataset
and another feature space (``settings`` in params.yaml)?

A setting is a dataset, a protocol and the features every method reads. The retrieval table's
protocols (through ``features.backbone``) are settings; so is each entry of ``settings``. In
every setting the verdict is decided as in the main one (``usdh.report.verdict``: an interval
over the training seeds and the queries), on the setting's headline mAP: at its cut-off when it
has one, else over the whole database. A row's summary is one of :data:`SUMMARIES`; the report's
first paragraph states in words only what holds in every setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from usdh.report.figures import method_style, pyplot, savefig
from usdh.report.markdown import section
from usdh.report.verdict import WORDS

__all__ = [
    "HEADLINE",
    "SUMMARIES",
    "across_figure",
    "across_section",
    "across_table",
    "setting_labels",
    "settings_training",
    "summary_word",
    "verdict_in_words",
]

#: the verdict metrics a setting is judged on, in order of preference: the protocol's cut-off,
#: else (a protocol whose cut-off is the whole database) the whole database
HEADLINE = ("mAP at the cut-off (tie-aware)", "mAP over the database (tie-aware)")

#: a row's one-word summary over the settings
SUMMARIES = ("holds everywhere", "depends on the setting", "not resolved")


def summary_word(words: list[str]) -> str:
    """:data:`SUMMARIES` of one opponent's verdict words over the settings: the same resolved
    word everywhere; a win somewhere and a loss elsewhere; anything else (some setting leaves it
    unresolved, or there is no setting)."""
    if words and words[0] in WORDS[:2] and all(w == words[0] for w in words):
        return SUMMARIES[0]
    if WORDS[0] in words and WORDS[1] in words:
        return SUMMARIES[1]
    return SUMMARIES[2]


def setting_labels(df: pd.DataFrame) -> dict[tuple[str, str, str], str]:
    """``(group, dataset, protocol)`` -> how a table names the setting: dataset, protocol and
    features (``cifar10 deepbit, gist``), in the order of ``df`` (the main protocol first)."""
    out: dict[tuple[str, str, str], str] = {}
    for r in df[["group", "dataset", "protocol", "backbone"]].drop_duplicates().itertuples():
        key = (str(r.group), str(r.dataset), str(r.protocol))
        out.setdefault(key, f"{r.dataset} `{r.protocol}`, {r.backbone}")
    return out


def _in_setting(df: pd.DataFrame, key: tuple[str, str, str]) -> pd.Series:
    """The rows of ``df`` that belong to the setting ``(group, dataset, protocol)``."""
    return (df["group"] == key[0]) & (df["dataset"] == key[1]) & (df["protocol"] == key[2])


def _headline(verdict: pd.DataFrame) -> pd.DataFrame:
    """Each setting's verdict rows on its headline metric (:data:`HEADLINE`)."""
    parts = []
    for _, part in verdict.groupby(["group", "dataset", "protocol"], sort=False):
        metric = next((m for m in HEADLINE if (part["metric"] == m).any()), None)
        if metric is not None:
            parts.append(part[part["metric"] == metric])
    return pd.concat(parts) if parts else verdict.iloc[:0]


def across_table(verdict: pd.DataFrame, df: pd.DataFrame, target: str) -> pd.DataFrame:
    """One row per opponent and code length; per setting, the verdict word and the difference
    in points (``target`` minus the opponent), then the row's summary. ``verdict``: the verdict
    rows of every setting, with a ``group`` column and the numbers (``difference``); ``df``: the
    results of every setting (for the labels)."""
    labels = setting_labels(df)
    head = _headline(verdict)
    if not len(head):
        return pd.DataFrame()
    rows = []
    for (other, bits), part in head.groupby(["vs", "bits"], sort=False):
        row: dict[str, Any] = {"vs": other, "bits": int(bits)}
        words = []
        for key, label in labels.items():
            cell = part[_in_setting(part, key)]
            if not len(cell):
                row[label] = "-"
                continue
            said = str(cell["verdict"].iloc[0]).removeprefix(f"{target} ")
            words.append(said)
            row[label] = f"{said} {float(cell['difference'].iloc[0]):+.2f}"
        row["summary"] = summary_word(words) if len(words) == len(labels) else SUMMARIES[2]
        rows.append(row)
    return pd.DataFrame(rows)


def verdict_in_words(across: pd.DataFrame, target: str, n_settings: int) -> list[str]:
    """The report's first paragraph: per opponent, what holds in every setting and at every code
    length, and no more."""
    if not len(across):
        return []
    always: dict[str, list[str]] = {WORDS[0]: [], WORDS[1]: []}
    mixed, open_ = [], []
    for other, part in across.groupby("vs", sort=False):
        cells = part.drop(columns=["vs", "bits", "summary"]).to_numpy().ravel()
        # a cell is "wins +1.23", "loses -0.45", "not resolved +0.10" or "-" (no run)
        words = [WORDS[2] if str(c).startswith("not") else str(c).split(" ")[0] for c in cells]
        summary = summary_word(words)
        if summary == SUMMARIES[0]:
            always[words[0]].append(str(other))
        elif summary == SUMMARIES[1]:
            mixed.append(str(other))
        else:
            open_.append(str(other))
    said = []
    if always[WORDS[0]]:
        said.append(f"{target} beats {', '.join(always[WORDS[0]])}")
    if always[WORDS[1]]:
        said.append(f"{target} loses to {', '.join(always[WORDS[1]])}")
    first = (
        "; ".join(said) + " in every setting and at every code length"
        if said
        else f"no verdict of {target} holds in every setting and at every code length"
    )
    rest = []
    if mixed:
        rest.append(
            f"against {', '.join(mixed)} the verdict depends on the setting (a win in one, a "
            "loss in another)"
        )
    if open_:
        rest.append(
            f"against {', '.join(open_)} it is not resolved in at least one setting or length"
        )
    text = (
        f"In words, as far as it holds across the {n_settings} settings (the table under "
        f"\"Across settings\"; mAP at each setting's cut-off, tie-aware, with the verdict's "
        f"interval over seeds and queries): {first}."
    )
    if rest:
        text += " " + "; ".join(rest).capitalize() + "."
    return [text, ""]


def settings_training(df: pd.DataFrame) -> pd.DataFrame:
    """What each setting's methods trained and were scored on: features, training images per
    method (the fit records), queries and database."""
    labels = setting_labels(df)
    rows = []
    for key, label in labels.items():
        part = df[_in_setting(df, key)]
        train = part.groupby("method", sort=False)["train_images"].first().dropna()
        sizes = sorted({int(v) for v in train})
        spread = ", ".join(
            f"{m} {int(v):,}" for m, v in train.items() if len(sizes) > 1 and v != max(sizes)
        )
        rows.append(
            {
                "setting": label,
                "queries": f"{int(part['n_query'].iloc[0]):,}",
                "database": f"{int(part['n_db'].iloc[0]):,}",
                "training images": (
                    f"{max(sizes):,}" + (f" (but {spread})" if spread else "") if sizes else "-"
                ),
                "runs": len(part),
            }
        )
    return pd.DataFrame(rows)


def _shown_bits(df: pd.DataFrame, bits: int) -> int:
    present = sorted(int(b) for b in df["bits"].unique())
    return bits if bits in present else present[-1]


def across_figure(df: pd.DataFrame, out_dir: Path, bits: int = 32) -> list[Path]:
    """Each method's mAP@k (the first of ``evaluation.map_at``: mAP@1000; mean over seeds,
    error bar the sample std) at ``bits`` (else the longest code) in every setting, one group of
    bars per setting."""
    # the first listed mAP@k (evaluation.map_at: mAP@1000), which every protocol reports
    at = [c for c in df.columns if c.startswith("mAP@") and not c.endswith("_tie_aware")]
    column = at[0] if at else "mAP"
    if column not in df or df[column].isna().all():
        return []
    bits = _shown_bits(df, bits)
    labels = setting_labels(df)
    sel = df[df["bits"] == bits]
    names = list(sel["method"].drop_duplicates())
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.3 * len(labels) * max(len(names), 1) / 4 + 2, 3.8))
    width = 0.8 / max(len(names), 1)
    for j, method in enumerate(names):
        means, stds = [], []
        for key in labels:
            values = sel[_in_setting(sel, key) & (sel["method"] == method)][column].dropna() * 100
            means.append(values.mean() if len(values) else np.nan)
            stds.append(values.std(ddof=1) if len(values) > 1 else 0.0)
        x = np.arange(len(labels)) + (j - (len(names) - 1) / 2) * width
        ax.bar(x, means, width, yerr=stds, label=method, color=method_style(method)["color"])
    # "dataset protocol" over the features, so that neighbouring labels never overlap
    ticks = [v.replace("`", "").replace(", ", "\n") for v in labels.values()]
    ax.set_xticks(range(len(labels)), ticks, fontsize=8)
    ax.set_ylabel(f"{column} at {bits} bits (%)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=min(len(names), 5), loc="upper center", bbox_to_anchor=(0.5, -0.12))
    fig.tight_layout()
    path = out_dir / "across_settings.png"
    savefig(fig, path)
    return [path]


def across_section(across: pd.DataFrame, training: pd.DataFrame, target: str) -> list[str]:
    """The README's "Across settings": how to read it, the table, what each setting trained
    on (the figure follows it)."""
    if not len(across):
        return []
    intro = (
        f"Does the verdict of the main setting hold elsewhere? {target} against each method in "
        "every setting: the retrieval table's protocols and each entry of `settings` in "
        "params.yaml (another dataset, protocol or feature space). Each cell is the verdict "
        "word and the difference of the means in points, decided as in the verdict above (a "
        "95% interval over the training seeds and the queries), on the setting's mAP at its "
        "cut-off (tie-aware), or over the whole database where the cut-off is the whole "
        "database. The summary: 'holds everywhere' (the same resolved word in every setting), "
        "'depends on the setting' (a win in one, a loss in another), 'not resolved' (some "
        "setting leaves it open). Every method keeps the hyperparameters selected on the main "
        "setting's validation split: the other settings test how those choices transfer, "
        "nothing was tuned on them. Every interval with its bounds: `tables/across_settings.md` "
        "and `reports/verdict.csv`."
    )
    lines = section("## Across settings", across, intro)
    lines += section(
        "### What each setting trained and was scored on",
        training,
        "Every method of a setting fits on the same training images (CIBHash on its bank's "
        "images, as in the main setting).",
    )
    return lines
