"""``python -m usdh evaluate <method> [bits seed]``: every retrieval metric of a method's saved
codes, for every code length and seed (or the one given)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from usdh.data import PROTOCOLS, load_prepared, load_split
from usdh.evaluation import Curves, evaluate_run
from usdh.layout import Run
from usdh.params import section
from usdh.stages.common import RunContext, contexts, method_outputs, run_context

log = logging.getLogger("usdh")


#: what scoring a run writes: its metrics, its three curves and its per-query figures
KINDS = ("metrics", "precision_recall", "precision_at_n", "map_at_k", "queries")


def outputs(
    params: dict[str, Any],
    method: str,
    bits: int | None = None,
    seed: int | None = None,
    protocol: str | None = None,
    experiment: str = "experiment",
) -> list[Path]:
    if bits is None or seed is None:
        ctx = run_context(params, method, 0, 0, protocol=protocol, experiment=experiment)
        return method_outputs(ctx, KINDS)
    return score_files(
        run_context(params, method, bits, seed, protocol=protocol, experiment=experiment).run
    )


def score_files(run: Run) -> list[Path]:
    """What scoring one run writes (one file of each of :data:`KINDS`), for every stage that
    scores runs."""
    return [run.metrics, run.pr_curve, run.p_at_n, run.map_at_k, run.per_query]


def evaluate_context(params: dict[str, Any], ctx: RunContext, **record: Any) -> dict[str, Any]:
    """Score the run's saved codes with its protocol's cut-off and the evaluation settings."""
    ev = section(params, "evaluation")
    ds = load_prepared(ctx.prepared_dir)
    return evaluate_run(
        ds.labels,
        load_split(ctx.split_dir),
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


def run(
    params: dict[str, Any],
    method: str,
    bits: int | None = None,
    seed: int | None = None,
    protocol: str | None = None,
    experiment: str = "experiment",
) -> None:
    """mAP (protocol cut-off and all, both tie rules), PR by radius, precision@N, mAP@k."""
    for ctx in contexts(params, method, bits, seed, protocol=protocol, experiment=experiment):
        m = evaluate_context(params, ctx)
        log_metrics(f"{method} {ctx.run.bits} bits seed {ctx.run.seed}", m)
