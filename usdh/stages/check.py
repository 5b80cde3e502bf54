"""``python -m usdh check``: the whole of params.yaml, checked once upstream of every stage.

Every other stage depends on this stage's record, so ``dvc repro`` stops on a bad value before
any stage works. The record holds only what the check decided (the file is valid, and which
listed methods train on augmented views, which the bank stage needs), so it stays byte-identical
while that holds: a change to the checking code, or to a method's code, reruns this stage alone,
and DVC sees an unchanged record and leaves the data stages below it up to date.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from usdh import layout
from usdh.io import save_json
from usdh.paramcheck import check_all as check_params
from usdh.paramcheck import feature_folders, two_view_methods
from usdh.params import CHECK_FORMAT

__all__ = ["check_params", "outputs", "record", "run"]


def outputs(params: dict[str, Any]) -> list[Path]:
    return [layout.checked_record()]


def record(params: dict[str, Any]) -> dict[str, Any]:
    """What the check decided (params.yaml already passed ``check_params``)."""
    return {
        "format": CHECK_FORMAT,
        "params": "valid",
        "two_view_methods": {
            f"{d}/{b}": two_view_methods(params, d, b) for d, b in feature_folders(params)
        },
    }


def run(params: dict[str, Any]) -> None:
    """Write the record (the check itself ran before, as every stage's ``check_params``)."""
    save_json(layout.checked_record(), record(params))
