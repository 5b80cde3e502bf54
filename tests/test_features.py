"""Feature extraction, rotated views, storage, devices: shapes, choices, determinism, atomicity."""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from usdh import feature_store as fx
from usdh.backbones import Backbone, BackboneSpec, build_backbone
from usdh.device import resolve_device, seed_everything, torch_determinism
from usdh.features import (
    DEEPBIT_ANGLES,
    ArrayImages,
    ImageSource,
    default_batch_size,
    extract_features,
    feature_provenance,
    load_features,
    prepare_image,
    save_features,
)


def cifar_like(n: int = 6, size: int = 32, seed: int = 0) -> ArrayImages:
    """Smooth random colour images (blobs, not noise), so rotation moves real structure."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        img = np.zeros((size, size, 3))
        for _ in range(4):
            cy, cx, r = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.08, 0.3)
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2))
            img += blob[..., None] * rng.uniform(0, 255, 3)
        out[i] = np.clip(img + rng.uniform(0, 40, 3), 0, 255).astype(np.uint8)
    return ArrayImages(out)


@pytest.fixture(scope="module")
def lite0() -> Backbone:
    return build_backbone("efficientnet_lite0", "imagenet")


@pytest.fixture(scope="module")
def vgg19() -> Backbone:
    return build_backbone("vgg19", "random")


def mean_colour_backbone() -> Backbone:
    """A 'network' that returns the mean of each normalised channel: exposes the preprocessing."""
    spec = BackboneSpec("probe", 3, "input mean", (0.5, 0.25, 0.75), (0.5, 0.25, 0.125), 32, "test")
    units = OrderedDict(pool=torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()))
    return Backbone(spec, units, "none").eval()


def run(images, backbone, size=32, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("device", "cpu")
    return extract_features(images, backbone, size, **kw)


# -- image sources and preprocessing ---------------------------------------------------------------
def test_array_images_is_an_image_source_and_checks_its_input():
    imgs = cifar_like(2)
    assert isinstance(imgs, ImageSource) and len(imgs) == 2
    assert imgs.image(1).mode == "RGB" and imgs.image(1).size == (32, 32)
    grey = ArrayImages(np.zeros((1, 8, 8), np.uint8))
    assert grey.image(0).mode == "RGB"
    with pytest.raises(ValueError, match="uint8"):
        ArrayImages(np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(TypeError, match="image"):
        run([np.zeros((8, 8, 3))], mean_colour_backbone())  # type: ignore[arg-type]


def test_prepare_image_resizes_whole_image_bilinear():
    img = Image.fromarray(np.arange(32 * 48 * 3, dtype=np.uint8).reshape(32, 48, 3) % 251)
    out = prepare_image(img, 64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    expected = np.asarray(img.resize((64, 64), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(out, expected)  # squashed, nothing cropped
    same = Image.fromarray(np.full((32, 32, 3), 7, np.uint8))
    np.testing.assert_array_equal(prepare_image(same, 32), np.asarray(same))


def test_rotation_crop_never_shows_fill_and_fill_mode_does():
    flat = Image.fromarray(np.full((32, 32, 3), (200, 60, 30), np.uint8))
    for angle in DEEPBIT_ANGLES:
        cropped = prepare_image(flat, 96, angle, rotation_mode="crop", fill=(0, 0, 0))
        np.testing.assert_allclose(cropped.reshape(-1, 3), [[200, 60, 30]] * 96 * 96, atol=1)
    filled = prepare_image(flat, 96, 10.0, rotation_mode="fill", fill=(1, 2, 3))
    assert tuple(filled[0, 0]) == (1, 2, 3) and tuple(filled[48, 48]) == (200, 60, 30)
    with pytest.raises(ValueError, match="rotation_mode"):
        prepare_image(flat, 96, 5.0, rotation_mode="reflect")


def test_normalisation_and_resize_reach_the_network():
    colour = np.array([10, 128, 240], np.uint8)
    imgs = ArrayImages(np.broadcast_to(colour, (3, 20, 20, 3)).copy())
    probe = mean_colour_backbone()
    out = run(imgs, probe, 40)
    expected = (colour / 255 - np.array(probe.mean)) / np.array(probe.std)
    np.testing.assert_allclose(out, np.broadcast_to(expected, (3, 3)), rtol=1e-6, atol=1e-6)


# -- extraction ------------------------------------------------------------------------------------
def test_shapes_dtype_and_info(lite0, vgg19):
    imgs = cifar_like(5)
    info: dict = {}
    f = run(imgs, lite0, 32, batch_size=2, info=info)
    assert f.shape == (5, 1280) and f.dtype == np.float32 and np.isfinite(f).all()
    assert (f >= 0).all() and f.std() > 0
    assert info["n_images"] == 5 and info["input_size"] == 32 and info["device"] == "cpu"
    assert info["backbone"] == "efficientnet_lite0" and info["dtype"] == "float32"
    assert info["torch_threads"] >= 1 and info["wall_time_s"] >= 0 and info["angles"] is None
    v = run(imgs, vgg19, 32, batch_size=4)
    assert v.shape == (5, 4096) and (v >= 0).all()


def test_input_size_defaults_to_the_backbone(lite0):
    info: dict = {}
    run(cifar_like(1), lite0, None, info=info)
    assert info["input_size"] == lite0.default_input_size == 160
    assert info["batch_size"] == default_batch_size("cpu", 160) == 8
    assert default_batch_size("cpu", 96) == 16


def test_rotated_views_shape_and_they_change_features(lite0):
    imgs = cifar_like(3)
    plain = run(imgs, lite0, 64, batch_size=8)
    rot = run(imgs, lite0, 64, batch_size=8, angles=DEEPBIT_ANGLES)
    assert rot.shape == (3, 4, 1280) and rot.dtype == np.float32
    for k in range(4):
        assert not np.allclose(rot[:, k], plain, rtol=1e-3, atol=1e-3)
    assert not np.allclose(rot[:, 0], rot[:, 3], rtol=1e-3, atol=1e-3)
    # each view is closer to its own image than to the other images
    d = ((rot[:, :, None, :] - plain[None, None, :, :]) ** 2).sum(-1)  # (i, view, j)
    assert (d.argmin(axis=2) == np.arange(3)[:, None]).mean() >= 0.75
    zero = run(imgs, lite0, 64, batch_size=8, angles=[0.0])
    np.testing.assert_allclose(zero[:, 0], plain, rtol=1e-5, atol=1e-5)
    fill = run(imgs, lite0, 64, batch_size=8, angles=[10.0], rotation_mode="fill")
    assert not np.allclose(fill[:, 0], rot[:, 3], rtol=1e-3, atol=1e-3)


def test_bitwise_determinism_on_cpu(lite0, vgg19):
    imgs = cifar_like(6)
    for model in (lite0, vgg19):
        a = run(imgs, model, 32, batch_size=4)
        b = run(imgs, model, 32, batch_size=4)
        assert np.array_equal(a, b)
        c = run(imgs, model, 32, batch_size=4, threads=1)
        d = run(imgs, model, 32, batch_size=4, threads=1)
        assert np.array_equal(c, d)
    r1 = run(imgs, lite0, 32, batch_size=8, angles=DEEPBIT_ANGLES)
    r2 = run(imgs, lite0, 32, batch_size=8, angles=DEEPBIT_ANGLES)
    assert np.array_equal(r1, r2)


def test_workers_give_the_same_bits(lite0):
    imgs = cifar_like(6)
    a = run(imgs, lite0, 32, batch_size=3)
    b = run(imgs, lite0, 32, batch_size=3, num_workers=1)
    assert np.array_equal(a, b)


def test_subset_indices_in_the_order_given(lite0):
    imgs = cifar_like(7)
    full = run(imgs, lite0, 32, batch_size=4)
    idx = np.array([5, 0, 3, 3])
    sub = run(imgs, lite0, 32, batch_size=4, indices=idx)
    np.testing.assert_allclose(sub, full[idx], rtol=1e-5, atol=1e-6)
    rot = run(imgs, lite0, 32, batch_size=4, indices=[6, 1], angles=(5.0,))
    assert rot.shape == (2, 1, 1280)
    assert run(imgs, lite0, 32, indices=np.array([], dtype=np.int64)).shape == (0, 1280)
    for bad in ([7], [-1], [[1, 2]], [0.5]):
        with pytest.raises(ValueError, match="indices"):
            run(imgs, lite0, 32, indices=bad)


def test_bfloat16_is_close_to_float32_and_returns_float32(lite0):
    imgs = cifar_like(4)
    f32 = run(imgs, lite0, 64, batch_size=4)
    bf16 = run(imgs, lite0, 64, batch_size=4, dtype="bfloat16")
    assert bf16.dtype == np.float32
    cos = (f32 * bf16).sum(1) / np.linalg.norm(f32, axis=1) / np.linalg.norm(bf16, axis=1)
    assert (cos > 0.98).all()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"dtype": "float16"}, "dtype"),
        ({"dtype": "fp32"}, "dtype"),
        ({"batch_size": 0}, "batch_size"),
        ({"num_workers": -1}, "num_workers"),
        ({"angles": []}, "angles"),
        ({"angles": [float("nan")]}, "angles"),
        ({"rotation_mode": "mirror"}, "rotation_mode"),
        ({"device": "gpu"}, "unknown device"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        run(cifar_like(1), mean_colour_backbone(), 32, **kwargs)


def test_input_size_must_survive_vgg():
    with pytest.raises(ValueError, match="input_size"):
        run(cifar_like(1), mean_colour_backbone(), 16)


def test_progress_bar_goes_to_stderr(capsys):
    run(cifar_like(2), mean_colour_backbone(), 32, progress=True)
    err = capsys.readouterr().err
    assert "probe 32px" in err and "2/2" in err


# -- devices ---------------------------------------------------------------------------------------
def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    auto = resolve_device("auto")
    assert auto.type == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("gpu", "cuda:x", "cuda:", "mps0", ""):
        with pytest.raises(ValueError, match="unknown device"):
            resolve_device(bad)
    with pytest.raises(TypeError):
        resolve_device(0)  # type: ignore[arg-type]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on CPU-only machines")
def test_cuda_requested_without_cuda():
    for spec in ("cuda", "cuda:1"):
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            resolve_device(spec)


def test_seed_everything_and_determinism_context_restore_state():
    seed_everything(5)
    a = (np.random.rand(), torch.rand(1).item())  # noqa: NPY002
    seed_everything(5)
    assert a == (np.random.rand(), torch.rand(1).item())  # noqa: NPY002
    with pytest.raises(ValueError):
        seed_everything(-1)
    threads = torch.get_num_threads()
    before = torch.are_deterministic_algorithms_enabled()
    with torch_determinism(threads=1):
        assert torch.get_num_threads() == 1
        assert torch.are_deterministic_algorithms_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"]
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == before
    with pytest.raises(ValueError, match="threads"), torch_determinism(threads=0):
        pass


# -- storage ---------------------------------------------------------------------------------------
@pytest.fixture
def stored():
    rng = np.random.default_rng(1)
    feats = rng.random((10, 6), dtype=np.float32) * 50
    rots = rng.random((3, 4, 6), dtype=np.float32)
    idx = np.array([0, 4, 9])
    return feats, rots, idx


def provenance_of(n: int = 10) -> dict:
    run_info = {
        "backbone": "efficientnet_lite0",
        "weights": "imagenet:efficientnet-lite0-57934424.pth",
        "input_size": 160,
        "dtype": "float32",
        "device": "cpu",
        "n_images": n,
        "wall_time_s": 2.0,
        "angles": None,
    }
    rot_info = dict(run_info, n_images=3, angles=list(DEEPBIT_ANGLES), wall_time_s=1.5)
    return feature_provenance(
        run_info,
        dataset="cifar10",
        source="../shared/data/cifar10-jpeg.tar.gz",
        seed=0,
        rotations_run=rot_info,
        split="train-5000",
    )


def test_save_load_round_trip_float32_is_exact(tmp_path, stored):
    feats, rots, idx = stored
    out = save_features(
        tmp_path / "f", feats, rots, rotation_indices=idx, provenance=provenance_of()
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "features.npy",
        "provenance.json",
        "rotation_indices.npy",
        "rotations.npy",
    ]
    got = load_features(out)
    assert got.features.dtype == np.float32 and np.array_equal(got.features, feats)
    assert np.array_equal(got.rotations, rots) and np.array_equal(got.rotation_indices, idx)
    assert got.provenance["files"]["rotations.npy"]["shape"] == [3, 4, 6]
    mm = load_features(out, mmap_mode="r")
    assert isinstance(mm.features, np.memmap) and np.array_equal(mm.features, feats)
    # overwriting replaces the whole directory: no stale rotations from the previous run
    save_features(out, feats, provenance={"dataset": "x"})
    again = load_features(out)
    assert again.rotations is None and not (out / "rotations.npy").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_float16_storage_halves_the_file(tmp_path, stored):
    feats, _, _ = stored
    a = save_features(tmp_path / "a", feats, provenance={})
    b = save_features(tmp_path / "b", feats, provenance={}, dtype="float16")
    assert np.load(b / "features.npy").dtype == np.float16
    got = load_features(b).features
    assert got.dtype == np.float32 and np.allclose(got, feats, rtol=1e-3)
    assert np.load(b / "features.npy").nbytes * 2 == np.load(a / "features.npy").nbytes
    with pytest.raises(ValueError, match="65504"):
        save_features(tmp_path / "c", feats * 1e4, provenance={}, dtype="float16")
    with pytest.raises(ValueError, match="dtype"):
        save_features(tmp_path / "d", feats, provenance={}, dtype="int8")


def test_failed_write_leaves_nothing_behind(tmp_path, stored, monkeypatch):
    feats, rots, idx = stored

    def broken(path, obj):
        raise OSError("disk full")

    monkeypatch.setattr(fx, "save_json", broken)
    with pytest.raises(OSError, match="disk full"):
        save_features(tmp_path / "new", feats, rots, rotation_indices=idx, provenance={})
    assert list(tmp_path.iterdir()) == []  # neither the directory nor a staging folder
    monkeypatch.undo()
    old = save_features(tmp_path / "old", feats, provenance={"run": 1})
    monkeypatch.setattr(fx, "save_json", broken)
    with pytest.raises(OSError):
        save_features(old, feats * 2, provenance={"run": 2})
    kept = load_features(old)
    assert np.array_equal(kept.features, feats) and kept.provenance["run"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["old"]


def test_save_refuses_bad_inputs_and_foreign_directories(tmp_path, stored):
    feats, rots, idx = stored
    with pytest.raises(ValueError, match="rotation_indices"):
        save_features(tmp_path / "a", feats, rots, provenance={})
    with pytest.raises(ValueError, match="rotation_indices"):
        save_features(tmp_path / "a", feats, rots, rotation_indices=idx[:2], provenance={})
    with pytest.raises(ValueError, match="indices"):
        save_features(tmp_path / "a", feats, rots, rotation_indices=[0, 1, 10], provenance={})
    with pytest.raises(ValueError, match="columns"):
        save_features(tmp_path / "a", feats, rots[:, :, :5], rotation_indices=idx, provenance={})
    with pytest.raises(ValueError, match="without rotations"):
        save_features(tmp_path / "a", feats, rotation_indices=idx, provenance={})
    with pytest.raises(ValueError, match="2-D float"):
        save_features(tmp_path / "a", feats[0], provenance={})
    bad = feats.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        save_features(tmp_path / "a", bad, provenance={})
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match=r"notes\.txt"):
        save_features(mine, feats, provenance={})
    assert (mine / "notes.txt").read_text() == "keep me"
    with pytest.raises(FileNotFoundError, match="features stage"):
        load_features(tmp_path / "nothing")


def _spoil(path: Path, rows: list[int], value: float = np.nan) -> None:
    """Write ``value`` into ``rows`` of a stored array in place (same size: the provenance's
    recorded shape still matches), as a damaged file would have it."""
    arr = np.lib.format.open_memmap(path, mode="r+")
    arr[rows, ..., 1] = value
    arr.flush()
    del arr


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("mmap", [None, "r"])
def test_non_finite_rows_name_the_file_the_rows_and_the_stage(tmp_path, stored, dtype, mmap):
    feats, rots, idx = stored
    out = save_features(
        tmp_path / "f", feats, rots, rotation_indices=idx, provenance={}, dtype=dtype
    )
    _spoil(out / "features.npy", [7])
    with pytest.raises(ValueError) as err:
        load_features(out, mmap_mode=mmap)
    msg = str(err.value)
    assert msg.startswith(
        f"{out / 'features.npy'} holds NaN or infinite values in 1 of its 10 rows"
    )
    assert "(row 7)" in msg and f"rerun the features stage that writes {out}" in msg
    # the rotated views too, an infinite value as well as NaN; many rows: the first five shown
    out = save_features(
        tmp_path / "g", feats, rots, rotation_indices=idx, provenance={}, dtype=dtype
    )
    _spoil(out / "rotations.npy", [0, 2], np.inf)
    with pytest.raises(
        ValueError, match=r"rotations\.npy holds NaN or infinite values in 2 of its 3"
    ):
        load_features(out, mmap_mode=mmap)
    out = save_features(tmp_path / "h", feats, provenance={}, dtype=dtype)
    _spoil(out / "features.npy", [1, 2, 3, 5, 8, 9])
    with pytest.raises(ValueError, match=r"in 6 of its 10 rows \(rows 1, 2, 3, 5, 8, \.\.\.\)"):
        load_features(out, mmap_mode=mmap)


def test_non_finite_rows_are_found_block_by_block(tmp_path, monkeypatch):
    """Rows are checked a block at a time (a large memory-mapped file is never copied whole);
    the rows reported are the file's, whichever block they fall in."""
    feats = np.random.default_rng(0).random((100, 6), dtype=np.float32)
    out = save_features(tmp_path / "f", feats, provenance={})
    _spoil(out / "features.npy", [0, 23, 24, 99])
    monkeypatch.setattr(fx, "_BLOCK_BYTES", 6 * 4 * 8)  # blocks of 8 rows
    seen = []
    real = np.isfinite
    monkeypatch.setattr(fx.np, "isfinite", lambda a: seen.append(a.shape) or real(a))
    with pytest.raises(ValueError, match=r"4 of its 100 rows \(rows 0, 23, 24, 99\)"):
        load_features(out, mmap_mode="r")
    assert seen and max(shape[0] for shape in seen) == 8


