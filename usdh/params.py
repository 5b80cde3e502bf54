"""params.yaml: loading, sections, and the light check a data stage makes of the sections it reads.

The whole file is checked by :mod:`usdh.paramcheck` (the ``check`` stage, upstream of every other
stage); this module imports no method code, so the data stages that use it do not depend on it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, NoReturn

import yaml

__all__ = [
    "CHECK_FORMAT",
    "EXPERIMENTS",
    "LOSS_TERMS",
    "SETTINGS_GROUP",
    "ParamsError",
    "check_sections",
    "dataset_params",
    "fail",
    "features_params",
    "load_params",
    "merge_params",
    "nested",
    "params_source",
    "read_check_record",
    "section",
    "sections_checker",
    "setting_entry",
    "setting_features",
    "setting_key",
    "settings_entries",
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


#: the run group of the ``settings`` entries: the experiment's methods, lengths and seeds on
#: another dataset, protocol or backbone (``--setting DATASET/PROTOCOL``)
SETTINGS_GROUP = "settings"

#: the version of the check stage's record (:mod:`usdh.stages.check`); 2: the methods that train
#: on two views are keyed by ``<dataset>/<backbone>`` (a bank per backbone)
CHECK_FORMAT = 2


class ParamsError(ValueError):
    """params.yaml is missing, malformed, or names something that does not exist."""


class _DuplicateKey(ValueError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last one
    silently, so the first value a user wrote would be ignored without a word)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            line = key_node.start_mark.line + 1
            if key in seen:
                raise _DuplicateKey(
                    f"the key {key!r} is given twice in one mapping (lines {seen[key]} and "
                    f"{line}); YAML would keep the last silently: keep one"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


#: the params file that messages about values name (``--params``; see :func:`params_source`)
_SOURCE: ContextVar[str] = ContextVar("params_source", default="params.yaml")


@contextlib.contextmanager
def params_source(path: str | os.PathLike[str]) -> Iterator[None]:
    """Within the block, messages about params values name ``path`` (the CLI's ``--params``);
    a context, so that an API user who reads another file renames no later message."""
    token = _SOURCE.set(str(path))
    try:
        yield
    finally:
        _SOURCE.reset(token)


def load_params(path: str | os.PathLike[str] = "params.yaml") -> dict[str, Any]:
    """Read params.yaml as a dict (it must be a mapping at top level)."""
    p = Path(path)
    if not p.exists():
        raise ParamsError(
            f"{p} not found; run the command from the project root or pass --params PATH"
        )
    try:
        text = p.read_text()
    except UnicodeDecodeError:
        raise ParamsError(f"{p} is not a text file; it must be YAML, as params.yaml") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no object is built
    except _DuplicateKey as exc:
        raise ParamsError(f"{p}: {exc}") from None
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
            raise ParamsError(f"{_SOURCE.get()} has no '{'.'.join(walked)}' entry")
        node = node[key]
    return node


def dataset_params(params: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The ``datasets.<name>`` section, or an error naming the configured datasets."""
    datasets = section(params, "datasets")
    if name not in datasets:
        raise ParamsError(
            f"dataset {name!r} is not configured in {_SOURCE.get()} (configured: "
            f"{', '.join(sorted(datasets))}); add a 'datasets.{name}' entry"
        )
    return datasets[name]


def features_params(
    params: Mapping[str, Any], experiment: str = "experiment", dataset: str | None = None
) -> dict[str, Any]:
    """The ``features`` section as ``experiment``'s runs on ``dataset`` see it: the shared
    ``features:`` section, then the dataset's own ``input_size`` (``datasets.<name>.input_size``:
    Fashion-MNIST's 28 px images need no 160 px input, docs/features.md), then the section's own
    ``features`` entries (calibration's GIST), each laid over the one before."""
    base = dict(section(params, "features"))
    if dataset is not None:
        size = (dataset_params(params, dataset) or {}).get("input_size")
        if size is not None:
            base["input_size"] = size
    if experiment != "experiment":
        base.update(section(params, experiment).get("features") or {})
    return base


def fail(msg: str) -> NoReturn:
    """Raise the one-line error every params check gives (prefixed with the file's name)."""
    raise ParamsError(f"{_SOURCE.get()}: {msg}")


def sections_checker(*sections: str) -> Callable[..., None]:
    """The ``check_params`` of a data stage: :func:`check_sections` of the sections it reads
    (the command's arguments, which the CLI passes to every stage's check, are not needed)."""

    def check_params(params: dict[str, Any], *_args: Any, **_where: Any) -> None:
        check_sections(params, sections)

    return check_params


def base_method(params: Mapping[str, Any], experiment: str, name: str) -> str:
    """The registered method behind run name ``name`` of section ``experiment``: itself, or the
    ``method`` of the section's variant of that name (calibration's ``lsh_uncentred``, every
    ablation variant)."""
    variants = (params.get(experiment) or {}).get("variants") or {}
    variant = variants.get(name) if isinstance(variants, dict) else None
    return str(variant["method"]) if isinstance(variant, dict) and "method" in variant else name


def check_sections(params: dict[str, Any], sections: tuple[str, ...]) -> None:
    """Check the shape of the top-level ``sections`` a data stage reads, before it works.

    Under ``dvc repro`` the ``check`` stage has already checked the whole file; this keeps a data
    stage run on its own (``python -m usdh features cifar10``) from starting on a bad value.
    """
    from usdh.schema import check_shape

    problems = check_shape(params, sections)
    if len(problems) == 1:
        fail(problems[0])
    if problems:
        fail(f"{len(problems)} problems:\n  " + "\n  ".join(problems))


def read_check_record(dataset: str, backbone: str, root: Path = Path()) -> dict[str, Any]:
    """What the check stage decided for ``dataset``'s features through ``backbone`` (which listed
    methods train on augmented views), as a data stage reads it: through the record, not the
    method code."""
    import json

    from usdh.layout import checked_record

    path = checked_record(root)
    fix = "run `python -m usdh check` first (dvc repro runs it before every stage)"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path} is missing: {fix}") from None
    except (OSError, ValueError) as exc:
        raise ParamsError(f"{path} is not a readable check record ({exc}): {fix}") from exc
    if not isinstance(data, dict) or data.get("format") != CHECK_FORMAT:
        raise ParamsError(f"{path} is not a check record of this version: {fix}")
    views = data.get("two_view_methods")
    key = f"{dataset}/{backbone}"
    if not isinstance(views, dict) or key not in views:
        raise ParamsError(f"{path} does not know dataset {dataset!r} through {backbone!r}: {fix}")
    return {"two_view_methods": list(views[key])}


