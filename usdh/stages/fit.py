"""``python -m usdh fit <method> [bits seed]``: fit a method on the experiment's training rows and
encode the protocol's queries and database, for every code length and seed (or the one given)."""

from __future__ import annotations

import logging
from typing import Any

from usdh.paramcheck import method_checker
from usdh.stages.common import contexts, fit_files, stage_outputs
from usdh.stages.encode import encode_run, record_encoding
from usdh.stages.runs import fitted_runs

log = logging.getLogger("usdh")

#: the whole file, with the class checks of this stage's method only (usdh.paramcheck)
check_params = method_checker()

KINDS = ("models", "codes")


outputs = stage_outputs(KINDS, fit_files)


def run(params: dict[str, Any], method: str, *bits_seed: int | None, **where: Any) -> None:
    """Fit and encode every (bits, seed) run of one method on one protocol (or the one run asked
    for); the encode throughput joins the run's fit record (the report's cost table)."""
    runs = contexts(params, method, *bits_seed, **where)
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
