"""``python -m usdh diagnose``: the objective of one deep method (``diagnostics.method``, USDH)
evaluated on the binary codes of every method of the experiment.

If ITQ's codes score a lower USDH loss than USDH's own codes, USDH's optimiser fails to reach what
its objective rewards; if they score higher while ITQ wins at mAP, the objective does not reward
what mAP rewards. Every method's codes of the same seeded batches of training rows are scored with
the loss configuration saved in the USDH run of the same bits and seed (the relaxed codes ``h``
are the binary codes, so the quantisation term is 0 for every method and the rest compare
like with like). USDH's own relaxed codes are scored too (``usdh_relaxed``), as trained.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from usdh import layout
from usdh.codes import unpack_bits
from usdh.data import load_split, training_rows
from usdh.feature_store import load_features
from usdh.fitting import views_from_features
from usdh.io import save_json
from usdh.losses import CompositeLoss, build_loss
from usdh.paramcheck import check_all as check_params  # noqa: F401 (the CLI calls it)
from usdh.params import ParamsError, section
from usdh.registry import get_method
from usdh.stages.common import grid, run_context, run_seed
from usdh.stages.encode import load_model
from usdh.train import FeatureBatches

log = logging.getLogger("usdh")


def outputs(params: dict[str, Any]) -> list[Path]:
    exp = section(params, "experiment")
    target = section(params, "diagnostics", "method")
    return [layout.diagnostics_record(exp["dataset"], exp["protocol"], f"{target}_loss")]


def _score(
    loss_fn: CompositeLoss,
    code: Callable[[np.ndarray], np.ndarray],
    data: FeatureBatches,
    batches: list[torch.Tensor],
) -> dict[str, float]:
    """Mean loss (total and per term) over ``batches`` of ``data``'s rows, the relaxed codes of
    every view being ``code(features)``; the rotated views of a batch are those of its rows that
    have them, as in training (:meth:`usdh.train.FeatureBatches.batch`)."""
    angles = torch.tensor(data.angles, dtype=torch.float32) if data.angles else None
    sums: dict[str, float] = {}
    for idx in batches:
        b = data.batch(idx, data.has_rotations)
        h = torch.from_numpy(np.asarray(code(b.x.numpy()), dtype=np.float32))
        h_rot = None
        if b.x_rot is not None and angles is not None:
            h_rot = torch.from_numpy(np.asarray(code(b.x_rot.numpy()), dtype=np.float32))
            h_rot = h_rot.reshape(-1, len(angles), h.shape[1])
        with torch.no_grad():
            total, parts = loss_fn(
                h,
                codes=2.0 * h - 1.0,
                features=b.features,
                h_rot=h_rot,
                angles=angles if h_rot is not None else None,
                rot_mask=b.rot_mask,
            )
        for k, v in {"total": float(total), **parts}.items():
            sums[k] = sums.get(k, 0.0) + v / len(batches)
    return sums


def run(params: dict[str, Any]) -> None:
    """Score every method's training codes with the target method's loss; one JSON record."""
    cfg = section(params, "diagnostics")
    target = cfg["method"]
    exp = section(params, "experiment")
    if target not in exp["methods"]:
        raise ParamsError(f"diagnostics.method {target!r} must be one of experiment.methods")
    ctx0 = run_context(params, target, 0, 0)
    fs = load_features(ctx0.features_dir, mmap_mode="r")
    split = load_split(ctx0.split_dir)
    pool = training_rows(split)
    rng = np.random.default_rng(int(section(params, "split_seed")))
    batch, n_batches = int(cfg["batch_size"]), int(cfg["batches"])
    rows = np.sort(rng.choice(pool, size=min(len(pool), batch * n_batches), replace=False))
    order = torch.from_numpy(rng.permutation(len(rows)))
    batches = [order[i : i + batch] for i in range(0, len(order) - batch + 1, batch)]
    x = np.asarray(fs.features[rows], dtype=np.float32)
    views = views_from_features(fs)(get_method(target), rows, split)
    data = (
        FeatureBatches(x)
        if views is None
        else FeatureBatches(x, views.rotations, views.angles, views.rows)
    )
    train_x = torch.from_numpy(np.asarray(fs.features[pool], dtype=np.float32))
    results = []
    for bits, seed in grid(params, "experiment"):
        usdh = load_model(target, run_context(params, target, bits, seed).run)
        loss_fn = build_loss(usdh.loss_config())
        loss_fn.prepare(train_x, torch.Generator().manual_seed(seed))
        scores: dict[str, Any] = {}
        for method in exp["methods"]:
            own = run_seed(params, "experiment", method, seed)  # PCAH, SH: their one run
            hasher = load_model(method, run_context(params, method, bits, own).run)
            scores[method] = _score(
                loss_fn, lambda a, h=hasher: unpack_bits(h.encode(a)), data, batches
            )
        scores[f"{target}_relaxed"] = _score(loss_fn, usdh.relaxed, data, batches)
        results.append({"bits": bits, "seed": seed, "loss": scores})
        log.info(
            "%d bits seed %d: %s loss on %s",
            bits,
            seed,
            target,
            ", ".join(f"{m} {s['total']:.4f}" for m, s in scores.items()),
        )
    save_json(
        outputs(params)[0],
        {
            "method": target,
            "dataset": exp["dataset"],
            "protocol": exp["protocol"],
            "rows": len(rows),
            "batch_size": batch,
            "batches": len(batches),
            "runs": results,
        },
    )
