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
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, create_model

from usdh.checks import check_device_name

__all__ = ["BACKBONE_NAMES", "DATASET_PROTOCOLS", "Params", "check_shape"]

#: the backbones and each dataset's split protocols (``per-class`` serves any single-label
#: dataset), named here so that checking params.yaml needs no model or data code;
#: tests/test_params.py checks that they agree with ``usdh.backbones.BACKBONES`` and
#: ``usdh.data.PROTOCOLS``
BACKBONE_NAMES = ("efficientnet_lite0", "gist", "vgg16", "vgg19")
DATASET_PROTOCOLS = {
    "cifar10": ("deepbit", "1k-5k-59k", "per-class"),
    "fashion_mnist": ("1k-69k", "per-class"),
    "nuswide": ("nuswide21",),
    "oxford17": ("retrieval", "classification", "per-class"),
}
ANY_DATASET_PROTOCOLS = ("per-class",)

Index = Annotated[int, Field(ge=0)]  # a seed, a radius, a count that may be 0
Positive = Annotated[int, Field(ge=1)]  # epochs, sizes, batches


def _count(value: int | float) -> int | float:
    if (isinstance(value, int) and value >= 1) or (isinstance(value, float) and 0 < value <= 1):
        return value
    raise ValueError("a count of images (an integer >= 1) or a share of them in (0, 1]")


#: a count of images (>= 1), or a share of them in (0, 1] (``train_subset``, ``rotation_subset``)
Count = Annotated[int | float, AfterValidator(_count)]
Share = Annotated[float, Field(ge=0.0, le=1.0)]  # a probability
#: torch's device strings, spelled as :func:`usdh.checks.check_device_name` wants them
Device = Annotated[str, AfterValidator(check_device_name)]


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
    #: the backbone's input size for this dataset's images (null: ``features.input_size``);
    #: required, null or not, because dvc.yaml's features stage tracks the key
    input_size: Positive | None


class Gist(_Section):
    orientations_per_scale: list[int] = [8, 8, 8, 8]
    blocks: int = 4
    prefilter_fc: float = 4.0
    boundary: int = 32


class Augmentation(_Section):
    """The bank of augmented views (``usdh.augment.Augmentation``; the release's recipe)."""

    views: Positive = 4
    crop_scale: Annotated[list[float], Field(min_length=2, max_length=2)] = [0.5, 1.0]
    crop_ratio: Annotated[list[float], Field(min_length=2, max_length=2)] = [0.75, 4 / 3]
    flip: Share = 0.5
    #: brightness, contrast, saturation, hue
    jitter: Annotated[list[float], Field(min_length=4, max_length=4)] = [0.4, 0.4, 0.4, 0.1]
    jitter_p: Share = 0.7
    grayscale: Share = 0.2
    blur_p: Share = 0.5
    blur_sigma: Annotated[list[float], Field(min_length=2, max_length=2)] = [0.1, 2.0]


class Features(_Section):
    backbone: str
    weights: str
    input_size: Positive
    batch_size: Positive | None = None
    dtype: Literal["float32", "bfloat16"] = "float32"
    storage_dtype: Literal["float32", "float16"] = "float32"
    device: Device = "auto"
    #: how the frozen backbone runs on the CPU (usdh/engines.py; docs/features.md, "Engines")
    engine: Literal["eager", "onnxruntime", "openvino"] = "eager"
    threads: Positive | None = None
    num_workers: Index = 0
    rotation_angles: list[float] = []
    rotation_mode: Literal["crop", "fill"] = "crop"
    augmentation: Augmentation | None = None
    gist: Gist | None = None


class FeaturesOverride(Features):
    """A section's own ``features`` entries, laid over ``features:`` (every key optional)."""

    backbone: str | None = None  # type: ignore[assignment]
    weights: str | None = None  # type: ignore[assignment]
    input_size: Positive | None = None  # type: ignore[assignment]


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
    n_trainable: Index = 1
    input_size: Positive | None = None
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
    bits: Positive
    seeds: list[int]
    space: dict[str, dict[str, Annotated[list[Any], Field(min_length=1)]]] = {}


class Diagnostics(_Section):
    method: str
    batch_size: Positive = 256
    batches: Positive = 40


class Curve(_Section):
    max_n: Positive | None = None
    min_k: Positive | None = None
    points: Annotated[int, Field(ge=2)]


class Examples(_Section):
    queries: Positive = 4
    top: Positive = 10
    seed: Index = 0


class Evaluation(_Section):
    precision_at: list[Positive] = []
    map_at: list[Positive] = []
    radius: Index = 2
    precision_curve: Curve | None = None
    map_curve: Curve | None = None
    examples: Examples | None = None


class Setting(_Section):
    """The experiment's methods, lengths and seeds on another dataset, protocol or backbone."""

    dataset: str
    protocol: str
    backbone: str


class Params(_Section):
    datasets: dict[str, Dataset]
    split_seed: Index = 0
    features: Features
    experiment: Experiment
    methods: dict[str, dict[str, Any] | None] = Field(default_factory=dict)
    validation: Validation | None = None
    diagnostics: Diagnostics | None = None
    ablations: Ablations | None = None
    finetune: Finetune | None = None
    calibration: Calibration | None = None
    classification: Classification | None = None
    evaluation: Evaluation
    bank_study: BankStudy | None = None
    settings: list[Setting] = Field(default_factory=list)


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
    if err["type"] == "value_error":  # our own validators' messages, as they are
        return f"'{where}': {err['ctx']['error']}, got {err.get('input')!r}"
    return f"'{where}': {err['msg'].lower()}, got {err.get('input')!r}"


def _sections_model(names: tuple[str, ...]) -> type[BaseModel]:
    """A model of only ``names`` of :class:`Params` (each as required or optional as there)."""
    fields: dict[str, Any] = {}
    for name in names:
        field = Params.model_fields[name]  # its FieldInfo keeps the default and constraints
        fields[name] = (field.annotation, field)
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
    return _name_problems(given)


def _name_problems(given: dict[str, Any]) -> list[str]:
    """Names that must come from a known set: each dataset's protocols, the backbones."""
    out = []
    for name, ds in (given.get("datasets") or {}).items():
        known = DATASET_PROTOCOLS.get(name, ANY_DATASET_PROTOCOLS)
        out += [
            f"'datasets.{name}.protocols': unknown protocol {proto!r} for {name}; its "
            f"protocols are {', '.join(known)}"
            for proto in ds["protocols"]
            if proto not in known
        ]
    settings = given.get("settings") or []
    for where, feats in (
        ("features", given.get("features")),
        ("calibration.features", (given.get("calibration") or {}).get("features")),
        *((f"settings.{i}", entry) for i, entry in enumerate(settings)),
    ):
        backbone = (feats or {}).get("backbone")
        if backbone is not None and backbone not in BACKBONE_NAMES:
            out.append(
                f"'{where}.backbone': unknown backbone {backbone!r}; the backbones are "
                f"{', '.join(BACKBONE_NAMES)}"
            )
    return out
