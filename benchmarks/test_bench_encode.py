"""Encode throughput: codes per second from backbone features, for every registered method.

Setting: 1280-d features (EfficientNet-Lite0's width), each method fitted on 5,000 rows, then
50,000 rows (CIFAR-10's database) encoded per round. For the deep methods this is the hash head
only; the backbone's images/s (benchmarks/test_bench_features.py) dominates a deep encode from
pixels, and the report sets the two side by side.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import clustered_features
from usdh.hasher import TrainingViews
from usdh.registry import methods

N_FIT, N_ENCODE, DIM = 5000, 50_000, 1280


@pytest.fixture(scope="module")
def features():
    return clustered_features(np.random.default_rng(0), N_FIT + N_ENCODE, DIM)


@pytest.mark.parametrize("method", list(methods()))
@pytest.mark.parametrize("n_bits", [32, 64])
def test_encode(benchmark, features, method, n_bits):
    benchmark.group = f"encode-{n_bits}b"
    spec = methods()[method]
    cls = spec.load()
    # deep methods: one epoch without the rotation term (this synthetic data has no rotated views)
    deep = {"epochs": 1, "progress": False, "loss": {"rotation": {"weight": 0.0}}}
    kwargs = deep if spec.deep else {}
    fit_kwargs = {}
    if "augmentations" in spec.views:  # a two-view method: a bank of 2 noisy views of each row
        noise = np.random.default_rng(1).normal(size=(N_FIT, 2, features.shape[1]))
        bank = (features[:N_FIT, None, :] + 0.1 * noise).astype(np.float32)
        fit_kwargs["views"] = TrainingViews(augmentations=bank)
    hasher = cls(n_bits=n_bits, random_state=0, **kwargs).fit(features[:N_FIT], **fit_kwargs)
    x = features[N_FIT:]
    codes = benchmark.pedantic(hasher.encode, (x,), rounds=3, iterations=1)
    assert codes.shape == (N_ENCODE, n_bits // 8)
    stats = benchmark.stats.stats if benchmark.stats else None
    if stats is not None and stats.median > 0:
        benchmark.extra_info["codes_per_s"] = round(N_ENCODE / stats.median)
