"""What each method trained on and what it costs (from the fit records), and the deep methods'
training curves (from their training logs)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from usdh.layout import find_runs
from usdh.report.figures import pyplot, savefig
from usdh.report.inputs import read_fit_record
from usdh.report.markdown import section
from usdh.report.results import method_rank, protocol_rank

__all__ = ["cost_figure", "cost_section", "training_figures", "training_table"]


def _rate(v: float) -> str:
    return f"{v / 1e6:.1f}M" if v >= 1e6 else f"{v / 1e3:.0f}k" if v >= 1e3 else f"{v:.0f}"


def _size(v: float) -> str:
    return f"{v / 2**20:.1f} MiB" if v >= 2**20 else f"{v / 2**10:.0f} KiB"


def _int_range(values: pd.Series) -> str:
    v = sorted({int(x) for x in values.dropna()})
    if not v:
        return "-"
    return str(v[0]) if v[0] == v[-1] else f"{v[0]}-{v[-1]}"


def _fit_rows(root: Path) -> list[dict[str, Any]]:
    """One row per retrieval run with a fit record: what it trained on and what it cost."""
    rows = []
    for run in find_runs("retrieval", kind="models", root=root):
        if not run.fit_record.is_file():
            continue
        fit = read_fit_record(run)
        params = fit.get("params") or {}
        enc = fit.get("encode") or {}
        rows.append(
            {
                "protocol": run.protocol,
                "method": run.name,
                "bits": run.bits,
                "train_images": fit.get("n_train"),
                "epochs": fit.get("epochs"),
                "steps": fit.get("steps"),
                "batch_size": params.get("batch_size"),
                "lr": params.get("lr"),
                "hidden": str(params.get("hidden") or "none"),
                "fit_seconds": fit.get("fit_seconds"),
                "codes_per_s": enc.get("database_codes_per_s"),
                "model_bytes": enc.get("model_bytes"),
            }
        )
    return rows


def _summary(
    g: pd.DataFrame, bits: list[int], backbone_images_per_s: float | None
) -> dict[str, Any]:
    """One method's runs on one protocol as a row: settings, and costs per code length."""
    lengths = " / ".join(str(b) for b in bits)

    def per_bits(column: str, fmt: Callable[[float], str]) -> str:
        means = [g[g["bits"] == b][column].mean() for b in bits]
        return " / ".join("-" if pd.isna(v) else fmt(v) for v in means)

    deep = g["epochs"].notna().any()
    row = {
        "protocol": g["protocol"].iloc[0],
        "method": g["method"].iloc[0],
        "train images": ", ".join(str(int(v)) for v in sorted(g["train_images"].unique())),
        "epochs": _int_range(g["epochs"]) if deep else "-",
        "SGD steps": _int_range(g["steps"]) if deep else "-",
        "batch": _int_range(g["batch_size"]) if deep else "-",
        "lr": ", ".join(f"{v:g}" for v in sorted(g["lr"].dropna().unique())) or "-",
        "hidden": g["hidden"].iloc[0] if deep else "-",
        f"fit s ({lengths} bits)": per_bits("fit_seconds", lambda v: f"{v:.1f}"),
        "codes/s from features": per_bits("codes_per_s", _rate),
    }
    if backbone_images_per_s:
        row["images/s with the backbone"] = per_bits(
            "codes_per_s", lambda v: f"{1 / (1 / backbone_images_per_s + 1 / v):.1f}"
        )
    row["model on disk"] = per_bits("model_bytes", _size)
    return row


def training_table(
    root: Path, df: pd.DataFrame, backbone_images_per_s: float | None = None
) -> pd.DataFrame:
    """Per protocol and method, what it trained on and what it costs: training images, epochs,
    SGD steps, batch, lr and head width (deep methods) from the fit records; fit seconds, encode
    throughput from cached features, images/s including the backbone (when its throughput is
    known) and model size on disk, each as the mean over seeds per code length."""
    rows = _fit_rows(root)
    if not rows:
        return pd.DataFrame()
    t = pd.DataFrame(rows)
    t["_order"] = method_rank(t["method"])
    t["_p"] = protocol_rank(df, t["protocol"])
    bits = sorted(t["bits"].unique())
    groups = t.sort_values(["_p", "_order"]).groupby(["protocol", "method"], sort=False)
    return pd.DataFrame([_summary(g, bits, backbone_images_per_s) for _, g in groups])


def cost_section(training: pd.DataFrame, context: dict[str, Any]) -> list[str]:
    """The README's training and cost table, and how each of its numbers was measured."""
    return section(
        "## What each method trained on, and what it costs",
        training,
        "Every method fits on the same training images of a protocol, except CIBHash, which "
        "learns from two views of an image and trains on the images of its bank of augmented "
        "views (the protocol's `augmentation_subset`, computed once by the bank stage, "
        f"{context.get('bank_views') or 'n/a'} views each; 'train images' shows their "
        "number). Deep methods: a hash "
        "head on the frozen features, trained by the one trainer for the epochs shown "
        "(DeepBit: the total over its three training stages) at the batch size shown. Fit "
        "seconds are wall-clock on the machine above. Codes/s: the fit stage's one timed "
        "encode of the database from the cached feature file, reading the rows included (so "
        "a single pass, with its noise; `reports/benchmarks/` times the hashers alone, "
        "repeated). Images/s add the backbone's measured throughput "
        f"({context.get('backbone_images_per_s') or 'n/a'} images/s in the features stage), "
        "which dominates for every method. The model is its saved file (BiHalf's hidden "
        "layer makes it the largest). Each is the mean over seeds at 16 / 32 / 64 bits.",
    )


