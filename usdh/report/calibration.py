"""The calibration: the classic baselines on GIST-512, the features of the classic CIFAR-10 tables,
beside the numbers published for them, like for like, and the readings that explain each gap.

Every published row says which split and metric it used (as far as its source states them); ours
is read off the same protocol and metric. Where a cell differs by more than ``TOLERANCE`` points,
the other readings (whole-database mAP, the 1k-query / 59k-database split, the tie-aware rule,
LSH without centring) are scored beside it, so a reader sees which assumption closes the gap. The
numbers are never tuned toward the published ones: each reading is a run of the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from usdh.layout import find_runs
from usdh.report.inputs import read_fit_record, read_metrics
from usdh.report.markdown import section

__all__ = [
    "PUBLISHED",
    "PUBLISHED_BITS",
    "TOLERANCE",
    "Published",
    "calibration_report",
    "calibration_section",
    "calibration_summary",
    "calibration_table",
    "collect_calibration",
    "gap_readings",
    "read_calibration",
]

#: a published cell and ours closer than this (mAP points) count as reproduced
TOLERANCE = 1.0
PUBLISHED_BITS = (16, 32, 64)


@dataclass(frozen=True)
class Published:
    """One published row: mAP in % at ``PUBLISHED_BITS`` (None: not reported)."""

    method: str  # our run it compares with
    label: str  # the row as its source names it
    values: tuple[float | None, ...]
    protocol: str  # our protocol with the split the source states
    metric: str  # as stated: "mAP@1000" (the protocol's cut-off) or "mAP@all"
    source: str
    dataset: str = "cifar10"


_DEEPBIT = (
    "DeepBit README (github.com/kevinlin311tw/cvpr16-deepbit, README.md; the same values in every "
    "version from 2016-04-15 to 2018-04-10): 'mAP of top 1000 returned images'; split stated "
    "for DeepBit's own run (10,000 test queries, the 50,000 training images as database); "
    "features not stated"
)


def _treezzz(repo: str, commit: str) -> str:
    return (
        f"github.com/TreezzZ/{repo}, README.md at {commit[:7]} (a PyTorch re-implementation, not a "
        "paper): 'cifar10-gist' features (file cifar10-gist.mat, dimension not stated in the "
        "README), 1,000 queries, 5,000 training images, MAP@ALL"
    )


#: the published rows (mAP %, 16 / 32 / 64 bits) of our four shallow baselines on CIFAR-10
#: with hand-crafted features. The DeepBit README lists both an "SH" and an "SpeH" row without
#: expanding either abbreviation, so spectral hashing is compared with both.
PUBLISHED: tuple[Published, ...] = (
    Published("lsh", "LSH", (12.55, 13.76, 15.07), "deepbit", "mAP@1000", _DEEPBIT),
    Published("pcah", "PCAH", (12.91, 12.60, 12.10), "deepbit", "mAP@1000", _DEEPBIT),
    Published("itq", "PCA-ITQ", (15.67, 16.20, 16.64), "deepbit", "mAP@1000", _DEEPBIT),
    Published("sh", "SH", (12.95, 14.09, 13.89), "deepbit", "mAP@1000", _DEEPBIT),
    Published("sh", "SpeH", (12.55, 12.42, 12.56), "deepbit", "mAP@1000", _DEEPBIT),
    Published(
        "lsh",
        "LSH",
        (11.91, 12.88, 14.36),
        "1k-5k-59k",
        "mAP@all",
        _treezzz("LSH_PyTorch", "bcaf566d71024ce1483bc04ad61b3d8a3e5d8150")
        + " ('1000 query images, 59000 retrieval images')",
    ),
    Published(
        "itq",
        "ITQ",
        (16.03, 16.54, 17.13),
        "1k-5k-59k",
        "mAP@all",
        _treezzz("ITQ_PyTorch", "37d701b442c35017bf5d69dd551dd50435ec52e4")
        + "; another version of the same README lists 15.84 / 16.32 / 16.88",
    ),
    Published(
        "sh",
        "SH",
        (13.03, 12.83, 12.86),
        "1k-5k-59k",
        "mAP@all",
        _treezzz("SH_PyTorch", "8b8bb3d9f6f8026a8cbef70fc75f6096ca22a451"),
    ),
)

#: per-run columns of calibration.csv
COLUMNS = ["dataset", "protocol", "name", "method", "bits", "seed", "topk"]
SCORES = ["mAP", "mAP_tie_aware", "mAP_all", "mAP_all_tie_aware"]


def read_calibration(root: str | Path) -> tuple[pd.DataFrame, dict[str, list[int]]]:
    """:func:`collect_calibration`'s table and, per protocol, the training-set sizes of its
    runs' fit records, read in one walk over the runs."""
    rows, train = [], {}
    for run in find_runs("calibration", root=Path(root)):
        m = read_metrics(run)
        row = {c: m.get(c) for c in COLUMNS + SCORES}
        row["name"] = run.name
        rows.append(row)
        fit = read_fit_record(run) if run.fit_record.is_file() else {}
        sizes = train.setdefault(run.protocol, set())
        if fit.get("n_train") is not None:
            sizes.add(int(fit["n_train"]))
    df = pd.DataFrame(rows, columns=COLUMNS + SCORES)
    df = df.sort_values(["dataset", "protocol", "name", "bits", "seed"]).reset_index(drop=True)
    return df, {p: sorted(ns) for p, ns in sorted(train.items())}


