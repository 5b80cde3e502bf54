"""Reimplemented hashing baselines, all with the face of :class:`usdh.hasher.BaseHasher`."""

from __future__ import annotations

from baselines.itq import ITQ
from baselines.lsh import LSH
from baselines.pcah import PCAH
from baselines.sh import SH
from usdh.hasher import BaseHasher

__all__ = ["ITQ", "LSH", "PCAH", "SH", "SHALLOW_METHODS"]

#: method name (as in params.yaml and reports) -> class
SHALLOW_METHODS: dict[str, type[BaseHasher]] = {"lsh": LSH, "pcah": PCAH, "itq": ITQ, "sh": SH}
