"""Argument checks that several rooms share, each raising a ValueError that names the problem."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["check_angles", "check_device_name", "check_positive_int"]


def check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an int, if it is an integer (not a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def check_device_name(spec: Any, name: str = "device") -> str:
    """``spec`` lower-cased, if it is a device string (``auto``, ``cpu``, ``cuda``, ``cuda:N``).

    Only the spelling: whether CUDA is there is asked when the device is used
    (:func:`usdh.device.resolve_device`), so a params file written for a GPU machine checks on
    any machine."""
    if not isinstance(spec, str) or not _DEVICE_RE.match(spec.strip().lower()):
        raise ValueError(
            f"unknown {name} {spec!r}: use 'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'"
        )
    return spec.strip().lower()


def check_angles(angles: Iterable[float] | None, n: int | None = None) -> tuple[float, ...] | None:
    """Rotation angles in degrees as a tuple of finite floats (None stays None); with ``n``, also
    one angle per stored rotated view."""
    if angles is None:
        return None
    if isinstance(angles, str):
        raise TypeError(f"angles must be a sequence of degrees, got {angles!r}")
    out = tuple(float(a) for a in angles)
    if not out or not all(math.isfinite(a) for a in out):
        raise ValueError(f"angles must be a non-empty sequence of finite degrees, got {angles!r}")
    if n is not None and len(out) != n:
        raise ValueError(f"{len(out)} angles given for rotated views of {n} angles each")
    return out
