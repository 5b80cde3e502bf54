"""The classic baselines (LSH, PCAH, ITQ, SH): interface, numerics, errors, and digits retrieval."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA

from baselines import ITQ, LSH, PCAH, SH
from usdh.codes import unpack_bits
from usdh.hasher import NotFittedError
from usdh.linear import fit_pca, project
from usdh.metrics import mean_average_precision
from usdh.registry import methods

SHALLOW_METHODS = {n: s.load() for n, s in methods().items() if not s.deep}
METHODS = list(SHALLOW_METHODS.values())
PCA_METHODS = [PCAH, ITQ]


def make_data(n: int = 200, d: int = 48, seed: int = 0) -> np.ndarray:
    """Correlated Gaussian features with a decaying spectrum and an offset, like real embeddings."""
    rng = np.random.default_rng(seed)
    scales = 1.0 / np.sqrt(1.0 + np.arange(d))
    mixing = np.linalg.qr(rng.standard_normal((d, d)))[0]
    return (rng.standard_normal((n, d)) * scales) @ mixing + 3.0


def fitted_state(h) -> dict[str, np.ndarray]:
    return {name: np.asarray(getattr(h, name)) for name in h._state}


# -- the common face -------------------------------------------------------------------------
def test_registry_names_every_method():
    assert SHALLOW_METHODS == {"lsh": LSH, "pcah": PCAH, "itq": ITQ, "sh": SH}


@pytest.mark.parametrize("cls", METHODS)
@pytest.mark.parametrize("n_bits", [8, 16, 32])
def test_codes_shape_and_dtype(cls, n_bits):
    X = make_data()
    h = cls(n_bits=n_bits, random_state=0)
    assert h.fit(X) is h
    codes = h.encode(X[:17])
    assert codes.dtype == np.uint8
    assert codes.shape == (17, n_bits // 8)
    assert h.encode(X[:0]).shape == (0, n_bits // 8)


@pytest.mark.parametrize("cls", METHODS)
def test_bits_are_not_degenerate(cls):
    """Every method should use its bits: none constant over the training set."""
    X = make_data()
    bits = unpack_bits(cls(n_bits=16).fit(X).encode(X))
    rate = bits.mean(axis=0)
    assert np.all((rate > 0.0) & (rate < 1.0))


@pytest.mark.parametrize("cls", METHODS)
def test_deterministic_for_fixed_seed(cls):
    X = make_data()
    a = cls(n_bits=32, random_state=7).fit(X)
    b = cls(n_bits=32, random_state=7).fit(X)
    np.testing.assert_array_equal(a.encode(X), b.encode(X))
    for name, value in fitted_state(a).items():
        np.testing.assert_array_equal(value, fitted_state(b)[name], err_msg=name)


@pytest.mark.parametrize("cls", METHODS)
def test_the_registry_says_truly_which_methods_depend_on_the_seed(cls):
    """``MethodSpec.seeded`` decides how many runs the pipeline makes: a method declared
    seed-free must give the same codes for every seed, a seeded one must not."""
    name = next(n for n, spec in methods().items() if spec.target.endswith(":" + cls.__name__))
    X = make_data(seed=3)
    codes = [cls(n_bits=32, random_state=s).fit(X).encode(X) for s in (0, 1, 2)]
    same = all(np.array_equal(codes[0], c) for c in codes[1:])
    assert same == (not methods()[name].seeded), name


def test_a_seed_free_method_runs_once_per_code_length():
    from usdh.params import load_params
    from usdh.stages.common import grid, run_seed

    params = load_params()
    seeds = params["experiment"]["seeds"]
    assert len(seeds) > 1
    bits = params["experiment"]["bits"]
    assert grid(params, "experiment", method="pcah") == [(b, seeds[0]) for b in bits]
    assert grid(params, "experiment", method="itq") == [(b, s) for b in bits for s in seeds]
    assert grid(params, "experiment", 32, seeds[1], method="sh") == [(32, seeds[1])]
    assert run_seed(params, "experiment", "sh", seeds[2]) == seeds[0]
    assert run_seed(params, "experiment", "lsh", seeds[2]) == seeds[2]


def test_lsh_differs_across_seeds():
    X = make_data()
    a = LSH(n_bits=32, random_state=0).fit(X)
    b = LSH(n_bits=32, random_state=1).fit(X)
    assert not np.array_equal(a.projection_, b.projection_)
    assert not np.array_equal(a.encode(X), b.encode(X))


def test_sh_ignores_random_state():
    X = make_data()
    np.testing.assert_array_equal(
        SH(n_bits=32, random_state=0).fit(X).encode(X),
        SH(n_bits=32, random_state=123).fit(X).encode(X),
    )


@pytest.mark.parametrize("cls", METHODS)
def test_save_load_round_trip(cls, tmp_path):
    X = make_data()
    h = cls(n_bits=24, random_state=3).fit(X)
    path = tmp_path / f"{cls.__name__}.npz"
    h.save(path)
    loaded = cls.load(path)
    assert type(loaded) is cls
    assert loaded.get_params() == h.get_params()
    assert loaded.n_features_in_ == h.n_features_in_
    np.testing.assert_array_equal(loaded.encode(X), h.encode(X))


def test_load_refuses_another_class(tmp_path):
    path = tmp_path / "lsh.npz"
    LSH(n_bits=8).fit(make_data()).save(path)
    with pytest.raises(ValueError, match="holds a LSH"):
        ITQ.load(path)


@pytest.mark.parametrize("cls", METHODS)
def test_fitted_attributes_end_in_underscore(cls):
    h = cls(n_bits=16)
    params = h.get_params()
    assert set(vars(h)) == set(params)
    h.fit(make_data())
    learned = set(vars(h)) - set(params)
    assert learned == {*cls._state, "n_features_in_"}
    assert all(name.endswith("_") for name in learned)
    assert h.get_params() == params  # fit changes no hyperparameter


@pytest.mark.parametrize(
    "h",
    [
        LSH(n_bits=16, random_state=5, center=False),
        PCAH(n_bits=24, random_state=2),
        ITQ(n_bits=40, random_state=9, n_iter=7),
        SH(n_bits=64, random_state=1),
    ],
    ids=lambda h: type(h).__name__,
)
def test_get_params_round_trip(h):
    params = h.get_params()
    assert json.loads(json.dumps(params)) == params
    assert type(h)(**params).get_params() == params
    assert repr(h).startswith(type(h).__name__ + "(")


@settings(max_examples=25, deadline=None)
@given(
    st.sampled_from(METHODS),
    st.sampled_from([8, 16]),
    st.integers(17, 60),
    st.integers(16, 40),
    st.integers(0, 2**32 - 1),
)
def test_any_shape_encodes_reproducibly(cls, n_bits, n, d, seed):
    X = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    a = cls(n_bits=n_bits, random_state=seed).fit(X)
    b = cls(n_bits=n_bits, random_state=seed).fit(X)
    codes = a.encode(X)
    assert codes.shape == (n, n_bits // 8)
    np.testing.assert_array_equal(codes, b.encode(X))


# -- shared PCA ------------------------------------------------------------------------------
# fewer rows than features (SVD); more (scatter matrix); more than one block of rows
@pytest.mark.parametrize("n", [30, 200, 5000])
def test_pca_matches_sklearn_up_to_sign_and_fixes_the_sign(n):
    X = make_data(n=n, d=48)
    mean, comps = fit_pca(X, 8)
    assert comps.dtype == np.float64 and comps.shape == (48, 8)
    np.testing.assert_allclose(mean, X.mean(axis=0))
    np.testing.assert_allclose(comps.T @ comps, np.eye(8), atol=1e-10)
    ref = PCA(n_components=8, svd_solver="full").fit(X).components_.T
    np.testing.assert_allclose(np.abs(comps.T @ ref), np.eye(8), atol=1e-6)
    peaks = comps[np.abs(comps).argmax(axis=0), np.arange(8)]
    assert np.all(peaks > 0)


def test_pca_branches_agree():
    """Scatter-matrix (n >= d) and SVD (n < d) paths give the same signed components."""
    X = make_data(n=60, d=48)
    _, by_eigh = fit_pca(X, 6)
    wide = np.hstack([X, np.zeros((60, 20))])  # 68 features > 60 rows: SVD path
    _, by_svd = fit_pca(wide, 6)
    np.testing.assert_allclose(by_svd[:48], by_eigh, atol=1e-8)
    np.testing.assert_allclose(by_svd[48:], 0.0, atol=1e-8)


def test_projection_in_blocks_matches_one_product():
    X = make_data(n=9000, d=16).astype(np.float32)
    mean, comps = fit_pca(X, 8)
    direct = (X.astype(np.float64) - mean) @ comps
    np.testing.assert_allclose(project(X, mean, comps), direct, rtol=1e-12, atol=1e-12)


# -- LSH -------------------------------------------------------------------------------------
def test_lsh_centering_matters_for_non_negative_features():
    """The reason for ``center=True``: ReLU-like features make uncentred bits nearly constant."""
    rng = np.random.default_rng(0)
    X = np.maximum(rng.standard_normal((500, 64)) + 1.0, 0.0)
    plain = unpack_bits(LSH(n_bits=32, center=False).fit(X).encode(X)).mean(axis=0)
    centred = unpack_bits(LSH(n_bits=32, center=True).fit(X).encode(X)).mean(axis=0)
    assert np.abs(centred - 0.5).mean() < np.abs(plain - 0.5).mean()
    assert np.all(np.abs(centred - 0.5) < 0.2)
    np.testing.assert_array_equal(LSH(n_bits=8, center=False).fit(X).mean_, np.zeros(64))


# -- PCAH ------------------------------------------------------------------------------------
def test_pcah_bits_are_signs_of_principal_projections():
    X = make_data()
    h = PCAH(n_bits=8).fit(X)
    _, comps = fit_pca(X, 8)
    expected = ((X - X.mean(axis=0)) @ comps > 0).astype(np.uint8)
    np.testing.assert_array_equal(unpack_bits(h.encode(X)), expected)


# -- ITQ -------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_itq_quantization_loss_non_increasing(seed):
    X = make_data(n=400)
    h = ITQ(n_bits=16, random_state=seed, n_iter=30).fit(X)
    loss = h.quantization_loss_
    assert loss.shape == (31,)
    assert np.all(np.diff(loss) <= 1e-9 * loss[0])
    assert loss[-1] < loss[0]


def test_itq_loss_matches_final_rotation():
    X = make_data()
    h = ITQ(n_bits=16, n_iter=10).fit(X)
    V = (X - h.mean_) @ h.components_ @ h.rotation_
    B = np.where(V > 0, 1.0, -1.0)
    np.testing.assert_allclose(h.quantization_loss_[-1], np.square(B - V).sum() / len(X))


@pytest.mark.parametrize("n_bits", [8, 32])
def test_itq_rotation_orthogonal(n_bits):
    h = ITQ(n_bits=n_bits, random_state=4).fit(make_data())
    R = h.rotation_
    assert R.shape == (n_bits, n_bits)
    np.testing.assert_allclose(R.T @ R, np.eye(n_bits), atol=1e-10)
    np.testing.assert_allclose(R @ R.T, np.eye(n_bits), atol=1e-10)


def test_itq_zero_iterations_is_a_random_rotation_of_pca():
    h = ITQ(n_bits=8, n_iter=0).fit(make_data())
    assert h.quantization_loss_.shape == (1,)
    np.testing.assert_allclose(h.rotation_.T @ h.rotation_, np.eye(8), atol=1e-12)


# -- SH --------------------------------------------------------------------------------------
def test_sh_picks_smallest_eigenvalue_modes():
    rng = np.random.default_rng(1)
    # three axes with incommensurate ranges, so no two modes share an eigenvalue
    X = rng.uniform(-1.0, 1.0, (400, 3)) * np.array([3.0, np.sqrt(2.0), 0.7])
    h = SH(n_bits=8).fit(X)
    widths = h.mx_ - h.mn_
    candidates = [
        ((k * np.pi / widths[d]) ** 2, d, k) for d, k in itertools.product(range(3), range(1, 40))
    ]
    best = sorted(candidates)[:8]
    assert [tuple(m) for m in h.modes_.tolist()] == [(d, k) for _, d, k in best]
    # and every bit is the sign of sin(pi/2 + omega (x - mn)) on its PCA axis
    P = (X - h.mean_) @ h.components_
    expected = np.stack(
        [np.sin(np.pi / 2 + k * np.pi / widths[d] * (P[:, d] - h.mn_[d])) > 0 for d, k in h.modes_],
        axis=1,
    )
    np.testing.assert_array_equal(unpack_bits(h.encode(X)), expected.astype(np.uint8))


def test_sh_box_contains_training_data():
    X = make_data()
    h = SH(n_bits=16).fit(X)
    P = (X - h.mean_) @ h.components_
    assert h.components_.shape == (48, 16)
    assert np.all(P > h.mn_) and np.all(P < h.mx_)


def test_sh_allows_more_bits_than_features():
    X = make_data(d=8)
    h = SH(n_bits=32).fit(X)
    assert h.components_.shape == (8, 8)
    assert h.modes_.shape == (32, 2)
    assert len({tuple(m) for m in h.modes_.tolist()}) == 32
    assert h.encode(X).shape == (200, 4)


# -- errors ----------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", METHODS)
@pytest.mark.parametrize("n_bits", [12, 0, -8])
def test_n_bits_must_be_positive_multiple_of_8(cls, n_bits):
    with pytest.raises(ValueError, match="multiple of 8"):
        cls(n_bits=n_bits).fit(make_data())


@pytest.mark.parametrize("cls", PCA_METHODS)
def test_pca_methods_refuse_more_bits_than_features(cls):
    with pytest.raises(ValueError, match=r"only 16 dimensions; use n_bits <= 16"):
        cls(n_bits=24).fit(make_data(d=16))


@pytest.mark.parametrize("cls", [*PCA_METHODS, SH])
def test_pca_methods_refuse_more_bits_than_samples_allow(cls):
    with pytest.raises(ValueError, match=r"at least 17 samples"):
        cls(n_bits=16).fit(make_data(n=12))


@pytest.mark.parametrize("cls", METHODS)
def test_nan_features_refused(cls):
    X = make_data()
    X[5, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        cls(n_bits=8).fit(X)
    h = cls(n_bits=8).fit(make_data())
    with pytest.raises(ValueError, match="NaN"):
        h.encode(X)


@pytest.mark.parametrize("cls", METHODS)
def test_encode_before_fit(cls):
    with pytest.raises(NotFittedError, match="fit"):
        cls(n_bits=8).encode(make_data())


@pytest.mark.parametrize("cls", METHODS)
def test_feature_width_mismatch_at_encode(cls):
    h = cls(n_bits=8).fit(make_data(d=48))
    with pytest.raises(ValueError, match="fitted on 48"):
        h.encode(make_data(d=40))


@pytest.mark.parametrize(
    "h", [ITQ(n_iter=-1), ITQ(n_iter=2.5), ITQ(n_iter=True), LSH(center="yes")], ids=repr
)
def test_bad_hyperparameters(h):
    with pytest.raises(ValueError, match=r"n_iter|center"):
        h.fit(make_data())


# -- real data -------------------------------------------------------------------------------
@pytest.mark.slow
def test_digits_itq_beats_lsh_and_pcah_at_32_bits():
    X, y = load_digits(return_X_y=True)
    perm = np.random.default_rng(0).permutation(len(X))
    q, db = perm[:300], perm[300:]
    scores = {}
    for name, cls in SHALLOW_METHODS.items():
        h = cls(n_bits=32, random_state=0).fit(X[db])
        scores[name] = mean_average_precision(h.encode(X[q]), h.encode(X[db]), y[q], y[db])
    assert scores["itq"] > scores["lsh"]
    assert scores["itq"] > scores["pcah"]
    # unlearned codes on 10 balanced classes sit near 0.1; every method must beat that clearly
    assert min(scores.values()) > 0.2
