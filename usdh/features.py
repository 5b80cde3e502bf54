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
import json
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
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
from usdh.io import save_json, save_npy, staged_dir, unreadable
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
STORAGE_DTYPES: tuple[str, ...] = ("float32", "float16")
ROTATION_MODES: tuple[str, ...] = ("crop", "fill")
INTERPOLATION = "bilinear (PIL; antialiased when shrinking)"
RESIZE = "whole image to input_size x input_size (aspect ratio not kept, nothing cropped)"
MIN_INPUT_SIZE = 32  # VGG halves the resolution five times

FEATURES_FILE = "features.npy"
ROTATIONS_FILE = "rotations.npy"
ROTATION_INDICES_FILE = "rotation_indices.npy"
AUGMENTATIONS_FILE = "augmentations.npy"
AUGMENTATION_INDICES_FILE = "augmentation_indices.npy"
PROVENANCE_FILE = "provenance.json"
_OUR_FILES = frozenset(
    {
        FEATURES_FILE,
        ROTATIONS_FILE,
        ROTATION_INDICES_FILE,
        AUGMENTATIONS_FILE,
        AUGMENTATION_INDICES_FILE,
        PROVENANCE_FILE,
    }
)


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


def _check_indices(indices: ArrayLike | None, n: int) -> NDArray[np.int64]:
    if indices is None:
        return np.arange(n, dtype=np.int64)
    idx = np.asarray(indices)
    if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
        raise ValueError(f"indices must be a 1-D array of integers, got {idx.dtype} {idx.shape}")
    idx = idx.astype(np.int64, copy=False)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise ValueError(
            f"indices must lie in 0..{n - 1} (the images' range), got {idx.min()}..{idx.max()}"
        )
    return idx


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
    ``feature_provenance``). See the module docstring for the preprocessing, precision and
    determinism choices.
    """
    if not isinstance(images, ImageSource):
        raise TypeError("images must have __len__ and image(i) -> PIL.Image (see ImageSource)")
    torch_dtype = _check_dtype(dtype)
    size = backbone.default_input_size if input_size is None else input_size
    size = check_positive_int("input_size", size, MIN_INPUT_SIZE)
    num_workers = check_positive_int("num_workers", num_workers, 0)
    angle_list = check_angles(angles)
    if rotation_mode not in ROTATION_MODES:
        raise ValueError(f"rotation_mode must be one of {ROTATION_MODES}, got {rotation_mode!r}")
    idx = _check_indices(indices, len(images))
    dev = resolve_device(device)
    if batch_size is None:
        batch_size = default_batch_size(dev, size)
    batch_size = check_positive_int("batch_size", batch_size)

    if augmentation is not None and angle_list is not None:
        raise ValueError("give angles (rotated views) or augmentation (augmented views), not both")
    views = angle_list if angle_list is not None else (0.0,)
    n_views, dim = len(views), backbone.feature_dim
    view_ids: list[int] = []
    if augmentation is not None:
        view_ids = list(
            range(augmentation.views) if augmentation_views is None else augmentation_views
        )
        if not view_ids or min(view_ids) < 0:
            raise ValueError(f"augmentation_views must be view numbers >= 0, got {view_ids}")
        n_views = len(view_ids)
    per_batch = max(1, batch_size // n_views)
    fill = mean_colour(backbone.mean)
    dataset = _Views(images, idx, size, views, rotation_mode, fill, augmentation, view_ids)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=per_batch,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_stack,
        pin_memory=dev.type == "cuda",
    )
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
    out = np.empty((len(idx), n_views, dim), dtype=np.float32)

    determinism = torch_determinism(threads) if deterministic else contextlib.nullcontext()
    start = time.perf_counter()
    with (
        determinism,
        torch.inference_mode(),
        autocast,
        tqdm(
            total=len(idx),
            unit="img",
            desc=f"{backbone.name} {size}px" + (f" x{n_views} views" if n_views > 1 else ""),
            disable=not progress,
        ) as bar,
    ):
        run_threads = torch.get_num_threads()
        row = 0
        for batch in loader:
            b = batch.shape[0]
            x = batch.to(dev, non_blocking=True).reshape(b * n_views, size, size, 3)
            x = x.permute(0, 3, 1, 2).float()  # a channels-last view of the NHWC bytes
            x = ((x - mean) / std).contiguous(memory_format=memory_format)
            y = model(x)
            out[row : row + b] = y.float().reshape(b, n_views, dim).cpu().numpy()
            row += b
            bar.update(b)
    wall = time.perf_counter() - start

    if info is not None:
        info.update(
            {
                "backbone": backbone.name,
                "weights": backbone.weights,
                "layer": backbone.spec.layer,
                "feature_dim": dim,
                "input_size": size,
                "interpolation": INTERPOLATION,
                "resize": RESIZE,
                "normalization": {"mean": list(backbone.mean), "std": list(backbone.std)},
                "dtype": dtype,
                "angles": list(angle_list) if angle_list is not None else None,
                "rotation_mode": rotation_mode if angle_list is not None else None,
                "augmentation": augmentation.record() if augmentation is not None else None,
                "device": str(dev),
                "batch_size": batch_size,
                "num_workers": num_workers,
                "torch_threads": run_threads,
                "deterministic": deterministic,
                "n_images": len(idx),
                "n_forward": len(idx) * n_views,
                "wall_time_s": round(wall, 3),
                "images_per_s": round(len(idx) * n_views / wall, 2) if wall > 0 else None,
            }
        )
    return out if angle_list is not None or augmentation is not None else out[:, 0]


# -- provenance ------------------------------------------------------------------------------------
VERSIONED_EXTRA = ("pillow", "efficientnet-lite-pytorch")


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
    names the dataset and ``source`` where its images came from (a path or URL). Library versions
    and the machine are added; ``extra`` keys are stored as given.
    """
    record: dict[str, Any] = {"dataset": dataset, "source": source, "seed": seed}
    record.update(run)
    record["angles"] = None
    record["rotations"] = None
    total = float(run.get("wall_time_s") or 0.0)
    if rotations_run is not None:
        for key in ("backbone", "weights", "input_size", "dtype"):
            if rotations_run.get(key) != run.get(key):
                raise ValueError(
                    f"features and rotations were extracted with different {key}: "
                    f"{run.get(key)!r} vs {rotations_run.get(key)!r}"
                )
        record["angles"] = rotations_run.get("angles")
        record["rotations"] = {
            k: rotations_run.get(k)
            for k in (
                "angles",
                "rotation_mode",
                "n_images",
                "n_forward",
                "batch_size",
                "wall_time_s",
                "images_per_s",
            )
        }
        total += float(rotations_run.get("wall_time_s") or 0.0)
    record["total_wall_time_s"] = round(total, 3)
    record["versions"] = package_versions(VERSIONED_EXTRA)
    record["environment"] = environment(device=run.get("device"))
    record.update(extra)
    return record


