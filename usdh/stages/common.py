"""What the stage commands share: reading params sections, a run's context, its record."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from usdh import layout
from usdh.params import (
    EXPERIMENTS,
    SETTINGS_GROUP,
    ParamsError,
    base_method,
    dataset_params,
    features_params,
    section,
    setting_entry,
    setting_key,
)
from usdh.registry import get_method, methods

__all__ = [
    "RunContext",
    "contexts",
    "dataset_params",
    "fit_command",
    "fit_files",
    "grid",
    "method_outputs",
    "method_params",
    "run_context",
    "run_seed",
]


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
    setting: str | None = None,
) -> RunContext:
    """The run of ``method`` in the ``experiment`` section (``experiment``, ``calibration`` or
    ``classification``); ``group`` defaults to the section's (``params.EXPERIMENTS``); ``name``
    (an ablation variant) replaces the method in the run's paths, whose method must still be one
    of the section's; ``protocol`` is one of the
    section's ``protocols`` (default: its main ``protocol``, else its first). A section's
    ``variants`` (calibration's) are run names of their own: a method with other parameters.
    ``setting`` (``DATASET/PROTOCOL``, an entry of ``settings``) runs one of the experiment's
    methods on that entry's dataset, protocol and backbone, in the ``settings`` group."""
    if setting is not None:
        return _setting_context(params, method, bits, seed, setting)
    exp = section(params, experiment)
    overrides: dict[str, Any] = {}
    variants = exp.get("variants") or {}
    if name is None and method in variants and method in exp["methods"]:
        name, method = method, base_method(params, experiment, method)
        overrides = dict(variants[name].get("params") or {})
    elif method not in exp["methods"]:
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


def _setting_context(
    params: Mapping[str, Any], method: str, bits: int, seed: int, setting: str
) -> RunContext:
    """The run of one of the experiment's methods in a ``settings`` entry (no variants: the
    settings test the experiment's choices as they transfer)."""
    methods = section(params, "experiment", "methods")
    if method not in methods:
        raise ParamsError(
            f"method {method!r} is not in experiment.methods ({', '.join(methods)}), which the "
            "settings run"
        )
    entry = setting_entry(params, setting)
    run = layout.Run(SETTINGS_GROUP, entry["dataset"], entry["protocol"], method, bits, seed)
    record = {
        "dataset": entry["dataset"],
        "protocol": entry["protocol"],
        "backbone": entry["backbone"],
        "method": method,
        "bits": bits,
        "seed": seed,
        "setting": setting_key(entry),
    }
    return RunContext(run, method, entry["backbone"], record)


def grid(
    params: Mapping[str, Any],
    where: str,
    bits: int | None = None,
    seed: int | None = None,
    method: str | None = None,
) -> list[tuple[int, int]]:
    """The (bits, seed) runs of section ``where``: all of them, or the one asked for. A
    ``method`` whose result does not depend on the seed (``MethodSpec.seeded``) runs with the
    section's first seed only."""
    sec = section(params, where)
    seeds = [seed] if seed is not None else list(sec["seeds"])
    spec = methods().get(method) if method is not None else None  # unknown: run_context says so
    if seed is None and spec is not None and not spec.seeded:
        seeds = seeds[:1]
    return [(b, s) for b in ([bits] if bits is not None else sec["bits"]) for s in seeds]


def run_seed(params: Mapping[str, Any], where: str, method: str, seed: int) -> int:
    """The seed whose run of ``method`` stands for ``seed`` (itself, or the section's first seed
    for a method that does not depend on it): for stages that read every method at one seed."""
    return seed if get_method(method).seeded else int(section(params, where)["seeds"][0])


def contexts(
    params: Mapping[str, Any],
    method: str,
    bits: int | None = None,
    seed: int | None = None,
    *,
    protocol: str | None = None,
    experiment: str = "experiment",
    setting: str | None = None,
) -> list[RunContext]:
    """Every (bits, seed) run of ``method`` in the ``experiment`` section (or in a setting, with
    the experiment's lengths and seeds), or the one asked for."""
    base = base_method(params, experiment, method)
    return [
        run_context(params, method, b, s, experiment=experiment, protocol=protocol, setting=setting)
        for b, s in grid(params, experiment, bits, seed, method=base)
    ]


def method_outputs(ctx: RunContext, kinds: tuple[str, ...]) -> list[Path]:
    """The folders of ``kinds`` that hold every run of the context's method (or variant)."""
    r = ctx.run
    return [layout.method_dir(k, r.group, r.dataset, r.protocol, r.name) for k in kinds]


#: run group -> the command that fits (and encodes) its runs, and its extra option
_FIT_COMMANDS = {
    "retrieval": ("fit", ""),
    "ablations": ("ablate", ""),
    "classification": ("classify", ""),
    "finetune": ("finetune", ""),
    "calibration": ("fit", " --experiment calibration"),
    SETTINGS_GROUP: ("fit", ""),
}


def fit_command(run: layout.Run) -> str:
    """The command that makes the run's model and codes (what a missing or wrong one needs)."""
    command, extra = _FIT_COMMANDS[run.group]
    if run.group == SETTINGS_GROUP:
        extra += f" --setting {run.dataset}/{run.protocol}"
    elif command == "fit":
        extra += f" --protocol {run.protocol}"
    return f"python -m usdh {command} {run.name} {run.bits} {run.seed}{extra}"


def fit_files(run: layout.Run) -> list[Path]:
    """What fitting and encoding one run writes: its model folder and its codes folder."""
    return [run.model_dir, run.codes_dir]


def stage_outputs(
    kinds: tuple[str, ...],
    files: Callable[[layout.Run], list[Path]],
    context: Callable[..., RunContext] | None = None,
) -> Callable[..., list[Path]]:
    """The ``outputs`` of a stage that runs every (bits, seed) of one method or variant: the
    method's folders of ``kinds``, or ``files`` of the one run asked for. ``context`` builds a
    run (default: :func:`run_context` with the command's ``--protocol``/``--experiment``)."""

    def outputs(
        params: dict[str, Any],
        name: str,
        bits: int | None = None,
        seed: int | None = None,
        **where: str | None,
    ) -> list[Path]:
        def make(b: int, s: int) -> RunContext:
            if context is not None:
                return context(params, name, b, s)
            return run_context(params, name, b, s, **where)  # type: ignore[arg-type]

        if bits is None or seed is None:
            return method_outputs(make(0, 0), kinds)
        return files(make(bits, seed).run)

    return outputs
