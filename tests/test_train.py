"""The one trainer and the deep hashers on it: determinism, resume, validation, errors, finetune."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from baselines.deepbit import DeepBit
from usdh.backbones import build_backbone
from usdh.codes import unpack_bits
from usdh.features import ArrayImages, extract_features
from usdh.hasher import TrainingViews
from usdh.method import USDH
from usdh.train import (
    ACTIVATIONS,
    CHECKPOINT_FILE,
    INIT_STD,
    LOG_FILE,
    FeatureBatches,
    HashHead,
    ImageBatches,
    NonFiniteLossError,
    TrainConfig,
    train,
)
from usdh.train.model import build_activation

ANGLES = [-10.0, -5.0, 5.0, 10.0]


def clustered(n: int = 240, d: int = 24, seed: int = 0):
    """Non-negative features in 4 clusters, and slightly perturbed 'rotated' views of them."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, d)) * 2
    y = rng.integers(0, 4, n)
    x = np.maximum(centres[y] + rng.normal(size=(n, d)), 0).astype(np.float32)
    rot = np.maximum(x[:, None, :] + 0.1 * rng.normal(size=(n, len(ANGLES), d)), 0)
    return x, rot.astype(np.float32), y


def usdh(**kw) -> USDH:
    base = {"n_bits": 16, "epochs": 4, "batch_size": 16, "progress": False, "threads": 1}
    return USDH(**{**base, **kw})


def test_fit_encode_packs_codes_and_is_bitwise_deterministic():
    x, rot, _ = clustered()
    a = usdh().fit(x, views=TrainingViews(rot, ANGLES))
    b = usdh().fit(x, views=TrainingViews(rot, ANGLES))
    codes = a.encode(x)
    assert codes.dtype == np.uint8 and codes.shape == (len(x), 2)
    assert np.array_equal(a.weight_, b.weight_) and np.array_equal(a.bias_, b.bias_)
    assert np.array_equal(codes, b.encode(x))
    c = usdh(random_state=1).fit(x, views=TrainingViews(rot, ANGLES))
    assert not np.array_equal(a.weight_, c.weight_)
    # the bits are the relaxed codes thresholded at 0.5
    assert np.array_equal(unpack_bits(codes), (a.relaxed(x) > 0.5).astype(np.uint8))


def test_training_lowers_the_loss_and_the_codes_follow_the_clusters():
    x, rot, y = clustered(400)
    m = usdh(epochs=15, lr=0.01).fit(x, views=TrainingViews(rot, ANGLES))
    cols = list(m.log_columns_)
    total = m.log_[:, cols.index("total")]
    assert total[-1] < total[0]
    bits = unpack_bits(m.encode(x)).astype(int)
    dist = (bits[:, None, :] != bits[None, :, :]).sum(-1)
    same = y[:, None] == y[None, :]
    assert dist[same].mean() < dist[~same].mean() - 2


def test_saved_model_round_trips(tmp_path):
    x, rot, _ = clustered()
    m = usdh(threshold="mean").fit(x, views=TrainingViews(rot, ANGLES))
    m.save(tmp_path / "m.npz")
    back = USDH.load(tmp_path / "m.npz")
    assert np.array_equal(back.encode(x), m.encode(x))
    assert back.get_params() == m.get_params()
    assert list(back.log_columns_) == list(m.log_columns_)


def test_each_epoch_is_logged_and_checkpointed(tmp_path):
    x, rot, _ = clustered()
    m = usdh(epochs=3).fit(x, views=TrainingViews(rot, ANGLES), checkpoint_dir=tmp_path)
    assert (tmp_path / CHECKPOINT_FILE).is_file()
    with open(tmp_path / LOG_FILE) as fh:
        rows = list(csv.DictReader(fh))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    for term in ("semantic", "quantization", "entropy", "rotation"):
        assert all(math.isfinite(float(r[term])) and float(r[f"val_{term}"]) >= 0 for r in rows)
    assert len(m.log_) == 3


class Crash(Exception):
    pass


def _config(**kw) -> TrainConfig:
    base = {
        "loss": {
            "semantic": {"weight": 1.0, "construction": "knn", "k": 5},
            "quantization": {"weight": 1.0},
            "entropy": {"weight": 1.0},
            "rotation": {"weight": 0.01},
        },
        "stages": [
            {"epochs": 3, "lr": 0.01, "weights": {"rotation": 0}},
            {"epochs": 3, "lr": 0.001},
        ],
        "batch_size": 16,
        "threads": 1,
        "seed": 3,
    }
    return TrainConfig(**{**base, **kw})


