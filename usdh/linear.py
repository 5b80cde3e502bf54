"""The linear steps the classic baselines and USDH's ITQ init share, as plain functions: one PCA,
one centred projection and ITQ's rotation (Gong and Lazebnik, CVPR 2011), so PCAH, ITQ, SH, LSH
and ``USDH(init="itq")`` share every step and below all of them."""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
from numpy.typing import NDArray

__all__ = ["ITQ_ITERATIONS", "check_pca_size", "fit_pca", "itq_rotation", "project"]

#: rows per block when accumulating the scatter matrix: bounds the float64 copy of wide features
_CHUNK_ROWS = 4096
#: ITQ's rounds of alternating minimisation, unless told otherwise
ITQ_ITERATIONS = 50


def check_pca_size(owner: str, n_components: int, n_samples: int, n_features: int) -> None:
    """Refuse a PCA size the data cannot support, naming the method and what to change.

    Centred data of ``n`` rows spans at most ``n - 1`` directions; further components would be
    arbitrary directions of zero variance, so asking for them is an error rather than silent noise.
    """
    if n_components > n_features:
        raise ValueError(
            f"{owner} needs {n_components} PCA components but the features have only "
            f"{n_features} dimensions; use n_bits <= {n_features} or wider features"
        )
    if n_components > n_samples - 1:
        raise ValueError(
            f"{owner} needs {n_components} PCA components but {n_samples} training samples span "
            f"at most {n_samples - 1}; fit on at least {n_components + 1} samples or use fewer bits"
        )


def fit_pca(
    X: NDArray[np.floating], n_components: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Mean ``(d,)`` and top principal directions ``(d, n_components)`` of ``X``, in float64.

    Components are ordered by decreasing variance, and each is signed so that its entry of largest
    magnitude is positive: eigensolvers return ``v`` or ``-v`` at will, and a fixed sign makes the
    bits, not just the partition, reproducible. With at least as many rows as features the
    ``d x d`` scatter matrix is accumulated in row blocks (memory ``O(d^2)``, not a float64 copy of
    ``X``) and only the needed eigenpairs are computed; with fewer rows, an SVD of the centred data
    is cheaper.
    """
    n, d = X.shape
    mean = X.mean(axis=0, dtype=np.float64)
    if n >= d:
        scatter = np.zeros((d, d))
        for start in range(0, n, _CHUNK_ROWS):
            block = X[start : start + _CHUNK_ROWS].astype(np.float64) - mean
            scatter += block.T @ block
        if not np.isfinite(scatter).all():
            raise ValueError(
                "the features are too large for a float64 scatter matrix (it overflows): "
                f"their largest magnitude is {float(np.abs(X).max()):.3g}; rescale them"
            )
        values, vecs = scipy.linalg.eigh(scatter, subset_by_index=[d - n_components, d - 1])
        values, components = values[::-1] / max(n - 1, 1), vecs[:, ::-1]
    else:
        centred = X.astype(np.float64) - mean
        if not np.isfinite(centred).all():
            raise ValueError("the features overflow float64 once centred; rescale them")
        sing, _, vt = np.linalg.svd(centred, full_matrices=False)
        values, components = sing[:n_components] ** 2 / max(n - 1, 1), vt[:n_components].T
    _warn_flat(values)
    components = np.ascontiguousarray(components)
    peak = np.abs(components).argmax(axis=0)
    signs = np.where(components[peak, np.arange(n_components)] < 0, -1.0, 1.0)
    return mean, components * signs


def _warn_flat(variances: NDArray[np.float64]) -> None:
    """Directions without variance give the same bit to every row: say so, do not hide it."""
    top = float(variances.max()) if variances.size else 0.0
    flat = int(np.count_nonzero(variances <= top * 1e-10))
    if flat:
        warnings.warn(
            f"{flat} of the {variances.size} principal directions have (numerically) zero "
            "variance: the features are constant along them, so those bits are the same for "
            "every image; check the features (constant columns, duplicated rows) or use fewer "
            "bits",
            stacklevel=3,
        )


def project(
    X: NDArray[np.floating], mean: NDArray[np.float64], directions: NDArray[np.float64]
) -> NDArray[np.float64]:
    """``(X - mean) @ directions`` in float64.

    Row blocks keep memory bounded: wide float32 features are never copied whole to float64.
    """
    out = np.empty((X.shape[0], directions.shape[1]))
    for start in range(0, X.shape[0], _CHUNK_ROWS):
        block = X[start : start + _CHUNK_ROWS].astype(np.float64) - mean
        out[start : start + _CHUNK_ROWS] = block @ directions
    return out


def itq_rotation(
    V: NDArray[np.float64], random_state: int, n_iter: int = ITQ_ITERATIONS
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """ITQ's orthogonal rotation ``R`` of the centred projections ``V`` (n, k) and its
    quantisation loss per round.

    ``R`` minimises the quantisation loss ``||B - V R||_F^2`` over codes ``B`` in {-1, +1}: it
    alternates the two exact partial minimisations, ``B = sign(V R)`` and the orthogonal
    Procrustes solution for ``R``, starting from a random rotation seeded by ``random_state``, for
    ``n_iter`` rounds. The losses have ``n_iter + 1`` entries: entry ``t`` is the loss (per row)
    of the rotation after ``t`` updates, with its best codes; it never increases.
    """
    k = V.shape[1]
    rng = np.random.default_rng(random_state)
    R, _ = np.linalg.qr(rng.standard_normal((k, k)))
    losses = []
    for t in range(n_iter + 1):
        Z = V @ R
        B = np.where(Z > 0, 1.0, -1.0)  # the bit rule of encode: 1 where positive
        losses.append(float(np.square(B - Z).sum()) / len(V))
        if t == n_iter:
            break
        # Procrustes: max tr(R^T V^T B) over orthogonal R; with B^T V = P S Q^T, R = Q P^T
        P, _, Qt = np.linalg.svd(B.T @ V)
        R = Qt.T @ P.T
    return R, np.asarray(losses)
