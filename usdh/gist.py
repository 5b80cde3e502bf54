"""GIST descriptors (Oliva and Torralba, IJCV 2001) as the LMgist code computes them, batched.

The classic unsupervised-hashing tables on CIFAR-10 hash 512-d GIST: LMgist with 4 scales x 8
orientations of Gabor filters, each filter's response magnitude averaged over a 4 x 4 grid. This is
our vectorised port of that algorithm (Torralba's ``LMgist.m``, ``prefilt.m``, ``createGabor.m``,
``gistGabor.m``; described in docs/features.md), step by step:

1. **Grey.** The mean of the three colour channels (LMgist: ``mean(img, 3)``).
2. **Range.** Each image is shifted and scaled so that its values span 0..255 (a constant image
   becomes all zeros instead of LMgist's division by zero).
3. **Prefilter** (``fc`` = 4 cycles per image): ``log(1 + x)``, symmetric padding of 5 pixels (then
   to an even square), whitening by subtracting a Gaussian low-pass, and local contrast
   normalisation by ``0.2 + sqrt(|low-pass of the square|)``; cropped back.
4. **Gabor bank** in the frequency domain, on the image padded symmetrically by ``boundary`` pixels:
   filter ``(s, j)`` peaks at ``0.3 / 1.85**s`` cycles per pixel and at angle ``-pi * j / n_s``,
   bandwidths as in ``createGabor.m``. The magnitude of each filtered image, cropped back, is
   averaged over a ``blocks x blocks`` grid whose edges are ``fix(linspace(0, size, blocks + 1))``.
5. **Order.** Filters scale by scale, orientations within a scale; within a filter the blocks in
   MATLAB's column-major order (the row block varies fastest), so a vector lines up with LMgist's.

The whole batch goes through each FFT at once (torch.fft), in float64 by default: LMgist itself
works in single precision, and float64 keeps our values independent of FFT algorithm details
(``tests/test_gist.py`` checks this port against a plain per-image, per-filter loop).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

__all__ = ["Gist", "gabor_bank", "gist_dim", "symmetric_index"]


def gist_dim(orientations_per_scale: Sequence[int], blocks: int) -> int:
    """Length of the descriptor: one value per filter and grid cell."""
    return int(sum(orientations_per_scale)) * blocks * blocks


def symmetric_index(n: int, before: int, after: int) -> NDArray[np.int64]:
    """Indices that pad ``n`` samples symmetrically (MATLAB ``padarray(..., 'symmetric')``: the
    edge sample repeats, and padding wider than the signal keeps mirroring)."""
    i = np.arange(-before, n + after) % (2 * n)
    return np.where(i >= n, 2 * n - 1 - i, i).astype(np.int64)


def _centred_grid(n_rows: int, n_cols: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """MATLAB's ``[fx, fy] = meshgrid(-nc/2:nc/2-1, -nr/2:nr/2-1)``, fftshift-ed."""
    fx, fy = np.meshgrid(
        np.arange(n_cols, dtype=np.float64) - n_cols / 2,
        np.arange(n_rows, dtype=np.float64) - n_rows / 2,
    )
    return np.fft.fftshift(fx), np.fft.fftshift(fy)


def gabor_bank(orientations_per_scale: Sequence[int], n_rows: int, n_cols: int) -> NDArray:
    """The transfer functions ``(n_filters, n_rows, n_cols)`` of ``createGabor.m`` (zero frequency
    at index 0, as ``fft2`` orders it)."""
    fx, fy = _centred_grid(n_rows, n_cols)
    fr = np.sqrt(fx**2 + fy**2)
    t = np.arctan2(fy, fx)
    filters = []
    for s, n_or in enumerate(orientations_per_scale):
        for j in range(n_or):
            bandwidth, peak = 0.35, 0.3 / 1.85**s
            angular = 16.0 * n_or**2 / 32.0**2
            tr = t + math.pi / n_or * j
            tr = tr + 2 * math.pi * (tr < -math.pi) - 2 * math.pi * (tr > math.pi)
            filters.append(
                np.exp(
                    -10.0 * bandwidth * (fr / n_cols / peak - 1.0) ** 2
                    - 2.0 * angular * math.pi * tr**2
                )
            )
    return np.stack(filters)


def _block_edges(size: int, blocks: int) -> list[int]:
    """``fix(linspace(0, size, blocks + 1))``: the grid cells' edges (``downN.m``)."""
    return [int(v) for v in np.fix(np.linspace(0, size, blocks + 1))]


