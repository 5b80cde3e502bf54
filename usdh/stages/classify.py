"""``python -m usdh classify <method> [bits seed]``: a linear classifier on a method's codes (the
classification section's dataset: train -> C on val -> test accuracy), for every code length and
seed (or the one given)."""

from __future__ import annotations

import logging
from typing import Any

from usdh.classification import PARTS, classify_codes
from usdh.codes import unpack_bits
from usdh.data import load_prepared
from usdh.io import save_json
from usdh.paramcheck import method_checker
from usdh.stages.common import RunContext, grid, run_context, stage_outputs
from usdh.stages.runs import fitted_runs

log = logging.getLogger("usdh")

#: the whole file, with the class checks of this stage's method only (usdh.paramcheck)
check_params = method_checker("classification")


def _context(params: dict[str, Any], method: str, bits: int, seed: int) -> RunContext:
    return run_context(
        params, method, bits, seed, experiment="classification", group="classification"
    )


outputs = stage_outputs(("models", "metrics"), lambda run: [run.model_dir, run.metrics], _context)


def run(
    params: dict[str, Any], method: str, bits: int | None = None, seed: int | None = None
) -> None:
    """A linear classifier on each of the method's codes (train -> C on val -> test accuracy)."""
    contexts = [
        _context(params, method, b, s)
        for b, s in grid(params, "classification", bits, seed, method=method)
    ]
    ds = load_prepared(contexts[0].prepared_dir)
    for ctx, fitted, data in fitted_runs(params, contexts):
        split = data.split
        codes = {p: unpack_bits(fitted.hasher.encode(data.features[split[p]])) for p in PARTS}
        y = ds.labels
        result = classify_codes(*(a for p in PARTS for a in (codes[p], y[split[p]])), ctx.run.seed)
        record = {
            **ctx.record,
            "source": ds.source,
            **result,
            **{f"n_{p}": len(split[p]) for p in PARTS},
        }
        save_json(ctx.run.metrics, record)
        log.info(
            "classify %s %d bits seed %d: accuracy %.4f",
            method,
            ctx.run.bits,
            ctx.run.seed,
            result["accuracy"],
        )
