"""params.yaml: loading and validation, so a bad knob fails the first stage with a clear message."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

__all__ = ["ParamsError", "load_params", "section"]


class ParamsError(ValueError):
    """params.yaml is missing, malformed, or names something that does not exist."""


def load_params(path: str | os.PathLike[str] = "params.yaml") -> dict[str, Any]:
    """Read params.yaml as a dict (it must be a mapping at top level)."""
    p = Path(path)
    if not p.exists():
        raise ParamsError(
            f"{p} not found; run the command from the project root or pass --params PATH"
        )
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ParamsError(f"{p} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ParamsError(f"{p} must hold a mapping of sections, got {type(data).__name__}")
    return data


def section(params: dict[str, Any], *keys: str) -> Any:
    """``params[k1][k2]...``, with an error naming the missing key path."""
    node: Any = params
    walked: list[str] = []
    for key in keys:
        walked.append(key)
        if not isinstance(node, dict) or key not in node:
            raise ParamsError(f"params.yaml has no '{'.'.join(walked)}' entry")
        node = node[key]
    return node