def test_resume_after_an_interruption_equals_an_uninterrupted_run(tmp_path):
    x, rot, _ = clustered()
    data = FeatureBatches(x, rot, ANGLES)
    full = train(data, 16, _config())

    def crash_after(epoch):
        def callback(row):
            if row["epoch"] == epoch:
                raise Crash

        return callback

    for stop in (2, 3, 5):  # inside stage 1, at the stage boundary, inside stage 2
        folder = tmp_path / str(stop)
        with pytest.raises(Crash):
            train(data, 16, _config(), checkpoint_dir=folder, callback=crash_after(stop))
        resumed = train(data, 16, _config(), checkpoint_dir=folder, resume=True)
        assert resumed.resumed_at == stop
        for name, value in full.model.state_dict().items():
            assert torch.equal(value, resumed.model.state_dict()[name]), (stop, name)
        # the log carries on where it stopped: every value but the wall time is the same
        untimed = [[(k, v) for k, v in r.items() if k != "seconds"] for r in resumed.log]
        assert untimed == [[(k, v) for k, v in r.items() if k != "seconds"] for r in full.log]


def test_a_checkpoint_of_other_settings_is_not_resumed(tmp_path):
    x, rot, _ = clustered()
    data = FeatureBatches(x, rot, ANGLES)
    train(data, 16, _config(), checkpoint_dir=tmp_path)
    with pytest.warns(UserWarning, match="different configuration"):
        other = train(data, 16, _config(seed=4), checkpoint_dir=tmp_path, resume=True)
    assert other.resumed_at is None


def test_early_stopping_keeps_the_best_validation_epoch():
    x, rot, _ = clustered()
    data = FeatureBatches(x, rot, ANGLES)
    res = train(data, 16, _config(patience=1, stages=[{"epochs": 30, "lr": 0.5}]))
    val = [r["val_total"] for r in res.log]
    best = res.best_epochs[0]
    assert val[best - 1] == min(val)
    assert len(res.log) == best + 1 and res.stopped_early == [True]


def test_deepbit_defaults_are_the_releases():
    m = DeepBit(n_bits=32)
    cfg = m.train_config()
    loss = cfg.loss
    assert loss["semantic"]["weight"] == 0
    assert (loss["quantization"]["weight"], loss["entropy"]["weight"]) == (1.0, 1.0)
    assert loss["rotation"]["weight"] == 0.001
    assert [s.lr for s in cfg.stages] == pytest.approx([1e-3, 1e-4, 1e-4])
    assert [s.weights.get("rotation") for s in cfg.stages] == [0.0, 0.0, None]
    assert (cfg.momentum, cfg.weight_decay, cfg.batch_size) == (0.9, 5e-4, 32)
    assert m.threshold == "mean" and m.activation == "relu"  # relu8_kevin after fc8


def test_deepbit_thresholds_at_the_mean_training_activation():
    x, rot, _ = clustered()
    m = DeepBit(n_bits=16, epochs=2, progress=False, threads=1).fit(
        x, views=TrainingViews(rot, ANGLES)
    )
    h = m.relaxed(x)
    assert m.threshold_ == pytest.approx(h.mean(axis=0))
    assert np.array_equal(unpack_bits(m.encode(x)), (h > h.mean(axis=0)).astype(np.uint8))


def test_activations_are_modules_chosen_by_name():
    assert list(ACTIVATIONS) == ["sigmoid", "relu", "identity", "tanh"]
    z = torch.linspace(-3.0, 3.0, 13)
    assert torch.equal(build_activation("sigmoid")(z), torch.sigmoid(z))
    assert torch.equal(build_activation("relu")(z), torch.relu(z))
    assert torch.equal(build_activation("identity")(z), z)
    assert torch.equal(build_activation("tanh")(z), torch.tanh(z))
    # the signed form: its sign is the bit the encoder gives (h > midpoint)
    for name in ACTIVATIONS:
        act = build_activation(name)
        h = act(z)
        assert torch.equal(act.signed(h) > 0, h > act.midpoint)
    for bad in ("softsign", "Sigmoid", None, ["relu"]):
        with pytest.raises(ValueError, match=r"activation must be one of \('sigmoid', 'relu'"):
            build_activation(bad)
    with pytest.raises(ValueError, match="activation must be one of"):
        HashHead(8, 8, activation="softsign")
    with pytest.raises(ValueError, match="activation must be one of"):
        _config(activation="softsign")


def test_the_head_is_initialised_from_its_generator():
    a = HashHead(64, 32, torch.Generator().manual_seed(7), activation="relu")
    b = HashHead(64, 32, torch.Generator().manual_seed(7), activation="relu")
    assert torch.equal(a.linear.weight, b.linear.weight) and not a.linear.bias.any()
    assert float(a.linear.weight.detach().std()) == pytest.approx(INIT_STD, rel=0.1)
    assert set(a.state_dict()) == {"linear.weight", "linear.bias"}


