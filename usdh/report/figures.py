"""The report's figures, each from files the pipeline wrote (metrics, curves, per-query files, the
prepared images), each saved without a timestamp so an unchanged report is byte-identical."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from usdh.io import atomic_path
from usdh.layout import Run

__all__ = [
    "caption",
    "display_name",
    "example_figures",
    "map_crossings",
    "mean_curve",
    "method_style",
    "per_class_figure",
    "protocol_figures",
    "pyplot",
    "retrieval_runs",
    "savefig",
    "seed_figures",
]

#: thumbnail side in the retrieval examples (px)
THUMB = 48

#: the curve files of a run, by figure: (Run attribute, the column seeds are matched on, x column,
#: y column, x label, y label)
CURVES = {
    "precision_at_n": ("p_at_n", "n", "n", "precision", "N (log scale)", "precision@N"),
    "map_at_k": ("map_at_k", "k", "k", "mAP_tie_aware", "k (log scale)", "mAP@k, tie-aware"),
    "pr": ("pr_curve", "radius", "recall", "precision", "recall (%)", "precision"),
}


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend (the report runs without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def savefig(fig: Any, path: Path) -> None:
    """PNG for plots; JPEG for photo grids (the thumbnails), which PNG stores ten times larger.
    Neither carries a timestamp, so an unchanged report is byte-identical."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        if path.suffix == ".jpg":
            fig.savefig(fh, format="jpg", dpi=100, bbox_inches="tight", pil_kwargs={"quality": 85})
        else:
            fig.savefig(fh, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    pyplot().close(fig)


def display_name(part: pd.DataFrame) -> str:
    """A protocol as readers name it: the dataset and how many queries against how large a
    database (the protocol's own name, such as "deepbit", reads like a method)."""
    row = part.iloc[0]
    return f"{row['dataset']}: {int(row['n_query']):,} queries / {int(row['n_db']):,} database"


def mean_curve(runs: Sequence[Run], attr: str, key: str) -> pd.DataFrame | None:
    """A curve averaged over runs (seeds) point by point (points matched on ``key``: N, k or the
    radius); NaN points (a radius where every lookup is empty has no precision) stay out."""
    frames = [pd.read_csv(getattr(r, attr)) for r in runs if getattr(r, attr).exists()]
    if not frames:
        return None
    return pd.concat(frames).groupby(key).mean().reset_index()


def retrieval_runs(part: pd.DataFrame, method: str, bits: int, root: Path) -> list[Run]:
    sel = part[(part["method"] == method) & (part["bits"] == bits)]
    return [
        Run("retrieval", r.dataset, r.protocol, method, bits, int(r.seed), root)
        for r in sel.itertuples()
    ]


#: one marker per method, in the registry's order, so that lines read without colour too
MARKERS = ("o", "s", "^", "v", "D", "*", "P", "X", "<", ">", "h")


def method_style(method: str) -> dict[str, Any]:
    """The same colour and marker for a method in every figure."""
    from usdh.registry import methods

    names = list(methods())
    i = names.index(method) if method in names else len(names)
    return {"color": f"C{i % 10}", "marker": MARKERS[i % len(MARKERS)]}


def _legend(ax: Any) -> None:
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def _against_bits(ax: Any, s: pd.DataFrame, bits: list[int], target: str | None = None) -> None:
    """One line per method of a seed summary (mean, std in %) against code length; ``target``
    (the judged method) drawn thicker, on top."""
    for method, g in s.groupby("method", sort=False):
        mine = method == target
        ax.errorbar(
            g["bits"],
            g["mean"] * 100,
            yerr=g["std"] * 100,
            capsize=3,
            label=f"{method} (judged)" if mine else method,
            lw=2.6 if mine else 1.2,
            zorder=4 if mine else 2,
            **method_style(method),
        )
    ax.set_xscale("log", base=2)
    ax.set_xticks(bits, [str(b) for b in bits])
    ax.set(xlabel="bits (log2 scale)")
    ax.grid(alpha=0.3)


def protocol_figures(
    df: pd.DataFrame, root: Path, out_dir: Path, summarise: Any, target: str | None = None
) -> list[Path]:
    """Per dataset and protocol: mAP against bits; precision@N, mAP@k and PR by radius, one panel
    per code length; the hash-lookup figures against bits."""
    plt = pyplot()
    written = []
    for (dataset, protocol), part in df.groupby(["dataset", "protocol"], sort=False):
        stem = f"{dataset}_{protocol}"
        bits = sorted(int(b) for b in part["bits"].unique())
        methods = list(part["method"].drop_duplicates())
        title = display_name(part)
        fig, ax = plt.subplots(figsize=(5, 3.6))
        topk = part["topk"].iloc[0]
        topk = None if pd.isna(topk) or topk == part["n_db"].iloc[0] else int(topk)
        _against_bits(ax, summarise(part, "mAP"), bits, target)
        ax.set(ylabel=f"mAP@{topk or 'all'} (%)", title=title)
        _legend(ax)
        written.append(out_dir / f"map_vs_bits_{stem}.png")
        savefig(fig, written[-1])
        for kind, (attr, key, x, y, xlabel, ylabel) in CURVES.items():
            fig, axes = plt.subplots(
                1, len(bits), figsize=(3.6 * len(bits) + 1.5, 3.4), sharey=True, squeeze=False
            )
            for ax, b in zip(axes[0], bits, strict=True):
                for method in methods:
                    curve = mean_curve(retrieval_runs(part, method, b, root), attr, key)
                    if curve is not None:
                        xs = curve[x] * 100 if kind == "pr" else curve[x]
                        style = method_style(method)
                        ax.plot(xs, curve[y] * 100, markersize=3, label=method, **style)
                if kind != "pr":
                    ax.set_xscale("log")
                ax.set(title=f"{b} bits", xlabel=xlabel)
                ax.grid(alpha=0.3)
            axes[0][0].set_ylabel(f"{ylabel} (%)")
            _legend(axes[0][-1])
            fig.suptitle(title, fontsize=9, y=1.03)
            written.append(out_dir / f"{kind}_{stem}.png")
            savefig(fig, written[-1])
        if "empty_r2" in part and part["empty_r2"].notna().any():
            panels = (
                ("precision_r2", "precision, empty lookup = 0"),
                ("recall_r2", "recall"),
                ("empty_r2", "share of empty lookups"),
            )
            fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
            for ax, (column, label) in zip(axes, panels, strict=True):
                _against_bits(ax, summarise(part, column), bits)
                ax.set(title=f"{label} (%)")
            _legend(axes[-1])
            fig.suptitle(f"{title}: hash lookup within Hamming radius 2", fontsize=9, y=1.03)
            written.append(out_dir / f"hash_lookup_{stem}.png")
            savefig(fig, written[-1])
    return written


def seed_figures(df: pd.DataFrame, column: str, out_dir: Path) -> list[Path]:
    """Per dataset and protocol: every seed's ``column`` (%) as a dot, per method (columns) and
    code length (panels), with the mean as a bar, so an unstable method is seen, not averaged."""
    plt = pyplot()
    written = []
    for (dataset, protocol), part in df.groupby(["dataset", "protocol"], sort=False):
        if column not in part or part[column].isna().all():
            continue
        bits = sorted(int(b) for b in part["bits"].unique())
        names = list(part["method"].drop_duplicates())
        fig, axes = plt.subplots(
            1, len(bits), figsize=(0.55 * len(names) * len(bits) + 1.5, 3.6), squeeze=False
        )
        for ax, b in zip(axes[0], bits, strict=True):
            for i, method in enumerate(names):
                values = part[(part["method"] == method) & (part["bits"] == b)][column] * 100
                values = values.dropna().to_numpy()
                if not len(values):
                    continue
                style = method_style(method)
                # spread the dots sideways by rank, so equal values stay visible side by side
                offsets = np.linspace(-0.18, 0.18, len(values)) if len(values) > 1 else [0.0]
                ax.scatter(
                    i + np.asarray(offsets),
                    np.sort(values),
                    s=16,
                    color=style["color"],
                    marker=style["marker"],
                    zorder=3,
                )
                ax.hlines(values.mean(), i - 0.3, i + 0.3, color="0.3", lw=1, zorder=2)
            ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
            ax.set(title=f"{b} bits")
            ax.grid(axis="y", alpha=0.3)
        label = column.replace("_tie_aware", " (tie-aware)")
        axes[0][0].set_ylabel(f"{label} (%)")
        fig.suptitle(display_name(part), fontsize=9, y=1.02)
        fig.tight_layout()
        written.append(out_dir / f"seeds_{dataset}_{protocol}.png")
        savefig(fig, written[-1])
    return written


def per_class_figure(table: pd.DataFrame, title: str, path: Path) -> Path:
    """A methods x classes heatmap of AP (%), each cell written in, so it reads without colour."""
    plt = pyplot()
    values = table.to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * values.shape[1], 0.9 + 0.42 * values.shape[0]))
    im = ax.imshow(values, cmap="viridis", aspect="auto")
    ax.set_xticks(range(values.shape[1]), list(table.columns), rotation=35, ha="right")
    ax.set_yticks(range(values.shape[0]), list(table.index))
    mid = np.nanmean(values)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            ax.text(
                j,
                i,
                f"{values[i, j]:.0f}",
                ha="center",
                va="center",
                fontsize=7,
                color="black" if values[i, j] > mid else "white",
            )
    fig.colorbar(im, ax=ax, label="AP (%)")
    ax.set_title(title, fontsize=9)
    savefig(fig, path)
    return path


