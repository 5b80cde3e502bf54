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
        if isinstance(self.views, bool) or not isinstance(self.views, int) or self.views < 2:
            raise ValueError(
                f"augmentation views must be an integer >= 2 (training draws two distinct views "
                f"of an image), got {self.views!r}"
            )
        for name in ("flip", "jitter_p", "grayscale", "blur_p"):
            p = getattr(self, name)
            if not (isinstance(p, int | float) and 0.0 <= p <= 1.0):
                raise ValueError(f"augmentation {name} must be a probability in [0, 1], got {p!r}")
        lo, hi = self.crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}")
        if not 0.0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(f"crop_ratio must satisfy 0 < low <= high, got {self.crop_ratio}")
        if any(j < 0 for j in self.jitter) or self.jitter[3] > 0.5:
            raise ValueError(f"jitter must be >= 0 with hue <= 0.5, got {self.jitter}")
        if not 0.0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise ValueError(f"blur_sigma must satisfy 0 < low <= high, got {self.blur_sigma}")

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