def collect_calibration(root: str | Path) -> pd.DataFrame:
    """One row per calibration run (``name``: the method or its diagnostic variant)."""
    return read_calibration(root)[0]


def _score(df: pd.DataFrame, name: str, protocol: str, column: str, bits: int) -> np.ndarray:
    part = df[(df["name"] == name) & (df["protocol"] == protocol) & (df["bits"] == bits)]
    return 100.0 * part[column].to_numpy(dtype=float)


def _scored(df: pd.DataFrame) -> list[Published]:
    """The published rows that have runs of ours on their dataset and protocol."""
    have = set(zip(df["dataset"], df["protocol"], df["name"], strict=True))
    return [p for p in PUBLISHED if (p.dataset, p.protocol, p.method) in have]


def _column(row: Published, whole: bool, tie_aware: bool = False) -> str:
    base = "mAP_all" if whole or row.metric == "mAP@all" else "mAP"
    return f"{base}_tie_aware" if tie_aware else base


def _cell(published: float | None, ours: np.ndarray) -> tuple[str, float | None]:
    """'ours ± std (ours - published)' and the difference; '-' where either is missing."""
    if published is None or ours.size == 0:
        return "-", None
    mean = float(ours.mean())
    std = float(ours.std(ddof=1)) if ours.size > 1 else 0.0
    diff = mean - published
    return f"{mean:.2f} ± {std:.2f} ({diff:+.2f})", diff


def calibration_table(df: pd.DataFrame) -> pd.DataFrame:
    """Each published row against ours on the protocol and metric its source states (rows
    without runs of ours are left out)."""
    out = []
    for row in _scored(df):
        rec = {
            "source": row.source.split(" (")[0].split(",")[0],
            "protocol": f"`{row.protocol}`",
            "metric": row.metric,
            "row": row.label,
        }
        for bits, value in zip(PUBLISHED_BITS, row.values, strict=True):
            ours = _score(df, row.method, row.protocol, _column(row, False), bits)
            cell, _ = _cell(value, ours)
            rec[f"{bits} bits"] = f"{value:.2f} / {cell}" if value is not None else "-"
        out.append(rec)
    return pd.DataFrame(out)


def _readings(row: Published, protocols: list[str]) -> list[tuple[str, str, str, bool]]:
    """(reading, run name, protocol, whole-database mAP) to score a published row against."""
    readings = [("as stated", row.method, row.protocol, False)]
    if row.metric != "mAP@all":
        readings.append(("mAP over the whole database, same split", row.method, row.protocol, True))
    for other in protocols:
        if other != row.protocol:
            readings.append((f"mAP over the whole database, `{other}`", row.method, other, True))
    if row.method == "lsh":
        readings.append(("LSH without centring, as stated", "lsh_uncentred", row.protocol, False))
        if row.metric != "mAP@all":
            readings.append(
                ("LSH without centring, whole database", "lsh_uncentred", row.protocol, True)
            )
    return readings