def example_figures(
    examples: Mapping[str, tuple[np.ndarray, np.ndarray]],
    query_ids: np.ndarray,
    labels: np.ndarray,
    image: Any,
    classes: Sequence[str],
    title: str,
    stem: Path,
    per_figure: int = 1,
) -> list[Path]:
    """Each method's top hits for the seeded example queries: a row per query and method, the
    query first; a hit is framed solid and marked "+", a miss framed dashed and marked "x", so it
    reads without colour. ``examples[method] = (query positions, top hit image ids)``;
    ``query_ids`` maps query positions to image ids; ``image(i)`` gives image ``i``."""
    plt = pyplot()

    def thumb(i: int) -> np.ndarray:
        # square thumbnails (CIFAR's are already square), so the grid has no gaps
        return np.asarray(image(i).convert("RGB").resize((THUMB, THUMB)))

    methods = list(examples)
    shown = next(iter(examples.values()))[0]
    for m in methods:
        if not np.array_equal(examples[m][0], shown):
            raise ValueError(f"{m}'s example queries differ from {methods[0]}'s; rerun evaluate")
    top = next(iter(examples.values()))[1].shape[1]
    written = []
    for start in range(0, len(shown), per_figure):
        chunk = range(start, min(start + per_figure, len(shown)))
        n_rows = len(chunk) * len(methods)
        fig, axes = plt.subplots(
            n_rows, top + 1, figsize=(0.6 * (top + 1) + 1.0, 0.72 * n_rows), squeeze=False
        )
        for c, q in enumerate(chunk):
            qid = int(query_ids[shown[q]])
            for r, method in enumerate(methods):
                row = axes[c * len(methods) + r]
                row[0].imshow(thumb(qid))
                row[0].set_ylabel(method, rotation=0, ha="right", va="center", fontsize=7)
                if r == 0 and len(chunk) > 1:  # one query a figure: it is in the title
                    row[0].set_title(f"query: {classes[labels[qid]]}", fontsize=7)
                hits = examples[method][1][q]
                for j, hid in enumerate(hits):
                    ax = row[j + 1]
                    ax.imshow(thumb(int(hid)))
                    hit = labels[int(hid)] == labels[qid]
                    for spine in ax.spines.values():
                        spine.set(
                            visible=True,
                            linewidth=2.5,
                            color="tab:green" if hit else "tab:red",
                            linestyle="-" if hit else "--",
                        )
                    ax.set_xlabel("+" if hit else "x", fontsize=8, labelpad=1)
                for ax in row:
                    ax.set_xticks([])
                    ax.set_yticks([])
        queries = ", ".join(classes[labels[int(query_ids[shown[q]])]] for q in chunk)
        fig.suptitle(f"{title}; query: {queries} (first column)", fontsize=8, y=1.0)
        fig.subplots_adjust(top=0.93, hspace=0.6, wspace=0.08)
        path = stem.with_name(f"{stem.name}_{start // per_figure + 1}.jpg")
        savefig(fig, path)
        written.append(path)
    return written


