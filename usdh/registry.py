"""The one list of methods, each with what it is and what it needs.

A method is registered by a :class:`MethodSpec`: its name (as in params.yaml and the reports), the
``module:Class`` of its hasher (imported only when used, so light stages never import torch), and
its declared abilities. Built-in methods are listed in :data:`BUILTIN`; methods of other installed
packages register through the ``usdh.methods`` entry point group, whose entries name a
:class:`MethodSpec` object::

    # the other package's pyproject.toml
    [project.entry-points."usdh.methods"]
    myhash = "myhash.spec:SPEC"

    # myhash/spec.py (keep it light: it is imported to list the methods)
    SPEC = MethodSpec("myhash", "myhash.model:MyHasher")

params validation, the CLI, the fit path, the report's method order and the benchmarks all read
this registry (see docs/extending.md).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from usdh.layout import check_name

if TYPE_CHECKING:
    from usdh.hasher import BaseHasher

__all__ = [
    "BUILTIN",
    "ENTRY_POINT_GROUP",
    "VIEWS",
    "MethodSpec",
    "get_method",
    "method_class",
    "methods",
]

ENTRY_POINT_GROUP = "usdh.methods"
#: extra training inputs a method can need beyond the features: ``rotations`` (the rotated views
#: the features stage stores for the training rows) and ``augmentations`` (the bank of augmented
#: views, :mod:`usdh.augment`, which the features stage builds only when a listed method needs it)
VIEWS = ("rotations", "augmentations")


@dataclass(frozen=True)
class MethodSpec:
    """A method's name, its hasher class (``module:Class``) and what it is.

    * ``deep``: trained by the deep trainer (``fit`` takes ``views``, ``checkpoint_dir``,
      ``resume`` and ``monitor``).
    * ``finetunable``: can train the backbone's last units with its head (the finetune stage).
    * ``views``: which of :data:`VIEWS` its ``fit`` may use.
    * ``seeded``: its result depends on ``random_state``. A method that makes no random choice
      (PCAH, SH) says False: the pipeline fits and evaluates it once per code length (with the
      section's first seed) and the report shows it without a spread.
    """

    name: str
    target: str
    deep: bool = False
    finetunable: bool = False
    views: tuple[str, ...] = ()
    seeded: bool = True

    def __post_init__(self) -> None:
        check_name("method", self.name)
        module, _, cls = self.target.partition(":")
        if not module or not cls:
            raise ValueError(
                f"method {self.name!r}: target must be 'package.module:Class', got {self.target!r}"
            )
        unknown = [v for v in self.views if v not in VIEWS]
        if unknown:
            raise ValueError(f"method {self.name!r}: unknown views {unknown}; known: {VIEWS}")
        if self.finetunable and not self.deep:
            raise ValueError(f"method {self.name!r}: only a deep method can be finetunable")

    @property
    def module(self) -> str:
        return self.target.partition(":")[0]

    def load(self) -> type[BaseHasher]:
        """The hasher class (imports its module)."""
        module, _, cls = self.target.partition(":")
        try:
            return getattr(importlib.import_module(module), cls)
        except (ImportError, AttributeError) as exc:
            raise ValueError(
                f"method {self.name!r}: cannot import {self.target!r} ({exc}); is the package "
                f"that provides it installed?"
            ) from exc


#: the suite's own methods, in the reports' order: shallow, then deep
BUILTIN: tuple[MethodSpec, ...] = (
    MethodSpec("lsh", "baselines.lsh:LSH"),
    MethodSpec("pcah", "baselines.pcah:PCAH", seeded=False),
    MethodSpec("itq", "baselines.itq:ITQ"),
    MethodSpec("sh", "baselines.sh:SH", seeded=False),
    MethodSpec("deepbit", "baselines.deepbit:DeepBit", True, True, ("rotations",)),
    MethodSpec("usdh", "usdh.method:USDH", True, True, ("rotations",)),
    MethodSpec("greedyhash", "baselines.greedyhash:GreedyHash", True, True),
    MethodSpec("bihalf", "baselines.bihalf:BiHalf", True, True),
    MethodSpec("cibhash", "baselines.cibhash:CIBHash", True, True, ("augmentations",)),
)


@cache
def methods() -> dict[str, MethodSpec]:
    """Every registered method by name: the built-ins, then the entry points' (in name order)."""
    out = {spec.name: spec for spec in BUILTIN}
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            spec = ep.load()
        except Exception as exc:  # a broken plugin must say which one it is
            raise ValueError(
                f"entry point {ep.name!r} of group {ENTRY_POINT_GROUP!r} ({ep.value}) failed to "
                f"load: {exc}"
            ) from exc
        if not isinstance(spec, MethodSpec):
            raise ValueError(
                f"entry point {ep.name!r} of group {ENTRY_POINT_GROUP!r} must name a "
                f"usdh.registry.MethodSpec, got {type(spec).__name__}"
            )
        if spec.name != ep.name:
            raise ValueError(
                f"entry point {ep.name!r} names a MethodSpec called {spec.name!r}; use one name"
            )
        if spec.name in out:
            raise ValueError(f"method {spec.name!r} is registered twice ({ep.value})")
        out[spec.name] = spec
    return out


def get_method(name: str) -> MethodSpec:
    """The spec registered under ``name``, or an error listing the known ones."""
    known = methods()
    if name not in known:
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(known)}")
    return known[name]


def method_class(name: str) -> type[BaseHasher]:
    """The hasher class registered under ``name``."""
    return get_method(name).load()
