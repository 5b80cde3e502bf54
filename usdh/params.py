"""params.yaml: loading and validation, so a bad knob fails the first stage with a clear message."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "EXPERIMENTS",
    "LOSS_TERMS",
    "ParamsError",
    "features_params",
    "load_params",
    "section",
    "validate_params",
]

#: the loss terms an ablation variant may override: the names of ``usdh.losses.TERMS``, kept here
#: so that checking params.yaml never imports torch (tests/test_params.py checks the two agree)
LOSS_TERMS = (
    "semantic",
    "quantization",
    "entropy",
    "rotation",
    "penalty",
    "contrastive",
    "bottleneck",
)


#: the params sections whose runs ``features``, ``fit``, ``encode`` and ``evaluate`` serve
#: (``--experiment``), and the run group each writes: the retrieval table, and the calibration
#: of the classic baselines on hand-crafted features against published tables
EXPERIMENTS = {"experiment": "retrieval", "calibration": "calibration"}


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


def features_params(params: dict[str, Any], experiment: str = "experiment") -> dict[str, Any]:
    """The ``features`` section as ``experiment``'s runs see it: the section's own ``features``
    entries (calibration's GIST) laid over the shared ``features:`` section."""
    base = dict(section(params, "features"))
    if experiment != "experiment":
        base.update(section(params, experiment).get("features") or {})
    return base


def _fail(msg: str) -> None:
    raise ParamsError(f"params.yaml: {msg}")


def _int_list(value: Any, where: str, *, multiple_of: int = 1, minimum: int = 0) -> list[int]:
    if not isinstance(value, list) or not value:
        _fail(f"'{where}' must be a non-empty list, got {value!r}")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum or v % multiple_of:
            need = f"multiples of {multiple_of}" if multiple_of > 1 else f"integers >= {minimum}"
            _fail(f"'{where}' must hold {need}, got {v!r}")
    if len(set(value)) != len(value):
        _fail(f"'{where}' lists a value twice: {value!r}")
    return value


def validate_params(params: dict[str, Any]) -> None:
    """Check the whole file before any stage works, so a bad knob fails the first stage.

    First its shape (``usdh.schema``: every key known, every value of its type), then the
    relations between sections: the experiment's dataset is configured and split into its
    protocols (the main one among them), its methods are known, bits are positive multiples of 8,
    seeds a non-empty list of non-negative integers, the ablation variants name known loss terms
    in their ``loss`` overrides, fine-tuned methods are deep ones of the experiment, the
    classification and calibration datasets are configured. (Whether a dataset's files exist is
    checked by ``prepare``, with its own message.)
    """
    from usdh.layout import check_name
    from usdh.registry import methods
    from usdh.schema import check_schema

    problems = check_schema(params)
    if len(problems) == 1:
        _fail(problems[0])
    if problems:
        _fail(f"{len(problems)} problems:\n  " + "\n  ".join(problems))
    known = methods()
    datasets = section(params, "datasets")
    if not isinstance(datasets, dict) or not datasets:
        _fail("'datasets' must configure at least one dataset")
    exp = section(params, "experiment")
    if exp.get("dataset") not in datasets:
        _fail(
            f"experiment.dataset {exp.get('dataset')!r} is not configured under 'datasets' "
            f"({', '.join(datasets)})"
        )
    methods = exp.get("methods")
    if not isinstance(methods, list) or not methods:
        _fail("'experiment.methods' must be a non-empty list")
    for m in methods:
        if m not in known:
            _fail(f"unknown method {m!r} in experiment.methods; known: {', '.join(known)}")
    _int_list(exp.get("bits"), "experiment.bits", multiple_of=8, minimum=8)
    _int_list(exp.get("seeds"), "experiment.seeds")
    split_protocols = datasets[exp["dataset"]].get("protocols") or []
    protocols = exp.get("protocols", [exp.get("protocol")])
    if not isinstance(protocols, list) or not protocols or len(set(protocols)) != len(protocols):
        _fail(f"'experiment.protocols' must be a list of distinct protocols, got {protocols!r}")
    if exp.get("protocol") not in protocols:
        _fail(
            f"experiment.protocol {exp.get('protocol')!r} (the main protocol) must be one of "
            f"experiment.protocols ({', '.join(map(str, protocols))})"
        )
    for proto in protocols:
        if proto not in split_protocols:
            _fail(
                f"experiment protocol {proto!r} is not split for {exp['dataset']}: add it to "
                f"datasets.{exp['dataset']}.protocols ({', '.join(map(str, split_protocols))})"
            )
    abl = params.get("ablations")
    if abl is not None:
        if abl.get("method") not in methods:
            _fail(f"ablations.method {abl.get('method')!r} must be one of experiment.methods")
        variants = abl.get("variants")
        if not isinstance(variants, dict) or not variants:
            _fail("'ablations.variants' must map variant names to loss overrides")
        for name, override in variants.items():
            try:
                check_name("ablation variant", name)
            except ValueError as exc:
                _fail(str(exc))
            if not isinstance(override, dict):
                _fail(
                    f"ablation variant {name!r} must map method parameters to values (e.g. "
                    f"{{loss: {{rotation: {{weight: 0}}}}}}), got {override!r}"
                )
            loss = override.get("loss", {})
            if not isinstance(loss, dict):
                _fail(f"ablation variant {name!r}: 'loss' must map loss terms to options")
            for term in loss:
                if term not in LOSS_TERMS:
                    _fail(
                        f"ablation variant {name!r} names unknown loss term {term!r}; "
                        f"the terms are {', '.join(LOSS_TERMS)}"
                    )
        _int_list(abl.get("bits"), "ablations.bits", multiple_of=8, minimum=8)
        _int_list(abl.get("seeds"), "ablations.seeds")
    ft = params.get("finetune")
    if ft is not None:
        for m in ft.get("methods") or []:
            if m not in methods or not known[m].finetunable:
                _fail(
                    f"finetune.methods: {m!r} must be a method of experiment.methods that can be "
                    f"fine-tuned ({', '.join(n for n, s in known.items() if s.finetunable)})"
                )
        if ft.get("methods"):
            _int_list(ft.get("bits"), "finetune.bits", multiple_of=8, minimum=8)
            _int_list(ft.get("seeds"), "finetune.seeds")
        n = ft.get("n_trainable", 1)
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            _fail(f"finetune.n_trainable must be an integer >= 0, got {n!r}")
    cal = params.get("calibration")
    if cal is not None:
        _validate_calibration(params, cal, datasets, known)
    cls = params.get("classification")
    if cls is not None:
        if cls.get("dataset") not in datasets:
            _fail(
                f"classification.dataset {cls.get('dataset')!r} is not configured under "
                f"'datasets' ({', '.join(datasets)})"
            )
        for m in cls.get("methods") or []:
            if m not in known:
                _fail(f"unknown method {m!r} in classification.methods; known: {', '.join(known)}")
        _int_list(cls.get("bits"), "classification.bits", multiple_of=8, minimum=8)
        _int_list(cls.get("seeds"), "classification.seeds")
    study = params.get("bank_study")
    if study is not None:
        m = study["method"]
        if m not in known or "augmentations" not in known[m].views:
            two_view = [k for k, spec in known.items() if "augmentations" in spec.views]
            _fail(
                f"bank_study.method {m!r} must be a method that trains on augmented views "
                f"({', '.join(two_view) or 'none is registered'})"
            )
        _int_list(study["views"], "bank_study.views", minimum=2)
        _int_list([study["bits"]], "bank_study.bits", multiple_of=8, minimum=8)
        _int_list(study["seeds"], "bank_study.seeds")


def _validate_calibration(
    params: dict[str, Any], cal: Any, datasets: dict[str, Any], known: dict[str, Any]
) -> None:
    from usdh.layout import check_name

    """The calibration section: a configured dataset split into its protocols, known methods, its
    own features folder (a backbone other than the main one)."""
    if not isinstance(cal, dict):
        _fail(f"'calibration' must be a mapping, got {cal!r}")
    ds = cal.get("dataset")
    if ds not in datasets:
        _fail(
            f"calibration.dataset {ds!r} is not configured under 'datasets' ({', '.join(datasets)})"
        )
    protocols = cal.get("protocols")
    if not isinstance(protocols, list) or not protocols or len(set(protocols)) != len(protocols):
        _fail(f"'calibration.protocols' must be a list of distinct protocols, got {protocols!r}")
    split = datasets[ds].get("protocols") or []
    for proto in protocols:
        if proto not in split:
            _fail(
                f"calibration protocol {proto!r} is not split for {ds}: add it to "
                f"datasets.{ds}.protocols ({', '.join(map(str, split))})"
            )
    variants = cal.get("variants") or {}
    if not isinstance(variants, dict):
        _fail(f"'calibration.variants' must map names to {{method, params}}, got {variants!r}")
    for name, variant in variants.items():
        try:
            check_name("calibration variant", name)
        except ValueError as exc:
            _fail(str(exc))
        if name in known:
            _fail(f"calibration variant {name!r} has a method's name: choose another")
        if not isinstance(variant, dict) or variant.get("method") not in known:
            _fail(
                f"calibration variant {name!r} must name a known method ({', '.join(known)}) "
                f"and its params, e.g. {{method: lsh, params: {{center: false}}}}; got {variant!r}"
            )
        if not isinstance(variant.get("params", {}), dict):
            _fail(f"calibration variant {name!r}: 'params' must map parameters to values")
    methods = cal.get("methods")
    if not isinstance(methods, list) or not methods:
        _fail("'calibration.methods' must be a non-empty list")
    for m in methods:
        if m not in known and m not in variants:
            _fail(
                f"unknown method {m!r} in calibration.methods; known: {', '.join(known)}, "
                f"and the variants {', '.join(variants) or '(none)'}"
            )
    _int_list(cal.get("bits"), "calibration.bits", multiple_of=8, minimum=8)
    _int_list(cal.get("seeds"), "calibration.seeds")
    feats = cal.get("features") or {}
    if not isinstance(feats, dict):
        _fail(f"'calibration.features' must map features settings to values, got {feats!r}")
    main = section(params, "features").get("backbone")
    if feats.get("backbone", main) == main:
        _fail(
            f"calibration.features.backbone must differ from features.backbone ({main!r}): each "
            "backbone's features have a folder of their own"
        )
