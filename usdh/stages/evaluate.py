"""``python -m usdh evaluate <method> <bits> <seed>``: every retrieval metric of saved codes."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from usdh.data import PROTOCOLS, load_prepared, load_split
from usdh.evaluation import evaluate_run
from usdh.params import section
from usdh.stages.common import RunContext, run_context

log = logging.getLogger("usdh")


def outputs(params: dict[str, Any], method: str, bits: int, seed: int) -> list[Path]:
    run = run_context(params, method, bits, seed).run
    return [run.metrics, run.pr_curve, run.p_at_n]


def evaluate_context(params: dict[str, Any], ctx: RunContext, **record: Any) -> dict[str, Any]:
    """Score the run's saved codes with its protocol's cut-off and the evaluation settings."""
    ev = section(params, "evaluation")
    ds = load_prepared(ctx.prepared_dir)
    return evaluate_run(
        ds.labels,
        load_split(ctx.split_dir),
        ctx.run,
        PROTOCOLS[ctx.run.protocol].topk,
        list(ev["precision_at"]),
        int(ev["radius"]),
        {**ctx.record, "source": ds.source, **record},
    )


def run(params: dict[str, Any], method: str, bits: int, seed: int) -> None:
    """mAP (protocol cut-off and all, both tie rules), PR by radius, precision@N."""
    m = evaluate_context(params, run_context(params, method, bits, seed))
    log.info(
        "%s %d bits seed %d: mAP@%s %.4f (tie-aware %.4f), mAP@all %.4f",
        method,
        bits,
        seed,
        m["topk"],
        m["mAP"],
        m["mAP_tie_aware"],
        m["mAP_all"],
    )
