"""GreedyHash and BiHalf on the shared trainer, and the pieces they are made of: the binarizers,
the loss terms they use, the hidden head, the rotation subset, the epoch monitor and ITQ's init.

Every numerical piece is checked against a plain-loop or brute-force reference written here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from baselines.bihalf import BiHalf
from baselines.cibhash import CIBHash
from baselines.greedyhash import GreedyHash
from baselines.itq import ITQ
from tests.test_train import ANGLES, Crash, clustered
from usdh.codes import unpack_bits
from usdh.hasher import TrainingViews
from usdh.losses import PenaltyLoss, RotationLoss, SemanticLoss
from usdh.method import USDH
from usdh.train import FeatureBatches, HashHead, train
from usdh.train.model import BINARIZERS, build_binarizer

FAST = {"n_bits": 16, "epochs": 4, "batch_size": 16, "progress": False, "threads": 1}


# -- binarizers ------------------------------------------------------------------------------------
def test_binarizers_are_modules_chosen_by_name():
    assert list(BINARIZERS) == ["none", "sign", "bihalf", "bernoulli"]
    with pytest.raises(ValueError, match=r"binarizer must be one of \('none', 'sign', 'bihalf', "):
        build_binarizer("median")
    with pytest.raises(ValueError, match="bad option for binarizer 'sign'"):
        build_binarizer("sign", {"gamma": 1.0})


def test_sign_forward_and_its_straight_through_gradient_is_the_identity():
    s = torch.tensor([[-2.0, 0.0, 0.5], [3.0, -0.1, 0.0]], requires_grad=True)
    u = build_binarizer("sign")(s)
    # 0 goes to -1, as the encoder's bit h > midpoint does
    assert torch.equal(u, torch.tensor([[-1.0, -1.0, 1.0], [1.0, -1.0, -1.0]]))
    g = torch.randn(2, 3, generator=torch.Generator().manual_seed(0))
    u.backward(g)
    assert torch.equal(s.grad, g)


def _bihalf_reference(s: np.ndarray) -> np.ndarray:
    """Per column, +1 for the floor(B/2) largest values, by a plain loop over columns."""
    out = -np.ones_like(s)
    for k in range(s.shape[1]):
        order = sorted(range(s.shape[0]), key=lambda i: -s[i, k])
        for i in order[: s.shape[0] // 2]:
            out[i, k] = 1.0
    return out


@settings(max_examples=60, deadline=None)
@given(
    st.integers(2, 40).flatmap(
        lambda b: st.lists(
            st.lists(
                st.floats(-1e3, 1e3, allow_nan=False, width=32), min_size=b, max_size=b, unique=True
            ),
            min_size=1,
            max_size=6,
        )
    )
)
def test_bihalf_splits_every_bit_in_half_as_the_brute_force_does(columns):
    s = np.array(columns, dtype=np.float32).T  # (B, K), distinct values per column
    u = build_binarizer("bihalf")(torch.from_numpy(s)).numpy()
    assert np.array_equal(u, _bihalf_reference(s))
    assert ((u == 1).sum(axis=0) == s.shape[0] // 2).all()
    if s.shape[0] % 2 == 0:  # an even batch: exactly the rows above the column's median
        median = np.median(s.astype(np.float64), axis=0)  # exact midpoint of two float32s
        assert np.array_equal(u == 1, s > median)


def test_bihalf_backward_is_the_gradient_plus_its_pull_to_the_codes():
    gen = torch.Generator().manual_seed(1)
    s = torch.randn(8, 4, generator=gen, requires_grad=True)
    g = torch.randn(8, 4, generator=gen)
    u = build_binarizer("bihalf", {"gamma": 6.0})(s)
    u.backward(g)
    expected = g + 6.0 * (s.detach() - u.detach()) / s.numel()
    assert torch.allclose(s.grad, expected, rtol=0, atol=1e-7)


# -- loss terms ------------------------------------------------------------------------------------
def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("b", [6, 7])
def test_halves_cosine_loss_matches_a_plain_loop(b):
    gen = torch.Generator().manual_seed(b)
    f = torch.rand(b, 10, generator=gen)
    u = torch.randn(b, 5, generator=gen).sign()
    h = (u + 1) / 2
    term = SemanticLoss(construction="cosine", center=False, pairs="halves")
    value = float(term(h, codes=u, features=f))
    m = b // 2
    fn, un = f.double().numpy(), u.double().numpy()
    ref = np.mean([(_cos(un[i], un[i + m]) - _cos(fn[i], fn[i + m])) ** 2 for i in range(m)])
    assert value == pytest.approx(ref, rel=1e-5)
    # all pairs: the mean over every i != j
    term = SemanticLoss(construction="cosine", center=False, pairs="all")
    ref_all = np.mean(
        [
            (_cos(un[i], un[j]) - _cos(fn[i], fn[j])) ** 2
            for i in range(b)
            for j in range(b)
            if i != j
        ]
    )
    assert float(term(h, codes=u, features=f)) == pytest.approx(ref_all, rel=1e-5)


def test_greedyhash_penalty_matches_a_plain_loop():
    h = torch.randn(5, 4, generator=torch.Generator().manual_seed(2))
    ref = np.mean([abs((abs(v) - 1) ** 3) for v in h.double().numpy().ravel()])
    assert float(PenaltyLoss()(h)) == pytest.approx(ref, rel=1e-6)
    assert float(PenaltyLoss()(torch.tensor([[1.0, -1.0]]))) == 0.0
    with pytest.raises(ValueError, match="penalty power"):
        PenaltyLoss(power=0)


def test_rotation_term_on_a_subset_uses_only_the_rows_that_have_views():
    gen = torch.Generator().manual_seed(3)
    h = torch.rand(6, 4, generator=gen)
    mask = torch.tensor([True, False, True, False, False, True])
    h_rot = torch.rand(3, 2, 4, generator=gen)
    angles = torch.tensor([-5.0, 5.0])
    term = RotationLoss(sigma=5.0)
    w = np.exp(-0.5)
    rows = h.numpy()[mask.numpy()]
    ref = np.mean(
        [0.5 * w * ((rows[i] - h_rot.numpy()[i, a]) ** 2).sum() for i in range(3) for a in range(2)]
    )
    assert float(term(h, h_rot=h_rot, angles=angles, rot_mask=mask)) == pytest.approx(ref)
    none = torch.zeros(6, dtype=torch.bool)
    assert float(term(h, h_rot=h_rot[:0], angles=angles, rot_mask=none)) == 0.0


def test_feature_batches_serve_the_rotated_views_of_the_subset_rows():
    x, rot, _ = clustered(40)
    rows = np.array([7, 2, 30])
    data = FeatureBatches(x, rot[rows], ANGLES, rotation_rows=rows)
    b = data.batch(torch.tensor([2, 3, 30, 5]), rotations=True)
    assert b.rot_mask.tolist() == [True, False, True, False]
    expected = np.concatenate([rot[2], rot[30]])  # in batch order: row 2, then row 30
    assert np.array_equal(b.x_rot.numpy(), expected)
    with pytest.raises(ValueError, match="distinct row indices"):
        FeatureBatches(x, rot[[1, 1]], ANGLES, rotation_rows=[1, 1])


# -- the methods -----------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [GreedyHash, BiHalf])
def test_method_defaults_are_the_releases_head_binarizer_and_loss(cls):
    m = cls(n_bits=32)
    cfg = m.train_config()
    assert (cfg.activation, cfg.hidden) == ("identity", None)
    assert cfg.binarizer == {GreedyHash: "sign", BiHalf: "bihalf"}[cls]
    semantic = cfg.loss["semantic"]
    assert (semantic["construction"], semantic["center"], semantic["pairs"]) == (
        "cosine",
        False,
        "halves",
    )
    if cls is GreedyHash:
        assert cfg.loss["penalty"] == {"weight": 0.1, "power": 3.0}
    else:
        assert set(cfg.loss) == {"semantic"} and cfg.binarizer_options == {"gamma": 6.0}
    assert (cfg.momentum, cfg.weight_decay) == (0.9, 5e-4)


@pytest.mark.parametrize("cls", [GreedyHash, BiHalf])
def test_fit_is_bitwise_deterministic_and_codes_are_the_sign_of_h(cls, tmp_path):
    x, _, y = clustered(300)
    a = cls(**FAST, lr=0.05).fit(x)
    b = cls(**FAST, lr=0.05).fit(x)
    assert np.array_equal(a.weight_, b.weight_) and np.array_equal(a.encode(x), b.encode(x))
    bits = unpack_bits(a.encode(x))
    assert np.array_equal(bits, (a.relaxed(x) > 0).astype(np.uint8))
    a.save(tmp_path / "m.npz")
    back = cls.load(tmp_path / "m.npz")
    assert back.get_params() == a.get_params() and np.array_equal(back.encode(x), a.encode(x))
    # it learns: same-cluster codes are closer than different-cluster codes
    d = (bits[:, None, :] != bits[None, :, :]).sum(-1)
    same = y[:, None] == y[None, :]
    assert d[same].mean() < d[~same].mean() - 2


@pytest.mark.parametrize("cls", [GreedyHash, BiHalf, CIBHash])
def test_resume_after_an_interruption_equals_an_uninterrupted_run(cls, tmp_path):
    x, _, _ = clustered()
    cfg = cls(**FAST, lr=0.05).train_config()
    # CIBHash learns from two views of a row: a bank of three noisy copies of each
    noise = np.random.default_rng(0).normal(size=(len(x), 3, x.shape[1]))
    bank = (x[:, None, :] + 0.2 * noise).astype(np.float32) if cls is CIBHash else None
    data = FeatureBatches(x, augmentations=bank)
    full = train(data, 16, cfg)

    def crash(row):
        if row["epoch"] == 2:
            raise Crash

    with pytest.raises(Crash):
        train(data, 16, cfg, checkpoint_dir=tmp_path, callback=crash)
    resumed = train(data, 16, cfg, checkpoint_dir=tmp_path, resume=True)
    assert resumed.resumed_at == 2
    for name, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name


def test_hidden_head_encodes_as_the_torch_head_does():
    x, _, _ = clustered(80)
    m = USDH(**FAST, hidden=12, loss={"rotation": {"weight": 0}}).fit(x)
    assert m.hidden_weight_.shape == (12, x.shape[1]) and m.weight_.shape == (16, 12)
    head = HashHead(x.shape[1], 16, hidden=12).double()
    with torch.no_grad():
        head.hidden.weight.copy_(torch.from_numpy(m.hidden_weight_))
        head.hidden.bias.copy_(torch.from_numpy(m.hidden_bias_))
        head.linear.weight.copy_(torch.from_numpy(m.weight_))
        head.linear.bias.copy_(torch.from_numpy(m.bias_))
        expected = head(torch.from_numpy(x.astype(np.float64))).numpy()
    assert np.array_equal(m.relaxed(x), expected)


def test_the_epoch_monitor_is_logged_and_changes_nothing():
    x, rot, _ = clustered()
    views = TrainingViews(rot, ANGLES)
    seen = []

    def monitor(encode):
        codes = encode(x)
        seen.append(codes)
        return float(unpack_bits(codes).mean())

    watched = USDH(**FAST).fit(x, views=views, monitor=monitor)
    plain = USDH(**FAST).fit(x, views=views)
    assert np.array_equal(watched.weight_, plain.weight_)
    cols = list(watched.log_columns_)
    assert "val_mAP" in cols and len(seen) == FAST["epochs"]
    # the last epoch's monitored codes are the fitted hasher's codes
    assert np.array_equal(seen[-1], watched.encode(x))
    assert watched.log_[-1, cols.index("val_mAP")] == pytest.approx(unpack_bits(seen[-1]).mean())


def test_itq_init_starts_from_itqs_codes():
    x, _, _ = clustered(400)
    m = USDH(**{**FAST, "epochs": 1}, lr=1e-12, init="itq", loss={"rotation": {"weight": 0}}).fit(x)
    itq = ITQ(n_bits=16, random_state=0).fit(x)
    agree = (unpack_bits(m.encode(x)) == unpack_bits(itq.encode(x))).mean()
    assert agree > 0.99


@pytest.mark.parametrize("hidden", [None, 24])
def test_pytorch_init_is_nn_linears_default_drawn_from_the_seed(hidden):
    """The releases' start (nn.Linear's default) as an option: with a vanishing learning rate
    the fitted layers are their initial draws, which must have nn.Linear's own distribution
    (compared with nn.Linear's draws of the same shapes) and depend on the seed only."""
    x, _, _ = clustered(400)
    still = {**FAST, "epochs": 1, "lr": 1e-12, "weight_decay": 0.0, "hidden": hidden}
    still["loss"] = {"rotation": {"weight": 0}}

    def fitted(seed: int) -> USDH:
        return USDH(**{**still, "random_state": seed}, init="pytorch").fit(x)

    a, b, c = fitted(0), fitted(0), fitted(1)
    assert np.array_equal(a.weight_, b.weight_) and np.array_equal(a.bias_, b.bias_)
    assert not np.allclose(a.weight_, c.weight_)
    torch.manual_seed(0)
    layers = [("weight_", "bias_", torch.nn.Linear(hidden or x.shape[1], 16))]
    if hidden:
        layers.append(("hidden_weight_", "hidden_bias_", torch.nn.Linear(x.shape[1], hidden)))
    for w_name, b_name, reference in layers:
        ours = [getattr(a, w_name), getattr(a, b_name)]
        theirs = [reference.weight.detach().numpy(), reference.bias.detach().numpy()]
        bound = 1.0 / np.sqrt(reference.in_features)
        for mine, ref in zip(ours, theirs, strict=True):
            assert mine.shape == ref.shape
            assert np.abs(mine).max() <= bound * (1 + 1e-5)
            assert np.abs(ref).max() <= bound * (1 + 1e-5)
        # the same uniform law: the weights' spread agrees with nn.Linear's to sampling error
        assert ours[0].std() == pytest.approx(theirs[0].std(), rel=0.1)
        assert ours[0].std() == pytest.approx(bound / np.sqrt(3), rel=0.1)
    # our own start is another law: the hash layer's weights have std 0.01, its bias is zero
    ours = USDH(**still, init="random").fit(x)
    assert ours.weight_.std() == pytest.approx(0.01, rel=0.1)
    assert np.abs(ours.bias_).max() < 1e-9


def test_rotation_views_of_a_subset_train_and_are_checked():
    x, rot, _ = clustered()
    rows = np.arange(0, len(x), 3)
    m = USDH(**FAST).fit(x, views=TrainingViews(rot[rows], ANGLES, rows))
    assert "rotation" in list(m.log_columns_)
    with pytest.raises(ValueError, match="rows must be distinct row indices"):
        USDH(**FAST).fit(x, views=TrainingViews(rot[:2], ANGLES, np.array([0, len(x)])))
