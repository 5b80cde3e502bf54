"""GIST: the batched port against a literal per-image loop of LMgist, and the properties the
algorithm guarantees (length, intensity invariance, where a grating's energy lands)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.reference import gist_lmgist
from usdh.gist import Gist, gist_dim, symmetric_index


def _batch(images: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(n, H, W, 3) -> (n, 3, H, W) float, as the features stage hands images over."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).to(dtype)


def _grating(size: int, cycles_per_px: float, angle: float) -> np.ndarray:
    """A sinusoidal grating whose wave vector points at ``angle`` (x right, y = row index down)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    phase = 2 * np.pi * cycles_per_px * (x * math.cos(angle) + y * math.sin(angle))
    grey = 127.5 + 100.0 * np.cos(phase)
    return np.repeat(grey[..., None], 3, axis=2)


@pytest.mark.parametrize(
    ("orientations", "blocks", "dim"),
    [((8, 8, 8, 8), 4, 512), ((8, 8, 4), 4, 320), ((4, 4), 2, 32)],
)
def test_length_is_filters_times_cells(orientations, blocks, dim) -> None:
    assert gist_dim(orientations, blocks) == dim
    g = Gist(image_size=32, orientations_per_scale=orientations, blocks=blocks)
    out = g(torch.rand(2, 3, 32, 32) * 255)
    assert out.shape == (2, dim) and out.dtype == torch.float32


