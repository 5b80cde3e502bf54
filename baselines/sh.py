"""Spectral hashing (Weiss, Torralba and Fergus, NIPS 2008)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from usdh.hasher import BaseHasher
from usdh.linear import check_pca_size, fit_pca, project

__all__ = ["SH"]

#: the box is widened on each side by this fraction of the widest PCA range, so every training
#: point lies strictly inside it and no width is zero
_MARGIN = 1e-9


class SH(BaseHasher):
    """Bits from the analytical Laplacian eigenfunctions of a box around the PCA-projected data.

    SH assumes the data uniform on a box aligned with its principal axes. There the graph
    Laplacian's eigenfunctions separate into one-dimensional modes: along PCA axis ``d`` of width
    ``w_d``, mode ``k >= 1`` is ``cos(omega (x - mn_d))`` with ``omega = k pi / w_d`` and eigenvalue
    increasing in ``omega^2``. The ``n_bits`` smoothest non-constant modes (smallest ``omega^2``,
    over all axes) become the bits, so a wide axis may give several bits and a narrow one none.

    PCA keeps ``min(n_bits, n_features)`` dimensions. Deterministic: ``random_state`` is accepted
    for the common interface and unused. ``modes_`` lists the chosen ``(pca_dimension, k)`` pairs
    in order of increasing eigenvalue.
    """

    _state: ClassVar[tuple[str, ...]] = ("mean_", "components_", "mn_", "mx_", "modes_")

    def _n_pca(self, n_features: int) -> int:
        return min(self.n_bits, n_features)

    def _validate_params(self, X: NDArray[np.floating]) -> None:
        n, d = X.shape
        check_pca_size(f"SH(n_bits={self.n_bits})", self._n_pca(d), n, d)

    def _fit(self, X: NDArray[np.floating]) -> None:
        self.mean_, self.components_ = fit_pca(X, self._n_pca(X.shape[1]))
        P = project(X, self.mean_, self.components_)
        lo, hi = P.min(axis=0), P.max(axis=0)
        pad = _MARGIN * (float(np.max(hi - lo)) or 1.0)
        self.mn_, self.mx_ = lo - pad, hi + pad
        # Along each axis the first n_bits modes are its n_bits smoothest, so these candidates hold
        # the n_bits smoothest overall. Stable sort: ties go to the lower axis, then the lower k.
        n_pca = P.shape[1]
        dims, ks = np.divmod(np.arange(n_pca * self.n_bits), self.n_bits)
        ks = ks + 1
        eigen = (ks / (self.mx_ - self.mn_)[dims]) ** 2
        chosen = np.argsort(eigen, kind="stable")[: self.n_bits]
        self.modes_ = np.stack([dims[chosen], ks[chosen]], axis=1).astype(np.int64)

    def _project(self, X: NDArray[np.floating]) -> NDArray[np.float64]:
        P = project(X, self.mean_, self.components_)
        dims, ks = self.modes_[:, 0], self.modes_[:, 1]
        omega = ks * np.pi / (self.mx_ - self.mn_)[dims]
        return np.sin(np.pi / 2 + omega * (P[:, dims] - self.mn_[dims]))
