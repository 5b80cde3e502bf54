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
from usdh.params import ParamsError, base_method, fail, section
from usdh.registry import get_method, method_class
from usdh.registry import methods as registered_methods
from usdh.schema import check_shape

__all__ = [
    "ParamsError",
    "check_all",
    "check_relations",
    "check_schema",
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
    declared shape (:mod:`usdh.schema`), then the keys and loss options of each method in
    ``methods`` (None: every one). Those need the method's class, and so a deep method's
    torch: a stage that fits one method checks that one, and a stage that fits none, none."""
    problems = check_shape(params)
    for name, given in (params.get("methods") or {}).items():
        if given is None or (methods is not None and name not in methods):
            continue
        if not isinstance(given, dict):
            continue  # reported above: a method's parameters must be a mapping
        try:
            allowed = method_keys(name)
        except (ValueError, ImportError):
            continue  # an unknown method: reported where methods are listed
        for key in given:
            if key not in allowed:
                problems.append(
                    f"'methods.{name}.{key}' is not a parameter of {name}; its parameters are "
                    f"{', '.join(allowed)}"
                )
        if "loss" in given and "loss" in allowed:
            problems += _loss_problems(f"methods.{name}.loss", given["loss"])
    variants = (params.get("ablations") or {}).get("variants") or {}
    for name, variant in variants.items() if isinstance(variants, dict) else ():
        if not isinstance(variant, dict) or (
            methods is not None and variant.get("method") not in methods
        ):
            continue
        given = variant.get("params") or {}
        try:
            allowed = method_keys(str(variant.get("method")))
        except (ValueError, ImportError):
            continue  # an unknown method: reported with the variants
        where = f"ablations.variants.{name}.params"
        problems += [
            f"'{where}.{key}' is not a parameter of {variant['method']}; its parameters are "
            f"{', '.join(allowed)}"
            for key in given
            if key not in allowed
        ]
        if isinstance(given, dict) and "loss" in given:
            problems += _loss_problems(f"{where}.loss", given["loss"])
    return problems


def two_view_methods(params: dict[str, Any], dataset: str) -> list[str]:
    """The methods listed on ``dataset`` (retrieval, ablations, classification) that train on two
    augmented views of an image (``augmentations`` in the registry): whom the bank stage serves."""
    listed: list[str] = []
    exp = section(params, "experiment")
    if exp["dataset"] == dataset:
        listed += list(exp["methods"])
        variants = (params.get("ablations") or {}).get("variants") or {}
        listed += [v["method"] for v in variants.values() if isinstance(v, dict) and "method" in v]
    cls = params.get("classification") or {}
    if cls.get("dataset") == dataset:
        listed += list(cls.get("methods") or [])
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
