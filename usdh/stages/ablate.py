"""``python -m usdh ablate <variant> [bits seed]``: the ablated method with one variant's
parameter overrides (a loss term off, another binarizer, another initialisation), fit to metrics,
for every code length and seed of the ablations section (or the one given)."""

from __future__ import annotations

import logging
from typing import Any

from usdh.paramcheck import method_checker
from usdh.params import ParamsError, section
from usdh.stages.common import RunContext, fit_files, grid, run_context, stage_outputs
from usdh.stages.encode import encode_run
from usdh.stages.evaluate import KINDS as SCORES
from usdh.stages.evaluate import evaluate_context, log_metrics, score_files
from usdh.stages.runs import fitted_runs

log = logging.getLogger("usdh")

#: the whole file, with the class checks of this stage's method only (usdh.paramcheck)
check_params = method_checker("ablations")


def _context(params: dict[str, Any], variant: str, bits: int, seed: int) -> RunContext:
    abl = section(params, "ablations")
    if variant not in abl["variants"]:
        raise ParamsError(
            f"ablation variant {variant!r} is not in ablations.variants "
            f"({', '.join(abl['variants'])})"
        )
    ctx = run_context(params, abl["method"], bits, seed, group="ablations", name=variant)
    ctx.record.update(variant=variant, overrides=abl["variants"][variant])
    return ctx


outputs = stage_outputs(
    ("models", "codes", *SCORES), lambda run: [*fit_files(run), *score_files(run)], _context
)


def run(
    params: dict[str, Any], variant: str, bits: int | None = None, seed: int | None = None
) -> None:
    """Every run of one ablation variant: fit with its overrides, encode, score."""
    overrides = section(params, "ablations", "variants", variant)
    contexts = [_context(params, variant, b, s) for b, s in grid(params, "ablations", bits, seed)]
    for ctx, _, data in fitted_runs(params, contexts, overrides):
        encode_run(ctx.method, ctx.run, data.features, data.split)
        m = evaluate_context(params, ctx, data.split)  # the split fitted_runs has read
        log_metrics(f"ablation {variant} {ctx.run.bits} bits seed {ctx.run.seed}", m)