def map_crossings(root: Path, df: pd.DataFrame, target: str) -> list[str]:
    """Where ``target``'s mean mAP@k curve (tie-aware, seeds averaged) crosses another method's,
    per protocol and code length, as sentences: the ranking of two methods that a paper reports
    depends on its cut-off exactly there."""
    out = []
    for protocol, part in df.groupby("protocol", sort=False):
        for bits in sorted(part["bits"].unique()):
            mine = mean_curve(retrieval_runs(part, target, bits, root), "map_at_k", "k")
            if mine is None:
                continue
            for other in part["method"].drop_duplicates():
                theirs = mean_curve(retrieval_runs(part, other, bits, root), "map_at_k", "k")
                if other == target or theirs is None:
                    continue
                flips = _crossings(mine.merge(theirs, on="k", suffixes=("", "_o")))
                if flips:
                    out.append(f"`{protocol}`, {bits} bits, {other}: {target} " + flips)
    return out


def _crossings(both: pd.DataFrame) -> str:
    """Where the first of two merged mAP@k curves changes sides ("" where it never does)."""
    d = np.sign(both["mAP_tie_aware"] - both["mAP_tie_aware_o"]).to_numpy()
    ks = both["k"].to_numpy()
    flips = [
        f"{'above' if d[i + 1] > 0 else 'below'} it from k = {ks[i]:,}-{ks[i + 1]:,}"
        for i in range(len(d) - 1)
        if d[i] != 0 and d[i + 1] != 0 and d[i] != d[i + 1]
    ]
    if not flips:
        return ""
    return f"starts {'above' if d[0] > 0 else 'below'}, " + ", then ".join(flips)


