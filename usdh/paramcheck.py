"""The whole of params.yaml checked before any work: its shape, each method's parameters against
the method's class, the loss terms' options, and the relations between sections.

The ``check`` stage (``python -m usdh check``) runs this upstream of every other stage and writes
a record that stays byte-identical while the file is valid, so that a change to the checking code
(or to any method's code) reruns the check alone. Every stage that fits, evaluates or reports runs
it again itself; the data stages check only their own sections (:func:`usdh.params.check_sections`)
so that they do not depend on method code.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection
from typing import Any

from usdh.layout import check_name
from usdh.params import (
    ParamsError,
    base_method,
    fail,
    merge_params,
    nested,
    section,
    setting_features,
    setting_key,
    settings_entries,
)
from usdh.registry import get_method, method_class
from usdh.registry import methods as registered_methods
from usdh.schema import check_shape

__all__ = [
    "ParamsError",
    "check_all",
    "check_relations",
    "check_schema",
    "feature_folders",
    "method_checker",
    "method_keys",
    "two_view_methods",
    "validate_params",
]


def _int_list(value: Any, where: str, *, multiple_of: int = 1, minimum: int = 0) -> list[int]:
    """``value`` as a non-empty list of distinct integers (>= ``minimum``, multiples of
    ``multiple_of``), or the error naming ``where``."""
    if not isinstance(value, list) or not value:
        fail(f"'{where}' must be a non-empty list, got {value!r}")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum or v % multiple_of:
            need = f"multiples of {multiple_of}" if multiple_of > 1 else f"integers >= {minimum}"
            fail(f"'{where}' must hold {need}, got {v!r}")
    if len(set(value)) != len(value):
        fail(f"'{where}' lists a value twice: {value!r}")
    return value


def method_keys(name: str) -> list[str]:
    """The keys ``methods.<name>`` may hold: the registered class's keyword arguments."""
    sig = inspect.signature(method_class(name))
    return [p for p in sig.parameters if p not in ("self", "n_bits", "random_state")]


def _loss_problems(where: str, loss: Any) -> list[str]:
    """A ``loss`` mapping's terms and options against ``usdh.losses.TERMS``."""
    from usdh.losses import TERMS

    if not isinstance(loss, dict):
        return [f"'{where}' must map loss terms to options, got {loss!r}"]
    out = []
    for term, options in loss.items():
        if term not in TERMS:
            out.append(f"'{where}.{term}' is not a loss term; the terms are {', '.join(TERMS)}")
            continue
        if not isinstance(options, dict):
            out.append(f"'{where}.{term}' must map options to values, got {options!r}")
            continue
        known = ["weight", *(p for p in inspect.signature(TERMS[term]).parameters)]
        out += [
            f"'{where}.{term}.{key}' is not an option of the {term} term; its options are "
            f"{', '.join(known)}"
            for key in options
            if key not in known
        ]
    return out


def check_schema(params: dict[str, Any], methods: Collection[str] | None = None) -> list[str]:
    """Every schema violation of ``params`` as one line each (empty: the shape is right): the
    declared shape (:mod:`usdh.schema`), then each method in ``methods`` (None: every one), in
    ``methods.<m>`` and in each ablation variant (its params merged into its method's): parameter
    names and loss options against the class, then every value through the class's own
    :meth:`~usdh.hasher.BaseHasher.check_params` (types, ranges, names from their sets). Those
    need the method's class, and so a deep method's torch: a stage that fits one method checks
    that one, and a stage that fits none, none."""
    problems = check_shape(params)
    given_methods = params.get("methods") or {}
    wrong: set[str] = set()  # methods whose own values are wrong: their variants inherit that
    for name, given in given_methods.items():
        if given is None or (methods is not None and name not in methods):
            continue
        if isinstance(given, dict):  # else reported above: parameters must be a mapping
            found = _method_problems(f"methods.{name}", name, given, given)
            if found:
                wrong.add(name)
            problems += found
    variants = (params.get("ablations") or {}).get("variants") or {}
    for name, variant in variants.items() if isinstance(variants, dict) else ():
        method = variant.get("method") if isinstance(variant, dict) else None
        if method is None or (methods is not None and method not in methods):
            continue
        own = variant.get("params") or {}
        base = given_methods.get(method) or {}
        if isinstance(own, dict) and isinstance(base, dict):
            merged = None if method in wrong else merge_params(base, own)
            problems += _method_problems(f"ablations.variants.{name}.params", method, own, merged)
    problems += _space_problems(params, given_methods, methods, wrong)
    return problems


