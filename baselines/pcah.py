"""PCA hashing: one bit per leading principal direction (a baseline in Gong and Lazebnik, 2011)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from usdh.hasher import BaseHasher
from usdh.linear import check_pca_size, fit_pca, project

__all__ = ["PCAH"]


class PCAH(BaseHasher):
    """Sign of the top ``n_bits`` PCA projections of centred data.

    The strongest directions carry most of the variance, so they make informative bits; but
    variance falls fast along the spectrum, so later bits are noisy, which is what ITQ corrects.
    Needs ``n_bits <= n_features`` and ``n_bits <= n_samples - 1``.
    """

    _state: ClassVar[tuple[str, ...]] = ("mean_", "components_")

    def _validate_params(self, X: NDArray[np.floating]) -> None:
        check_pca_size(f"PCAH(n_bits={self.n_bits})", self.n_bits, *X.shape)

    def _fit(self, X: NDArray[np.floating]) -> None:
        self.mean_, self.components_ = fit_pca(X, self.n_bits)

    def _project(self, X: NDArray[np.floating]) -> NDArray[np.float64]:
        return project(X, self.mean_, self.components_)
