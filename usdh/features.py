"""Backbone features of a set of images (and of rotated views of them), and their storage.

The features stage turns images into the float matrices every hasher fits on, so its choices are
recorded and fixed here:

* **Resize.** Each image is resized to ``input_size x input_size`` with PIL's bilinear filter
  (antialiased when shrinking; plain bilinear when enlarging, e.g. CIFAR's 32 px upsampled to 96 or
  224). The whole image is kept: a non-square image is squashed, never cropped, so no object is cut.
* **Normalisation.** The backbone's own mean and std (ImageNet's for VGG, inception-style
  (x - 127) / 128 for EfficientNet-Lite), applied on the device.
* **Rotated views** (DeepBit's rotation-invariance term; ``DEEPBIT_ANGLES`` = -10, -5, +5, +10
  degrees, positive = counter-clockwise). Each view is rotated about the centre at the image's own
  resolution *before* resizing (bilinear). ``rotation_mode="crop"`` (the default) then keeps the
  largest centred rectangle of the original aspect ratio that holds no fill, and resizes that to
  ``input_size``: a view never shows artificial corners, at the price of a slight zoom (x1.16 at
  10 degrees on a square image). ``"fill"`` keeps the whole canvas and fills the corners with the
  backbone's mean colour, which is zero after normalisation.
* **Precision.** float32 by default; ``dtype="bfloat16"`` runs convolutions and matmuls under
  autocast, 1.6-1.8x faster end to end on a CPU with AVX-512 BF16, but the features move: relative
  L2 error per image ~1% for VGG-19 and ~6% for EfficientNet-Lite0 (cosine > 0.99), so the two are
  never mixed in one experiment. Features are returned as float32 either way. Memory is
  channels-last on the CPU (oneDNN's fast layout: 1.4-2x over NCHW at float32).
* **Determinism.** On the CPU the same images, backbone, batch size, thread count and library
  versions give bitwise identical features: extraction runs under ``usdh.device.torch_determinism``
  and PIL's resampling is exact integer arithmetic. A row can differ in the last bits when the batch
  it falls in changes size (oneDNN picks kernels by shape), so record ``batch_size`` and the thread
  count (``info`` and the provenance do).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from PIL import Image
from tqdm.auto import tqdm

from usdh.augment import Augmentation
from usdh.backbones import Backbone
from usdh.checks import check_angles, check_positive_int
from usdh.device import resolve_device, torch_determinism
from usdh.engines import check_engine, compile_engine, engine_version
from usdh.feature_store import (
    STORAGE_DTYPES,
    Bank,
    FeatureSet,
    check_indices,
    load_bank,
    load_features,
    save_bank,
    save_features,
)
from usdh.provenance import environment, package_versions

__all__ = [
    "DEEPBIT_ANGLES",
    "DTYPES",
    "ROTATION_MODES",
    "STORAGE_DTYPES",
    "ArrayImages",
    "Bank",
    "FeatureSet",
    "ImageSource",
    "default_batch_size",
    "extract_features",
    "feature_provenance",
    "load_bank",
    "load_features",
    "mean_colour",
    "prepare_image",
    "save_bank",
    "save_features",
]

DEEPBIT_ANGLES: tuple[float, ...] = (-10.0, -5.0, 5.0, 10.0)
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16}
ROTATION_MODES: tuple[str, ...] = ("crop", "fill")
INTERPOLATION = "bilinear (PIL; antialiased when shrinking)"
RESIZE = "whole image to input_size x input_size (aspect ratio not kept, nothing cropped)"
MIN_INPUT_SIZE = 32  # VGG halves the resolution five times


@runtime_checkable
class ImageSource(Protocol):
    """What extraction needs from a dataset: a length and the i-th image as an RGB PIL image."""

    def __len__(self) -> int: ...

    def image(self, i: int) -> Image.Image: ...


class ArrayImages:
    """An ``ImageSource`` over a uint8 array ``(n, H, W, 3)`` or ``(n, H, W)`` (e.g. CIFAR's)."""

    def __init__(self, array: ArrayLike) -> None:
        arr = np.asarray(array)
        if arr.dtype != np.uint8 or arr.ndim not in (3, 4) or (arr.ndim == 4 and arr.shape[3] != 3):
            raise ValueError(
                f"expected uint8 images of shape (n, H, W, 3) or (n, H, W), "
                f"got {arr.dtype} {arr.shape}"
            )
        self.array = arr

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def image(self, i: int) -> Image.Image:
        return Image.fromarray(self.array[i]).convert("RGB")


# -- one image -------------------------------------------------------------------------------------
def mean_colour(mean: Sequence[float]) -> tuple[int, int, int]:
    r, g, b = (round(255.0 * m) for m in mean)
    return (r, g, b)


def _inscribed_box(width: int, height: int, angle: float) -> tuple[float, float, float, float]:
    """Largest centred box of the image's aspect ratio inside the image rotated by ``angle``."""
    theta = math.radians(abs(angle) % 180.0)
    c, s = abs(math.cos(theta)), abs(math.sin(theta))
    k = min(width / (width * c + height * s), height / (width * s + height * c))
    # half a pixel of margin: bilinear taps at the very edge would reach the fill
    w, h = max(width * k - 1.0, 1.0), max(height * k - 1.0, 1.0)
    x0, y0 = (width - w) / 2.0, (height - h) / 2.0
    return (x0, y0, x0 + w, y0 + h)


def prepare_image(
    image: Image.Image,
    input_size: int,
    angle: float = 0.0,
    *,
    rotation_mode: str = "crop",
    fill: tuple[int, int, int] = (0, 0, 0),
) -> NDArray[np.uint8]:
    """One view as uint8 ``(input_size, input_size, 3)``: rotate (if ``angle``), then resize.

    See the module docstring for the interpolation and the crop / fill choice; ``fill`` is the
    colour of uncovered corners (extraction passes the backbone's mean colour).
    """
    if rotation_mode not in ROTATION_MODES:
        raise ValueError(f"rotation_mode must be one of {ROTATION_MODES}, got {rotation_mode!r}")
    img = image if image.mode == "RGB" else image.convert("RGB")
    box: tuple[float, float, float, float] | None = None
    if angle:
        img = img.rotate(angle, resample=Image.Resampling.BILINEAR, expand=False, fillcolor=fill)
        if rotation_mode == "crop":
            box = _inscribed_box(img.width, img.height, angle)
    size = (input_size, input_size)
    if box is None and img.size == size:
        return np.asarray(img, dtype=np.uint8)
    out = img.resize(size, Image.Resampling.BILINEAR, box=box)
    return np.asarray(out, dtype=np.uint8)


class _Views(torch.utils.data.Dataset):
    """Position -> uint8 tensor ``(n_views, s, s, 3)`` of the image at ``indices[position]``:
    rotated by each of ``angles``, or, with ``augmentation``, its seeded augmented views."""

    def __init__(
        self,
        images: ImageSource,
        indices: NDArray[np.int64],
        input_size: int,
        angles: tuple[float, ...],
        rotation_mode: str,
        fill: tuple[int, int, int],
        augmentation: Augmentation | None = None,
        view_ids: Sequence[int] = (),
    ) -> None:
        self.images = images
        self.indices = indices
        self.input_size = input_size
        self.angles = angles
        self.rotation_mode = rotation_mode
        self.fill = fill
        self.augmentation = augmentation
        self.view_ids = view_ids

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> torch.Tensor:
        index = int(self.indices[position])
        img = self.images.image(index)
        if self.augmentation is not None:
            aug = self.augmentation
            views = [aug.view(img, index, v, self.input_size) for v in self.view_ids]
        else:
            views = [
                prepare_image(
                    img, self.input_size, a, rotation_mode=self.rotation_mode, fill=self.fill
                )
                for a in self.angles
            ]
        return torch.from_numpy(np.stack(views))


def _stack(batch: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(batch)


# -- validation ------------------------------------------------------------------------------------
def _check_dtype(dtype: str) -> torch.dtype:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


# -- extraction ------------------------------------------------------------------------------------
def default_batch_size(device: str | torch.device, input_size: int) -> int:
    """Batch size for extraction: small on the CPU, where cache, not parallelism, limits speed.

    Measured on a 2-core AVX-512 CPU (EfficientNet-Lite0, float32): batches of 16 run 2-3x faster
    than 64 up to 128 px, and batches of 8 beat 16 above (the activations then stay in cache).
    On CUDA, 256.
    """
    dev = resolve_device(device)
    if dev.type == "cuda":
        return 256
    return 16 if input_size <= 128 else 8


def extract_features(
    images: ImageSource,
    backbone: Backbone,
    input_size: int | None = None,
    batch_size: int | None = None,
    device: str | torch.device = "auto",
    dtype: str = "float32",
    angles: Iterable[float] | None = None,
    num_workers: int = 0,
    progress: bool = True,
    *,
    indices: ArrayLike | None = None,
    rotation_mode: str = "crop",
    threads: int | None = None,
    deterministic: bool = True,
    info: dict[str, Any] | None = None,
    augmentation: Augmentation | None = None,
    augmentation_views: Sequence[int] | None = None,
    engine: str = "eager",
) -> NDArray[np.float32]:
    """Features of ``images`` (or of ``images[indices]``) as float32, in the order given.

    Returns ``(n, feature_dim)``, or with ``angles`` (e.g. ``DEEPBIT_ANGLES``)
    ``(n, len(angles), feature_dim)``: one row per rotated view; with ``augmentation`` (instead
    of ``angles``) ``(n, augmentation.views, feature_dim)``, the seeded augmented views of
    :mod:`usdh.augment` (``augmentation_views``: only those view numbers, e.g. the views a
    larger bank adds). ``input_size`` defaults to the
    backbone's ``default_input_size``. ``batch_size`` counts forward passes (views), so memory does
    not grow with the number of angles; it defaults to ``default_batch_size(device, input_size)``.
    The backbone is moved to the device (and to channels-last memory on the CPU). ``threads`` pins
    torch's CPU thread count for the run; ``info``, if given, is filled with what the run did (for
    ``feature_provenance``). ``engine`` chooses how the frozen network runs on the CPU
    (:mod:`usdh.engines`: eager PyTorch, or a converted model; CUDA always runs eager). See the
    module docstring for the preprocessing, precision and determinism choices.
    """
    if not isinstance(images, ImageSource):
        raise TypeError("images must have __len__ and image(i) -> PIL.Image (see ImageSource)")
    plan = _Plan.check(
        images, backbone, input_size, batch_size, device, dtype, angles, num_workers, indices,
        rotation_mode, augmentation, augmentation_views, engine,
    )  # fmt: skip
    start = time.perf_counter()
    out, run_threads = _extract(plan, images, backbone, threads, deterministic, progress)
    wall = time.perf_counter() - start
    if info is not None:
        info.update(plan.record(backbone, run_threads, deterministic))
        info["wall_time_s"] = round(wall, 3)
        info["images_per_s"] = round(len(plan.idx) * plan.n_views / wall, 2) if wall > 0 else None
    return out if plan.angles is not None or augmentation is not None else out[:, 0]


@dataclass
class _Plan:
    """An extraction's checked settings: what :func:`extract_features` runs and records."""

    size: int
    idx: NDArray[np.int64]
    dev: torch.device
    dtype: str
    engine: str
    batch_size: int
    num_workers: int
    angles: list[float] | None
    rotation_mode: str
    augmentation: Augmentation | None
    view_ids: list[int]

    @classmethod
    def check(
        cls,
        images: ImageSource,
        backbone: Backbone,
        input_size: int | None,
        batch_size: int | None,
        device: str | torch.device,
        dtype: str,
        angles: Iterable[float] | None,
        num_workers: int,
        indices: ArrayLike | None,
        rotation_mode: str,
        augmentation: Augmentation | None,
        augmentation_views: Sequence[int] | None,
        engine: str,
    ) -> _Plan:
        """Every argument checked before any image is read (a missing engine package too)."""
        torch_dtype = _check_dtype(dtype)
        size = backbone.default_input_size if input_size is None else input_size
        size = check_positive_int("input_size", size, MIN_INPUT_SIZE)
        angle_list = check_angles(angles)
        if rotation_mode not in ROTATION_MODES:
            raise ValueError(
                f"rotation_mode must be one of {ROTATION_MODES}, got {rotation_mode!r}"
            )
        dev = resolve_device(device)
        if dev.type != "cpu" or torch_dtype != torch.float32:
            engine = "eager"  # the converted engines are float32 CPU runtimes
        check_engine(engine)
        if augmentation is not None and angle_list is not None:
            raise ValueError(
                "give angles (rotated views) or augmentation (augmented views), not both"
            )
        view_ids: list[int] = []
        if augmentation is not None:
            view_ids = list(
                range(augmentation.views) if augmentation_views is None else augmentation_views
            )
            if not view_ids or min(view_ids) < 0:
                raise ValueError(f"augmentation_views must be view numbers >= 0, got {view_ids}")
        return cls(
            size=size,
            idx=check_indices(indices, len(images)),
            dev=dev,
            dtype=dtype,
            engine=engine,
            batch_size=check_positive_int(
                "batch_size", default_batch_size(dev, size) if batch_size is None else batch_size
            ),
            num_workers=check_positive_int("num_workers", num_workers, 0),
            angles=angle_list,
            rotation_mode=rotation_mode,
            augmentation=augmentation,
            view_ids=view_ids,
        )

    @property
    def views(self) -> Sequence[float]:
        return self.angles if self.angles is not None else (0.0,)

    @property
    def n_views(self) -> int:
        return len(self.view_ids) if self.augmentation is not None else len(self.views)

    @property
    def per_batch(self) -> int:
        """Images per batch: ``batch_size`` counts forward passes (views)."""
        return max(1, self.batch_size // self.n_views)

    def record(self, backbone: Backbone, run_threads: int, deterministic: bool) -> dict[str, Any]:
        """What the run did, for ``feature_provenance`` (times are added by the caller)."""
        return {
            "backbone": backbone.name,
            "weights": backbone.weights,
            "layer": backbone.spec.layer,
            "feature_dim": backbone.feature_dim,
            "input_size": self.size,
            "interpolation": INTERPOLATION,
            "resize": RESIZE,
            "normalization": {"mean": list(backbone.mean), "std": list(backbone.std)},
            "dtype": self.dtype,
            "engine": self.engine,
            "engine_versions": engine_version(self.engine),
            "angles": list(self.angles) if self.angles is not None else None,
            "rotation_mode": self.rotation_mode if self.angles is not None else None,
            "augmentation": self.augmentation.record() if self.augmentation is not None else None,
            "device": str(self.dev),
            "batch_size": self.batch_size,
            "num_workers": self.num_workers,
            "torch_threads": run_threads,
            "deterministic": deterministic,
            "n_images": len(self.idx),
            "n_forward": len(self.idx) * self.n_views,
        }


def _extract(
    plan: _Plan,
    images: ImageSource,
    backbone: Backbone,
    threads: int | None,
    deterministic: bool,
    progress: bool,
) -> tuple[NDArray[np.float32], int]:
    """Run the backbone over every view of the planned images; the features and the thread
    count torch ran with."""
    dev, size, n_views = plan.dev, plan.size, plan.n_views
    fill = mean_colour(backbone.mean)
    dataset = _Views(
        images, plan.idx, size, plan.views, plan.rotation_mode, fill, plan.augmentation,
        plan.view_ids,
    )  # fmt: skip
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=plan.per_batch,
        shuffle=False,
        num_workers=plan.num_workers,
        collate_fn=_stack,
        pin_memory=dev.type == "cuda",
    )
    torch_dtype = DTYPES[plan.dtype]
    # channels-last: oneDNN's fast layout on the CPU (1.4-2x at float32), tensor cores' on CUDA
    channels_last = dev.type == "cpu" or torch_dtype != torch.float32
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = backbone.to(dev, memory_format=memory_format).eval()
    mean = torch.tensor(backbone.mean, device=dev).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(backbone.std, device=dev).view(1, 3, 1, 1) * 255.0
    autocast = (
        torch.autocast(dev.type, dtype=torch_dtype)
        if torch_dtype != torch.float32
        else contextlib.nullcontext()
    )
    out = np.empty((len(plan.idx), n_views, backbone.feature_dim), dtype=np.float32)
    forward = compile_engine(
        model, plan.engine, input_size=size, batch_size=plan.per_batch * n_views, threads=threads
    )
    determinism = torch_determinism(threads) if deterministic else contextlib.nullcontext()
    desc = f"{backbone.name} {size}px" + (f" x{n_views} views" if n_views > 1 else "")
    with (
        determinism,
        torch.inference_mode(),
        autocast,
        tqdm(total=len(plan.idx), unit="img", desc=desc, disable=not progress) as bar,
    ):
        run_threads = torch.get_num_threads()
        row = 0
        for batch in loader:
            b = batch.shape[0]
            x = batch.to(dev, non_blocking=True).reshape(b * n_views, size, size, 3)
            x = x.permute(0, 3, 1, 2).float()  # a channels-last view of the NHWC bytes
            x = ((x - mean) / std).contiguous(memory_format=memory_format)
            y = forward(x)
            out[row : row + b] = y.float().reshape(b, n_views, -1).cpu().numpy()
            row += b
            bar.update(b)
    return out, run_threads


# -- provenance ------------------------------------------------------------------------------------
VERSIONED_EXTRA = ("pillow", "efficientnet-lite-pytorch")
#: what an extraction's ``info`` says about its speed: the stage's timing record keeps it, never
#: the provenance (a rerun that computes the same features must write the same bytes)
RUN_TIMES = ("wall_time_s", "images_per_s")


def feature_provenance(
    run: Mapping[str, Any],
    *,
    dataset: str,
    source: str,
    seed: int | None = None,
    rotations_run: Mapping[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The provenance record of a features stage, from the ``info`` of its extraction run(s).

    ``run`` describes the plain features (or the bank's views), ``rotations_run`` the rotated
    views (if any); ``dataset``
    names the dataset and ``source`` where its images came from. Library versions and the machine
    are added; ``extra`` keys are stored as given. Times are left out (``RUN_TIMES``): they go to
    the stage's timing record (:mod:`usdh.timing`).
    """
    record: dict[str, Any] = {"dataset": dataset, "source": source, "seed": seed}
    record.update({k: v for k, v in run.items() if k not in RUN_TIMES})
    record["angles"] = None
    record["rotations"] = None
    if rotations_run is not None:
        for key in ("backbone", "weights", "input_size", "dtype", "engine"):
            if rotations_run.get(key) != run.get(key):
                raise ValueError(
                    f"features and rotations were extracted with different {key}: "
                    f"{run.get(key)!r} vs {rotations_run.get(key)!r}"
                )
        record["angles"] = rotations_run.get("angles")
        record["rotations"] = {
            k: rotations_run.get(k)
            for k in ("angles", "rotation_mode", "n_images", "n_forward", "batch_size")
        }
    record["versions"] = package_versions(VERSIONED_EXTRA)
    record["environment"] = environment(device=run.get("device"))
    record.update(extra)
    return record
