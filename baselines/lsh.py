"""Locality-sensitive hashing by random hyperplanes (Charikar, STOC 2002)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from usdh.hasher import BaseHasher
from usdh.linear import project

__all__ = ["LSH"]


class LSH(BaseHasher):
    """Sign of Gaussian random projections: the data-independent baseline.

    ``center=True`` (our default, a departure from plain SimHash) subtracts the training mean before
    projecting. Hyperplanes through the origin barely cut non-negative features such as ReLU CNN
    activations, which all lie in one orthant, so uncentred bits come out nearly constant; centring
    is the only thing learned from the data. ``center=False`` gives the textbook method.
    """

    _state: ClassVar[tuple[str, ...]] = ("mean_", "projection_")

    def __init__(self, n_bits: int = 32, random_state: int = 0, center: bool = True) -> None:
        super().__init__(n_bits=n_bits, random_state=random_state)
        self.center = center

    def _check_params(self) -> None:
        if not isinstance(self.center, bool | np.bool_):
            raise ValueError(f"center must be True or False, got {self.center!r}")

    def _fit(self, X: NDArray[np.floating]) -> None:
        d = X.shape[1]
        self.mean_ = X.mean(axis=0, dtype=np.float64) if self.center else np.zeros(d)
        rng = np.random.default_rng(self.random_state)
        self.projection_ = rng.standard_normal((d, self.n_bits))

    def _project(self, X: NDArray[np.floating]) -> NDArray[np.float64]:
        return project(X, self.mean_, self.projection_)
