"""What each method trained on and what it costs (from the fit records), and the deep methods'
training curves (from their training logs)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from usdh.layout import find_runs
from usdh.report.figures import pyplot, savefig
from usdh.report.markdown import section
from usdh.report.results import method_rank, protocol_rank

__all__ = ["cost_section", "training_figures", "training_table"]


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
        fit = json.loads(run.fit_record.read_text())
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
        "(DeepBit: three stages of that many epochs each) at the batch size shown. Fit "
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
) -> dict[tuple[str, str], dict[int, tuple[int, pd.DataFrame]]]:
    """Per dataset and deep method, per code length: the lowest seed with a training log, and
    that log."""
    logs: dict[tuple[str, str], dict[int, tuple[int, pd.DataFrame]]] = {}
    for run in find_runs("retrieval", kind="models", root=root):
        if protocol is not None and run.protocol != protocol:
            continue
        by_bits = logs.setdefault((run.dataset, run.name), {})
        if run.train_log.is_file() and (run.bits not in by_bits or run.seed < by_bits[run.bits][0]):
            by_bits[run.bits] = (run.seed, pd.read_csv(run.train_log))
    return logs


def _curves(ax: Any, log: pd.DataFrame) -> None:
    """Each loss term of a training log, its total and validation total, against the epoch."""
    fixed = {"epoch", "stage", "lr", "total", "seconds"}
    terms = [c for c in log.columns if c not in fixed and not c.startswith("val_")]
    for term in terms:
        ax.plot(log["epoch"], log[term], label=term)
    # dash-dotted: a term that is nearly the whole total stays visible beneath it
    ax.plot(log["epoch"], log["total"], color="black", linestyle="-.", label="total")
    if "val_total" in log and log["val_total"].notna().any():
        ax.plot(log["epoch"], log["val_total"], "k--", label="validation total")
    ax.xaxis.get_major_locator().set_params(integer=True)
    for e in log["epoch"][log["stage"].diff().fillna(0) > 0]:
        ax.axvline(e - 0.5, color="grey", lw=0.8, ls=":")


def training_figures(root: Path, out_dir: Path, protocol: str | None = None) -> list[Path]:
    """Per deep method: each term's training loss and the validation total, per epoch, of the
    lowest seed that has a training log (named in the figure), on ``protocol`` (default: all)."""
    plt = pyplot()
    written = []
    for (dataset, method), by_bits in _training_logs(root, protocol).items():
        if not by_bits:
            continue
        bits = sorted(by_bits)
        fig, axes = plt.subplots(1, len(bits), figsize=(4.2 * len(bits), 3.4), squeeze=False)
        for ax, b in zip(axes[0], bits, strict=True):
            seed, log = by_bits[b]
            _curves(ax, log)
            ax.set(xlabel="epoch", title=f"{method}, {b} bits, seed {seed}")
            ax.set_yscale("log")
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("loss (terms unweighted; total weighted)")
        axes[0][0].legend(fontsize=7)
        path = out_dir / f"training_{dataset}_{method}.png"
        savefig(fig, path)
        written.append(path)
    return written