@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_relaxed_codes_are_the_torch_heads_output(activation):
    x, rot, _ = clustered(60)
    m = usdh(epochs=1, activation=activation).fit(x, views=TrainingViews(rot, ANGLES))
    head = HashHead(x.shape[1], m.n_bits, activation=activation).double()
    with torch.no_grad():
        head.linear.weight.copy_(torch.from_numpy(m.weight_))
        head.linear.bias.copy_(torch.from_numpy(m.bias_))
        expected = head(torch.from_numpy(x.astype(np.float64))).numpy()
    h = m.relaxed(x)
    assert h.dtype == np.float64 and np.array_equal(h, expected)
    # and, to rounding, the formula: activation(X W^T + b)
    z = x.astype(np.float64) @ m.weight_.astype(np.float64).T + m.bias_
    np.testing.assert_allclose(
        h, 1 / (1 + np.exp(-z)) if activation == "sigmoid" else np.maximum(z, 0)
    )


def test_ablation_without_rotation_needs_no_rotated_views():
    x, _, _ = clustered()
    m = usdh(loss={"rotation": {"weight": 0}}).fit(x)
    assert "rotation" not in list(m.log_columns_)
    with pytest.raises(ValueError, match="rotated views"):
        usdh().fit(x)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_bits": 12}, "multiple of 8"),
        ({"loss": {"semantic": {"construction": "graph"}}}, "construction 'graph'"),
        ({"loss": {"entropy": {"weight": -0.5}}}, "finite number >= 0"),
        ({"loss": {"hinge": {"weight": 1}}}, "unknown loss term 'hinge'"),
        ({"threshold": "median"}, "threshold must be one of"),
        ({"activation": "softsign"}, "activation must be one of"),
        ({"binarizer": "median"}, "binarizer must be one of"),
        ({"binarizer": "bihalf", "binarizer_options": {"gamma": -1}}, "gamma must be"),
        ({"optimizer": "lbfgs"}, "optimizer must be one of"),
        ({"init": "pca"}, "init must be one of"),
        ({"init": "itq", "hidden": 32}, "needs hidden=None"),
        ({"hidden": 0}, "hidden"),
        ({"stages": [{"epochs": 0}]}, "stage epochs"),
        ({"val_fraction": 1.0}, "val_fraction"),
    ],
)
def test_bad_settings_are_clear_errors(kwargs, match):
    x, rot, _ = clustered(60)
    with pytest.raises(ValueError, match=match):
        usdh(**kwargs).fit(x, views=TrainingViews(rot, ANGLES))


def test_bad_inputs_are_clear_errors():
    x, rot, _ = clustered(60)
    with pytest.raises(ValueError, match=r"rotations must have shape \(M, A, D\)"):
        usdh().fit(x, views=TrainingViews(rot[:, :, :5], ANGLES))
    with pytest.raises(ValueError, match="angles must list the 4"):
        usdh().fit(x, views=TrainingViews(rot, (5.0,)))
    m = usdh(epochs=1).fit(x, views=TrainingViews(rot, ANGLES))
    with pytest.raises(ValueError, match="has 5 features, but the hasher was fitted on 24"):
        m.encode(x[:, :5])


def test_a_non_finite_loss_stops_with_the_epoch_and_the_term():
    x, rot, _ = clustered(60)
    cfg = _config(stages=[{"epochs": 3, "lr": 1e30}], activation="relu")
    with pytest.raises(NonFiniteLossError, match=r"stage 1, epoch \d+.*(quantization|semantic)"):
        train(FeatureBatches(x * 1e6, rot * 1e6, ANGLES), 16, cfg)


def test_finetune_step_on_a_vgg19_with_random_weights():
    """Finetune mode trains the backbone's last unit (fc7) and the head, on images."""
    rng = np.random.default_rng(0)
    images = ArrayImages(rng.integers(0, 256, (6, 40, 40, 3), dtype=np.uint8))
    backbone = build_backbone("vgg19", "random", seed=0)
    feats = extract_features(images, backbone, input_size=32, device="cpu", progress=False)
    frozen = {k: v.clone() for k, v in backbone.state_dict().items()}
    data = ImageBatches(images, feats, backbone, n_trainable=1, input_size=32, angles=[-5, 5])
    cfg = TrainConfig(
        loss={
            "semantic": {"weight": 1.0, "construction": "cosine"},
            "quantization": {"weight": 1.0},
            "entropy": {"weight": 1.0},
            "rotation": {"weight": 0.001},
        },
        stages=[{"epochs": 1, "lr": 0.01}],
        batch_size=3,
        val_fraction=0.0,
        device="auto",
        threads=1,
    )
    res = train(data, 8, cfg)
    assert res.log and all(math.isfinite(v) for v in res.log[0].values())
    changed = {k for k, v in backbone.state_dict().items() if not torch.equal(v, frozen[k])}
    tail = {f"units.{n}" for n in backbone.unit_names[-1:]}
    assert changed and all(any(k.startswith(t) for t in tail) for k in changed)
    assert res.model.head.linear.weight.grad is not None
