"""``python -m usdh compare A [B]``: what changed in the results between two runs of the pipeline.

``A`` and ``B`` are git revisions of this project or folders holding another checkout of it (its
``metrics/`` and ``reports/``); ``B`` defaults to the workspace. Two revisions (or a revision and
the workspace) are compared by DVC's own ``dvc metrics diff``; a folder by ``dvc metrics show`` run
in it, paired file by file with the other side's. Printed:

* per group (retrieval, ablations, classification, calibration), protocol, method and code length:
  the largest and the mean absolute change of each metric over the seeds, in points;
* every verdict cell (``reports/verdict.csv``) whose word (wins / loses / not resolved) or sign
  changed;
* the machines each side ran on (the ``cpu_id`` column of ``reports/results.csv``), since a change
  between two CPU models is expected (README, "Reproducibility: the contract").

Not a pipeline stage: it reads results and writes nothing.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = [
    "HARDWARE",
    "Side",
    "changes",
    "display",
    "hardware_rows",
    "main",
    "metric_pairs",
    "one_side",
    "record_hardware",
    "verdict_changes",
]

#: the metrics summarised by default (fractions, shown in points); ``--metric`` picks others
METRICS = ("mAP_tie_aware", "mAP", "mAP_all_tie_aware", "precision_r2", "accuracy")
#: what names a run in a metrics file; everything else numeric is a metric
IDENTITY = ("dataset", "protocol", "method", "variant", "bits", "seed")
#: a verdict cell's key in reports/verdict.csv (``group``: the retrieval table or a setting of
#: ``settings``; a file written before the settings had only the retrieval table's)
CELL = ("group", "dataset", "protocol", "metric", "bits", "vs")


class CompareError(ValueError):
    """A side that cannot be read: the message says which and why."""


@dataclass(frozen=True)
class Side:
    """One side of the comparison: a git revision, a folder, or (``None``) the workspace."""

    rev: str | None = None
    folder: Path | None = None

    @classmethod
    def parse(cls, text: str | None, root: Path) -> Side:
        if text is None:
            return cls()
        path = Path(text)
        if path.is_dir():
            if not (path / "dvc.yaml").is_file():
                raise CompareError(f"{path} is a folder but not a checkout of this project")
            return cls(folder=path.resolve())
        _git(root, "rev-parse", "--verify", "--quiet", f"{text}^{{commit}}")
        return cls(rev=text)

    def label(self) -> str:
        if self.rev is not None:
            return f"revision {self.rev}"
        return f"folder {self.folder}" if self.folder is not None else "the workspace"

    def read(self, root: Path, relpath: str) -> str | None:
        """A committed file's text on this side (None: not there)."""
        if self.rev is not None:
            try:
                return _git(root, "show", f"{self.rev}:{relpath}")
            except CompareError:
                return None
        path = (self.folder or root) / relpath
        return path.read_text() if path.is_file() else None


def _git(root: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    if out.returncode:
        raise CompareError(
            f"git {' '.join(args)} failed in {root}: {out.stderr.strip() or 'not a revision'}"
        )
    return out.stdout


def _dvc(cwd: Path, *args: str) -> Any:
    exe = Path(sys.executable).with_name("dvc")
    cmd = [str(exe) if exe.exists() else "dvc", *args, "--json"]
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if out.returncode:
        raise CompareError(f"dvc {' '.join(args)} failed in {cwd}: {out.stderr.strip()}")
    return json.loads(out.stdout or "{}")


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"mAP_at": {"1000": x}}`` -> ``{"mAP_at.1000": x}``, as ``dvc metrics diff`` names keys."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _shown(cwd: Path) -> dict[str, dict[str, Any]]:
    """``dvc metrics show`` of a checkout: path -> flat metrics."""
    shown = _dvc(cwd, "metrics", "show")
    data = next(iter(shown.values()), {}).get("data", {}) if shown else {}
    return {path: _flatten(entry.get("data") or {}) for path, entry in data.items()}


