"""Each stage's wall time and machine, kept apart from its outputs.

A stage's outputs hold only what its inputs determine, so that a rerun that computes the same
numbers writes the same bytes and DVC leaves everything downstream alone. How long a stage took
and on what machine still matter (``reports/timings.md`` is written from them), so every stage
run by DVC writes them here instead: ``metrics/timings/<stage>.json``, one file per DVC stage
(``$DVC_STAGE``), committed with the results and read by the report stage only.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from usdh.io import save_json
from usdh.provenance import git_revision, machine

__all__ = ["TIMINGS_DIR", "read_timings", "stage_timer", "timing_file"]

TIMINGS_DIR = Path("metrics") / "timings"
#: stages that write no record: the report reads the records, so its own would change its input
UNTIMED = ("report",)


def timing_file(stage: str, root: Path = Path()) -> Path:
    """Where DVC stage ``stage`` (``fit@itq-deepbit``) records its time."""
    if not stage or "/" in stage or stage.startswith("."):
        raise ValueError(f"not a DVC stage name: {stage!r}")
    return root / TIMINGS_DIR / f"{stage}.json"


@contextlib.contextmanager
def stage_timer(stage: str | None = None) -> Iterator[dict[str, Any]]:
    """Time the body and, when it ran as DVC stage ``stage`` (default: ``$DVC_STAGE``, which DVC
    sets for every stage command), record it with the machine; the body may add entries (the
    features stage adds its speed). Nothing is written when the body fails or outside DVC."""
    stage = stage or os.environ.get("DVC_STAGE")
    extra: dict[str, Any] = {}
    started = datetime.now(UTC)
    start = time.perf_counter()
    yield extra
    wall = time.perf_counter() - start
    if not stage or stage.split("@")[0] in UNTIMED:
        return
    # the stage's own working copy (DVC runs every command in the folder of dvc.yaml): under
    # `dvc exp run --queue` the experiment's copy, not the workspace ($DVC_ROOT) it came from
    root = Path()
    record = {
        "stage": stage,
        "started": started.isoformat(timespec="seconds"),
        "wall_s": round(wall, 3),
        "machine": machine(),
        "git_revision": git_revision(root),
        **extra,
    }
    path = timing_file(stage, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_json(path, record)


def read_timings(root: Path = Path()) -> list[dict[str, Any]]:
    """Every stage's record, in the order the stages started."""
    import json

    folder = root / TIMINGS_DIR
    records = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(
                f"{path} is not a readable timing record ({exc}); rerun its stage "
                f"(dvc repro -f {path.stem}) or delete the file"
            ) from exc
        if not isinstance(record, dict) or "wall_s" not in record:
            raise ValueError(f"{path} is not a timing record; rerun its stage or delete the file")
        records.append(record)
    return sorted(records, key=lambda r: (r.get("started", ""), r.get("stage", "")))
