"""``python -m usdh finetune <method> [bits seed]``: a deep method trained with the backbone's
last units on images, every image then re-encoded through them (a GPU's job), for every code
length and seed of the finetune section (or the one given)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from usdh.augment import Augmentation
from usdh.data import load_prepared, load_split
from usdh.feature_store import load_features
from usdh.finetune import finetune_method
from usdh.fitting import merge_params
from usdh.paramcheck import method_checker
from usdh.params import features_params, section
from usdh.registry import get_method
from usdh.stages.common import (
    RunContext,
    fit_files,
    grid,
    method_params,
    run_context,
    stage_outputs,
)
from usdh.stages.evaluate import KINDS as SCORES
from usdh.stages.evaluate import evaluate_context, log_metrics, score_files
from usdh.stages.features import pipeline_backbone

log = logging.getLogger("usdh")

#: the whole file, with the class checks of this stage's method only (usdh.paramcheck)
check_params = method_checker()


def _context(params: dict[str, Any], method: str, bits: int, seed: int) -> RunContext:
    return run_context(params, method, bits, seed, group="finetune")


def finetune_params(params: dict[str, Any], method: str) -> dict[str, Any]:
    """The method's params.yaml section with ``finetune.train`` merged in, recursively (a
    ``loss`` override changes the terms it names and keeps the others)."""
    return merge_params(
        method_params(params, method), section(params, "finetune").get("train") or {}
    )


outputs = stage_outputs(
    ("models", "codes", *SCORES), lambda run: [*fit_files(run), *score_files(run)], _context
)


def run(
    params: dict[str, Any], method: str, bits: int | None = None, seed: int | None = None
) -> None:
    """Fine-tune a deep method with the backbone's last units on images, then encode and score."""
    cfg = section(params, "finetune")
    contexts = [_context(params, method, b, s) for b, s in grid(params, "finetune", bits, seed)]
    fp = features_params(params, dataset=contexts[0].run.dataset)
    ds = load_prepared(contexts[0].prepared_dir)
    fs = load_features(contexts[0].features_dir, mmap_mode="r")
    split = load_split(contexts[0].split_dir)
    for ctx in contexts:
        finetune_method(
            method,
            ctx.run.bits,
            ctx.run.seed,
            ds,
            np.asarray(fs.features),
            split,
            pipeline_backbone(params, dataset=ctx.run.dataset),
            ctx.run,
            method_params=finetune_params(params, method),
            n_trainable=int(cfg.get("n_trainable", 1)),
            input_size=cfg.get("input_size") or fp["input_size"],
            angles=fp["rotation_angles"] or None,
            rotation_mode=fp["rotation_mode"],
            batch_size=fp["batch_size"],
            record=ctx.record,
            # a two-view method sees fresh augmented views of the images every step
            augmentation=(
                Augmentation.from_params(fp.get("augmentation"), int(params["split_seed"]))
                if "augmentations" in get_method(method).views
                else None
            ),
        )
        m = evaluate_context(params, ctx, mode="finetune")
        log_metrics(f"finetuned {method} {ctx.run.bits} bits seed {ctx.run.seed}", m)