def metric_pairs(root: Path, a: Side, b: Side) -> dict[str, dict[str, tuple[Any, Any]]]:
    """path -> key -> (value on side a, value on side b), for every metrics file of either."""
    if a.folder is None and b.folder is None:
        revs = [s.rev for s in (a, b) if s.rev is not None]
        if a.rev is None:  # the workspace against a revision: dvc diffs old -> new
            raise CompareError("give the revision first: compare REV [REV2], the workspace last")
        diff = _dvc(root, "metrics", "diff", *revs, "--all")
        pairs = {
            path: {k: (v.get("old"), v.get("new")) for k, v in keys.items()}
            for path, keys in diff.items()
        }
        _refuse_damaged(pairs, root, (a, b))
        return pairs
    old, new = (_shown(s.folder or root) if s.rev is None else None for s in (a, b))
    if old is None or new is None:
        raise CompareError("a folder is compared with the workspace or another folder")
    out = {}
    for path in sorted(set(old) | set(new)):
        x, y = old.get(path, {}), new.get(path, {})
        out[path] = {k: (x.get(k), y.get(k)) for k in sorted(set(x) | set(y))}
    _refuse_damaged(out, root, (a, b))
    return out


def _fix(relpath: str) -> str:
    """How to get a good copy of the metrics file ``relpath`` back: the stage that writes it."""
    from usdh.layout import GROUPS, Run
    from usdh.report.inputs import rerun, run_fix

    parts = Path(relpath).parts
    if len(parts) == 7 and parts[0] == "metrics" and parts[1] in GROUPS:
        stem = Path(parts[6]).stem
        if parts[5].isdigit() and stem.isdigit():
            group, dataset, protocol, name = parts[1:5]
            return run_fix(Run(group, dataset, protocol, name, int(parts[5]), int(stem)))
    if parts[:2] == ("metrics", "diagnostics"):
        return rerun("diagnose")
    if parts[-1] == "features.json":
        return rerun("classify-features")
    return "rerun the stage that writes it (dvc repro, or dvc pull)"


def _refuse_damaged(
    pairs: Mapping[str, Mapping[str, tuple[Any, Any]]], root: Path, sides: Sequence[Side]
) -> None:
    """A metrics file on disk (the workspace, a folder) that gave DVC no values is truncated,
    empty or not an object: DVC skips it, which would show its runs as on the other side only.
    Refuse it, naming the file and the stage that writes it."""
    from usdh.io import read_json

    for i, side in enumerate(sides):
        if side.rev is not None:
            continue
        for path, keys in pairs.items():
            file = (side.folder or root) / path
            if any(v[i] is not None for v in keys.values()) or not file.is_file():
                continue
            read_json(file, _fix(path), ("dataset",))


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def changes(
    pairs: Mapping[str, Mapping[str, tuple[Any, Any]]], metrics: Sequence[str] = METRICS
) -> pd.DataFrame:
    """Per group, dataset, protocol, method (or variant) and code length, for each of ``metrics``
    present on both sides: the number of runs, the largest absolute change (points) with the seed
    it came from, and the mean absolute change over the runs."""
    rows = []
    for path, keys in pairs.items():
        parts = Path(path).parts
        group = parts[1] if len(parts) > 2 and parts[0] == "metrics" else parts[0]
        ident = {
            k: keys[k][1] if keys[k][1] is not None else keys[k][0] for k in IDENTITY if k in keys
        }
        name = ident.get("variant") or ident.get("method")
        for metric in metrics:
            old, new = keys.get(metric, (None, None))
            if not (_number(old) and _number(new)):
                continue
            rows.append(
                {
                    "group": group,
                    "dataset": ident.get("dataset"),
                    "protocol": ident.get("protocol"),
                    "method": name,
                    "bits": ident.get("bits"),
                    "seed": ident.get("seed"),
                    "metric": metric,
                    "change": (float(new) - float(old)) * 100,
                }
            )
    columns = ["group", "dataset", "protocol", "method", "bits", "metric"]
    if not rows:
        return pd.DataFrame(columns=[*columns, "runs", "largest", "at_seed", "mean"])
    df = pd.DataFrame(rows)
    df["abs"] = df["change"].abs()
    out = []
    for key, part in df.groupby(columns, sort=True, dropna=False):
        top = part.loc[part["abs"].idxmax()]
        out.append(
            {
                **dict(zip(columns, key, strict=True)),
                "runs": len(part),
                "largest": float(top["change"]),
                "at_seed": top["seed"],
                "mean": float(part["abs"].mean()),
            }
        )
    return pd.DataFrame(out)


