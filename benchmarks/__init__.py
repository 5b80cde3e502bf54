"""Synthetic inputs the benchmarks share."""

from __future__ import annotations

import numpy as np


def clustered_features(rng: np.random.Generator, n: int, dim: int = 1280) -> np.ndarray:
    """``n`` float32 rows shaped like CNN features: ten random clusters, then a ReLU (non-negative,
    like a backbone's pooled output), so that fits and codes see structure, not pure noise."""
    centers = rng.normal(size=(10, dim)).astype(np.float32)
    x = centers[rng.integers(0, 10, n)] + rng.normal(size=(n, dim))
    return np.maximum(x, 0).astype(np.float32)


def noisy_views(
    rng: np.random.Generator, x: np.ndarray, rows: np.ndarray, views: int, scale: float
) -> np.ndarray:
    """``(len(rows), views, dim)`` float32 views of ``x[rows]``: Gaussian noise of ``scale``
    added, then a ReLU, standing in for rotated or augmented views as the stages store them."""
    noise = scale * rng.normal(size=(len(rows), views, x.shape[1]))
    return np.maximum(x[rows, None, :] + noise, 0).astype(np.float32)