def settings_entries(params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ``settings`` list: each ``{dataset, protocol, backbone}`` on which the experiment's
    methods run beside the experiment's own protocols."""
    return [dict(s) for s in (params.get("settings") or [])]


def setting_key(entry: Mapping[str, Any]) -> str:
    """``<dataset>/<protocol>``: how the CLI's ``--setting`` names an entry."""
    return f"{entry['dataset']}/{entry['protocol']}"


def setting_entry(params: Mapping[str, Any], key: str) -> dict[str, Any]:
    """The ``settings`` entry ``key`` (``DATASET/PROTOCOL``), or an error naming the listed ones."""
    entries = {setting_key(e): e for e in settings_entries(params)}
    if key not in entries:
        listed = ", ".join(entries) or "none"
        raise ParamsError(
            f"setting {key!r} is not listed in {_SOURCE.get()}'s settings (listed: {listed}); "
            "add {dataset, protocol, backbone} to 'settings'"
        )
    return entries[key]


def setting_features(params: Mapping[str, Any], entry: Mapping[str, Any]) -> dict[str, Any]:
    """The features a setting's runs read: the main backbone's on its dataset (the ``features``
    stage computes them for every dataset), or the calibration's on the calibration dataset
    (``features-calibration``). Any other backbone has no stage that computes it."""
    dataset, backbone = entry["dataset"], entry["backbone"]
    if backbone == section(params, "features", "backbone"):
        return features_params(params, "experiment", dataset)
    cal = params.get("calibration") or {}
    if cal.get("dataset") == dataset and (cal.get("features") or {}).get("backbone") == backbone:
        return features_params(params, "calibration", dataset)
    fail(
        f"setting {setting_key(entry)}: no stage computes {backbone!r} features of {dataset}; "
        f"use features.backbone ({section(params, 'features', 'backbone')!r}) or, on "
        f"{cal.get('dataset')!r}, calibration.features.backbone"
    )


def merge_params(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` merged in, recursively for nested mappings (copies)."""
    out = {k: (merge_params(v, {}) if isinstance(v, Mapping) else v) for k, v in base.items()}
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_params(out[key], value)
        else:
            out[key] = merge_params(value, {}) if isinstance(value, Mapping) else value
    return out


def nested(setting: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted keys as nested mappings: ``{"loss.semantic.weight": 3}`` -> ``{"loss":
    {"semantic": {"weight": 3}}}`` (how a validation setting or one knob becomes parameters)."""
    out: dict[str, Any] = {}
    for key, value in setting.items():
        *path, last = key.split(".")
        node = out
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return out