def _csv(text: str, where: str, columns: Sequence[str] = ()) -> pd.DataFrame:
    """A report table's text, with ``columns``; else one error naming it (``where``)."""
    from usdh.io import reader_said

    fix = "rerun the report there (dvc repro -s report)"
    try:
        df = pd.read_csv(io.StringIO(text))
    except (ValueError, pd.errors.ParserError) as exc:
        raise CompareError(f"{where} cannot be read ({reader_said(exc)}); {fix}") from exc
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise CompareError(f"{where} lacks the column(s) {', '.join(missing)}; {fix}")
    return df


def verdict_changes(
    old: str | None,
    new: str | None,
    names: tuple[str, str] = ("A's reports/verdict.csv", "B's reports/verdict.csv"),
) -> pd.DataFrame:
    """The verdict cells (reports/verdict.csv) whose word or sign differs between two sides, and
    those on one side only; ``names`` says where each text came from (for a damaged one)."""
    if old is None or new is None:
        return pd.DataFrame()
    keep = [*CELL, "difference", "verdict"]
    a, b = (
        _csv(text, name, [c for c in keep if c != "group"])
        for text, name in zip((old, new), names, strict=True)
    )
    a, b = (t if "group" in t else t.assign(group="retrieval") for t in (a, b))
    merged = a[keep].merge(b[keep], on=list(CELL), how="outer", suffixes=("_a", "_b"))
    sign = (merged["difference_a"] > 0) != (merged["difference_b"] > 0)
    moved = (merged["verdict_a"] != merged["verdict_b"]) | sign
    return merged[moved].reset_index(drop=True)


def _machines(text: str | None, where: str = "reports/results.csv") -> str:
    if text is None:
        return "no reports/results.csv"
    df = _csv(text, where)
    if "cpu_id" not in df:
        return "not recorded (results.csv has no cpu_id column)"
    kinds = df["cpu_id"].fillna("not recorded").value_counts()
    return "; ".join(f"{k} ({n} rows)" for k, n in kinds.items())


def _table(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False, disable_numparse=True) if len(df) else "(none)"


def display(table: pd.DataFrame) -> pd.DataFrame:
    """One row per group, protocol, method and code length; per metric, 'largest (seed s) /
    mean' of the change in points."""
    if not len(table):
        return table
    t = table.assign(
        cell=[
            f"{r.largest:+.2f} (seed {'-' if pd.isna(r.at_seed) else int(r.at_seed)}) / "
            f"{r.mean:.2f}"
            for r in table.itertuples()
        ],
        bits=table["bits"].map(lambda b: "-" if pd.isna(b) else str(int(b))),
    )
    keys = ["group", "dataset", "protocol", "method", "bits"]
    grid = t.pivot_table(index=keys, columns="metric", values="cell", aggfunc="first")
    runs = t.groupby(keys)["runs"].max()
    grid.insert(0, "runs", runs.astype(str))
    return grid.fillna("-").reset_index()


def one_side(pairs: Mapping[str, Mapping[str, tuple[Any, Any]]]) -> tuple[list[str], list[str]]:
    """The metrics files on side A only and on side B only."""
    a = [p for p, keys in pairs.items() if all(v[1] is None for v in keys.values())]
    b = [p for p, keys in pairs.items() if all(v[0] is None for v in keys.values())]
    return a, b


#: reports/hardware.csv: per method, the largest change of any run between two machines'
#: regenerations (``--record``); the report's Hardware section reads it
HARDWARE = Path("reports") / "hardware.csv"
HARDWARE_COLUMNS = (
    "a",
    "b",
    "a_machine",
    "b_machine",
    "features",
    "method",
    "largest",
    "where",
    "runs",
    "verdict_cells_changed",
)


def hardware_rows(
    table: pd.DataFrame,
    verdict: pd.DataFrame | None,
    sides: tuple[str, str],
    machines: tuple[str, str],
    features: str,
) -> list[dict[str, Any]]:
    """One row per method of the retrieval group: the largest change of any of its runs' mAP
    figures (the ``mAP*`` metrics of ``table``) between the two sides, and where it was;
    ``verdict``: the verdict
    cells that changed (None: a side has no reports/verdict.csv)."""
    part = table[(table["group"] == "retrieval") & table["metric"].str.startswith("mAP")]
    rows = []
    for method, own in part.groupby("method", sort=True):
        top = own.loc[own["largest"].abs().idxmax()]
        rows.append(
            {
                "a": sides[0],
                "b": sides[1],
                "a_machine": machines[0],
                "b_machine": machines[1],
                "features": features,
                "method": method,
                "largest": round(float(top["largest"]), 4),
                "where": f"{top['protocol']}, {int(top['bits'])} bits, seed "
                f"{int(top['at_seed'])}, {top['metric']}",
                "runs": int(own["runs"].max()),
                "verdict_cells_changed": None if verdict is None else len(verdict),
            }
        )
    return rows


