"""Fit time of the deep methods at the size of the default pipeline: a 50,000-image head fit at
64 bits, with each method's params.yaml settings (epochs, batch, head), beside ITQ on the same rows.

Setting: 50,000 rows of 1280-d features (EfficientNet-Lite0's width, CIFAR-10's training pool),
rotated views (4 angles) for a 5,000-row subset as the features stage stores them, and a bank of
4 augmented views of another 5,000 rows as the bank stage stores them (CIBHash trains on those
rows only), one round per
method (a fit is seconds, not microseconds). The budget the pipeline is held to is 30 s per deep
fit on the 2-core machine (``extra_info["budget_s"]``); ``extra_info`` also records the epochs and
SGD steps, so a reader sees what the seconds bought. ITQ is the shallow reference: the cost of a
good code without training a network.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from benchmarks import clustered_features, noisy_views
from usdh.hasher import TrainingViews
from usdh.registry import methods

N, DIM, N_ROT, BITS = 50_000, 1280, 5_000, 64
ANGLES = (-10.0, -5.0, 5.0, 10.0)
PARAMS = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = clustered_features(rng, N, DIM)
    rows = rng.choice(N, N_ROT, replace=False)
    rot = noisy_views(rng, x, rows, len(ANGLES), 0.1)
    bank_rows = rng.choice(N, N_ROT, replace=False)
    bank = noisy_views(rng, x, bank_rows, 4, 0.3)
    return x, TrainingViews(rot, ANGLES, rows, bank, bank_rows)


@pytest.mark.parametrize("method", ["itq", *(m for m, s in methods().items() if s.deep)])
def test_fit_50k_at_64_bits(benchmark, data, method):
    benchmark.group = "fit-50k-64b"
    x, views = data
    spec = methods()[method]
    params = dict(PARAMS["methods"].get(method) or {})
    wanted = TrainingViews(
        *(
            (views.rotations, views.angles, views.rows)
            if "rotations" in spec.views
            else (None, None, None)
        ),
        *(
            (views.augmentations, views.augmentation_rows)
            if "augmentations" in spec.views
            else (None, None)
        ),
    )
    kwargs = {"views": wanted} if spec.deep else {}
    if spec.deep:
        params["progress"] = False

    def fit():
        return spec.load()(n_bits=BITS, random_state=0, **params).fit(x, **kwargs)

    hasher = benchmark.pedantic(fit, rounds=1, iterations=1)
    assert hasher.encode(x[:10]).shape == (10, BITS // 8)
    if spec.deep:
        batch = hasher.batch_size
        benchmark.extra_info.update(
            epochs=len(hasher.log_),
            steps=len(hasher.log_) * (hasher.n_train_ // batch),
            batch=batch,
            train_rows=hasher.n_train_,
        )
        benchmark.extra_info["budget_s"] = 30
