"""Iterative quantization (Gong and Lazebnik, CVPR 2011)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from usdh.hasher import BaseHasher
from usdh.linear import ITQ_ITERATIONS, check_pca_size, fit_pca, itq_rotation, project

__all__ = ["ITQ"]


class ITQ(BaseHasher):
    """PCA to ``n_bits`` dimensions, then the rotation that best aligns the data with the hypercube.

    PCA bits are unbalanced in variance; rotating the PCA projections ``V`` by an orthogonal ``R``
    keeps all distances but spreads the variance, and ITQ picks ``R`` to minimise the quantisation
    loss ``||B - V R||_F^2`` over codes ``B`` in {-1, +1}. It alternates the two exact partial
    minimisations, ``B = sign(V R)`` and the orthogonal Procrustes solution for ``R``, starting from
    a random rotation seeded by ``random_state``, for ``n_iter`` rounds
    (:func:`usdh.linear.itq_rotation`).

    ``quantization_loss_`` has ``n_iter + 1`` entries: entry ``t`` is the loss (per training sample)
    of the rotation after ``t`` updates, with its best codes; it never increases.
    """

    _state: ClassVar[tuple[str, ...]] = (
        "mean_",
        "components_",
        "rotation_",
        "quantization_loss_",
    )

    def __init__(
        self, n_bits: int = 32, random_state: int = 0, n_iter: int = ITQ_ITERATIONS
    ) -> None:
        super().__init__(n_bits=n_bits, random_state=random_state)
        self.n_iter = n_iter

    def _check_params(self) -> None:
        if isinstance(self.n_iter, bool) or not isinstance(self.n_iter, int | np.integer):
            raise ValueError(f"n_iter must be a non-negative integer, got {self.n_iter!r}")
        if self.n_iter < 0:
            raise ValueError(f"n_iter must be a non-negative integer, got {self.n_iter}")

    def _validate_params(self, X: NDArray[np.floating]) -> None:
        check_pca_size(f"ITQ(n_bits={self.n_bits})", self.n_bits, *X.shape)

    def _fit(self, X: NDArray[np.floating]) -> None:
        self.mean_, self.components_ = fit_pca(X, self.n_bits)
        V = project(X, self.mean_, self.components_)
        self.rotation_, self.quantization_loss_ = itq_rotation(V, self.random_state, self.n_iter)

    def _project(self, X: NDArray[np.floating]) -> NDArray[np.float64]:
        return project(X, self.mean_, self.components_) @ self.rotation_
