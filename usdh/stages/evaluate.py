"""``python -m usdh evaluate <method> [bits seed]``: every retrieval metric of a method's saved
codes, for every code length and seed (or the one given)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from usdh.data import PROTOCOLS, ImageDataset, load_prepared, load_split
from usdh.evaluation import Curves, evaluate_run
from usdh.layout import CODE_PARTS, Run
from usdh.paramcheck import check_relations as check_params  # noqa: F401 (the CLI calls it)
from usdh.params import section
from usdh.stages.common import RunContext, contexts, fit_command, stage_outputs

log = logging.getLogger("usdh")


#: what scoring a run writes: its metrics, its three curves and its per-query figures
KINDS = ("metrics", "precision_recall", "precision_at_n", "map_at_k", "queries")


def score_files(run: Run) -> list[Path]:
    """What scoring one run writes (one file of each of :data:`KINDS`), for every stage that
    scores runs."""
    return [run.metrics, run.pr_curve, run.p_at_n, run.map_at_k, run.per_query]


outputs = stage_outputs(KINDS, score_files)


def evaluate_context(
    params: dict[str, Any],
    ctx: RunContext,
    split: Mapping[str, np.ndarray] | None = None,
    ds: ImageDataset | None = None,
    **record: Any,
) -> dict[str, Any]:
    """Score the run's saved codes with its protocol's cut-off and the evaluation settings.
    A stage scoring several runs of one protocol passes the ``split`` and the prepared ``ds`` it
    has already read; ``record`` entries join the metrics' record."""
    ev = section(params, "evaluation")
    ds = load_prepared(ctx.prepared_dir) if ds is None else ds
    return evaluate_run(
        ds.labels,
        load_split(ctx.split_dir) if split is None else split,
        ctx.run,
        PROTOCOLS[ctx.run.protocol].topk,
        Curves.from_params(ev),
        ev["radius"],
        {**ctx.record, "source": ds.source, **record},
    )


def log_metrics(what: str, m: dict[str, Any]) -> None:
    log.info(
        "%s: mAP@%s %.4f (tie-aware %.4f), mAP@all %.4f",
        what,
        m["topk"],
        m["mAP"],
        m["mAP_tie_aware"],
        m["mAP_all"],
    )


def check_fitted(runs: list[RunContext]) -> None:
    """Refuse, before scoring any, runs without codes, naming the command that makes them."""
    for ctx in runs:
        files = (ctx.run.code_file(part) for part in CODE_PARTS)
        missing = [p for p in files if not p.is_file()]
        if missing:
            raise FileNotFoundError(
                f"{ctx.run.name} {ctx.run.bits} bits seed {ctx.run.seed} has no codes "
                f"({missing[0]} not found): it was never fitted, or its fit stopped before "
                f"encoding; run "
                f"{fit_command(ctx.run)} (or dvc repro its stage) first"
            )


def run(params: dict[str, Any], method: str, *bits_seed: int | None, **where: Any) -> None:
    """mAP (protocol cut-off and all, both tie rules), PR by radius, precision@N, mAP@k."""
    runs = contexts(params, method, *bits_seed, **where)
    check_fitted(runs)
    ds = load_prepared(runs[0].prepared_dir)  # read once: every run shares the protocol
    split = load_split(runs[0].split_dir)
    for ctx in runs:
        m = evaluate_context(params, ctx, split, ds)
        log_metrics(f"{method} {ctx.run.bits} bits seed {ctx.run.seed}", m)
