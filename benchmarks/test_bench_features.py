"""Feature-extraction throughput (images/s, preprocessing included) per backbone, size, dtype.

Setting: CIFAR-sized 32x32 RGB images (random pixels) upsampled to the input size, on the CPU, with
``extract_features``'s default batch size for that size unless stated. Each round extracts a couple
of batches, so the suite stays short; ``extra_info["images_per_s"]`` is forward passes per second
from the median round, the figure that sizes a features stage (CIFAR-10: 60,000 images plus 5,000 x
4 rotated views = 80,000 passes). VGG runs with random weights: the speed is the same as ImageNet's
and the weights need no download.
"""

from __future__ import annotations

import numpy as np
import pytest

from usdh.backbones import BACKBONES, Backbone, build_backbone
from usdh.features import DEEPBIT_ANGLES, ArrayImages, default_batch_size, extract_features

LITE_DEFAULT = BACKBONES["efficientnet_lite0"].default_input_size

_built: dict[str, Backbone] = {}


def backbone(name: str) -> Backbone:
    """One build per backbone per session (VGG's random init takes seconds)."""
    if name not in _built:
        _built[name] = build_backbone(
            name, "imagenet" if name == "efficientnet_lite0" else "random"
        )
    return _built[name]


@pytest.fixture(scope="module")
def images() -> ArrayImages:
    rng = np.random.default_rng(0)
    return ArrayImages(rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8))


def _measure(benchmark, images, name, size, dtype, batch_size, n_images, angles=None) -> None:
    model = backbone(name)
    idx = np.arange(n_images)
    kwargs = dict(batch_size=batch_size, device="cpu", dtype=dtype, progress=False, angles=angles)
    extract_features(images, model, size, indices=idx[:batch_size], **kwargs)  # warm-up
    out = benchmark.pedantic(
        extract_features,
        args=(images, model, size),
        kwargs=dict(indices=idx, **kwargs),
        rounds=3,
        iterations=1,
    )
    views = 1 if angles is None else len(angles)
    assert out.shape[0] == n_images and out.shape[-1] == model.feature_dim
    stats = benchmark.stats.stats if benchmark.stats else None
    benchmark.extra_info.update(
        {"backbone": name, "input_size": size, "dtype": dtype, "batch_size": batch_size}
    )
    if stats is not None and stats.median > 0:
        benchmark.extra_info["images_per_s"] = round(n_images * views / stats.median, 1)


@pytest.mark.benchmark(group="features-efficientnet_lite0")
@pytest.mark.parametrize("size", sorted({LITE_DEFAULT, 224}))
def test_lite0(benchmark, images, size):
    bs = default_batch_size("cpu", size)
    _measure(benchmark, images, "efficientnet_lite0", size, "float32", bs, 2 * bs)


@pytest.mark.benchmark(group="features-efficientnet_lite0")
def test_lite0_rotated_views(benchmark, images):
    bs = default_batch_size("cpu", LITE_DEFAULT)
    n = bs // len(DEEPBIT_ANGLES) * 2  # two batches of views
    _measure(
        benchmark, images, "efficientnet_lite0", LITE_DEFAULT, "float32", bs, n, DEEPBIT_ANGLES
    )


@pytest.mark.benchmark(group="features-efficientnet_lite0")
def test_lite0_bfloat16(benchmark, images):
    bs = default_batch_size("cpu", LITE_DEFAULT)
    _measure(benchmark, images, "efficientnet_lite0", LITE_DEFAULT, "bfloat16", bs, 2 * bs)


@pytest.mark.benchmark(group="features-vgg-224")
@pytest.mark.parametrize("name", ["vgg19", "vgg16"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_vgg(benchmark, images, name, dtype):
    _measure(benchmark, images, name, 224, dtype, 4, 4)


# -- GIST: our batched port against torchgist's image-by-image one (both LMgist, 512-d) -----------
@pytest.mark.benchmark(group="features-gist")
@pytest.mark.parametrize("batch_size", [16, 64])
def test_gist(benchmark, images, batch_size):
    """The calibration's features: CIFAR's native 32 px, grey, LMgist's 4 x 8 filters, 4 x 4 cells
    (the calibration section runs batches of 64)."""
    _built.setdefault("gist", build_backbone("gist", "none", input_size=32))
    _measure(benchmark, images, "gist", 32, "float32", batch_size, 64)


@pytest.mark.benchmark(group="features-gist")
def test_gist_torchgist(benchmark, images):
    """torchgist 1.0.0 on the same 64 images as float tensors (it loops over images inside)."""
    import torch
    from torchgist.models.models import GIST

    model = GIST(image_size=(32, 32))
    x = torch.from_numpy(images.array[:64]).permute(0, 3, 1, 2).float()
    out = benchmark.pedantic(lambda: model(x.clone()), rounds=3, iterations=1)
    assert out.shape == (64, 512)
    stats = benchmark.stats.stats if benchmark.stats else None
    benchmark.extra_info.update({"backbone": "torchgist", "input_size": 32})
    if stats is not None and stats.median > 0:
        benchmark.extra_info["images_per_s"] = round(64 / stats.median, 1)