def record_hardware(rows: list[dict[str, Any]], path: Path = HARDWARE) -> None:
    """Add ``rows`` to the table (atomically), replacing those of the same two sides."""
    from usdh.io import atomic_path

    old = pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=HARDWARE_COLUMNS)
    if rows:
        pairs = {(r["a"], r["b"]) for r in rows}
        old = old[[(a, b) not in pairs for a, b in zip(old["a"], old["b"], strict=True)]]
    new = pd.concat([old, pd.DataFrame(rows, columns=HARDWARE_COLUMNS)], ignore_index=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        new.to_csv(tmp, index=False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m usdh compare", description=__doc__.split("\n")[0]
    )
    parser.add_argument("a", help="a git revision, or a folder holding another checkout")
    parser.add_argument("b", nargs="?", help="the same (default: the workspace)")
    parser.add_argument(
        "--metric", action="append", help=f"a metric to summarise (default: {', '.join(METRICS)})"
    )
    parser.add_argument("--all", action="store_true", help="also the runs that did not change")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--record",
        metavar="FEATURES",
        help=f"add the per-method largest change to {HARDWARE} (the two sides must be the "
        "regenerations of two machines; FEATURES says how the features were computed)",
    )
    parser.add_argument(
        "--machines",
        nargs=2,
        metavar=("A", "B"),
        help="the machines of the two sides, where results.csv does not record them",
    )
    args = parser.parse_args(argv)
    root = Path.cwd()
    try:
        a, b = Side.parse(args.a, root), Side.parse(args.b, root)
        pairs = metric_pairs(root, a, b)
        table = changes(pairs, args.metric or METRICS)
        verdicts = [s.read(root, "reports/verdict.csv") for s in (a, b)]
        names = tuple(f"reports/verdict.csv of {s.label()}" for s in (a, b))
        verdict = verdict_changes(*verdicts, names=names)
        machines = {
            s.label(): _machines(
                s.read(root, "reports/results.csv"), f"reports/results.csv of {s.label()}"
            )
            for s in (a, b)
        }
    except (CompareError, OSError, ValueError) as exc:
        print(f"usdh compare: error: {exc}", file=sys.stderr)
        return 2
    if args.machines:
        machines = dict(zip(machines, args.machines, strict=True))
    if args.record:
        if a.rev is None or b.rev is None:
            print("usdh compare: error: --record compares two git revisions", file=sys.stderr)
            return 2
        names = (machines[a.label()], machines[b.label()])
        known = None if None in verdicts else verdict
        # every mAP figure the runs hold (mAP@k, tie-aware or not, over the whole database)
        keys = sorted({k for run in pairs.values() for k in run if k.startswith("mAP")})
        every = changes(pairs, keys)
        rows = hardware_rows(every, known, (a.rev, b.rev), names, args.record)
        record_hardware(rows, root / HARDWARE)
        print(f"recorded {len(rows)} methods in {HARDWARE}")
    if not args.all and len(table):
        table = table[table["largest"].abs() > 0]
    only_a, only_b = one_side(pairs)
    if args.json:
        out = {
            "machines": machines,
            "only_in_a": only_a,
            "only_in_b": only_b,
            "changes": table.to_dict(orient="records"),
            "verdict": verdict.to_dict(orient="records"),
        }
        print(json.dumps(out, indent=1, default=str))
        return 0
    print(f"A: {a.label()}, ran on {machines[a.label()]}")
    print(f"B: {b.label()}, ran on {machines[b.label()]}")
    print(f"metrics files on one side only: {len(only_a)} in A, {len(only_b)} in B")
    print("\n## Change of each metric, B minus A (points): largest (its seed) / mean |change|\n")
    print(_table(display(table)))
    print("\n## Verdict cells whose word or sign changed\n")
    print(_table(verdict))
    return 0


if __name__ == "__main__":
    sys.exit(main())
