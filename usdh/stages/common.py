"""What the stage commands share: reading params sections, a run's context, its record."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from usdh import layout
from usdh.params import EXPERIMENTS, ParamsError, features_params, section

__all__ = [
    "RunContext",
    "contexts",
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
    #: merged into ``methods.<method>`` for this run (a calibration variant's parameters)
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def split_dir(self) -> Path:
        return layout.split_dir(self.run.dataset, self.run.protocol)

    @property
    def features_dir(self) -> Path:
        return layout.features_dir(self.run.dataset, self.backbone)

    @property
    def bank_dir(self) -> Path:
        return layout.bank_dir(self.run.dataset, self.backbone)

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
    group: str | None = None,
    name: str | None = None,
    protocol: str | None = None,
) -> RunContext:
    """The run of ``method`` in the ``experiment`` section (``experiment``, ``calibration`` or
    ``classification``); ``group`` defaults to the section's (``params.EXPERIMENTS``); ``name``
    (an ablation variant) replaces the method in the run's paths; ``protocol`` is one of the
    section's ``protocols`` (default: its main ``protocol``, else its first). A section's
    ``variants`` (calibration's) are run names of their own: a method with other parameters."""
    exp = section(params, experiment)
    overrides: dict[str, Any] = {}
    variants = exp.get("variants") or {}
    if name is None and method in variants and method in exp["methods"]:
        name, method = method, variants[method]["method"]
        overrides = dict(variants[name].get("params") or {})
    elif name is None and method not in exp["methods"]:
        raise ParamsError(
            f"method {method!r} is not in {experiment}.methods ({', '.join(exp['methods'])})"
        )
    dataset = exp["dataset"]
    allowed = exp.get("protocols") or [exp["protocol"]]
    if protocol is None:
        protocol = exp.get("protocol") or allowed[0]
    if protocol not in allowed:
        raise ParamsError(
            f"protocol {protocol!r} is not in {experiment}.protocols ({', '.join(allowed)})"
        )
    backbone = features_params(params, experiment)["backbone"]
    group = group or EXPERIMENTS.get(experiment, experiment)
    run = layout.Run(group, dataset, protocol, name or method, bits, seed)
    record = {
        "dataset": dataset,
        "protocol": protocol,
        "backbone": backbone,
        "method": method,
        "bits": bits,
        "seed": seed,
    }
    if overrides:
        record.update(variant=name, overrides=overrides)
    return RunContext(run, method, backbone, record, overrides)


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


def contexts(
    params: Mapping[str, Any],
    method: str,
    bits: int | None = None,
    seed: int | None = None,
    *,
    protocol: str | None = None,
    experiment: str = "experiment",
) -> list[RunContext]:
    """Every (bits, seed) run of ``method`` in the ``experiment`` section, or the one asked for."""
    return [
        run_context(params, method, b, s, experiment=experiment, protocol=protocol)
        for b, s in grid(params, experiment, bits, seed)
    ]


def method_outputs(ctx: RunContext, kinds: tuple[str, ...]) -> list[Path]:
    """The folders of ``kinds`` that hold every run of the context's method (or variant)."""
    r = ctx.run
    return [layout.method_dir(k, r.group, r.dataset, r.protocol, r.name) for k in kinds]
