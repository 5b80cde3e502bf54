"""``reports/timings.md``: what each stage of the last regeneration cost, from the stages' own
records (:mod:`usdh.timing`), with the machine and its speed beside every figure.

No timing is typed by hand: a stage that reruns rewrites its record, and the report stage rewrites
this page. The machine's speed is the features stage's probe (eager PyTorch on the dataset's first
512 images), the figure that makes timings from different machines comparable.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

__all__ = ["probe_speed", "render_timings", "stage_kind"]

#: how the page groups stages, by the template name before ``@``
KINDS = {
    "check": "check",
    "prepare": "data",
    "split": "data",
    "features": "features",
    "features-calibration": "features",
    "bank": "features",
    "bank-calibration": "features",
    "fit": "fits",
    "fit-calibration": "fits",
    "finetune": "fits",
    "evaluate": "evaluations",
    "evaluate-calibration": "evaluations",
    "ablate": "ablations",
    # the other settings (params.yaml `settings`): their own line, so their cost is seen
    "fit-settings": "settings",
    "evaluate-settings": "settings",
    "diagnose": "diagnosis and classification",
    "classify": "diagnosis and classification",
    "classify-features": "diagnosis and classification",
}


def stage_kind(stage: str) -> str:
    return KINDS.get(stage.split("@")[0], "other")


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f}"


def _machine_name(m: dict[str, Any]) -> str:
    isa = ", ".join(m.get("isa") or []) or "no AVX2"
    return (
        f"{m.get('cpu')} (vendor {m.get('vendor')}, family {m.get('family')} model "
        f"{m.get('model')}; {isa}), {m.get('cores')} cores"
    )


def probe_speed(records: Sequence[dict[str, Any]], dataset: str) -> float | None:
    """The machine's speed: the probe of ``features@<dataset>`` (images/s), if it ran."""
    for r in records:
        if r.get("stage") == f"features@{dataset}" and r.get("probe"):
            return r["probe"].get("images_per_s")
    return None


def render_timings(records: Sequence[dict[str, Any]], dataset: str) -> str:
    """The page: machines, the cold total, the minutes per kind of stage and per stage."""
    if not records:
        return "No stage has recorded its time yet (the records appear as `dvc repro` runs them).\n"
    machines: dict[str, list[str]] = defaultdict(list)
    for r in records:
        machines[_machine_name(r.get("machine") or {})].append(r["stage"])
    total = sum(float(r["wall_s"]) for r in records)
    speed = probe_speed(records, dataset)
    first = min(r.get("started", "") for r in records)
    last = max(r.get("started", "") for r in records)
    lines = [
        "Written by the report stage from each stage's own record (`metrics/timings/`, "
        "usdh/timing.py): the wall time of its command from the start of `python -m usdh` "
        "(imports and checks included; Python's own start-up and DVC's bookkeeping between "
        "stages not). The records are those of the last run of each stage, "
        f"started between {first} and {last}.",
        "",
    ]
    if len(machines) == 1:
        lines.append(f"Machine: {next(iter(machines))}.")
    else:
        lines.append("The records come from more than one machine:")
        lines += [f"- {name}: {len(stages)} stages" for name, stages in machines.items()]
    if speed:
        lines.append(
            f"Its speed: eager EfficientNet-Lite0 features of the first 512 {dataset} images "
            f"at {speed:.1f} images/s (the probe of `features@{dataset}`)."
        )
    lines += [
        "",
        f"Sum of every stage's time: **{_minutes(total)} min** over {len(records)} stages "
        "(a cold `dvc repro` of these stages, less DVC's own time).",
        "",
        "| stages | count | minutes | share |",
        "| --- | --- | --- | --- |",
    ]
    by_kind: dict[str, list[float]] = defaultdict(list)
    for r in records:
        by_kind[stage_kind(r["stage"])].append(float(r["wall_s"]))
    for kind, walls in sorted(by_kind.items(), key=lambda kv: -sum(kv[1])):
        lines.append(
            f"| {kind} | {len(walls)} | {_minutes(sum(walls))} | {sum(walls) / total:.0%} |"
        )
    lines += ["", "| stage | minutes | what it measured |", "| --- | --- | --- |"]
    for r in sorted(records, key=lambda r: -float(r["wall_s"])):
        lines.append(f"| `{r['stage']}` | {_minutes(float(r['wall_s']))} | {_detail(r)} |")
    return "\n".join(lines) + "\n"


def _detail(r: dict[str, Any]) -> str:
    parts = []
    for key in ("features", "rotations", "bank"):
        if r.get(key):
            part = r[key]
            parts.append(
                f"{key}: {part.get('n_forward')} passes at {part.get('images_per_s')} images/s"
            )
    if r.get("probe"):
        parts.append(f"probe: {r['probe'].get('images_per_s')} images/s")
    return "; ".join(parts)
