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

OpenVINO runs only with ``USDH_BENCH_OPENVINO=1`` (best alone: ``pytest --benchmark -k
features-engine``): a pytest process that had run it died of SIGSEGV in a later, unrelated test
(tests/test_engines.py says more), so the full benchmark run leaves it out.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from usdh.backbones import BACKBONES, Backbone, build_backbone
from usdh.engines import ENGINES, compile_engine, engine_available, engine_version
from usdh.features import default_batch_size, prepare_image

SIZE = BACKBONES["efficientnet_lite0"].default_input_size
BATCH = default_batch_size("cpu", SIZE)
N_BATCHES = 2


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
@pytest.mark.parametrize(
    "engine",
    [
        pytest.param(
            e, marks=pytest.mark.skipif(not engine_available(e), reason=f"{e} not installed")
        )
        for e in ENGINES
        if e != "openvino" or os.environ.get("USDH_BENCH_OPENVINO") == "1"
    ],
)
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