# -- storage ---------------------------------------------------------------------------------------
@dataclass
class FeatureSet:
    """What ``load_features`` returns."""

    features: NDArray[np.floating]
    rotations: NDArray[np.floating] | None
    rotation_indices: NDArray[np.int64] | None
    provenance: dict[str, Any]


def _as_storage(name: str, array: ArrayLike, storage: str, ndim: int) -> NDArray[np.floating]:
    arr = np.asarray(array)
    if arr.ndim != ndim or arr.dtype.kind != "f":
        raise ValueError(f"{name} must be a {ndim}-D float array, got {arr.dtype} {arr.shape}")
    with np.errstate(over="ignore"):  # an overflow becomes inf, reported just below
        out = arr.astype(storage, copy=False)
    if not np.isfinite(out).all():
        hint = " (float16 overflows above 65504: store float32)" if storage == "float16" else ""
        raise ValueError(f"{name} holds NaN or infinite values{hint}")
    return np.ascontiguousarray(out)


def _stored_views(
    name: str,
    views: ArrayLike | None,
    indices: ArrayLike | None,
    shape: tuple[int, ...],
    dtype: str,
) -> tuple[NDArray[np.floating], NDArray[np.int64]] | None:
    """Extra views ``(m, n_views, D)`` (``name``: rotations, augmentations) of the rows
    ``indices`` of features of ``shape`` ``(n, D)``, checked and in their storage dtype."""
    index_name = f"{name.rstrip('s')}_indices"  # rotation_indices, augmentation_indices
    if views is None:
        if indices is not None:
            raise ValueError(f"{index_name} given without {name}")
        return None
    arr = _as_storage(name, views, dtype, 3)
    if arr.shape[2] != shape[1]:
        raise ValueError(f"{name} have {arr.shape[2]} feature columns, features {shape[1]}")
    if indices is None:
        raise ValueError(f"{index_name} (the rows of features that {name} are views of) is needed")
    idx = _check_indices(indices, shape[0])
    if idx.shape[0] != arr.shape[0]:
        raise ValueError(f"{idx.shape[0]} {index_name} for {arr.shape[0]} images' {name}")
    return arr, idx


