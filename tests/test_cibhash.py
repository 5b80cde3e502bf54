"""CIBHash and the pieces it adds to the shared trainer: the bank of augmented views, the Bernoulli
binarizer, the NT-Xent and information-bottleneck terms, two views per row.

Every numerical piece is checked against a plain-loop or closed-form reference written here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy import ndimage

from baselines.cibhash import CIBHash
from tests.test_features import cifar_like
from tests.test_train import clustered
from usdh.augment import Augmentation
from usdh.backbones import build_backbone
from usdh.codes import unpack_bits
from usdh.features import extract_features, load_bank, save_bank
from usdh.fitting import stored_views
from usdh.hasher import TrainingViews
from usdh.losses import BottleneckLoss, ContrastiveLoss, build_loss
from usdh.registry import get_method
from usdh.train import FeatureBatches, train
from usdh.train.batches import two_views
from usdh.train.model import build_binarizer

FAST = {"n_bits": 16, "epochs": 3, "batch_size": 16, "progress": False, "threads": 1}


def bank_of(x: np.ndarray, views: int = 4, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (x[:, None, :] + 0.2 * rng.normal(size=(len(x), views, x.shape[1]))).astype(np.float32)


# -- the loss terms --------------------------------------------------------------------------------
def _nt_xent_loop(u: np.ndarray, v: np.ndarray, t: float) -> float:
    """NT-Xent written out: for each of the 2B codes, -log of the positive's share of
    exp(cos / t) over every other code."""
    z = np.concatenate([u, v]).astype(np.float64)
    b = len(u)
    total = 0.0
    for i in range(2 * b):
        pos = i + b if i < b else i - b
        cos = [
            float(z[i] @ z[j] / (np.linalg.norm(z[i]) * np.linalg.norm(z[j]))) for j in range(2 * b)
        ]
        denom = sum(math.exp(cos[j] / t) for j in range(2 * b) if j != i)
        total += -math.log(math.exp(cos[pos] / t) / denom)
    return total / (2 * b)


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 9), st.integers(1, 12), st.floats(0.05, 2.0), st.integers(0, 10_000))
def test_nt_xent_equals_a_plain_loop(b, k, t, seed):
    rng = np.random.default_rng(seed)
    u = np.where(rng.random((b, k)) < 0.5, -1.0, 1.0)
    v = rng.normal(size=(b, k))
    term = ContrastiveLoss(temperature=t)
    got = term(torch.zeros(b, k), codes=torch.tensor(u), codes_pair=torch.tensor(v))
    assert float(got) == pytest.approx(_nt_xent_loop(u, v, t), rel=1e-9, abs=1e-12)


def test_nt_xent_rewards_agreeing_views():
    u = torch.tensor([[1.0, 1, -1, -1], [-1, -1, 1, 1], [1, -1, 1, -1]])
    term = ContrastiveLoss(0.3)
    assert float(term(u, codes=u, codes_pair=u)) < float(term(u, codes=u, codes_pair=-u))
    with pytest.raises(ValueError, match="second view"):
        term(u, codes=u)
    with pytest.raises(ValueError, match="temperature must be a number > 0"):
        ContrastiveLoss(0.0)


def test_bottleneck_is_zero_at_its_optimum_and_the_bernoulli_kl_elsewhere():
    rng = np.random.default_rng(0)
    p = torch.tensor(rng.uniform(0.05, 0.95, (6, 5)))
    term = BottleneckLoss()
    assert float(term(p, h_pair=p.clone())) == pytest.approx(0.0, abs=1e-12)
    q = torch.tensor(rng.uniform(0.05, 0.95, (6, 5)))

    def kl(a: np.ndarray, b: np.ndarray) -> float:
        e = 1e-8
        out = a * (np.log(a + e) - np.log(b + e)) + (1 - a) * (
            np.log(1 - a + e) - np.log(1 - b + e)
        )
        return float(out.sum(axis=1).mean())

    expected = 0.5 * (kl(p.numpy(), q.numpy()) + kl(q.numpy(), p.numpy()))
    assert float(term(p, h_pair=q)) == pytest.approx(expected, rel=1e-12)
    assert float(term(p, h_pair=q)) > 0
    # each direction holds the other view fixed: the gradient of KL(p || sg(q)) reaches p only
    p1 = p.clone().requires_grad_(True)
    q1 = q.clone().requires_grad_(True)
    term._kl(p1, q1).backward()
    assert q1.grad is None and p1.grad is not None


def test_pair_terms_need_pairs_and_the_trainer_says_so():
    loss = build_loss({"contrastive": {"weight": 1.0}, "bottleneck": {"weight": 0.001}})
    assert loss.needs == frozenset({"pairs"})
    x, _, _ = clustered(64)
    cfg = CIBHash(**FAST).train_config()
    with pytest.raises(ValueError, match="no augmented views"):
        train(FeatureBatches(x), 16, cfg)


# -- the Bernoulli binarizer -----------------------------------------------------------------------
def test_bernoulli_gradient_is_straight_through_to_the_probability():
    p = torch.tensor([[0.2, 0.7, 0.5], [0.9, 0.1, 0.4]], requires_grad=True)
    w = torch.tensor([[1.0, -2.0, 3.0], [0.5, 4.0, -1.0]])
    for sample in (True, False):
        p.grad = None
        torch.manual_seed(0)
        u = build_binarizer("bernoulli", {"sample": sample})(2.0 * p - 1.0)
        assert set(u.unique().tolist()) <= {-1.0, 1.0}
        (u * w).sum().backward()
        # d u / d p = 1, as the release's hash_layer(prob - t) passes the gradient to prob
        assert torch.allclose(p.grad, w)


def test_bernoulli_samples_bits_with_their_probability_and_the_release_thresholds():
    p = torch.linspace(0.02, 0.98, 25).repeat(20_000, 1)
    torch.manual_seed(1)
    u = build_binarizer("bernoulli")(2.0 * p - 1.0)
    share = (u > 0).double().mean(dim=0)
    # binomial standard error at n = 20,000 is at most 0.0036; 5 of them
    assert torch.allclose(share, p[0].double(), atol=0.018)
    det = build_binarizer("bernoulli", {"sample": False})(2.0 * p[:1] - 1.0)
    assert torch.equal(det > 0, p[:1] > 0.5)
    with pytest.raises(ValueError, match="sample must be true or false"):
        build_binarizer("bernoulli", {"sample": 1})


# -- two views per row -----------------------------------------------------------------------------
def test_two_views_are_distinct_and_cover_every_ordered_pair():
    gen = torch.Generator().manual_seed(0)
    a, b = two_views(60_000, 4, gen)
    assert bool((a != b).all())
    counts = np.zeros((4, 4))
    np.add.at(counts, (a.numpy(), b.numpy()), 1)
    off = counts[~np.eye(4, dtype=bool)]
    assert off.min() > 0.9 * 60_000 / 12 and off.max() < 1.1 * 60_000 / 12


def test_feature_batches_serve_two_stored_views_and_the_clean_features():
    x, _, _ = clustered(40)
    bank = bank_of(x, 5)
    data = FeatureBatches(x, augmentations=bank)
    idx = torch.arange(10)
    b = data.batch(idx, False, torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(3)
    first, second = two_views(10, 5, gen)
    assert torch.equal(b.x, torch.from_numpy(bank[np.arange(10), first.numpy()]))
    assert torch.equal(b.x_pair, torch.from_numpy(bank[np.arange(10), second.numpy()]))
    assert torch.equal(b.features, torch.from_numpy(x[:10]))
    with pytest.raises(ValueError, match=r"augmentations must have shape \(M, V, D\)"):
        FeatureBatches(x, augmentations=bank[:5])


# -- the method ------------------------------------------------------------------------------------
def test_cibhash_trains_on_the_bank_rows_only_learns_and_is_deterministic(tmp_path):
    x, _, y = clustered(300)
    rows = np.arange(0, 300, 2)
    views = TrainingViews(augmentations=bank_of(x[rows], 4), augmentation_rows=rows)
    a = CIBHash(**FAST).fit(x, views=views)
    b = CIBHash(**FAST).fit(x, views=views)
    assert a.n_train_ == 150 and a.train_part_ == "augmentation_subset"
    assert a.trained_on("train", 300) == ("augmentation_subset", 150)
    assert np.array_equal(a.weight_, b.weight_) and np.array_equal(a.encode(x), b.encode(x))
    assert a.hidden_weight_.shape == (1024, x.shape[1])
    assert list(a.log_columns_)[4:6] == ["contrastive", "bottleneck"]
    # codes are p > 0.5 at encode time, whatever the training binarizer sampled
    bits = unpack_bits(a.encode(x))
    assert np.array_equal(bits, (a.relaxed(x) > 0.5).astype(np.uint8))
    d = (bits[:, None, :] != bits[None, :, :]).sum(-1)
    same = y[:, None] == y[None, :]
    assert d[same].mean() < d[~same].mean() - 2
    a.save(tmp_path / "m.npz")
    assert np.array_equal(CIBHash.load(tmp_path / "m.npz").encode(x), a.encode(x))
    c = CIBHash(**FAST, random_state=1).fit(x, views=views)
    assert not np.array_equal(a.weight_, c.weight_)


def test_stored_views_give_a_run_its_own_bank_rows():
    spec = get_method("cibhash")
    assert spec.views == ("augmentations",)
    rows = np.array([10, 3, 7, 20, 5])  # the run's training rows, in split order
    stored = np.array([7, 99, 5, 3])  # the bank's image indices (99: another protocol's)
    bank_views = np.arange(4 * 2 * 3, dtype=np.float32).reshape(4, 2, 3)

    class B:
        views, indices, provenance = bank_views, stored, {}

    v = stored_views(spec, rows, {"augmentation_subset": np.array([7, 3])}, bank=B())
    assert v is not None and v.rotations is None
    # images 7 and 3, at positions 2 and 1 of rows
    assert np.array_equal(v.augmentation_rows, [2, 1])
    assert np.array_equal(v.augmentations, bank_views[[0, 3]])
    with pytest.raises(ValueError, match="no bank holds them"):
        stored_views(spec, rows, {})
    # a method without augmented views gets none
    assert stored_views(get_method("usdh"), rows, {}) is None


# -- the bank --------------------------------------------------------------------------------------
def test_augmented_views_are_seeded_per_image_and_view():
    images = cifar_like(3, size=32)
    aug = Augmentation(views=4, seed=0)
    a = [aug.view(images.image(i), i, v, 40) for i in range(3) for v in range(4)]
    b = [aug.view(images.image(i), i, v, 40) for i in range(3) for v in range(4)]
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
    assert a[0].shape == (40, 40, 3) and a[0].dtype == np.uint8
    # views differ from each other and from another seed's
    assert not np.array_equal(a[0], a[1])
    other = Augmentation(views=4, seed=1).view(images.image(0), 0, 0, 40)
    assert not np.array_equal(a[0], other)


def test_a_larger_bank_holds_the_smaller_ones_views_bitwise(tmp_path):
    images = cifar_like(4, size=32)
    backbone = build_backbone("vgg16", weights="random", seed=0)
    common = {"input_size": 32, "batch_size": 8, "progress": False, "threads": 1}
    rows = np.array([3, 0, 2])
    small = extract_features(
        images, backbone, indices=rows, augmentation=Augmentation(views=2), **common
    )
    again = extract_features(
        images, backbone, indices=rows, augmentation=Augmentation(views=2), **common
    )
    large = extract_features(
        images, backbone, indices=rows, augmentation=Augmentation(views=4), **common
    )
    assert small.shape == (3, 2, backbone.feature_dim)
    assert np.array_equal(small, again)
    assert np.allclose(large[:, :2], small, rtol=1e-5, atol=1e-6)
    out = save_bank(
        tmp_path / "bank", small, rows, shape=(4, backbone.feature_dim), provenance={"x": 1}
    )
    back = load_bank(out)
    assert np.array_equal(back.views, small) and np.array_equal(back.indices, rows)
    empty = load_bank(save_bank(tmp_path / "none", None, None, shape=(0, 0), provenance={}))
    assert empty.views is None and empty.indices is None


def test_the_crop_flip_grey_and_blur_steps():
    aug = Augmentation()
    rng = np.random.default_rng(0)
    for _ in range(200):
        w, h = int(rng.integers(8, 64)), int(rng.integers(8, 64))
        left, top, right, bottom = aug._crop_box(rng, w, h)
        assert 0 <= left < right <= w and 0 <= top < bottom <= h
        area = (right - left) * (bottom - top) / (w * h)
        assert area <= 1.0
    grey = Augmentation(flip=0, jitter_p=0, grayscale=1.0, blur_p=0)
    pixels = grey.view(Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)), 0, 0, 24)
    assert np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(
        pixels[..., 0], pixels[..., 2]
    )
    img = rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)
    g = np.exp(-np.array([1.0, 0.0, 1.0]) / (2 * 0.8**2))
    kernel = np.outer(g, g) / g.sum() ** 2
    expected = np.stack(
        [ndimage.convolve(img[..., c].astype(np.float64), kernel, mode="mirror") for c in range(3)],
        axis=-1,
    )
    assert np.array_equal(Augmentation.blur(img, 0.8), np.clip(np.rint(expected), 0, 255))
    with pytest.raises(ValueError, match=r"integer >= 2"):
        Augmentation(views=1)


@pytest.mark.parametrize(
    "field, value, allowed",
    [
        ("jitter", (0.4, 0.4, 0.4), "4 numbers (brightness, contrast, saturation, hue)"),
        ("jitter", (-0.1, 0.4, 0.4, 0.1), ">= 0"),
        ("jitter", (0.4, 0.4, 0.4, 0.7), "hue <= 0.5"),
        ("jitter", (0.4, 0.4, float("nan"), 0.1), "finite"),
        ("jitter", "0.4", "4 numbers"),
        ("crop_scale", 0.5, "2 numbers (low, high)"),
        ("crop_scale", (0.5,), "2 numbers (low, high)"),
        ("crop_scale", (0.2, 0.5, 1.0), "2 numbers (low, high)"),
        ("crop_scale", (0.9, 0.2), "0 < low <= high <= 1"),
        ("crop_scale", (0.0, 1.0), "0 < low <= high <= 1"),
        ("crop_scale", (0.5, 1.5), "0 < low <= high <= 1"),
        ("crop_scale", (float("nan"), 1.0), "0 < low <= high <= 1"),
        ("crop_scale", ("0.5", "1"), "2 numbers"),
        ("crop_scale", np.zeros((2, 2)), "2 numbers"),
        ("crop_ratio", (4 / 3, 3 / 4), "0 < low <= high"),
        ("crop_ratio", (0.75, float("inf")), "finite aspect ratios"),
        ("blur_sigma", (0.0, 2.0), "0 < low <= high"),
        ("blur_sigma", None, "2 numbers"),
        ("flip", 1.5, "a probability in [0, 1]"),
        ("jitter_p", -0.1, "a probability in [0, 1]"),
        ("grayscale", float("nan"), "a probability in [0, 1]"),
        ("blur_p", True, "a probability in [0, 1]"),
        ("blur_p", "0.5", "a probability in [0, 1]"),
        ("views", 1, "integer >= 2"),
        ("views", 2.0, "integer >= 2"),
        ("seed", -1, "integer >= 0"),
        ("seed", 0.5, "integer >= 0"),
    ],
)
def test_augmentation_names_a_bad_parameter_when_built(field, value, allowed):
    """A bad recipe fails at construction, naming the field, the value and what is allowed."""
    with pytest.raises(ValueError) as err:
        Augmentation(**{field: value})
    msg = str(err.value)
    assert msg.startswith(f"augmentation {field} must be ") and allowed in msg
    assert msg.endswith(f"got {value!r}")


def test_augmentation_takes_lists_arrays_and_numpy_numbers_as_plain_values():
    aug = Augmentation(
        views=np.int64(3),
        crop_scale=np.array([0.5, 1.0]),
        jitter=[0.4, 0.4, 0.4, 0.1],
        flip=np.float32(0.5),
        blur_p=1,
    )
    assert aug == Augmentation(views=3, flip=0.5, blur_p=1)
    record = aug.record()
    assert record["crop_scale"] == [0.5, 1.0] and type(record["crop_scale"][0]) is float
    assert type(record["views"]) is int and type(record["flip"]) is float
    assert record["blur_p"] == 1 and type(record["blur_p"]) is int  # recorded as given
    assert Augmentation.from_params({"jitter": [0.2, 0.2, 0.2, 0.0]}, seed=1).jitter == (
        0.2,
        0.2,
        0.2,
        0.0,
    )


def test_the_bank_stage_lists_only_methods_that_need_a_bank(tmp_path, monkeypatch):
    from usdh.paramcheck import two_view_methods
    from usdh.params import load_params, read_check_record
    from usdh.stages import check

    params = load_params()
    lite, gist = "efficientnet_lite0", "gist"
    assert two_view_methods(params, "cifar10", lite) == ["cibhash"]
    assert two_view_methods(params, "oxford17", lite) == ["cibhash"]
    # the GIST features serve a bank only through a setting that runs the methods on them
    assert two_view_methods(params, "cifar10", gist) == ["cibhash"]
    without = {**params, "settings": [s for s in params["settings"] if s["backbone"] != gist]}
    assert two_view_methods(without, "cifar10", gist) == []
    # the bank stage learns it from the check stage's record, not from the method code
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"python -m usdh check"):
        read_check_record("cifar10", lite)
    check.run(params)
    assert read_check_record("cifar10", lite) == {"two_view_methods": ["cibhash"]}
    assert read_check_record("cifar10", gist) == {"two_view_methods": ["cibhash"]}
    with pytest.raises(ValueError, match=r"does not know dataset 'oxford17' through 'gist'"):
        read_check_record("oxford17", gist)
    params["experiment"]["methods"] = ["itq", "usdh"]
    variants = params["ablations"]["variants"]
    params["ablations"]["variants"] = {
        k: v for k, v in variants.items() if v["method"] in ("itq", "usdh")
    }
    params["classification"]["methods"] = ["itq"]
    assert two_view_methods(params, "cifar10", lite) == []
    assert two_view_methods(params, "oxford17", lite) == []
    assert two_view_methods(params, "cifar10", gist) == []
    check.run(params)
    assert read_check_record("oxford17", lite) == {"two_view_methods": []}
