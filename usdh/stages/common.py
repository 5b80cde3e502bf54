"""What the stage commands share: reading params sections, a run's context, its record."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from usdh import layout
from usdh.params import ParamsError, section

__all__ = [
    "RunContext",
    "dataset_params",
    "grid",
    "method_outputs",
    "method_params",
    "run_context",
]


def dataset_params(params: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The ``datasets.<name>`` section, or an error naming the configured datasets."""
    datasets = section(params, "datasets")
    if name not in datasets:
        raise ParamsError(
            f"dataset {name!r} is not configured in params.yaml (configured: "
            f"{', '.join(sorted(datasets))}); add a 'datasets.{name}' entry"
        )
    return datasets[name]


def method_params(params: Mapping[str, Any], method: str) -> dict[str, Any]:
    """The method's params.yaml section (``methods.<method>``; empty when absent)."""
    return dict((params.get("methods") or {}).get(method) or {})


@dataclass
class RunContext:
    """One run of an experiment section: where its inputs are and what its record says."""

    run: layout.Run
    method: str
    backbone: str
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def split_dir(self) -> Path:
        return layout.split_dir(self.run.dataset, self.run.protocol)

    @property
    def features_dir(self) -> Path:
        return layout.features_dir(self.run.dataset, self.backbone)

    @property
    def prepared_dir(self) -> Path:
        return layout.prepared_dir(self.run.dataset)


def run_context(
    params: Mapping[str, Any],
    method: str,
    bits: int,
    seed: int,
    *,
    experiment: str = "experiment",
    group: str = "retrieval",
    name: str | None = None,
    protocol: str | None = None,
) -> RunContext:
    """The run of ``method`` in the ``experiment`` section (``experiment`` or ``classification``);
    ``name`` (an ablation variant) replaces the method in the run's paths; ``protocol`` is one of
    the section's ``protocols`` (default: its main ``protocol``)."""
    exp = section(params, experiment)
    if name is None and method not in exp["methods"]:
        raise ParamsError(
            f"method {method!r} is not in {experiment}.methods ({', '.join(exp['methods'])})"
        )
    dataset = exp["dataset"]
    protocol = exp["protocol"] if protocol is None else protocol
    allowed = exp.get("protocols", [exp["protocol"]])
    if protocol not in allowed:
        raise ParamsError(
            f"protocol {protocol!r} is not in {experiment}.protocols ({', '.join(allowed)})"
        )
    backbone = section(params, "features", "backbone")
    run = layout.Run(group, dataset, protocol, name or method, bits, seed)
    record = {
        "dataset": dataset,
        "protocol": protocol,
        "backbone": backbone,
        "method": method,
        "bits": bits,
        "seed": seed,
    }
    return RunContext(run, method, backbone, record)


def grid(
    params: Mapping[str, Any], where: str, bits: int | None = None, seed: int | None = None
) -> list[tuple[int, int]]:
    """The (bits, seed) runs of section ``where``: all of them, or the one asked for."""
    sec = section(params, where)
    return [
        (b, s)
        for b in ([bits] if bits is not None else sec["bits"])
        for s in ([seed] if seed is not None else sec["seeds"])
    ]


def method_outputs(ctx: RunContext, kinds: tuple[str, ...]) -> list[Path]:
    """The folders of ``kinds`` that hold every run of the context's method (or variant)."""
    r = ctx.run
    return [layout.method_dir(k, r.group, r.dataset, r.protocol, r.name) for k in kinds]
