"""Where every artifact lives: the one place that turns names into paths.

Data artifacts are per dataset; run artifacts (models, codes, metrics) share one order of path
parts for every kind and group::

    data/prepared/<dataset>/
    data/splits/<dataset>/<protocol>/
    data/features/<dataset>/<backbone>/
    models/<group>/<dataset>/<protocol>/<name>/<bits>/<seed>/   model.npz, fit.json, train_log.csv
    codes/<group>/<dataset>/<protocol>/<name>/<bits>/<seed>/       query.npy, database.npy
    metrics/<group>/<dataset>/<protocol>/<name>/<bits>/<seed>.json
    plots/precision_recall/<group>/<dataset>/<protocol>/<name>/<bits>/<seed>.csv
    plots/precision_at_n/<group>/<dataset>/<protocol>/<name>/<bits>/<seed>.csv
    plots/map_at_k/<group>/<dataset>/<protocol>/<name>/<bits>/<seed>.csv
    queries/<group>/<dataset>/<protocol>/<name>/<bits>/<seed>.npz     per-query AP, lookup, top hits
    metrics/classification/<dataset>/<protocol>/features.json      the features reference
    metrics/diagnostics/<dataset>/<protocol>/<name>.json           analyses of fitted runs

An interrupted deep fit resumes from ``.checkpoints/<group>/<dataset>/<protocol>/<name>/<bits>/
<seed>/`` (:attr:`Run.checkpoints`): outside every stage output, because DVC deletes a stage's
outputs before it runs it, and removed once the fit is saved.

A pipeline stage runs every code length and seed of one method (or variant), so its outputs are the
method's folders (:func:`method_dir`); metrics and each kind of curve have folders of their own, so
DVC can declare each folder as metrics or as plots with one x and y.

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
    "CHECKPOINTS",
    "CODES",
    "CODE_PARTS",
    "DATA",
    "GROUPS",
    "KINDS",
    "METRICS",
    "MODELS",
    "PLOTS",
    "QUERIES",
    "Run",
    "check_name",
    "diagnostics_record",
    "features_dir",
    "features_reference",
    "features_references",
    "find_runs",
    "method_dir",
    "prepared_dir",
    "split_dir",
    "validation_dir",
]

DATA = Path("data")
MODELS = Path("models")
CODES = Path("codes")
METRICS = Path("metrics")
PLOTS = Path("plots")
QUERIES = Path("queries")
#: scratch of interrupted deep fits (git- and DVC-ignored; no stage declares it)
CHECKPOINTS = Path(".checkpoints")
#: the parts of a split whose codes a run keeps (:meth:`Run.code_file`)
CODE_PARTS = ("query", "database")
#: run artifact kinds -> their top folder
KINDS = {
    "models": MODELS,
    "codes": CODES,
    "metrics": METRICS,
    "precision_recall": PLOTS / "precision_recall",
    "precision_at_n": PLOTS / "precision_at_n",
    "map_at_k": PLOTS / "map_at_k",
    "queries": QUERIES,
}

#: the experiments a run can belong to: the main retrieval table, the loss-term ablations, the
#: linear classification on codes, the fine-tuned (backbone + head) runs, and the calibration of
#: the classic baselines on GIST against published tables
GROUPS = ("retrieval", "ablations", "classification", "finetune", "calibration", "settings")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def check_name(kind: str, name: str) -> str:
    """A name that becomes one path part: letters, digits, ``_ . + -``, no separators or ``..``."""
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise ValueError(
            f"{kind} name {name!r} cannot be used in a path: use letters, digits and '_ . + -' "
            f"only, starting with a letter or digit"
        )
    return name


def checked_record(root: Path = Path()) -> Path:
    """The check stage's record: params.yaml passed every check, and what the data stages need to
    know of the methods (which ones train on augmented views), so that they need no method code."""
    return root / DATA / "params-checked.json"


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


def bank_dir(dataset: str, backbone: str, root: Path = Path()) -> Path:
    """The bank of augmented views of one dataset's images (the bank stage, ``usdh.augment``)."""
    return root / DATA / "banks" / check_name("dataset", dataset) / check_name("backbone", backbone)


