"""``python -m usdh fit <method> [bits seed]``: fit a method on the experiment's training rows and
encode the protocol's queries and database, for every code length and seed (or the one given)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from usdh.stages.common import contexts, method_outputs, run_context
from usdh.stages.encode import encode_run, record_encoding
from usdh.stages.runs import fitted_runs

log = logging.getLogger("usdh")

KINDS = ("models", "codes")


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
    r = run_context(params, method, bits, seed, protocol=protocol, experiment=experiment).run
    return [r.model_dir, r.codes_dir]


def run(
    params: dict[str, Any],
    method: str,
    bits: int | None = None,
    seed: int | None = None,
    protocol: str | None = None,
    experiment: str = "experiment",
) -> None:
    """Fit and encode every (bits, seed) run of one method on one protocol (or the one run asked
    for); the encode throughput joins the run's fit record (the report's cost table)."""
    runs = contexts(params, method, bits, seed, protocol=protocol, experiment=experiment)
    for ctx, fitted, data in fitted_runs(params, runs):
        rates = encode_run(ctx.method, ctx.run, data.features, data.split)
        record_encoding(ctx.run, rates)
        log.info(
            "fitted %s %d bits seed %d in %.1f s on %d rows; %.0f database codes/s",
            method,
            ctx.run.bits,
            ctx.run.seed,
            fitted.seconds,
            fitted.n_train,
            rates["database_codes_per_s"],
        )