def save_features(
    out_dir: str | os.PathLike[str],
    features: ArrayLike,
    rotations: ArrayLike | None = None,
    *,
    provenance: Mapping[str, Any],
    rotation_indices: ArrayLike | None = None,
    dtype: str = "float32",
) -> Path:
    """Write ``features.npy``, ``rotations.npy`` (+ ``rotation_indices.npy``), ``provenance.json``.

    ``features`` is ``(n, D)``; ``rotations`` ``(m, n_angles, D)`` for the images
    ``rotation_indices`` (rows of ``features``; required with ``rotations``). Stored as float32 by
    default, which keeps the features bit-exact as extracted (so reruns compare byte for byte, and
    DVC sees no change when nothing changed); ``dtype="float16"`` halves the disk (VGG's 4096-d
    CIFAR-10 features: 983 MB -> 492 MB) at ~3 significant digits, ample for hashing.

    The directory is written as a whole: files go to a hidden sibling first, which replaces
    ``out_dir`` only when every file is written, so a failure leaves the old directory (or none).
    ``out_dir`` must not hold files of its own: it is replaced entirely.
    """
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"dtype must be one of {STORAGE_DTYPES}, got {dtype!r}")
    feats = _as_storage("features", features, dtype, 2)
    rots = _stored_views("rotations", rotations, rotation_indices, feats.shape, dtype)
    arrays = {FEATURES_FILE: feats}
    if rots is not None:
        arrays.update({ROTATIONS_FILE: rots[0], ROTATION_INDICES_FILE: rots[1]})
    _write_views(Path(out_dir), arrays, provenance, dtype)
    return Path(out_dir)


def save_bank(
    out_dir: str | os.PathLike[str],
    views: ArrayLike | None,
    indices: ArrayLike | None,
    *,
    shape: tuple[int, int],
    provenance: Mapping[str, Any],
    dtype: str = "float32",
) -> Path:
    """Write the bank of augmented views: ``augmentations.npy`` ``(m, n_views, D)`` of the images
    ``indices`` (rows of the features, of ``shape`` ``(n, D)``) and ``provenance.json``;
    ``views=None`` writes the provenance alone (no listed method needs a bank). Atomic, as
    :func:`save_features`."""
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"dtype must be one of {STORAGE_DTYPES}, got {dtype!r}")
    bank = _stored_views("augmentations", views, indices, shape, dtype)
    arrays = {}
    if bank is not None:
        arrays = {AUGMENTATIONS_FILE: bank[0], AUGMENTATION_INDICES_FILE: bank[1]}
    _write_views(Path(out_dir), arrays, provenance, dtype)
    return Path(out_dir)