#: what a figure shows, error bars and lines included, by the start of its file name; {seeds}:
#: the seeds its numbers are averaged over
CAPTIONS = (
    (
        "across_settings",
        (
            "Each method's mAP@1000 (the first k of evaluation.map_at, the same on every "
            "protocol) at 32 bits in every setting (dataset, protocol, features): the mean "
            "over seeds {seeds}, error bars the sample std over them (none "
            "for PCAH and SH, which do not depend on the seed). Every setting uses the "
            "hyperparameters selected on the main one."
        ),
    ),
    (
        "cost",
        (
            "Each method's mAP at the cut-off (mean over seeds {seeds}) against its fit time per "
            "run on the machine of the Setup (mean, log axis), one point per code length "
            "(labelled); the backbone's features, which every method shares, are not counted."
        ),
    ),
    (
        "selection",
        (
            "Per deep method (rows) and knob (columns): the validation mAP at the cut-off of "
            "every setting the selection tried (grey dots), of those that differ from the "
            "chosen setting in this knob alone (blue, mean ± std over the selection's seeds), "
            "and of the chosen one (star). The search is a coordinate search, so most knobs "
            "were tried from one starting point only."
        ),
    ),
    (
        "seeds",
        (
            "Every training seed's run as a dot ({seeds}; one dot for the methods that do not "
            "depend on the seed), per method and code length; the bar is their mean. The "
            "spread between dots is what the verdict's interval counts besides the queries."
        ),
    ),
    (
        "map_vs_bits",
        (
            "mAP at the protocol's cut-off (index-order ties) against code length (a log2 "
            "axis: 16, 32, 64 equally spaced); points are means over seeds {seeds}, error bars "
            "the sample std over them (none for PCAH and SH, which do not depend on the seed); "
            "the judged method drawn thick."
        ),
    ),
    (
        "precision_at_n",
        (
            "Precision of the top N (index-order ties) at log-spaced N from 1, one panel per "
            "code length; averaged over queries, then over seeds {seeds}."
        ),
    ),
    (
        "map_at_k",
        (
            "mAP@k (tie-aware) against the cut-off k, from 100 to the whole database, one panel "
            "per code length; averaged over queries, then over seeds {seeds}. Where two lines "
            "cross, the ranking of the two methods depends on the cut-off a paper picks."
        ),
    ),
    (
        "pr_",
        (
            "Precision and recall of Hamming-radius lookup, one point per radius 0..B. A query "
            "whose lookup is empty at a radius has no precision there and is left out of that "
            "radius' mean (radii where every lookup is empty have no point); recall averages "
            "over all queries. Then averaged over seeds {seeds} (a seed without a non-empty "
            "lookup at a radius is left out there). At the smallest radii of long codes a point "
            "may rest on a handful of queries, hence the jumps near recall 0; each curve file's "
            "`nonempty` column gives the share of queries behind every point."
        ),
    ),
    (
        "hash_lookup",
        (
            "Hash lookup within Hamming radius 2 against code length: precision over all "
            "queries (an empty lookup counts 0), recall, and the share of empty lookups; means "
            "over seeds {seeds}, error bars the sample std."
        ),
    ),
    (
        "per_class",
        (
            "AP at the protocol's cut-off (tie-aware) of the queries of each class, averaged "
            "over those queries and over the seeds; the number in each cell is the AP in %."
        ),
    ),
    (
        "examples",
        (
            "Top 10 of each method for seeded test queries (the same queries for every method; "
            "seed 0's model). A hit (same class as the query) is framed solid and marked '+', a "
            "miss framed dashed and marked 'x'; ties in distance are ordered by database index."
        ),
    ),
    (
        "ablations",
        (
            "USDH variants: each variant's mAP at the cut-off minus the full objective's (the "
            "main experiment's USDH), in points, over seeds {seeds} and the test queries, with "
            "its 95% interval over seeds and queries; a marker without bars had one seed."
        ),
    ),
    (
        "training",
        (
            "Per-epoch training loss of every seed (one line each; colours are seeds): the "
            "weighted total in the top row, each term unweighted below it, one column per code "
            "length. A log axis only where a panel spans more than a factor 20. Dotted vertical "
            "lines: a new training stage starts (DeepBit's three). No validation curve: the "
            "main runs hold nothing out; their epochs were chosen on the validation split "
            "(the selection records under `reports/validation/` have its per-epoch mAP)."
        ),
    ),
)


def caption(stem: str, seeds: str) -> str:
    """What a figure shows (its kind: the start of its file name), for the README."""
    for prefix, text in CAPTIONS:
        if stem.startswith(prefix):
            return text.format(seeds=seeds)
    return ""