class Gist(nn.Module):
    """Images ``(n, 3, H, W)`` with pixel values (any range) -> GIST ``(n, gist_dim)``.

    ``image_size`` is the side the images arrive at (LMgist resizes and crops to it first; here the
    features stage resizes). Parameter-free: the filters are buffers built from the arguments.
    """

    def __init__(
        self,
        image_size: int = 32,
        orientations_per_scale: Sequence[int] = (8, 8, 8, 8),
        blocks: int = 4,
        prefilter_fc: float = 4.0,
        boundary: int = 32,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        ors = [int(o) for o in orientations_per_scale]
        if not ors or any(o < 1 for o in ors):
            raise ValueError(
                f"orientations_per_scale must list positive counts, got {orientations_per_scale!r}"
            )
        for name, value, least in (("image_size", image_size, 8), ("blocks", blocks, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
        if blocks > image_size:
            raise ValueError(f"blocks ({blocks}) cannot exceed image_size ({image_size})")
        if isinstance(boundary, bool) or not isinstance(boundary, int) or boundary < 0:
            raise ValueError(f"boundary must be an integer >= 0, got {boundary!r}")
        if not (isinstance(prefilter_fc, int | float) and prefilter_fc > 0):
            raise ValueError(f"prefilter_fc must be a positive number, got {prefilter_fc!r}")
        self.image_size = image_size
        self.orientations_per_scale = tuple(ors)
        self.blocks = blocks
        self.prefilter_fc = float(prefilter_fc)
        self.boundary = boundary
        self.compute_dtype = dtype
        self.dim = gist_dim(ors, blocks)
        # prefilter: 5 px symmetric margin, then padded to an even square (prefilt.m)
        self._margin = 5
        side = image_size + 2 * self._margin
        side += side % 2
        self._pre_side = side
        s1 = self.prefilter_fc / math.sqrt(math.log(2.0))
        fx, fy = _centred_grid(side, side)
        lowpass = np.exp(-(fx**2 + fy**2) / s1**2)
        padded = image_size + 2 * boundary
        self.register_buffer("lowpass", torch.from_numpy(lowpass).to(dtype), persistent=False)
        bank = gabor_bank(ors, padded, padded)
        self.register_buffer("gabors", torch.from_numpy(bank).to(dtype), persistent=False)
        pre = symmetric_index(image_size, self._margin, side - image_size - self._margin)
        self.register_buffer("_pre_index", torch.from_numpy(pre), persistent=False)
        pad = symmetric_index(image_size, boundary, boundary)
        self.register_buffer("_pad_index", torch.from_numpy(pad), persistent=False)
        # averaging over the grid cells as two matrices: cells = rows^T @ magnitude @ cols
        edges = _block_edges(image_size, blocks)
        avg = np.zeros((image_size, blocks))
        for k in range(blocks):
            avg[edges[k] : edges[k + 1], k] = 1.0 / (edges[k + 1] - edges[k])
        self.register_buffer("cell_rows", torch.from_numpy(avg).to(dtype), persistent=False)
        self.register_buffer("cell_cols", torch.from_numpy(avg.copy()).to(dtype), persistent=False)

    def extra_repr(self) -> str:
        return (
            f"image_size={self.image_size}, orientations_per_scale={self.orientations_per_scale}, "
            f"blocks={self.blocks}, prefilter_fc={self.prefilter_fc}, boundary={self.boundary}, "
            f"dim={self.dim}"
        )

    def _pad(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return x[:, index][:, :, index]

    def prefilter(self, gray: torch.Tensor) -> torch.Tensor:
        """Whitening and local contrast normalisation of ``(n, s, s)`` images in 0..255."""
        m, s = self._margin, self.image_size
        x = self._pad(torch.log1p(gray), self._pre_index)
        whitened = x - torch.fft.ifft2(torch.fft.fft2(x) * self.lowpass).real
        local = torch.sqrt(torch.abs(torch.fft.ifft2(torch.fft.fft2(whitened**2) * self.lowpass)))
        out = whitened / (0.2 + local)
        return out[:, m : m + s, m : m + s]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"GIST takes images (n, 3, H, W), got shape {tuple(x.shape)}")
        n, _, h, w = x.shape
        if h != self.image_size or w != self.image_size:
            raise ValueError(
                f"GIST was built for {self.image_size} x {self.image_size} images, got {h} x {w}: "
                "set features.input_size to its image_size"
            )
        gray = x.to(self.compute_dtype).mean(dim=1)
        flat = gray.reshape(n, -1)
        low = flat.min(dim=1).values.view(n, 1, 1)
        span = (flat.max(dim=1).values.view(n, 1, 1) - low).clamp_min(0.0)
        gray = (gray - low) * torch.where(span > 0, 255.0 / span, torch.zeros_like(span))
        pre = self.prefilter(gray)
        spectrum = torch.fft.fft2(self._pad(pre, self._pad_index))
        b, s = self.boundary, self.image_size
        out = []
        for gabor in self.gabors:  # one filter at a time bounds memory at n x padded^2
            # crop before the magnitude: the padded margin is 8/9 of the pixels at CIFAR's size
            mag = torch.fft.ifft2(spectrum * gabor)[:, b : b + s, b : b + s].abs()
            cells = torch.einsum("nyx,yr,xc->ncr", mag, self.cell_rows, self.cell_cols)
            out.append(cells.reshape(n, -1))  # (c, r) order: the row block varies fastest
        return torch.cat(out, dim=1).to(x.dtype if x.is_floating_point() else torch.float32)
