"""The alternatives our search and metrics are measured against, written the way they are used.

``argsort_rank`` and ``argsort_map`` follow the approach common in deep-hashing repositories:
Hamming distances from a +-1 matrix product, then ``np.argsort`` per query. They are benchmark
baselines and are checked against the project's results, so no benchmark races a wrong answer.
"""

from __future__ import annotations

import numpy as np


def signs(codes: np.ndarray) -> np.ndarray:
    """Packed codes to a float32 +-1 matrix."""
    return np.unpackbits(codes, axis=1).astype(np.float32) * 2 - 1


def argsort_rank(q: np.ndarray, db: np.ndarray, k: int | None = None) -> np.ndarray:
    """Top-k indices by the +-1 product and a stable argsort per query."""
    qs, ds = signs(q), signs(db)
    n_bits = qs.shape[1]
    out = []
    for i in range(qs.shape[0]):
        dist = 0.5 * (n_bits - ds @ qs[i])
        out.append(np.argsort(dist, kind="stable")[:k])
    return np.stack(out)


def argsort_map(
    q: np.ndarray, db: np.ndarray, ql: np.ndarray, dl: np.ndarray, topk: int | None = None
) -> float:
    """mAP@topk as DeepBit-style evaluation scripts compute it (single-label)."""
    qs, ds = signs(q), signs(db)
    n_bits = qs.shape[1]
    aps = []
    for i in range(qs.shape[0]):
        dist = 0.5 * (n_bits - ds @ qs[i])
        order = np.argsort(dist, kind="stable")[:topk]
        rel = (dl[order] == ql[i]).astype(np.float64)
        hits = rel.sum()
        if hits == 0:
            aps.append(0.0)
            continue
        ranks = np.flatnonzero(rel) + 1.0
        aps.append(float(np.mean(np.arange(1, hits + 1) / ranks)))
    return float(np.mean(aps))