@settings(max_examples=6, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    size=st.sampled_from([16, 24, 32]),
    orientations=st.sampled_from([(8, 8, 8, 8), (8, 8, 4), (6, 3)]),
    blocks=st.sampled_from([3, 4]),
    boundary=st.sampled_from([0, 8, 32]),
)
def test_matches_the_literal_lmgist_loop(seed, size, orientations, blocks, boundary) -> None:
    """Batched and vectorised (float64) equals the per-image, per-filter MATLAB-style loop; the
    float32 default stays within single-precision error of it."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(3, size, size, 3)).astype(np.float64)
    want = np.stack([gist_lmgist(im, orientations, blocks, 4.0, boundary) for im in images])
    kwargs = dict(image_size=size, orientations_per_scale=orientations, blocks=blocks)
    exact = Gist(**kwargs, boundary=boundary, dtype=torch.float64)
    got = exact(_batch(images, torch.float64)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    single = Gist(**kwargs, boundary=boundary)(_batch(images)).numpy()
    np.testing.assert_allclose(single, want, rtol=2e-4, atol=2e-6)


def test_invariant_to_global_intensity_scaling() -> None:
    """LMgist rescales every image to 0..255 before the prefilter: a * x + b (a > 0) gives the
    same descriptor, and so does a colour image versus its grey version."""
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, size=(4, 32, 32, 3))
    g = Gist(dtype=torch.float64)
    base = g(_batch(images, torch.float64))
    scaled = g(_batch(0.3 * images + 17.0, torch.float64))
    np.testing.assert_allclose(scaled.numpy(), base.numpy(), rtol=1e-10, atol=1e-12)
    grey = np.repeat(images.mean(axis=3, keepdims=True), 3, axis=3)
    np.testing.assert_allclose(g(_batch(grey, torch.float64)).numpy(), base.numpy(), rtol=1e-10)


def test_a_constant_image_gives_zeros_not_nan() -> None:
    out = Gist()(torch.full((2, 3, 32, 32), 80.0))
    assert torch.equal(out, torch.zeros_like(out))


@pytest.mark.parametrize("scale", [0, 1, 2])
@pytest.mark.parametrize("step", [0, 1, 2, 5, 6])
def test_a_grating_excites_the_filter_of_its_scale_and_orientation(scale, step) -> None:
    """Filter (s, j) peaks at 0.3 / 1.85**s cycles per pixel and at frequency angle -pi j / 8; a
    real grating's spectrum is symmetric, so a wave vector at angle phi excites j with
    pi j / 8 = -phi (mod pi)."""
    size, n_or = 64, 8
    phi = -math.pi * step / n_or
    image = _grating(size, 0.3 / 1.85**scale, phi)
    g = Gist(image_size=size, blocks=4)
    energy = g(_batch(image[None])).numpy().reshape(4, n_or, 16).sum(axis=2)
    s, j = np.unravel_index(np.argmax(energy), energy.shape)
    assert (s, j) == (scale, step % n_or)
    # and it dominates: the strongest filter at another orientation of that scale is well below
    others = np.delete(energy[scale], step % n_or)
    assert others.max() < 0.8 * energy[scale, step % n_or]


def test_a_grating_fills_every_cell_alike() -> None:
    """A grating is the same everywhere, so away from the image border the cells of its dominant
    filter agree (the border cells see the symmetric padding's mirror)."""
    image = _grating(64, 0.3 / 1.85, 0.0)
    cells = Gist(image_size=64).forward(_batch(image[None])).numpy().reshape(32, 4, 4)[8]
    inner = cells[1:3, 1:3]
    assert inner.std() < 0.02 * inner.mean()


def test_symmetric_index_matches_numpy_symmetric_pad() -> None:
    for n, before, after in [(5, 2, 3), (4, 4, 4), (3, 7, 1), (32, 32, 32)]:
        signal = np.arange(n)
        want = np.pad(signal, (before, after), mode="symmetric")
        assert np.array_equal(signal[symmetric_index(n, before, after)], want)


def test_deterministic_and_batch_independent() -> None:
    """The same image gives the same bits alone or inside a batch (every op is per image)."""
    rng = np.random.default_rng(3)
    images = _batch(rng.integers(0, 256, size=(5, 32, 32, 3)).astype(np.float64))
    g = Gist()
    whole = g(images)
    assert torch.equal(whole, g(images))
    assert torch.equal(whole[2:3], g(images[2:3]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"orientations_per_scale": ()}, "orientations_per_scale"),
        ({"orientations_per_scale": (8, 0)}, "orientations_per_scale"),
        ({"blocks": 0}, "blocks"),
        ({"image_size": 4}, "image_size"),
        ({"image_size": 16, "blocks": 17}, "cannot exceed"),
        ({"boundary": -1}, "boundary"),
        ({"prefilter_fc": 0}, "prefilter_fc"),
    ],
)
def test_bad_settings_are_named(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        Gist(**kwargs)


def test_wrong_image_size_says_which_knob() -> None:
    with pytest.raises(ValueError, match=r"features\.input_size"):
        Gist(image_size=32)(torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match=r"\(n, 3, H, W\)"):
        Gist()(torch.rand(3, 32, 32))


# -- as a backbone of the features stage -----------------------------------------------------------
def test_gist_backbone_extracts_what_the_module_computes_on_raw_pixels() -> None:
    """Through the features stage's path (PIL images, resize to input_size, normalisation), GIST
    sees the raw 0..255 pixels: the same values as the module on the uint8 array."""
    from usdh.backbones import build_backbone
    from usdh.features import ArrayImages, extract_features

    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, size=(6, 32, 32, 3), dtype=np.uint8)
    backbone = build_backbone("gist", "none", input_size=32)
    got = extract_features(ArrayImages(images), backbone, batch_size=4, progress=False)
    want = Gist()(_batch(images.astype(np.float64))).numpy()
    assert got.shape == (6, 512) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_gist_backbone_options_weights_and_size() -> None:
    from usdh.backbones import build_backbone

    small = build_backbone("gist", "none", input_size=24, options={"orientations_per_scale": [4]})
    assert small.feature_dim == 4 * 16 and small.default_input_size == 24
    assert small.learnable_unit_names == []  # nothing to fine-tune
    assert "orientations per scale [4]" in small.spec.layer
    with pytest.raises(ValueError, match="no weights"):
        build_backbone("gist", "imagenet")
    with pytest.raises(ValueError, match="unknown GIST option"):
        build_backbone("gist", "none", options={"orientation": [8]})
    with pytest.raises(ValueError, match="needs weights"):
        build_backbone("efficientnet_lite0", "none")


def test_agrees_with_torchgist_an_independent_port() -> None:
    """torchgist (PyPI) ports LMgist image by image; at CIFAR's size both give the same vector
    up to single-precision rounding (it modifies its input, so it gets a copy)."""
    from torchgist.models.models import GIST

    rng = np.random.default_rng(11)
    images = _batch(rng.integers(0, 256, size=(4, 32, 32, 3)).astype(np.float32))
    theirs = GIST(image_size=(32, 32))(images.clone()).numpy()
    ours = Gist()(images).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)
