"""``python -m usdh bank-study``: a two-view method (CIBHash) trained on larger banks of augmented
views than the default, so that a reader knows what the default bank costs in mAP.

Not a pipeline stage (it costs more backbone passes than the whole default bank): run it once
after ``dvc repro``; it writes ``reports/bank_size.csv`` and ``reports/bank_size.md``. A bank of
``V`` views holds the views of every smaller bank (the same pixels: each view is seeded by image
and view number, :mod:`usdh.augment`), so only the views a larger bank adds are computed, and the
default bank's are read from the bank stage's output. Every bank trains on the same images (the
main protocol's augmentation subset), with the method's params.yaml setting, at
``bank_study.bits`` and ``bank_study.seeds``, and is scored as the retrieval table is
(``usdh.metrics.evaluate_retrieval``: mAP at the protocol's cut-off, tie-aware, on the protocol's
queries and database).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from usdh.data import PROTOCOLS, load_prepared, load_split
from usdh.features import Bank, load_bank, load_features
from usdh.fitting import fit_on_rows, views_from_features
from usdh.io import atomic_path
from usdh.metrics import evaluate_retrieval
from usdh.paramcheck import check_all as check_params  # noqa: F401 (the CLI calls it)
from usdh.params import section
from usdh.provenance import cpu_id, environment, git_revision
from usdh.stages.common import method_params, run_context
from usdh.stages.features import augmented_views

log = logging.getLogger("usdh")

REPORTS = Path("reports")


def outputs(params: dict[str, Any]) -> list[Path]:
    return [REPORTS / "bank_size.csv", REPORTS / "bank_size.md"]


def run(params: dict[str, Any]) -> None:
    """Grow the default bank to each of ``bank_study.views``, fit and score on each."""
    cfg = section(params, "bank_study")
    method, bits, seeds = cfg["method"], int(cfg["bits"]), list(cfg["seeds"])
    ctx = run_context(params, method, bits, seeds[0])
    ds = load_prepared(ctx.prepared_dir)
    split = load_split(ctx.split_dir)
    fs = load_features(ctx.features_dir, mmap_mode="r")
    features = np.asarray(fs.features)
    base = load_bank(ctx.bank_dir)
    if base.views is None or base.indices is None:
        raise ValueError(f"{ctx.bank_dir} holds no bank; list {method} and run dvc repro first")
    # only the main protocol's bank images: the ones its fits train on
    mine = np.isin(base.indices, split.get("augmentation_subset", base.indices))
    rows, views = base.indices[mine], base.views[mine]
    banks: dict[int, tuple[np.ndarray, float]] = {views.shape[1]: (views, 0.0)}
    for n_views in sorted(v for v in cfg["views"] if v > views.shape[1]):
        have = max(banks)
        extra, info = augmented_views(
            params, ds, rows, views=n_views, first=have, dataset=ctx.run.dataset
        )
        banks[n_views] = (
            np.concatenate([banks[have][0], extra], axis=1),
            banks[have][1] + float(info["wall_time_s"]),
        )
    labels = ds.labels
    q, db = split["query"], split["database"]
    topk = PROTOCOLS[ctx.run.protocol].topk
    records = []
    for n_views, (bank_views, extract_s) in sorted(banks.items()):
        bank = Bank(bank_views, rows, {})
        for s in seeds:
            start = time.perf_counter()
            fitted = fit_on_rows(
                method,
                bits,
                s,
                features,
                split,
                method_params=method_params(params, method),
                views=views_from_features(fs, bank),
            )
            fit_s = time.perf_counter() - start
            hasher = fitted.hasher
            m = evaluate_retrieval(
                hasher.encode(features[q]), hasher.encode(features[db]), labels[q], labels[db], topk
            )
            records.append(
                {
                    "views": n_views,
                    "images": len(rows),
                    "backbone_passes": len(rows) * n_views,
                    "extra_extract_s": round(extract_s, 1),
                    "seed": s,
                    "epochs": len(hasher.log_),
                    "fit_s": round(fit_s, 1),
                    "mAP": m["mAP_tie_aware"],
                    "mAP_all": m["mAP_all_tie_aware"],
                }
            )
            log.info("bank of %d views, seed %d: mAP %.4f", n_views, s, m["mAP_tie_aware"])
    _write(pd.DataFrame(records), method, bits, ctx.run.protocol, str(ctx.run.dataset))


def _write(df: pd.DataFrame, method: str, bits: int, protocol: str, dataset: str) -> None:
    """The per-seed CSV and a table of means and stds, with what was run and where."""
    with atomic_path(REPORTS / "bank_size.csv") as tmp:
        df.to_csv(tmp, index=False)
    g = df.groupby("views")
    table = pd.DataFrame(
        {
            "views per image": g["views"].first(),
            "images": g["images"].first(),
            "backbone passes": g["backbone_passes"].first(),
            "extra extraction (s)": g["extra_extract_s"].first(),
            "fit (s)": g["fit_s"].mean().round(1),
            "mAP (%)": [
                f"{a * 100:.2f} ± {b * 100:.2f}"
                for a, b in zip(g["mAP"].mean(), g["mAP"].std(), strict=True)
            ],
            "mAP@all (%)": [
                f"{a * 100:.2f} ± {b * 100:.2f}"
                for a, b in zip(g["mAP_all"].mean(), g["mAP_all"].std(), strict=True)
            ],
        }
    )
    env = environment("cpu")
    cpu = env["cpu"]
    made = (
        f"Made at commit {git_revision() or 'unknown'} on {cpu['cpu']} ({cpu_id(cpu)}), "
        f"{env['packages'].get('torch')} torch: a page "
        "outside the pipeline, so its default-bank row matches the main table only when both "
        "came from the same commit and machine."
    )
    text = "\n".join(
        [
            f"# What the bank costs: {method} at {bits} bits with larger banks of views",
            "",
            f"Written by `python -m usdh bank-study` (not a pipeline stage). {method} trained on "
            f"the same {int(df['images'].iloc[0]):,} images of {dataset} `{protocol}` (its "
            "`augmentation_subset`) with banks of more augmented views per image; the smallest "
            "is the pipeline's default bank, read from the bank stage, and each larger one adds "
            "views to it (a bank of V views holds the views of every smaller one). "
            "'extra extraction' is the backbone time of the views beyond the default bank on "
            f"this machine ({env['cpu']['cores']} CPUs). "
            "mAP is the protocol's tie-aware mAP at its "
            "cut-off on its test queries, mean ± std over seeds "
            f"{', '.join(str(s) for s in sorted(df['seed'].unique()))}; every other setting is "
            f"params.yaml's `methods.{method}`.",
            "",
            made,
            "",
            table.to_markdown(index=False),
            "",
        ]
    )
    with atomic_path(REPORTS / "bank_size.md") as tmp:
        Path(tmp).write_text(text)