def _write_views(
    out: Path, arrays: Mapping[str, NDArray[Any]], provenance: Mapping[str, Any], dtype: str
) -> None:
    """``arrays`` (file name -> array) and the provenance, which records their shapes, written
    as one directory that replaces ``out`` only once complete."""
    record = dict(provenance)
    record["files"] = {
        name: {"shape": list(a.shape), "dtype": "int64" if a.dtype.kind == "i" else dtype}
        for name, a in arrays.items()
    }
    record["storage_dtype"] = dtype
    text = json.dumps(record, indent=2, sort_keys=True, default=str)  # fail before writing anything
    with staged_dir(out, owned=lambda name: name in _OUR_FILES) as stage:
        for name, a in arrays.items():
            save_npy(stage / name, a)
        save_json(stage / PROVENANCE_FILE, json.loads(text))


def _reader(folder: Path, recorded: Mapping[str, Any], fix: str):  # type: ignore[no-untyped-def]
    """``read(name, mmap)``: one array of ``folder``, checked against its recorded shape."""

    def read(name: str, mmap: str | None) -> np.ndarray:
        try:
            arr = np.load(folder / name, mmap_mode=mmap, allow_pickle=False)  # type: ignore[arg-type]
        except (OSError, ValueError, EOFError) as exc:
            raise unreadable(folder / name, exc, fix) from exc
        want = recorded.get(name)
        if isinstance(want, dict) and "shape" in want and list(arr.shape) != list(want["shape"]):
            raise ValueError(
                f"{folder / name} holds {list(arr.shape)}, its provenance records "
                f"{list(want['shape'])}: the files of {folder} do not belong together; {fix}"
            )
        if mmap is None and arr.dtype == np.float16:
            arr = arr.astype(np.float32)
        return arr

    return read


def _provenance(folder: Path, fix: str) -> dict[str, Any]:
    prov_path = folder / PROVENANCE_FILE
    try:
        return json.loads(prov_path.read_text()) if prov_path.is_file() else {}
    except (OSError, ValueError) as exc:
        raise unreadable(prov_path, exc, fix) from exc


def load_features(out_dir: str | os.PathLike[str], *, mmap_mode: str | None = None) -> FeatureSet:
    """Read what ``save_features`` wrote. Features come back as float32 unless memory-mapped."""
    folder = Path(out_dir)
    path = folder / FEATURES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; run the features stage first")
    fix = f"rerun the features stage that writes {folder} (dvc repro -f -s features@...)"
    provenance = _provenance(folder, fix)
    read = _reader(folder, provenance.get("files") or {}, fix)
    rotations = indices = None
    if (folder / ROTATIONS_FILE).is_file():
        rotations = read(ROTATIONS_FILE, mmap_mode)
        indices = read(ROTATION_INDICES_FILE, None)
    return FeatureSet(read(FEATURES_FILE, mmap_mode), rotations, indices, provenance)


@dataclass
class Bank:
    """What ``load_bank`` returns: the augmented views ``(m, n_views, D)`` of the rows
    ``indices`` (both None when the bank stage built none) and the provenance."""

    views: NDArray[np.floating] | None
    indices: NDArray[np.int64] | None
    provenance: dict[str, Any]


def load_bank(out_dir: str | os.PathLike[str]) -> Bank:
    """Read what ``save_bank`` wrote (float32)."""
    folder = Path(out_dir)
    fix = f"rerun the bank stage that writes {folder} (dvc repro -f -s bank@...)"
    if not (folder / PROVENANCE_FILE).is_file():
        raise FileNotFoundError(f"{folder / PROVENANCE_FILE} not found; run the bank stage first")
    provenance = _provenance(folder, fix)
    if not (folder / AUGMENTATIONS_FILE).is_file():
        return Bank(None, None, provenance)
    read = _reader(folder, provenance.get("files") or {}, fix)
    return Bank(read(AUGMENTATIONS_FILE, None), read(AUGMENTATION_INDICES_FILE, None), provenance)