def features_reference(dataset: str, protocol: str, root: Path = Path()) -> Path:
    """Metrics of the linear classifier on real-valued features (the classification reference)."""
    return (
        root
        / METRICS
        / "classification"
        / check_name("dataset", dataset)
        / check_name("protocol", protocol)
        / "features.json"
    )


def features_references(root: Path = Path()) -> list[Path]:
    """Every classification reference (:func:`features_reference`) under ``root``."""
    return sorted(root.glob(f"{METRICS}/classification/*/*/features.json"))


def validation_dir(dataset: str, protocol: str, method: str, root: Path = Path()) -> Path:
    """The ``validate`` command's records of one method (committed: selection is evidence)."""
    return root / "reports" / "validation" / dataset / protocol / check_name("method", method)


def diagnostics_record(dataset: str, protocol: str, name: str, root: Path = Path()) -> Path:
    """An analysis of fitted runs (the diagnose stage)."""
    return root / METRICS / "diagnostics" / dataset / protocol / f"{check_name('name', name)}.json"


def method_dir(
    kind: str, group: str, dataset: str, protocol: str, name: str, root: Path = Path()
) -> Path:
    """The folder of every run of one method (or variant) for one ``kind`` of :data:`KINDS`."""
    if kind not in KINDS:
        raise ValueError(f"unknown artifact kind {kind!r}; the kinds are {tuple(KINDS)}")
    if group not in GROUPS:
        raise ValueError(f"unknown run group {group!r}; the groups are {GROUPS}")
    for what, value in (("dataset", dataset), ("protocol", protocol), ("name", name)):
        check_name(what, value)
    return root / KINDS[kind] / group / dataset / protocol / name


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

    def _in(self, kind: str) -> Path:
        """This run's folder of code length ``bits`` in the ``kind`` tree."""
        folder = method_dir(kind, self.group, self.dataset, self.protocol, self.name, self.root)
        return folder / str(self.bits)

    def _seed_path(self, kind: str, suffix: str = "") -> Path:
        """This run's file (or folder) in the ``kind`` tree: ``<bits>/<seed><suffix>``."""
        return self._in(kind) / f"{self.seed}{suffix}"

    @property
    def model_dir(self) -> Path:
        return self._seed_path("models")

    @property
    def model(self) -> Path:
        return self.model_dir / "model.npz"

    @property
    def fit_record(self) -> Path:
        return self.model_dir / "fit.json"

    @property
    def checkpoints(self) -> Path:
        """Where a deep fit keeps its per-epoch checkpoint and log until it is saved."""
        parts = (self.group, self.dataset, self.protocol, self.name, str(self.bits))
        return self.root / CHECKPOINTS / Path(*parts) / str(self.seed)

    @property
    def train_log(self) -> Path:
        """The epoch log of a deep fit, kept with its model."""
        return self.model_dir / "train_log.csv"

    @property
    def codes_dir(self) -> Path:
        return self._seed_path("codes")

    def code_file(self, part: str) -> Path:
        """The packed codes of one part of the split (``query`` or ``database``)."""
        if part not in CODE_PARTS:
            raise ValueError(f"codes are kept for {CODE_PARTS}, not {part!r}")
        return self.codes_dir / f"{part}.npy"

    @property
    def metrics(self) -> Path:
        return self._seed_path("metrics", ".json")

    @property
    def pr_curve(self) -> Path:
        return self._seed_path("precision_recall", ".csv")

    @property
    def p_at_n(self) -> Path:
        return self._seed_path("precision_at_n", ".csv")

    @property
    def map_at_k(self) -> Path:
        return self._seed_path("map_at_k", ".csv")

    @property
    def per_query(self) -> Path:
        return self._seed_path("queries", ".npz")


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
