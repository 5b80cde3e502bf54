"""``python -m usdh ablate <variant> [bits seed]``: a method of the experiment with one variant's
parameter overrides (a loss term off, another binarizer, another initialisation) or trained on
another part of the split (``train_on``: the matched-data runs), fit to metrics, for every code
length and seed of the ablations section (or the one given)."""

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

#: the whole file, with the class checks of the variant's method only (usdh.paramcheck)
check_params = method_checker("ablations")


def _variant(params: dict[str, Any], variant: str) -> dict[str, Any]:
    variants = section(params, "ablations")["variants"]
    if variant not in variants:
        raise ParamsError(
            f"ablation variant {variant!r} is not in ablations.variants ({', '.join(variants)})"
        )
    return variants[variant]


def _context(params: dict[str, Any], variant: str, bits: int, seed: int) -> RunContext:
    spec = _variant(params, variant)
    ctx = run_context(params, spec["method"], bits, seed, group="ablations", name=variant)
    ctx.record.update(variant=variant, overrides=spec.get("params") or {})
    if spec.get("train_on"):
        ctx.record["train_on"] = spec["train_on"]
    return ctx


outputs = stage_outputs(
    ("models", "codes", *SCORES), lambda run: [*fit_files(run), *score_files(run)], _context
)


def run(
    params: dict[str, Any], variant: str, bits: int | None = None, seed: int | None = None
) -> None:
    """Every run of one ablation variant: fit with its overrides (on its part of the split),
    encode, score."""
    spec = _variant(params, variant)
    runs = grid(params, "ablations", bits, seed, spec["method"])
    if bits is None and spec.get("bits"):  # the variant's own code lengths
        runs = [(b, s) for b in spec["bits"] for s in dict.fromkeys(s for _, s in runs)]
    contexts = [_context(params, variant, b, s) for b, s in runs]
    runs = fitted_runs(params, contexts, spec.get("params") or {}, part=spec.get("train_on"))
    for ctx, _, data in runs:
        encode_run(ctx.method, ctx.run, data.features, data.split)
        m = evaluate_context(params, ctx, data.split)  # the split fitted_runs has read
        log_metrics(f"ablation {variant} {ctx.run.bits} bits seed {ctx.run.seed}", m)
