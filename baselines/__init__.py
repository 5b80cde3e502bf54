"""Reimplemented hashing baselines, all with the face of :class:`usdh.hasher.BaseHasher`."""

from __future__ import annotations

from baselines.itq import ITQ
from baselines.lsh import LSH
from baselines.pcah import PCAH
from baselines.sh import SH

__all__ = ["ITQ", "LSH", "PCAH", "SH"]