def test_non_finite_bank_names_the_file_and_the_bank_stage(tmp_path, stored):
    feats, rots, idx = stored
    out = fx.save_bank(tmp_path / "bank", rots, idx, shape=feats.shape, provenance={})
    _spoil(out / "augmentations.npy", [1])
    with pytest.raises(ValueError) as err:
        fx.load_bank(out)
    msg = str(err.value)
    assert msg.startswith(f"{out / 'augmentations.npy'} holds NaN or infinite values in 1 of")
    assert "(row 1)" in msg and f"rerun the bank stage that writes {out}" in msg


def test_provenance_content(tmp_path, stored):
    feats, rots, idx = stored
    record = provenance_of()
    out = save_features(tmp_path / "f", feats, rots, rotation_indices=idx, provenance=record)
    saved = json.loads((Path(out) / "provenance.json").read_text())
    required = "dataset source backbone weights input_size dtype angles device seed n_images"
    for key in [*required.split(), "versions", "environment"]:
        assert key in saved, key
    # times go to the stage's timing record: a rerun computing the same features writes the
    # same bytes (usdh/timing.py)
    for key in ("wall_time_s", "images_per_s", "total_wall_time_s", "git_revision"):
        assert key not in json.dumps(saved), key
    assert saved["environment"]["cpu"]["cores"] >= 1
    assert saved["dataset"] == "cifar10" and saved["seed"] == 0 and saved["split"] == "train-5000"
    assert saved["angles"] == list(DEEPBIT_ANGLES) and saved["rotations"]["n_images"] == 3
    assert saved["storage_dtype"] == "float32"
    for package in ("torch", "torchvision", "numpy"):
        assert saved["versions"][package]
    with pytest.raises(ValueError, match="input_size"):
        feature_provenance(
            {"input_size": 96}, dataset="d", source="s", rotations_run={"input_size": 160}
        )


def test_extraction_info_feeds_provenance(tmp_path, lite0):
    imgs = cifar_like(4)
    info: dict = {}
    rinfo: dict = {}
    f = run(imgs, lite0, 32, info=info)
    r = run(imgs, lite0, 32, info=rinfo, indices=[1, 2], angles=DEEPBIT_ANGLES)
    prov = feature_provenance(info, dataset="toy", source="memory", seed=0, rotations_run=rinfo)
    out = save_features(tmp_path / "toy", f, r, rotation_indices=[1, 2], provenance=prov)
    got = load_features(out)
    assert got.provenance["backbone"] == "efficientnet_lite0"
    assert got.provenance["rotations"]["angles"] == list(DEEPBIT_ANGLES)
    assert got.provenance["rotations"]["n_forward"] == 8
    assert got.provenance["normalization"]["mean"] == pytest.approx([127 / 255] * 3)
