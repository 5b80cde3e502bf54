"""Loss terms against plain-loop references: values, known optima, gradient signs, weight 0."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from usdh.losses import (
    TERMS,
    EntropyLoss,
    QuantizationLoss,
    RotationLoss,
    SemanticLoss,
    build_loss,
)

relaxed = arrays(
    np.float64,
    st.tuples(st.integers(2, 9), st.integers(1, 6)),
    elements=st.floats(0.001, 0.999, allow_nan=False),
)


def t(a) -> torch.Tensor:
    return torch.tensor(np.asarray(a), dtype=torch.float64)


def grad_of(term, h: torch.Tensor, **kw) -> torch.Tensor:
    h = h.clone().requires_grad_(True)
    term(h, **kw).backward()
    return h.grad


# -- quantization ----------------------------------------------------------------------------------
@given(relaxed)
def test_quantization_matches_a_loop(h):
    ref = 0.0
    for row in h:
        ref += sum((float(v > 0.5) - v) ** 2 for v in row) / 2
    assert float(QuantizationLoss()(t(h))) == pytest.approx(ref / len(h), rel=1e-12, abs=1e-15)


def test_quantization_optimum_and_gradient_sign():
    assert float(QuantizationLoss()(t([[0.0, 1.0], [1.0, 0.0]]))) == 0.0
    g = grad_of(QuantizationLoss(), t([[0.6, 0.4]]))
    assert g[0, 0] < 0 < g[0, 1]  # descent pushes 0.6 up to 1 and 0.4 down to 0


# -- entropy ---------------------------------------------------------------------------------------
@given(relaxed, st.sampled_from(["mean_square", "binary_entropy"]))
def test_entropy_matches_a_loop(h, form):
    ref = 0.0
    for k in range(h.shape[1]):
        mu = sum(h[:, k]) / len(h)
        if form == "mean_square":
            ref += (mu - 0.5) ** 2 / 2
        else:
            ref += math.log(2) + mu * math.log(mu) + (1 - mu) * math.log(1 - mu)
    got = float(EntropyLoss(form)(t(h)))
    assert got == pytest.approx(ref, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("form", ["mean_square", "binary_entropy"])
def test_entropy_optimum_is_balanced_bits_and_gradient_lowers_the_mean(form):
    assert float(EntropyLoss(form)(t([[1.0, 0.2], [0.0, 0.8]]))) == pytest.approx(0.0, abs=1e-12)
    g = grad_of(EntropyLoss(form), t([[0.9, 0.1], [0.7, 0.3]]))
    assert (g[:, 0] > 0).all() and (g[:, 1] < 0).all()  # bit 0 too often 1, bit 1 too rarely


# -- rotation --------------------------------------------------------------------------------------
def test_rotation_weights_are_deepbits():
    w = RotationLoss(sigma=5).weights(t([-10, -5, 0, 5, 10]))
    expected = [math.exp(-((i - 3) ** 2) / 2) for i in range(1, 6)]
    assert w.numpy() == pytest.approx(expected)


@settings(max_examples=30)
@given(st.integers(1, 5), st.integers(1, 4), st.integers(1, 5), st.integers(0, 2**31 - 1))
def test_rotation_matches_a_loop(b, a, k, seed):
    rng = np.random.default_rng(seed)
    h, h_rot = rng.random((b, k)), rng.random((b, a, k))
    angles = rng.uniform(-15, 15, a)
    ref = 0.0
    for i in range(b):
        for j in range(a):
            w = math.exp(-((angles[j] / 5) ** 2) / 2)
            ref += w * sum((h[i, m] - h_rot[i, j, m]) ** 2 for m in range(k)) / 2
    got = RotationLoss()(t(h), h_rot=t(h_rot), angles=t(angles))
    assert float(got) == pytest.approx(ref / (b * a))


def test_rotation_optimum_gradient_and_shape_errors():
    h = t([[0.2, 0.9]])
    same = h.unsqueeze(1).repeat(1, 3, 1)
    angles = t([-5, 5, 10])
    assert float(RotationLoss()(h, h_rot=same, angles=angles)) == 0.0
    g = grad_of(RotationLoss(), h, h_rot=same + 0.1, angles=angles)
    assert (g < 0).all()  # pulled towards the (higher) codes of the rotated views
    with pytest.raises(ValueError, match="rotated views"):
        RotationLoss()(h, angles=angles)
    with pytest.raises(ValueError, match=r"\(B, A, K\)"):
        RotationLoss()(h, h_rot=same[:, :, :1], angles=angles)
    with pytest.raises(ValueError, match="sigma"):
        RotationLoss(sigma=0)


# -- semantic --------------------------------------------------------------------------------------
def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@settings(max_examples=30)
@given(st.integers(2, 6), st.integers(1, 5), st.integers(2, 6), st.integers(0, 2**31 - 1))
def test_semantic_cosine_matches_a_loop(b, k, d, seed):
    rng = np.random.default_rng(seed)
    h, f = rng.uniform(0.05, 0.95, (b, k)), rng.normal(size=(b, d))
    term = SemanticLoss("cosine", center=True)
    term.prepare(t(f), torch.Generator())
    fc = f - f.mean(axis=0)
    u = 2 * h - 1
    diffs = [
        (_cos(u[i], u[j]) - _cos(fc[i], fc[j])) ** 2 for i in range(b) for j in range(b) if i != j
    ]
    assert float(term(t(h), features=t(f))) == pytest.approx(np.mean(diffs), rel=1e-9, abs=1e-12)


def test_semantic_cosine_optimum_and_descent():
    rng = np.random.default_rng(0)
    h = rng.uniform(0.1, 0.9, (6, 4))
    term = SemanticLoss("cosine", center=False)
    assert float(term(t(h), features=t(2 * h - 1))) == pytest.approx(0.0, abs=1e-12)
    f = t(rng.normal(size=(6, 8)))
    x = t(h).requires_grad_(True)
    before = term(x, features=f)
    before.backward()
    after = term((x - 0.01 * x.grad).detach(), features=f)
    assert float(after) < float(before.detach())


def _likelihood(u, similar, dissimilar):
    groups = []
    for mask in (similar, dissimilar):
        vals = []
        for i, j in zip(*np.nonzero(mask), strict=True):
            theta = u[i] @ u[j] / 2
            vals.append(math.log1p(math.exp(theta)) - float(mask is similar) * theta)
        if vals:
            groups.append(np.mean(vals))
    return np.mean(groups)


def test_semantic_knn_graph_and_likelihood_match_brute_force():
    rng = np.random.default_rng(1)
    f = rng.normal(size=(40, 5))
    term = SemanticLoss("knn", k=3, center=True)
    term.prepare(t(f), torch.Generator())
    fc = f - f.mean(axis=0)
    sims = np.array([[_cos(a, b) if a is not b else -np.inf for b in fc] for a in fc])
    np.fill_diagonal(sims, -np.inf)
    for i in range(40):
        assert set(term.neighbours[i].tolist()) == set(np.argsort(-sims[i])[:3].tolist())
    idx = np.array([0, 5, 9, 17, 22, 31])
    nbrs = [set(np.argsort(-sims[i])[:3].tolist()) for i in range(40)]
    sim = np.array([[a != b and (b in nbrs[a] or a in nbrs[b]) for b in idx] for a in idx])
    off = ~np.eye(len(idx), dtype=bool)
    h = rng.uniform(0.1, 0.9, (6, 8))
    got = term(t(h), features=t(f[idx]), index=torch.tensor(idx))
    assert float(got) == pytest.approx(_likelihood(2 * h - 1, sim & off, ~sim & off))


def test_semantic_ssdh_thresholds_and_labels():
    rng = np.random.default_rng(2)
    f = np.abs(rng.normal(size=(300, 16)))
    term = SemanticLoss("ssdh", center=False, n_pairs=5000)
    term.prepare(t(f), torch.Generator().manual_seed(0))
    lo, hi = term.thresholds.tolist()
    assert 0 <= lo < hi
    # an exact duplicate is similar, an orthogonal pair dissimilar
    a = np.zeros(16)
    a[0] = 1.0
    b = np.zeros(16)
    b[1] = 1.0
    feats = t([a, a, b])
    h = t([[0.9, 0.1], [0.1, 0.9], [0.9, 0.1]])
    u = 2 * h.numpy() - 1
    sim = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]], bool)
    dis = np.array([[0, 0, 1], [0, 0, 1], [1, 1, 0]], bool)
    assert float(term(h, features=feats)) == pytest.approx(_likelihood(u, sim, dis))
    # the fit is seeded: same generator seed, same thresholds
    again = SemanticLoss("ssdh", center=False, n_pairs=5000)
    again.prepare(t(f), torch.Generator().manual_seed(0))
    assert torch.equal(again.thresholds, term.thresholds)


def test_semantic_errors():
    with pytest.raises(ValueError, match=r"construction 'pca'.*cosine"):
        SemanticLoss("pca")
    with pytest.raises(ValueError, match="k must"):
        SemanticLoss("knn", k=0)
    with pytest.raises(ValueError, match="features"):
        SemanticLoss("cosine", center=False)(t([[0.5, 0.5]]))


# -- the composite ---------------------------------------------------------------------------------
def test_weights_combine_and_zero_removes_a_term():
    h = t([[0.7, 0.2], [0.6, 0.1]])
    q, e = float(QuantizationLoss()(h)), float(EntropyLoss()(h))
    loss = build_loss({"quantization": {"weight": 2.0}, "entropy": {"weight": 0.5}})
    total, parts = loss(h)
    assert float(total) == pytest.approx(2 * q + 0.5 * e)
    assert parts == pytest.approx({"quantization": q, "entropy": e})
    off = build_loss(
        {"quantization": {"weight": 1}, "entropy": {"weight": 0}, "rotation": {"weight": 0}}
    )
    assert off.active == ["quantization"] and "rotations" not in off.needs
    total, parts = off(h)  # no rotated views needed once the rotation term is off
    assert float(total) == pytest.approx(q) and list(parts) == ["quantization"]


def test_build_loss_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"unknown loss term 'cauchy'.*semantic"):
        build_loss({"cauchy": {"weight": 1}})
    with pytest.raises(ValueError, match=r"weight of loss term 'entropy'.*>= 0"):
        build_loss({"entropy": {"weight": -1}})
    with pytest.raises(ValueError, match="bad option for loss term 'quantization'"):
        build_loss({"quantization": {"weight": 1, "sigma": 3}})
    with pytest.raises(ValueError, match="entropy form"):
        build_loss({"entropy": {"weight": 1, "form": "gini"}})
    # every term is registered under its own name (tests/test_params.py checks that params.yaml's
    # list of terms is this one)
    assert all(cls.name == name for name, cls in TERMS.items())
