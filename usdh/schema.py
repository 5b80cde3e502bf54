"""The declared shape of params.yaml: every section, key and type, unknown keys forbidden.

:func:`check_shape` runs before any stage works (``usdh.paramcheck.validate_params`` calls it
first; a data stage run on its own checks its sections with it), so a typo
(``methods.itq.n_iters``, ``features.input_sise``), a wrong type (``split_seed: 1.7``,
``radius: 'two'``, ``precision_at: ['100']``) or a list where a mapping belongs fails at once
with the key path, the value and what is allowed, instead of a traceback after ten minutes of
features.
Types are strict: no silent rounding of 1.7 to 1, no string of digits taken for a number.

This module imports no method code, so the data stages (prepare, split, features, bank) can check
their sections without depending on it. ``methods.<m>`` against the method's class, the loss
terms' options and the relations between sections (a protocol that is split for its dataset, bits
that are multiples of 8, ...) are checked in :mod:`usdh.paramcheck`.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

__all__ = ["Params", "check_shape"]

Count = int | float  # a count, or a share in (0, 1] (``train_subset``, ``rotation_subset``, ...)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Dataset(_Section):
    path: str | None = None
    download: bool = False
    protocols: list[str]
    train_subset: Count | None = None
    rotation_subset: Count | None = None
    validation_queries: Count | None = None
    augmentation_subset: Count | None = None


class Gist(_Section):
    orientations_per_scale: list[int] = [8, 8, 8, 8]
    blocks: int = 4
    prefilter_fc: float = 4.0
    boundary: int = 32


class Augmentation(_Section):
    """The bank of augmented views (``usdh.augment.Augmentation``; the release's recipe)."""

    views: int = 4
    crop_scale: list[float] = [0.5, 1.0]
    crop_ratio: list[float] = [0.75, 1.3333333333333333]
    flip: float = 0.5
    jitter: list[float] = [0.4, 0.4, 0.4, 0.1]
    jitter_p: float = 0.7
    grayscale: float = 0.2
    blur_p: float = 0.5
    blur_sigma: list[float] = [0.1, 2.0]


class Features(_Section):
    backbone: str
    weights: str
    input_size: int
    batch_size: int | None = None
    dtype: Literal["float32", "bfloat16"] = "float32"
    storage_dtype: Literal["float32", "float16"] = "float32"
    device: str = "auto"
    #: how the frozen backbone runs on the CPU (usdh/engines.py; docs/features.md, "Engines")
    engine: Literal["eager", "onnxruntime", "openvino"] = "eager"
    threads: int | None = None
    num_workers: int = 0
    rotation_angles: list[float] = []
    rotation_mode: Literal["crop", "fill"] = "crop"
    augmentation: Augmentation | None = None
    gist: Gist | None = None


class FeaturesOverride(Features):
    """A section's own ``features`` entries, laid over ``features:`` (every key optional)."""

    backbone: str | None = None  # type: ignore[assignment]
    weights: str | None = None  # type: ignore[assignment]
    input_size: int | None = None  # type: ignore[assignment]


class Experiment(_Section):
    dataset: str
    protocol: str
    protocols: list[str] | None = None
    methods: list[str]
    bits: list[int]
    seeds: list[int]


class Variant(_Section):
    method: str
    params: dict[str, Any] = {}


class Calibration(_Section):
    dataset: str
    protocols: list[str]
    methods: list[str]
    bits: list[int]
    seeds: list[int]
    variants: dict[str, Variant] = {}
    features: FeaturesOverride = FeaturesOverride()


class AblationVariant(_Section):
    """A method with other parameters (merged into ``methods.<method>``), or trained on another
    part of the split (``train_on``: the matched-data runs)."""

    method: str
    params: dict[str, Any] = {}  # checked against the method's class in usdh.paramcheck
    train_on: Literal["augmentation_subset", "rotation_subset"] | None = None
    bits: list[int] | None = None  # a variant's own code lengths (default: ablations.bits)


class Ablations(_Section):
    bits: list[int]
    seeds: list[int]
    variants: dict[str, AblationVariant]


class Finetune(_Section):
    methods: list[str] = []
    bits: list[int] = []
    seeds: list[int] = []
    n_trainable: int = 1
    input_size: int | None = None
    train: dict[str, Any] = {}


class BankStudy(_Section):
    method: str
    views: list[int]
    bits: int
    seeds: list[int]


class Classification(_Section):
    dataset: str
    protocol: str
    methods: list[str] = []
    bits: list[int]
    seeds: list[int]


class Validation(_Section):
    bits: int
    seeds: list[int]
    space: dict[str, dict[str, list[Any]]] = {}


class Diagnostics(_Section):
    method: str
    batch_size: int = 256
    batches: int = 40


class Curve(_Section):
    max_n: int | None = None
    min_k: int | None = None
    points: int


class Examples(_Section):
    queries: int = 4
    top: int = 10
    seed: int = 0


class Evaluation(_Section):
    precision_at: list[int] = []
    map_at: list[int] = []
    radius: int = 2
    precision_curve: Curve | None = None
    map_curve: Curve | None = None
    examples: Examples | None = None


class Params(_Section):
    datasets: dict[str, Dataset]
    split_seed: int = 0
    features: Features
    experiment: Experiment
    methods: dict[str, dict[str, Any] | None] = Field(default_factory=dict)
    validation: Validation | None = None
    diagnostics: Diagnostics | None = None
    ablations: Ablations | None = None
    finetune: Finetune | None = None
    calibration: Calibration | None = None
    classification: Classification | None = None
    evaluation: Evaluation | None = None
    bank_study: BankStudy | None = None


def _where(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc)


def _unwrap(tp: Any) -> Any:
    """The model or mapping inside an annotation (``X | None`` -> ``X``)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _unwrap(inner[0]) if inner else tp
    return tp


def _allowed(loc: tuple[Any, ...]) -> list[str]:
    """The keys of the section that holds ``loc``'s last part (for an unknown key's message)."""
    node: Any = Params
    for part in loc[:-1]:
        node = _unwrap(node)
        if isinstance(node, type) and issubclass(node, BaseModel):
            field = node.model_fields.get(str(part))
            if field is None:
                return []
            node = field.annotation
        elif typing.get_origin(node) is dict:
            node = typing.get_args(node)[1]  # a named entry: datasets.<name>, ...
        else:
            return []
    node = _unwrap(node)
    if isinstance(node, type) and issubclass(node, BaseModel):
        return list(node.model_fields)
    return []


def _message(err: dict[str, Any]) -> str:
    loc = tuple(err["loc"])
    where = _where(loc)
    if err["type"] == "extra_forbidden":
        allowed = _allowed(loc)
        hint = f"; the keys are {', '.join(allowed)}" if allowed else ""
        return f"'{where}' is not a known key{hint}"
    if err["type"] == "missing":
        return f"'{where}' is missing"
    return f"'{where}': {err['msg'].lower()}, got {err.get('input')!r}"


def _sections_model(names: tuple[str, ...]) -> type[BaseModel]:
    """A model of only ``names`` of :class:`Params` (each as required or optional as there)."""
    fields: dict[str, Any] = {}
    for name in names:
        field = Params.model_fields[name]
        default = ... if field.is_required() else field.get_default(call_default_factory=True)
        fields[name] = (field.annotation, default)
    return create_model("Sections", __base__=_Section, **fields)


def check_shape(params: dict[str, Any], sections: tuple[str, ...] | None = None) -> list[str]:
    """Every violation of the declared shape as one line each (empty: the shape is right).

    With ``sections``, only those top-level sections are checked (what a data stage reads), so
    that checking them needs no method code: the data stages stay independent of it.
    """
    if not isinstance(params, dict):
        return [f"the file must hold a mapping of sections, got {type(params).__name__}"]
    model: type[BaseModel] = Params
    given = params
    if sections is not None:
        model = _sections_model(sections)
        given = {k: v for k, v in params.items() if k in sections}
    try:
        model.model_validate(given)
    except ValidationError as exc:
        return [_message(e) for e in exc.errors(include_url=False)]
    return []