def _space_problems(
    params: dict[str, Any],
    given_methods: dict[str, Any],
    methods: Collection[str] | None,
    wrong: set[str],
) -> list[str]:
    """``validation.space``: each knob a parameter path of its method, each candidate a value
    the class accepts (set alone over ``methods.<m>``), for the methods in scope."""
    space = (params.get("validation") or {}).get("space") or {}
    out: list[str] = []
    for method, knobs in space.items():
        if method not in registered_methods():
            out.append(
                f"'validation.space.{method}': {method!r} is not a registered method; "
                f"the methods are {', '.join(registered_methods())}"
            )
            continue
        if (methods is not None and method not in methods) or method in wrong:
            continue
        base = given_methods.get(method) or {}
        for knob, values in knobs.items():
            for value in values:  # one line per knob: its first refused value
                own = nested({knob: value})
                found = _method_problems(
                    f"validation.space.{method}", method, own, merge_params(base, own)
                )
                if found:
                    out.append(found[0])
                    break
    return out


def _method_problems(
    where: str, method: str, given: dict[str, Any], merged: dict[str, Any] | None
) -> list[str]:
    """The problems of ``given`` (the parameters written at ``where``) for ``method``: unknown
    names and loss options; if there are none, the values of ``merged`` (what the class will
    be built with; None: not checked) through the class's ``check_params``."""
    try:
        allowed = method_keys(method)
    except (ValueError, ImportError):
        return []  # an unknown method: reported where methods are listed
    out = [
        f"'{where}.{key}' is not a parameter of {method}; its parameters are {', '.join(allowed)}"
        for key in given
        if key not in allowed
    ]
    if "loss" in given and "loss" in allowed:
        out += _loss_problems(f"{where}.loss", given["loss"])
    if out or merged is None:
        return out
    cls = method_class(method)
    exc = _refusal(cls, merged)
    if exc is None:
        return out
    # name the key: the first value that the class refuses on its own (else the section, for
    # values that are wrong only together)
    culprit = next(
        ((k, v) for k, v in _leaves(given) if _refusal(cls, nested({k: v})) is not None), None
    )
    if culprit is None:
        out.append(f"'{where}': {exc}")
    else:
        out.append(f"'{where}.{culprit[0]}': {exc}{_yaml_hint(culprit[1])}")
    return out


