"""The frozen backbone's inference engines side by side (``usdh.engines``): EfficientNet-Lite0 at
its default 160 px, the same normalised batches through eager PyTorch and every converted engine
that is installed.

Setting: CIFAR-sized 32x32 RGB images (random pixels) resized to 160 px as ``extract_features``
does (``prepare_image``) and normalised once, outside the timing; each round runs two batches of
``default_batch_size`` (16) through one engine, so ``extra_info["images_per_s"]`` (from the median
round) is the model's forward pass alone: the preprocessing is the same for every engine and
``test_bench_features.py`` times it end to end. The conversion (or the cache hit) happens before
the timing, into a fresh cache folder, and is recorded as ``build_s``; ``max_rel_diff`` is the
largest difference to eager's features over the largest feature (float32 round-off: ~1e-6).

``test_stage_path`` times what the features and bank stages run, end to end through
``extract_features`` (resize, normalisation, for the bank the seeded augmentations of params.yaml's
recipe, the engine's forward pass), every engine on the same images in the same run, so the
speed-up is paired: the goal of the regeneration-cost issue is 2x eager on both. Images are
CIFAR-sized random pixels held in memory (the stages also decode JPEGs, about 3,400 images/s here).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from usdh.augment import Augmentation
from usdh.backbones import BACKBONES, Backbone, build_backbone
from usdh.engines import ENGINES, compile_engine, engine_available, engine_version
from usdh.features import ArrayImages, default_batch_size, extract_features, prepare_image
from usdh.params import load_params

SIZE = BACKBONES["efficientnet_lite0"].default_input_size
BATCH = default_batch_size("cpu", SIZE)
N_BATCHES = 2


#: every engine, skipped where its package is missing
INSTALLED = [
    pytest.param(e, marks=pytest.mark.skipif(not engine_available(e), reason=f"{e} not installed"))
    for e in ENGINES
]


@pytest.fixture(scope="module")
def lite0() -> Backbone:
    model = build_backbone("efficientnet_lite0", "imagenet", input_size=SIZE)
    return model.to(memory_format=torch.channels_last).eval()  # as extract_features runs it


@pytest.fixture(scope="module")
def batches(lite0: Backbone) -> list[torch.Tensor]:
    """Normalised channels-last batches, exactly what extract_features feeds the engine."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (N_BATCHES * BATCH, 32, 32, 3), dtype=np.uint8)
    from PIL import Image

    views = np.stack([prepare_image(Image.fromarray(p), SIZE) for p in pixels])
    x = torch.from_numpy(views).permute(0, 3, 1, 2).float()
    mean = torch.tensor(lite0.mean).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(lite0.std).view(1, 3, 1, 1) * 255.0
    x = ((x - mean) / std).contiguous(memory_format=torch.channels_last)
    return [x[i : i + BATCH] for i in range(0, len(x), BATCH)]


@pytest.fixture(scope="module")
def eager_features(lite0: Backbone, batches: list[torch.Tensor]) -> np.ndarray:
    with torch.inference_mode():
        return torch.cat([lite0(x) for x in batches]).numpy()


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("engine-cache")


@pytest.mark.benchmark(group="features-engine")
@pytest.mark.parametrize("engine", INSTALLED)
def test_engine(benchmark, engine, lite0, batches, eager_features, cache):
    threads = torch.get_num_threads()
    start = time.perf_counter()
    forward = compile_engine(
        lite0, engine, input_size=SIZE, batch_size=BATCH, threads=threads, cache_dir=cache
    )
    build_s = time.perf_counter() - start

    def run() -> np.ndarray:
        with torch.inference_mode():
            return torch.cat([forward(x) for x in batches]).numpy()

    run()  # warm-up
    out = benchmark.pedantic(run, rounds=3, iterations=1)
    assert out.shape == eager_features.shape
    rel = float(np.abs(out - eager_features).max() / np.abs(eager_features).max())
    assert rel < 1e-4  # round-off only: a 16-bit path would show ~1e-2
    n = N_BATCHES * BATCH
    stats = benchmark.stats.stats if benchmark.stats else None
    benchmark.extra_info.update(
        {
            "engine": engine,
            "versions": engine_version(engine),
            "backbone": "efficientnet_lite0",
            "input_size": SIZE,
            "batch_size": BATCH,
            "threads": threads,
            "build_s": round(build_s, 2),
            "max_rel_diff": rel,
        }
    )
    if stats is not None and stats.median > 0:
        benchmark.extra_info["images_per_s"] = round(n / stats.median, 1)


#: images per round of the stage-path benchmark: features pass each once, the bank its 4 views
STAGE_IMAGES = {"features": 512, "bank": 128}


@pytest.mark.benchmark(group="features-engine-stage")
@pytest.mark.parametrize("path", list(STAGE_IMAGES))
@pytest.mark.parametrize("engine", INSTALLED)
def test_stage_path(benchmark, engine, path, lite0, cache, monkeypatch):
    monkeypatch.setenv("USDH_ENGINE_CACHE", str(cache))
    rng = np.random.default_rng(1)
    n = STAGE_IMAGES[path]
    images = ArrayImages(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8))
    kwargs: dict = dict(batch_size=BATCH, device="cpu", progress=False, engine=engine)
    if path == "bank":
        params = load_params(Path(__file__).parents[1] / "params.yaml")
        recipe = params["features"]["augmentation"]
        kwargs["augmentation"] = Augmentation.from_params(recipe, int(params["split_seed"]))
    extract_features(images, lite0, SIZE, indices=np.arange(BATCH), **kwargs)  # build, warm up
    out = benchmark.pedantic(
        extract_features,
        args=(images, lite0, SIZE),
        kwargs=dict(indices=np.arange(n), **kwargs),
        rounds=3,
        iterations=1,
    )
    passes = int(np.prod(out.shape[:-1]))
    assert passes == n * (kwargs["augmentation"].views if path == "bank" else 1)
    benchmark.extra_info.update(
        {"engine": engine, "path": path, "passes": passes, "versions": engine_version(engine)}
    )
    stats = benchmark.stats.stats if benchmark.stats else None
    if stats is not None and stats.median > 0:
        benchmark.extra_info["images_per_s"] = round(passes / stats.median, 1)
