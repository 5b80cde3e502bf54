"""Augmented views of an image, seeded per image and view: the bank contrastive methods train on.

CIBHash (Qiu et al., IJCAI 2021) trains on two random augmentations of each image per step. Run
on a CPU, the backbone cannot see fresh views every step, so the features stage computes a *bank*
once: ``views`` augmentations of each image of a seeded subset, and training draws two distinct
views of an image per step (:class:`usdh.train.FeatureBatches`).

The recipe is the release's for CIFAR-10 (github.com/qiuzx2/CIBHash, ``utils/data.py``, commit
e976ace), applied in its order to the image at its own resolution:

1. ``RandomResizedCrop``: area share in ``crop_scale`` (0.5-1), aspect ratio in ``crop_ratio``
   (3/4-4/3, log-uniform), ten tries, else a centre crop; the crop is resized to ``input_size``
   (bilinear, as every view of the features stage);
2. horizontal flip with probability ``flip`` (0.5);
3. colour jitter with probability ``jitter_p`` (0.7): brightness, contrast, saturation factors
   uniform in ``[1 - j, 1 + j]`` (j = 0.4) and a hue shift uniform in ``[-0.1, 0.1]``, in a random
   order (torchvision's ``ColorJitter``);
4. grey with probability ``grayscale`` (0.2);
5. a 3 x 3 Gaussian blur with probability ``blur_p`` (0.5), sigma uniform in ``blur_sigma``
   (0.1-2.0), borders reflected (the release's OpenCV ``GaussianBlur`` with ``BORDER_REFLECT_101``).

Every draw of view ``v`` of image ``i`` comes from ``numpy.random.default_rng([seed, STREAM, i,
v])``, so a view does not depend on which other images or views are computed: a bank of 8 views
holds the 4 of a bank of 4, bit for bit.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torchvision.transforms.functional as TF
from numpy.typing import NDArray
from PIL import Image

__all__ = ["STREAM", "Augmentation"]

#: the stream of the bank's draws, apart from the split's (1-3) and the bank subset's (4)
STREAM = 5


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


#: what each tuple field allows: (count, the words of the error, the check of its numbers)
_RANGES: dict[str, tuple[int, str, Callable[[tuple[float, ...]], bool]]] = {
    "crop_scale": (
        2,
        "2 numbers (low, high): area shares with 0 < low <= high <= 1",
        lambda v: 0.0 < v[0] <= v[1] <= 1.0,
    ),
    "crop_ratio": (
        2,
        "2 numbers (low, high): finite aspect ratios with 0 < low <= high, e.g. (0.75, 1.333)",
        lambda v: 0.0 < v[0] <= v[1] < math.inf,
    ),
    "jitter": (
        4,
        "4 numbers (brightness, contrast, saturation, hue), each finite and >= 0, hue <= 0.5",
        lambda v: all(0.0 <= j < math.inf for j in v) and v[3] <= 0.5,
    ),
    "blur_sigma": (
        2,
        "2 numbers (low, high): finite Gaussian sigmas with 0 < low <= high",
        lambda v: 0.0 < v[0] <= v[1] < math.inf,
    ),
}
_PROBABILITIES = ("flip", "jitter_p", "grayscale", "blur_p")
_VIEWS = "an integer >= 2 (training draws two distinct views of an image)"


def _bad(name: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"augmentation {name} must be {allowed}, got {value!r}")


def _real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _plain(value: Any) -> Any:
    """A plain Python int or float for any real (numpy's too: the recipe is recorded as JSON)."""
    return int(value) if isinstance(value, numbers.Integral) else float(value)


def _integer(name: str, value: Any, minimum: int, allowed: str) -> int:
    if not (isinstance(value, numbers.Integral) and _real(value)) or value < minimum:
        raise _bad(name, value, allowed)
    return int(value)


def _numbers(name: str, value: Any) -> tuple[float, ...]:
    """``value`` (a tuple, a list or an array) as a tuple of Python numbers, checked against
    ``_RANGES[name]``; NaN fails every range."""
    n, allowed, ok = _RANGES[name]
    if isinstance(value, np.ndarray) and value.ndim != 1:
        raise _bad(name, value, allowed)
    if isinstance(value, str | bytes) or not isinstance(value, Sequence | np.ndarray):
        raise _bad(name, value, allowed)
    items = list(value)
    if len(items) != n or not all(_real(v) for v in items):
        raise _bad(name, value, allowed)
    out = tuple(_plain(v) for v in items)
    if not ok(out):
        raise _bad(name, value, allowed)
    return out


@dataclass(frozen=True)
class Augmentation:
    """The release's augmentation recipe (module doc), ``views`` per image, seeded by ``seed``."""

    views: int = 4
    crop_scale: tuple[float, float] = (0.5, 1.0)
    crop_ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    flip: float = 0.5
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    jitter_p: float = 0.7
    grayscale: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    seed: int = 0

    def __post_init__(self) -> None:
        """Check every field here, so that a bad recipe fails when built, naming the field, the
        value and what is allowed, rather than as a traceback from inside the first view."""
        set_ = object.__setattr__  # frozen: numpy scalars and lists become plain numbers, tuples
        set_(self, "views", _integer("views", self.views, 2, _VIEWS))
        set_(self, "seed", _integer("seed", self.seed, 0, "an integer >= 0 (numpy's rng seed)"))
        for name in _PROBABILITIES:
            p = getattr(self, name)
            if not (_real(p) and 0.0 <= p <= 1.0):  # NaN fails the comparison
                raise _bad(name, p, "a probability in [0, 1]")
            set_(self, name, _plain(p))
        for name in _RANGES:
            set_(self, name, _numbers(name, getattr(self, name)))

    @classmethod
    def from_params(cls, options: dict[str, Any] | None, seed: int) -> Augmentation:
        """From params.yaml's ``features.augmentation`` (lists become tuples)."""
        opts = {k: tuple(v) if isinstance(v, list) else v for k, v in (options or {}).items()}
        return cls(**opts, seed=seed)

    def record(self) -> dict[str, Any]:
        """The recipe as recorded in the features' provenance."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    # -- one view ----------------------------------------------------------------------------
    def _crop_box(self, rng: np.random.Generator, width: int, height: int) -> tuple[int, ...]:
        """torchvision's ``RandomResizedCrop.get_params``, drawn from ``rng``: (left, top,
        right, bottom)."""
        area = width * height
        log_ratio = (math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1]))
        for _ in range(10):
            target = area * _uniform(rng, self.crop_scale)
            aspect = math.exp(_uniform(rng, log_ratio))
            w = round(math.sqrt(target * aspect))
            h = round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                top = int(rng.integers(0, height - h + 1))
                left = int(rng.integers(0, width - w + 1))
                return (left, top, left + w, top + h)
        ratio = width / height  # fallback: the centre crop of the nearest allowed ratio
        if ratio < self.crop_ratio[0]:
            w, h = width, round(width / self.crop_ratio[0])
        elif ratio > self.crop_ratio[1]:
            h, w = height, round(height * self.crop_ratio[1])
        else:
            w, h = width, height
        top, left = (height - h) // 2, (width - w) // 2
        return (left, top, left + w, top + h)

    def _jitter(self, rng: np.random.Generator, img: Image.Image) -> Image.Image:
        b, c, s, hue = self.jitter
        order = rng.permutation(4)
        factors = [
            _uniform(rng, (max(0.0, 1 - b), 1 + b)) if b else None,
            _uniform(rng, (max(0.0, 1 - c), 1 + c)) if c else None,
            _uniform(rng, (max(0.0, 1 - s), 1 + s)) if s else None,
            _uniform(rng, (-hue, hue)) if hue else None,
        ]
        ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
        for k in order.tolist():
            if factors[k] is not None:
                img = ops[k](img, factors[k])
        return img

    @staticmethod
    def blur(pixels: NDArray[np.uint8], sigma: float) -> NDArray[np.uint8]:
        """A 3 x 3 Gaussian blur of ``(H, W, 3)`` uint8 pixels, borders reflected (no edge
        repeat), rounded back to uint8."""
        g = np.exp(-(np.arange(-1, 2, dtype=np.float64) ** 2) / (2.0 * sigma * sigma))
        g /= g.sum()
        x = np.pad(pixels.astype(np.float64), ((1, 1), (1, 1), (0, 0)), mode="reflect")
        x = g[0] * x[:-2] + g[1] * x[1:-1] + g[2] * x[2:]
        x = g[0] * x[:, :-2] + g[1] * x[:, 1:-1] + g[2] * x[:, 2:]
        return np.clip(np.rint(x), 0, 255).astype(np.uint8)

    def view(self, image: Image.Image, index: int, v: int, input_size: int) -> NDArray[np.uint8]:
        """View ``v`` of image ``index`` as uint8 ``(input_size, input_size, 3)``."""
        rng = np.random.default_rng([self.seed, STREAM, int(index), int(v)])
        img = image if image.mode == "RGB" else image.convert("RGB")
        box = self._crop_box(rng, img.width, img.height)
        img = img.resize((input_size, input_size), Image.Resampling.BILINEAR, box=box)
        if rng.random() < self.flip:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if rng.random() < self.jitter_p:
            img = self._jitter(rng, img)
        if rng.random() < self.grayscale:
            img = img.convert("L").convert("RGB")
        pixels = np.asarray(img, dtype=np.uint8)
        if rng.random() < self.blur_p:
            pixels = self.blur(pixels, _uniform(rng, self.blur_sigma))
        return pixels