def _training_logs(
    root: Path, protocol: str | None
) -> dict[tuple[str, str], dict[int, dict[int, pd.DataFrame]]]:
    """Per dataset and deep method, per code length: every seed's training log."""
    logs: dict[tuple[str, str], dict[int, dict[int, pd.DataFrame]]] = {}
    for run in find_runs("retrieval", kind="models", root=root):
        if protocol is not None and run.protocol != protocol:
            continue
        by_bits = logs.setdefault((run.dataset, run.name), {})
        if run.train_log.is_file():
            by_bits.setdefault(run.bits, {})[run.seed] = pd.read_csv(run.train_log)
    return logs


#: columns of a training log that are not loss terms
_NOT_TERMS = {"epoch", "stage", "lr", "total", "seconds"}


def _panel(ax: Any, logs: dict[int, pd.DataFrame], column: str) -> None:
    """``column`` of every seed's log against the epoch, one line per seed; a log axis only
    where the values span more than a factor 20 (a narrow range on a log axis makes noise look
    like divergence); dotted lines where a new training stage starts (DeepBit's three)."""
    values = []
    for i, (seed, log) in enumerate(sorted(logs.items())):
        if column not in log:
            continue
        ax.plot(log["epoch"], log[column], color=f"C{i % 10}", lw=1.2, label=f"seed {seed}")
        values.append(log[column].to_numpy(dtype=float))
    if not values:
        return
    both = np.concatenate(values)
    both = both[np.isfinite(both)]
    if len(both) and both.min() > 0 and both.max() / both.min() > 20:
        ax.set_yscale("log")
    first = next(iter(logs.values()))
    for e in first["epoch"][first["stage"].diff().fillna(0) > 0]:
        ax.axvline(e - 0.5, color="grey", lw=0.8, ls=":")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)


def training_figures(root: Path, out_dir: Path, protocol: str | None = None) -> list[Path]:
    """Per deep method: the weighted total and each loss term (unweighted) per epoch, every seed
    a line, one column per code length, on ``protocol`` (default: all), so that a seed that
    trains differently is seen."""
    plt = pyplot()
    written = []
    for (dataset, method), by_bits in _training_logs(root, protocol).items():
        if not by_bits:
            continue
        bits = sorted(by_bits)
        some = next(iter(by_bits[bits[0]].values()))
        rows = ["total", *(c for c in some.columns if c not in _NOT_TERMS and "val_" not in c)]
        fig, axes = plt.subplots(
            len(rows),
            len(bits),
            figsize=(3.6 * len(bits) + 1.2, 2.3 * len(rows)),
            squeeze=False,
            sharex="col",
        )
        for r, column in enumerate(rows):
            for c, b in enumerate(bits):
                ax = axes[r][c]
                _panel(ax, by_bits[b], column)
                if r == 0:
                    ax.set_title(f"{b} bits")
                if c == 0:
                    ax.set_ylabel("total (weighted)" if column == "total" else column, fontsize=9)
                if r == len(rows) - 1:
                    ax.set_xlabel("epoch")
        axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
        fig.suptitle(f"{method}: training loss per epoch ({dataset})", fontsize=10)
        fig.tight_layout()
        path = out_dir / f"training_{dataset}_{method}.png"
        savefig(fig, path)
        written.append(path)
    return written


def cost_figure(
    df: pd.DataFrame, column: str, out_dir: Path, target: str | None = None
) -> list[Path]:
    """Per dataset and protocol: each method's mean ``column`` (%) against its mean fit time
    (log axis), one marker per code length joined by a line: what a point of mAP costs in
    training on this machine (the backbone's features, shared by every method, not counted)."""
    from usdh.report.figures import method_style

    plt = pyplot()
    written = []
    for (dataset, protocol), part in df.groupby(["dataset", "protocol"], sort=False):
        if "fit_seconds" not in part or part["fit_seconds"].isna().all():
            continue
        s = part.groupby(["method", "bits"], sort=False)[["fit_seconds", column]].mean()
        fig, ax = plt.subplots(figsize=(6.0, 3.8))
        for method in part["method"].drop_duplicates():
            g = s.loc[method].sort_index()
            mine = method == target
            ax.plot(
                g["fit_seconds"],
                g[column] * 100,
                lw=2.4 if mine else 1.0,
                label=f"{method} (judged)" if mine else method,
                **method_style(method),
            )
            for b, row in g.iterrows():
                ax.annotate(
                    str(b),
                    (row["fit_seconds"], row[column] * 100),
                    fontsize=6,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
        ax.set_xscale("log")
        ax.set(xlabel="fit time per run (s, log scale)", ylabel=f"{column} (%)")
        ax.set_title(f"{dataset}, `{protocol}`: accuracy against training cost", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        path = out_dir / f"cost_{dataset}_{protocol}.png"
        savefig(fig, path)
        written.append(path)
    return written