def gap_readings(df: pd.DataFrame) -> pd.DataFrame:
    """For every published row with a cell more than ``TOLERANCE`` away as stated: ours under
    each other reading, the difference, and how many cells then fall within the tolerance."""
    protocols = sorted(df["protocol"].unique())
    names = set(df["name"])
    out = []
    for row in _scored(df):
        diffs = [
            _cell(v, _score(df, row.method, row.protocol, _column(row, False), b))[1]
            for b, v in zip(PUBLISHED_BITS, row.values, strict=True)
        ]
        if all(d is None or abs(d) <= TOLERANCE for d in diffs):
            continue
        for reading, name, protocol, whole in _readings(row, protocols):
            if name not in names:
                continue
            rec = {"row": f"{row.label} (`{row.protocol}`, {row.metric})", "reading": reading}
            within = 0
            for bits, value in zip(PUBLISHED_BITS, row.values, strict=True):
                scores = _score(df, name, protocol, _column(row, whole), bits)
                cell, diff = _cell(value, scores)
                rec[f"{bits} bits"] = cell
                within += diff is not None and abs(diff) <= TOLERANCE
            rec["within 1 point"] = f"{within} of {sum(v is not None for v in row.values)}"
            out.append(rec)
    return pd.DataFrame(out)


def calibration_summary(df: pd.DataFrame) -> dict[str, Any]:
    """Counts of published cells within ``TOLERANCE`` as stated and read as mAP over the whole
    database of the stated split, overall and per source (its first words), with the mean
    difference under each reading; and, for the LSH rows scored over the whole database, how
    many published cells lie between our LSH with and without centring."""
    counts: dict[str, Any] = {"cells": 0, "as_stated": 0, "whole_database": 0, "sources": {}}
    between = [0, 0]
    for row in _scored(df):
        src = counts["sources"].setdefault(
            row.source.split(" (")[0].split(",")[0],
            {"cells": 0, "as_stated": 0, "whole_database": 0, "diff_stated": [], "diff_whole": []},
        )
        for bits, value in zip(PUBLISHED_BITS, row.values, strict=True):
            if value is None:
                continue
            stated = _score(df, row.method, row.protocol, _column(row, False), bits)
            whole = _score(df, row.method, row.protocol, _column(row, True), bits)
            if stated.size == 0:
                continue
            for tally in (counts, src):
                tally["cells"] += 1
                tally["as_stated"] += int(abs(stated.mean() - value) <= TOLERANCE)
                tally["whole_database"] += int(abs(whole.mean() - value) <= TOLERANCE)
            src["diff_stated"].append(float(stated.mean() - value))
            src["diff_whole"].append(float(whole.mean() - value))
            if row.method == "lsh" and row.metric == "mAP@all":
                raw = _score(df, "lsh_uncentred", row.protocol, _column(row, False), bits)
                if raw.size:
                    between[1] += 1
                    low, high = sorted((raw.mean(), stated.mean()))
                    between[0] += int(low <= value <= high)
    for src in counts["sources"].values():
        for key in ("diff_stated", "diff_whole"):
            src[key] = float(np.mean(src[key])) if src[key] else float("nan")
    counts["lsh_between"] = tuple(between)
    return counts


def calibration_report(
    calibration: pd.DataFrame, train: dict[str, list[int]]
) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """The calibration's tables and what its README section states (none where no published
    number has runs of ours); ``train``: :func:`read_calibration`'s training-set sizes."""
    compared = calibration_table(calibration) if len(calibration) else pd.DataFrame()
    if not len(compared):
        return {}, {}
    tables = {"calibration": compared}
    gaps = gap_readings(calibration)
    if len(gaps):
        tables["calibration_gaps"] = gaps
    ties = (calibration["mAP"] - calibration["mAP_tie_aware"]).abs().max()
    context = {
        "calibration_counts": calibration_summary(calibration),
        "calibration_tie_gap": float(ties) * 100,
        "calibration_train": train,
    }
    return tables, context


