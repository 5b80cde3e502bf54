"""The ablations: a method with one thing changed (USDH without one criterion, another
initialisation, fewer training images), beside that method's full run (the main experiment's
runs), on the main protocol."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from usdh.layout import Run, find_runs
from usdh.report.figures import pyplot, savefig
from usdh.report.inputs import read_metrics, read_run_queries
from usdh.report.markdown import section
from usdh.report.results import by_bits, fmt, mean_std, run_records
from usdh.report.verdict import interval_text, seed_query_interval

__all__ = [
    "ABLATION_COLUMNS",
    "ablation_changes",
    "ablation_figure",
    "ablation_groups",
    "ablation_table",
    "ablations_section",
    "collect_ablations",
    "per_query_ap",
    "run_record",
]

ABLATION_COLUMNS = [
    "dataset",
    "method",
    "variant",
    "train_on",
    "bits",
    "seed",
    "mAP",
    "mAP_tie_aware",
    "mAP_all",
]


def collect_ablations(root: str | Path, results: pd.DataFrame) -> pd.DataFrame:
    """One row per ablation run, plus each ablated method's ``full`` run: the main experiment's
    runs of that method on the same datasets, code lengths and seeds (same parameters, so the
    same numbers)."""
    records = run_records(root, "ablations")
    rows = [{c: m.get(c) for c in ABLATION_COLUMNS} for m in records]
    if not rows:
        return pd.DataFrame(columns=ABLATION_COLUMNS)
    df = pd.DataFrame(rows)
    protocols = {run.protocol for run in find_runs("ablations", root=Path(root))}
    fulls = []
    for method, own in df.groupby("method", sort=False):
        full = results[(results["method"] == method) & results["dataset"].isin(own["dataset"])]
        full = full[full["protocol"].isin(protocols)]
        full = full[full["bits"].isin(own["bits"]) & full["seed"].isin(own["seed"])]
        fulls.append(full.assign(variant="full", train_on=None)[ABLATION_COLUMNS])
    df = pd.concat([*fulls, df], ignore_index=True)
    # each method's full run first, then its variants by name
    order = {m: i for i, m in enumerate(dict.fromkeys(df["method"]))}
    df["_m"] = df["method"].map(order)
    df["_o"] = (df["variant"] != "full").astype(int)
    keys = ["dataset", "_m", "_o", "variant", "bits", "seed"]
    return df.sort_values(keys).drop(columns=["_m", "_o"]).reset_index(drop=True)


def run_record(run: Run) -> dict:
    """An ablation run's metrics record: it names the method the run varies (the path names the
    variant) and the split part it trained on (``train_on``, when not the pool)."""
    return read_metrics(run)


def ablation_groups(root: str | Path) -> list[tuple[tuple[str, str, str, int], list[Run]]]:
    """The ablation runs grouped by (dataset, protocol, variant, code length), in that order."""
    groups: dict[tuple[str, str, str, int], list[Run]] = {}
    for run in find_runs("ablations", root=Path(root)):
        groups.setdefault((run.dataset, run.protocol, run.name, run.bits), []).append(run)
    return sorted(groups.items())


def per_query_ap(runs: list[Run] | tuple[Run, ...], key: str = "ap") -> np.ndarray:
    """The per-query AP at the cut-off (``key`` of the per-query file: ``ap``, or
    ``ap_tie_aware``), in points, of ``runs``: seeds x queries in seed order."""
    out = []
    for r in sorted(runs, key=lambda r: r.seed):
        out.append(read_run_queries(r, (key,))[key] * 100)
    return np.stack(out)


def ablation_changes(root: str | Path) -> pd.DataFrame:
    """Per dataset, variant and code length: the variant's mAP at the cut-off minus its method's
    full run (the main experiment's runs with the same seeds), in points, with its 95% interval
    over seeds and queries (``usdh.report.verdict.seed_query_interval``; the seeds are counted
    as independent, though a variant and the full run of one seed start from the same weights: a
    conservative interval)."""
    full_ap: dict[tuple[Run, ...], np.ndarray] = {}  # every variant compares with the same runs
    rows = []
    for (dataset, protocol, variant, bits), runs in ablation_groups(root):
        if not all(r.metrics.is_file() for r in runs):
            continue
        method = run_record(runs[0])["method"]
        full = tuple(
            Run("retrieval", dataset, protocol, method, bits, r.seed, Path(root)) for r in runs
        )
        if not all(r.metrics.is_file() for r in full):
            continue  # no full run to compare with (the method is not in the experiment)
        # (a run that has metrics but no per-query file is an error, per_query_ap says which)
        if full not in full_ap:
            full_ap[full] = per_query_ap(full)
        diff, lo, hi = seed_query_interval(per_query_ap(runs), full_ap[full])
        rows.append(
            {
                "dataset": dataset,
                "method": method,
                "variant": variant,
                "bits": bits,
                "change": diff,
                "lo": lo,
                "hi": hi,
            }
        )
    columns = ["dataset", "method", "variant", "bits", "change", "lo", "hi"]
    return pd.DataFrame(rows, columns=columns)


def ablation_table(df: pd.DataFrame, changes: pd.DataFrame | None = None) -> pd.DataFrame:
    """Variants as rows, bit lengths as columns: mAP 'mean ± std' in %, and the change from full
    with its interval over seeds and queries (:func:`ablation_changes`) where there is one."""
    s = mean_std(df, ["dataset", "method", "variant", "bits"], "mAP")
    full = s[s["variant"] == "full"].set_index(["dataset", "method", "bits"])["mean"]
    found = (
        changes.set_index(["dataset", "variant", "bits"])
        if changes is not None and len(changes)
        else None
    )
    cells = []
    for r in s.itertuples():
        cell = fmt(r.mean, r.std, r.count)
        key = (r.dataset, r.variant, r.bits)
        if found is not None and key in found.index:
            c = found.loc[key]
            cell += f" ({interval_text((c['change'], c['lo'], c['hi']))})"
        elif r.variant != "full" and (r.dataset, r.method, r.bits) in full.index:
            cell += f" ({(r.mean - full[(r.dataset, r.method, r.bits)]) * 100:+.2f})"
        cells.append(cell)
    s["cell"] = cells
    return by_bits(s, ["dataset", "method", "variant"])


def ablation_figure(changes: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Per dataset: each variant's change of mAP from the full objective, with its interval,
    one marker per code length (bars from 0 would hide changes of a fraction of a point)."""
    plt = pyplot()
    written = []
    for dataset, part in changes.groupby("dataset", sort=False):
        variants = list(dict.fromkeys(part["variant"]))
        bits = sorted(part["bits"].unique())
        fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(variants) + 1.4))
        y = np.arange(len(variants))
        for i, b in enumerate(bits):
            g = part[part["bits"] == b].set_index("variant").reindex(variants)
            offset = (i - (len(bits) - 1) / 2) * 0.2
            ax.errorbar(
                g["change"],
                y + offset,
                # no interval (one seed): a bare marker
                xerr=np.nan_to_num([g["change"] - g["lo"], g["hi"] - g["change"]]),
                fmt="o",
                capsize=3,
                label=f"{b} bits",
            )
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(y, variants)
        ax.invert_yaxis()
        ax.set_xlabel("change of mAP at the cut-off from the method's full run (points)")
        ax.set_title(f"Each variant against its method's full run, {dataset}", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        if len(bits) > 1:
            ax.legend(fontsize=8)
        path = out_dir / f"ablations_{dataset}.png"
        savefig(fig, path)
        written.append(path)
    return written


def ablations_section(table: pd.DataFrame, main: str) -> list[str]:
    """The README's ablation table and what each variant changes."""
    return section(
        "## Ablations: one thing changed at a time (mAP %, change from the method's full run)",
        table,
        f"On the main protocol (`{main}`). `full` is the main table's run of the method; for "
        "USDH, `no_<term>` switches one term off (weight 0), `semantic_only` keeps the "
        "semantic term alone, `semantic_weight_<w>` changes its weight (the default is chosen "
        "on a validation split, docs/usdh.md), `bihalf_binarizer` trains USDH's objective on "
        "the bi-half layer's codes instead of its relaxed codes, `init_itq` starts the linear "
        "head from ITQ's projection; `<method>_init_pytorch` starts GreedyHash or BiHalf as "
        "their releases do (nn.Linear's default initialisation) instead of ours "
        "(docs/methods.md); `cibhash_deterministic` trains CIBHash on deterministic bits "
        "(p > 0.5) instead of sampled ones, `greedyhash_centred` gives GreedyHash centred feature "
        "cosines instead of raw ones (diagnostics, not the releases' methods); "
        "`<method>_matched` trains on CIBHash's 5,000 images instead of all "
        "training images (the matched-data verdict above). Same seeds; same training images "
        "except in the matched runs. In brackets: the change from `full` in points, with its "
        "95% interval over seeds and queries (as the verdict's, counting the two runs of a seed "
        "as independent, which widens it); no variant was chosen on these test-query numbers.",
    )