def _leaves(given: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """``{"loss": {"semantic": {"weight": 1}}}`` -> ``[("loss.semantic.weight", 1)]``."""
    out: list[tuple[str, Any]] = []
    for key, value in given.items():
        path = f"{prefix}{key}"
        out += _leaves(value, f"{path}.") if isinstance(value, dict) and value else [(path, value)]
    return out


def _refusal(cls: type, params: dict[str, Any]) -> Exception | None:
    """What the class's ``check_params`` says of ``params`` (None: it accepts them)."""
    try:
        cls(**params).check_params()
    except (ValueError, TypeError) as exc:
        return exc
    return None


def _yaml_hint(value: Any) -> str:
    """A hint when a value is a number or a boolean that YAML read as a string (quoted, or a
    float without a dot in its mantissa: to YAML 1.1 ``3e-3`` is a string, ``3.0e-3`` a number)."""
    if not isinstance(value, str):
        return ""
    if value.lower() in ("true", "false", "yes", "no", "on", "off"):
        return " (YAML reads it as a string: write true or false, unquoted)"
    number: float | int
    try:
        number = int(value)
    except ValueError:
        try:
            number = float(value)
        except ValueError:
            return ""
    return (
        f" (YAML reads it as a string: write the number {number!r}, unquoted, and a float "
        "with a dot in its mantissa: 3.0e-3, not 3e-3)"
    )


def feature_folders(params: dict[str, Any]) -> list[tuple[str, str]]:
    """Every ``(dataset, backbone)`` whose features a stage computes: each dataset through the
    main backbone (``features``), the calibration dataset through its own
    (``features-calibration``)."""
    main = section(params, "features", "backbone")
    out = [(d, main) for d in sorted(section(params, "datasets"))]
    cal = params.get("calibration") or {}
    backbone = (cal.get("features") or {}).get("backbone")
    if cal.get("dataset") and backbone:
        out.append((cal["dataset"], backbone))
    return out


def two_view_methods(params: dict[str, Any], dataset: str, backbone: str) -> list[str]:
    """The methods listed on ``dataset``'s ``backbone`` features (retrieval, ablations,
    classification, settings) that train on two augmented views of an image (``augmentations``
    in the registry): whom the bank of those features serves."""
    listed: list[str] = []
    exp = section(params, "experiment")
    if backbone == section(params, "features", "backbone"):
        if exp["dataset"] == dataset:
            listed += list(exp["methods"])
            variants = (params.get("ablations") or {}).get("variants") or {}
            listed += [
                v["method"] for v in variants.values() if isinstance(v, dict) and "method" in v
            ]
        cls = params.get("classification") or {}
        if cls.get("dataset") == dataset:
            listed += list(cls.get("methods") or [])
    for entry in settings_entries(params):
        if entry["dataset"] == dataset and entry["backbone"] == backbone:
            listed += list(exp["methods"])
    return [m for m in dict.fromkeys(listed) if "augmentations" in get_method(m).views]


def validate_params(params: dict[str, Any], methods: Collection[str] | None = None) -> None:
    """Check the whole file before any stage works, so a bad knob fails the first stage.

    ``methods`` limits the checks that need a method's class (its parameter names, its loss
    options) to those methods (None: every one); everything else is checked whatever the scope.

    First its shape (``usdh.schema``: every key known, every value of its type), then the
    relations between sections: the experiment's dataset is configured and split into its
    protocols (the main one among them), its methods are known, bits are positive multiples of 8,
    seeds a non-empty list of non-negative integers, the ablation variants name known loss terms
    in their ``loss`` overrides, fine-tuned methods are deep ones of the experiment, the
    classification and calibration datasets are configured. (Whether a dataset's files exist is
    checked by ``prepare``, with its own message.)
    """
    problems = check_schema(params, methods)
    if len(problems) == 1:
        fail(problems[0])
    if problems:
        fail(f"{len(problems)} problems:\n  " + "\n  ".join(problems))
    known = registered_methods()
    datasets = section(params, "datasets")
    if not isinstance(datasets, dict) or not datasets:
        fail("'datasets' must configure at least one dataset")
    methods = _check_experiment(section(params, "experiment"), datasets, known)
    _check_radius(params)
    if params.get("ablations") is not None:
        _check_ablations(params["ablations"], methods)
    if params.get("finetune") is not None:
        _check_finetune(params["finetune"], methods, known)
    if params.get("calibration") is not None:
        _validate_calibration(params, params["calibration"], datasets, known)
    if params.get("classification") is not None:
        _check_classification(params["classification"], datasets, known)
    if params.get("bank_study") is not None:
        _check_bank_study(params["bank_study"], known)
    _check_settings(params, datasets, known)
    if params.get("validation") is not None:
        _int_list([params["validation"]["bits"]], "validation.bits", multiple_of=8, minimum=8)
        _int_list(params["validation"]["seeds"], "validation.seeds")


def check_all(params: dict[str, Any], *_args: Any, **_where: Any) -> None:
    """The ``check_params`` of a stage that may use any method (check, diagnose, bank-study)."""
    validate_params(params)


def check_relations(params: dict[str, Any], *_args: Any, **_where: Any) -> None:
    """The ``check_params`` of a stage that reads results, not methods (evaluate, report): every
    check but the ones that import a method's class, so that it never imports torch."""
    validate_params(params, methods=())


def method_checker(section_name: str | None = None) -> Callable[..., None]:
    """The ``check_params`` of a stage that runs one method (its first argument; a variant of
    ``section_name`` or of ``--experiment`` stands for its base method): the whole file, with the
    class checks of that method only, so that a shallow method's stage never imports torch."""

    def check_params(
        params: dict[str, Any], name: str | None = None, *_args: Any, **where: Any
    ) -> None:
        experiment = section_name or where.get("experiment") or "experiment"
        scope = [base_method(params, experiment, name)] if name else []
        validate_params(params, methods=scope)

    return check_params


def _check_experiment(
    exp: dict[str, Any], datasets: dict[str, Any], known: dict[str, Any]
) -> list[str]:
    """The experiment: a configured dataset split into its protocols, known methods; returns
    the methods."""
    if exp.get("dataset") not in datasets:
        fail(
            f"experiment.dataset {exp.get('dataset')!r} is not configured under 'datasets' "
            f"({', '.join(datasets)})"
        )
    methods = exp.get("methods")
    if not isinstance(methods, list) or not methods:
        fail("'experiment.methods' must be a non-empty list")
    for m in methods:
        if m not in known:
            fail(f"unknown method {m!r} in experiment.methods; known: {', '.join(known)}")
    if len(set(methods)) != len(methods):
        fail(f"'experiment.methods' lists a method twice: {methods!r}")
    _int_list(exp.get("bits"), "experiment.bits", multiple_of=8, minimum=8)
    _int_list(exp.get("seeds"), "experiment.seeds")
    split_protocols = datasets[exp["dataset"]].get("protocols") or []
    protocols = exp.get("protocols", [exp.get("protocol")])
    if not isinstance(protocols, list) or not protocols or len(set(protocols)) != len(protocols):
        fail(f"'experiment.protocols' must be a list of distinct protocols, got {protocols!r}")
    if exp.get("protocol") not in protocols:
        fail(
            f"experiment.protocol {exp.get('protocol')!r} (the main protocol) must be one of "
            f"experiment.protocols ({', '.join(map(str, protocols))})"
        )
    for proto in protocols:
        if proto not in split_protocols:
            fail(
                f"experiment protocol {proto!r} is not split for {exp['dataset']}: add it to "
                f"datasets.{exp['dataset']}.protocols ({', '.join(map(str, split_protocols))})"
            )
    return methods


def _check_settings(
    params: dict[str, Any], datasets: dict[str, Any], known: dict[str, Any]
) -> None:
    """Each setting: a configured dataset, split into the protocol, not one of the experiment's
    own protocols (those run as the retrieval table), listed once, on features a stage computes,
    with the rotated views its methods train on."""
    exp = section(params, "experiment")
    main = section(params, "features", "backbone")
    seen: set[str] = set()
    for entry in settings_entries(params):
        key, ds, proto = setting_key(entry), entry["dataset"], entry["protocol"]
        if ds not in datasets:
            fail(f"setting {key}: dataset {ds!r} is not configured under 'datasets'")
        split = datasets[ds].get("protocols") or []
        if proto not in split:
            fail(
                f"setting {key}: protocol {proto!r} is not split for {ds}: add it to "
                f"datasets.{ds}.protocols ({', '.join(map(str, split))})"
            )
        own = exp.get("protocols") or [exp.get("protocol")]
        if ds == exp["dataset"] and proto in own and entry["backbone"] == main:
            fail(
                f"setting {key} through {main} is the experiment's own (experiment.protocols): "
                "its runs are the retrieval table already; remove it from 'settings'"
            )
        if key in seen:
            fail(f"setting {key} is listed twice in 'settings': each runs under its own folder")
        seen.add(key)
        fp = setting_features(params, entry)
        rotated = [m for m in exp["methods"] if "rotations" in known[m].views]
        if rotated and not fp.get("rotation_angles"):
            fail(
                f"setting {key}: {', '.join(rotated)} train on rotated views, but the "
                f"{entry['backbone']} features have no rotation_angles: give them angles or "
                "remove the setting"
            )


def _check_radius(params: dict[str, Any]) -> None:
    """The Hamming radius of the hash-lookup figures lies within every scored code length."""
    radius = (params.get("evaluation") or {}).get("radius", 2)
    lengths = [
        (f"{name}.bits", b)
        for name in ("experiment", "ablations", "calibration", "classification")
        for b in (params.get(name) or {}).get("bits") or []
    ]
    for where, bits in lengths:
        if radius >= bits:
            fail(
                f"evaluation.radius {radius} must be below every code length; {where} has "
                f"{bits} bits (the usual radius is 2)"
            )


def _check_ablations(abl: dict[str, Any], methods: list[str]) -> None:
    """Ablation variants: names usable in paths, each a method of the experiment with parameter
    overrides (their names and loss terms are checked against the class in check_schema)."""
    variants = abl.get("variants")
    if not isinstance(variants, dict) or not variants:
        fail("'ablations.variants' must map variant names to {method, params, train_on}")
    for name, variant in variants.items():
        try:
            check_name("ablation variant", name)
        except ValueError as exc:
            fail(str(exc))
        if name in methods:
            fail(
                f"ablation variant {name!r} has the name of a method; name it after what it "
                f"changes (its runs are stored under that name)"
            )
        if variant["method"] not in methods:
            fail(
                f"ablations.variants.{name}.method {variant['method']!r} must be one of "
                f"experiment.methods ({', '.join(methods)}): its full run is the main "
                f"experiment's; list the method there or remove the variant"
            )
        if variant.get("bits") is not None:
            _int_list(variant["bits"], f"ablations.variants.{name}.bits", multiple_of=8, minimum=8)
    _int_list(abl.get("bits"), "ablations.bits", multiple_of=8, minimum=8)
    _int_list(abl.get("seeds"), "ablations.seeds")


def _check_finetune(ft: dict[str, Any], methods: list[str], known: dict[str, Any]) -> None:
    """Fine-tuned methods: deep ones of the experiment that can be fine-tuned."""
    for m in ft.get("methods") or []:
        if m not in methods or not known[m].finetunable:
            fail(
                f"finetune.methods: {m!r} must be a method of experiment.methods that can be "
                f"fine-tuned ({', '.join(n for n, s in known.items() if s.finetunable)})"
            )
    if ft.get("methods"):
        _int_list(ft.get("bits"), "finetune.bits", multiple_of=8, minimum=8)
        _int_list(ft.get("seeds"), "finetune.seeds")
    n = ft.get("n_trainable", 1)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        fail(f"finetune.n_trainable must be an integer >= 0, got {n!r}")


def _check_classification(
    cls: dict[str, Any], datasets: dict[str, Any], known: dict[str, Any]
) -> None:
    """Classification: a configured dataset, known methods."""
    if cls.get("dataset") not in datasets:
        fail(
            f"classification.dataset {cls.get('dataset')!r} is not configured under "
            f"'datasets' ({', '.join(datasets)})"
        )
    for m in cls.get("methods") or []:
        if m not in known:
            fail(f"unknown method {m!r} in classification.methods; known: {', '.join(known)}")
    _int_list(cls.get("bits"), "classification.bits", multiple_of=8, minimum=8)
    _int_list(cls.get("seeds"), "classification.seeds")


def _check_bank_study(study: dict[str, Any], known: dict[str, Any]) -> None:
    """The bank study: a method that trains on augmented views."""
    m = study["method"]
    if m not in known or "augmentations" not in known[m].views:
        two_view = [k for k, spec in known.items() if "augmentations" in spec.views]
        fail(
            f"bank_study.method {m!r} must be a method that trains on augmented views "
            f"({', '.join(two_view) or 'none is registered'})"
        )
    _int_list(study["views"], "bank_study.views", minimum=2)
    _int_list([study["bits"]], "bank_study.bits", multiple_of=8, minimum=8)
    _int_list(study["seeds"], "bank_study.seeds")


def _validate_calibration(
    params: dict[str, Any], cal: Any, datasets: dict[str, Any], known: dict[str, Any]
) -> None:
    """The calibration section: a configured dataset split into its protocols, known methods, its
    own features folder (a backbone other than the main one)."""
    if not isinstance(cal, dict):
        fail(f"'calibration' must be a mapping, got {cal!r}")
    ds = cal.get("dataset")
    if ds not in datasets:
        fail(
            f"calibration.dataset {ds!r} is not configured under 'datasets' ({', '.join(datasets)})"
        )
    protocols = cal.get("protocols")
    if not isinstance(protocols, list) or not protocols or len(set(protocols)) != len(protocols):
        fail(f"'calibration.protocols' must be a list of distinct protocols, got {protocols!r}")
    split = datasets[ds].get("protocols") or []
    for proto in protocols:
        if proto not in split:
            fail(
                f"calibration protocol {proto!r} is not split for {ds}: add it to "
                f"datasets.{ds}.protocols ({', '.join(map(str, split))})"
            )
    variants = cal.get("variants") or {}
    if not isinstance(variants, dict):
        fail(f"'calibration.variants' must map names to {{method, params}}, got {variants!r}")
    for name, variant in variants.items():
        try:
            check_name("calibration variant", name)
        except ValueError as exc:
            fail(str(exc))
        if name in known:
            fail(f"calibration variant {name!r} has a method's name: choose another")
        if not isinstance(variant, dict) or variant.get("method") not in known:
            fail(
                f"calibration variant {name!r} must name a known method ({', '.join(known)}) "
                f"and its params, e.g. {{method: lsh, params: {{center: false}}}}; got {variant!r}"
            )
        if not isinstance(variant.get("params", {}), dict):
            fail(f"calibration variant {name!r}: 'params' must map parameters to values")
    methods = cal.get("methods")
    if not isinstance(methods, list) or not methods:
        fail("'calibration.methods' must be a non-empty list")
    for m in methods:
        if m not in known and m not in variants:
            fail(
                f"unknown method {m!r} in calibration.methods; known: {', '.join(known)}, "
                f"and the variants {', '.join(variants) or '(none)'}"
            )
    _int_list(cal.get("bits"), "calibration.bits", multiple_of=8, minimum=8)
    _int_list(cal.get("seeds"), "calibration.seeds")
    feats = cal.get("features") or {}
    if not isinstance(feats, dict):
        fail(f"'calibration.features' must map features settings to values, got {feats!r}")
    main = section(params, "features").get("backbone")
    if feats.get("backbone", main) == main:
        fail(
            f"calibration.features.backbone must differ from features.backbone ({main!r}): each "
            "backbone's features have a folder of their own"
        )