def _gap_notes(counts: dict[str, Any], context: dict[str, Any]) -> list[str]:
    """What explains the gaps, point by point, and what was not tested."""
    deepbit = (counts.get("sources") or {}).get("DeepBit README")
    between, lsh_cells = counts.get("lsh_between", (0, 0))
    return [
        "* **The metric.** The DeepBit README calls its table 'mAP of top 1000 returned images', "
        "and it states the 10,000 / 50,000 split for DeepBit's own run, not how the baseline "
        "rows were computed, nor on which features."
        + (
            f" Read as mAP@1000 on that split, ours differ from its rows by "
            f"{deepbit['diff_stated']:+.2f} points on average ({deepbit['as_stated']} of "
            f"{deepbit['cells']} cells within {TOLERANCE:g} point); read as mAP over the whole "
            f"database, by {deepbit['diff_whole']:+.2f} ({deepbit['whole_database']} of "
            f"{deepbit['cells']} within). If the second reading is the closer one, the likeliest "
            "explanation is that those rows are whole-database mAP taken from an earlier paper; "
            "we could not read that paper here, so this stays a reading, not a finding."
            if deepbit
            else ""
        ),
        "* **Which row is spectral hashing.** The README has both an 'SH' and an 'SpeH' row and "
        "expands neither; both are compared with our spectral hashing.",
        "* **Centring (LSH).** The re-implementation's loader standardises every feature with "
        "one scalar mean and std and its LSH projects them without per-dimension centring "
        "(TreezzZ/LSH_PyTorch, data/dataloader.py and lsh.py); ours centres each dimension "
        "(`methods.lsh.center`). The `lsh_uncentred` variant is the same LSH without centring; "
        f"{between} of {lsh_cells} cells of the re-implementation's LSH row lie between our "
        "two means, and a "
        "single-seed number of a random projection carries the seed spread shown in the ± "
        "column.",
        "* **Tie order.** Breaking Hamming ties by database index or exactly (tie-aware) moves "
        f"no calibration run by more than {context.get('calibration_tie_gap', 0.0):.2f} points: "
        "ties explain none of the gaps.",
        "* **Not tested here.** Our images are the JPEG copy of CIFAR-10 (the original pixels "
        "are not on this machine), and no source states its GIST image size or colour handling "
        "(ours: 32 px, grey); how far either moves a number is not measured here.",
        "",
    ]


def calibration_section(tables: dict[str, pd.DataFrame], context: dict[str, Any]) -> list[str]:
    """The README's like-for-like comparison with published numbers, and what explains the
    gaps."""
    cal = context.get("calibration") or {}
    counts = context.get("calibration_counts") or {}
    train = context.get("calibration_train") or {}
    trained = "; ".join(
        f"`{p}`: {', '.join(f'{n:,}' for n in ns)} images" for p, ns in sorted(train.items())
    )
    lines = section(
        "## Calibration: the classic baselines on GIST-512 against published numbers",
        tables["calibration"],
        "The rows below compare like with like: our LSH, PCAH, ITQ and SH hash GIST descriptors "
        f"({cal.get('layer', 'GIST')}; grey, as LMgist computes them: `usdh/gist.py`, "
        f"docs/features.md) of the same images, split and scored as each source states, over "
        f"the seeds of the calibration section. Each cell: published / ours, mean ± std over "
        "seeds (ours minus published), in points of mAP. Training images per fit: "
        f"{trained or 'see calibration.csv'}. Sources, in full: `usdh/report/calibration.py`. "
        f"GIST extraction ran at {cal.get('images_per_s', 'n/a')} images/s on this machine. "
        f"As stated, {counts.get('as_stated', 0)} of {counts.get('cells', 0)} published cells "
        f"are within {TOLERANCE:g} point of ours; reading every published number as mAP over "
        f"the whole database of the stated split, {counts.get('whole_database', 0)} of "
        f"{counts.get('cells', 0)} are, but that reading was chosen after trying several (the "
        "table below), so it is a hypothesis about what the sources computed, not a check.",
    )
    if "calibration_gaps" in tables:
        lines += section(
            "### What explains the gaps",
            tables["calibration_gaps"],
            f"Every published row with a cell more than {TOLERANCE:g} point from ours, against "
            "ours under other readings of what the source did (each one a run of the pipeline, "
            "none tuned toward the published number):",
        )
    return lines + _gap_notes(counts, context)
