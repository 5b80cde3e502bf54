"""Where every artifact lives: the one place that turns names into paths.

Data artifacts are per dataset; run artifacts (models, codes, metrics) share one order of path
parts for every kind and group::

    data/prepared/<dataset>/
    data/splits/<dataset>/<protocol>/
    data/features/<dataset>/<backbone>/
    models/<group>/<dataset>/<protocol>/<name>/<bits>/<seed>/      model.npz, fit.json, checkpoints/
    codes/<group>/<dataset>/<protocol>/<name>/<bits>/<seed>/       query.npy, database.npy
    metrics/<group>/<dataset>/<protocol>/<name>/<bits>/<seed>.json  (+ _pr.csv, _pn.csv)
    metrics/classification/<dataset>/<protocol>/features.json      the features reference

``group`` says which experiment a run belongs to (:data:`GROUPS`); ``name`` is the method, or the
ablation variant in the ``ablations`` group. The CLI, the fit path, fine-tuning and the report ask
this module for paths; ``dvc.yaml`` spells the same paths literally (DVC needs them written out)
and ``tests/test_layout.py`` checks that the two agree.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CODES",
    "DATA",
    "GROUPS",
    "METRICS",
    "MODELS",
    "Run",
    "check_name",
    "features_dir",
    "features_reference",
    "find_runs",
    "prepared_dir",
    "split_dir",
    "validation_record",
]

DATA = Path("data")
MODELS = Path("models")
CODES = Path("codes")
METRICS = Path("metrics")

#: the experiments a run can belong to: the main retrieval table, the loss-term ablations, the
#: linear classification on codes, and the fine-tuned (backbone + head) runs
GROUPS = ("retrieval", "ablations", "classification", "finetune")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def check_name(kind: str, name: str) -> str:
    """A name that becomes one path part: letters, digits, ``_ . + -``, no separators or ``..``."""
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise ValueError(
            f"{kind} name {name!r} cannot be used in a path: use letters, digits and '_ . + -' "
            f"only, starting with a letter or digit"
        )
    return name


def prepared_dir(dataset: str, root: Path = Path()) -> Path:
    """Decoded images and labels of one dataset (the prepare stage)."""
    return root / DATA / "prepared" / check_name("dataset", dataset)


def split_dir(dataset: str, protocol: str | None = None, root: Path = Path()) -> Path:
    """Index files of one protocol (or, without one, of every protocol of the dataset)."""
    base = root / DATA / "splits" / check_name("dataset", dataset)
    return base if protocol is None else base / check_name("protocol", protocol)


def features_dir(dataset: str, backbone: str | None = None, root: Path = Path()) -> Path:
    """Backbone features of one dataset (or, without a backbone, the dataset's features folder)."""
    base = root / DATA / "features" / check_name("dataset", dataset)
    return base if backbone is None else base / check_name("backbone", backbone)


def features_reference(dataset: str, protocol: str, root: Path = Path()) -> Path:
    """Metrics of the linear classifier on real-valued features (the classification reference)."""
    return root / METRICS / "classification" / dataset / protocol / "features.json"


def validation_record(
    dataset: str, method: str, bits: int, seed: int, tag: str, root: Path = Path()
) -> Path:
    """A ``validate`` command's score of one setting (committed: model selection is evidence)."""
    return root / "reports" / "validation" / dataset / method / str(bits) / f"{seed}_{tag}.json"


@dataclass(frozen=True)
class Run:
    """One (group, dataset, protocol, method or variant, bits, seed) run and its artifacts."""

    group: str
    dataset: str
    protocol: str
    name: str
    bits: int
    seed: int
    root: Path = Path()

    def __post_init__(self) -> None:
        if self.group not in GROUPS:
            raise ValueError(f"unknown run group {self.group!r}; the groups are {GROUPS}")
        for kind in ("dataset", "protocol", "name"):
            check_name(kind, getattr(self, kind))

    @property
    def _parts(self) -> Path:
        return Path(self.group, self.dataset, self.protocol, self.name, str(self.bits))

    @property
    def model_dir(self) -> Path:
        return self.root / MODELS / self._parts / str(self.seed)

    @property
    def model(self) -> Path:
        return self.model_dir / "model.npz"

    @property
    def fit_record(self) -> Path:
        return self.model_dir / "fit.json"

    @property
    def checkpoints(self) -> Path:
        return self.model_dir / "checkpoints"

    @property
    def train_log(self) -> Path:
        return self.checkpoints / "train_log.csv"

    @property
    def codes_dir(self) -> Path:
        return self.root / CODES / self._parts / str(self.seed)

    @property
    def metrics(self) -> Path:
        return self.root / METRICS / self._parts / f"{self.seed}.json"

    @property
    def pr_curve(self) -> Path:
        return self.root / METRICS / self._parts / f"{self.seed}_pr.csv"

    @property
    def p_at_n(self) -> Path:
        return self.root / METRICS / self._parts / f"{self.seed}_pn.csv"


def find_runs(group: str, kind: str = "metrics", root: Path = Path()) -> Iterator[Run]:
    """Every run of ``group`` that has a ``kind`` artifact (metrics file or model folder) on disk,
    in sorted path order."""
    if group not in GROUPS:
        raise ValueError(f"unknown run group {group!r}; the groups are {GROUPS}")
    if kind == "metrics":
        pattern = "*/*/*/*/[0-9]*.json"
    elif kind in ("models", "codes"):
        pattern = "*/*/*/*/[0-9]*"
    else:
        raise ValueError(f"kind must be 'metrics', 'models' or 'codes', got {kind!r}")
    base = root / {"metrics": METRICS, "models": MODELS, "codes": CODES}[kind] / group
    for path in sorted(base.glob(pattern)):
        seed = path.stem if kind == "metrics" else path.name
        if not seed.isdigit():
            continue
        dataset, protocol, name, bits = path.relative_to(base).parts[:4]
        if bits.isdigit():
            yield Run(group, dataset, protocol, name, int(bits), int(seed), root)
