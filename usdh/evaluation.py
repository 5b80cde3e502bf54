"""Scoring saved codes: every retrieval metric, written as JSON plus CSV curves for dvc plots, and
each query's figures (``queries/...npz``) for query-by-query and per-class comparisons, with the
top hits of a seeded handful of queries (the report's retrieval examples)."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from usdh.codes import check_codes
from usdh.io import atomic_paths, json_text, unreadable
from usdh.layout import Run
from usdh.metrics import evaluate_retrieval
from usdh.search import hamming_rank

__all__ = ["Curves", "evaluate_run", "example_queries", "log_grid", "read_codes"]

#: the PR curve file's columns (``nonempty``: the share of queries whose lookup finds something)
PR_COLUMNS = ("radius", "precision", "recall", "nonempty")


def log_grid(lo: int, hi: int, points: int) -> list[int]:
    """About ``points`` integers spaced evenly in log from ``lo`` to ``hi`` (both included)."""
    if not 1 <= lo <= hi or points < 2:
        raise ValueError(f"a log grid needs 1 <= lo <= hi, points >= 2; got {lo}, {hi}, {points}")
    return sorted({round(float(v)) for v in np.geomspace(lo, hi, points)})


def example_queries(n_query: int, count: int, seed: int) -> np.ndarray:
    """The query positions shown as retrieval examples: the same for every method of a protocol."""
    count = min(count, n_query)
    rng = np.random.default_rng([seed, 4])
    return np.sort(rng.choice(n_query, size=count, replace=False)).astype(np.int64)


@dataclass(frozen=True)
class Curves:
    """What is scored besides the protocol's cut-off: precision@N at ``listed`` N and mAP@k at
    ``map_listed`` k (the metrics file, so that every protocol reports the same cut-offs), the
    same on log grids (N up to ``p_max``: the P@N curve; k from ``k_min`` to the whole database:
    the mAP@k curve), and the top ``top`` hits of ``examples`` seeded queries."""

    listed: tuple[int, ...] = (100, 500, 1000)
    map_listed: tuple[int, ...] = (1000,)
    p_max: int = 5000
    p_points: int = 25
    k_min: int = 100
    k_points: int = 16
    examples: int = 8
    top: int = 10
    seed: int = 0

    @classmethod
    def from_params(cls, ev: Mapping[str, Any]) -> Curves:
        """From params.yaml's ``evaluation`` section (a missing curve knob keeps its default)."""
        d = cls()
        pc, mc = ev.get("precision_curve") or {}, ev.get("map_curve") or {}
        ex = ev.get("examples") or {}
        return cls(
            tuple(int(n) for n in ev.get("precision_at", d.listed)),
            tuple(int(k) for k in ev.get("map_at", d.map_listed)),
            int(pc.get("max_n", d.p_max)),
            int(pc.get("points", d.p_points)),
            int(mc.get("min_k", d.k_min)),
            int(mc.get("points", d.k_points)),
            int(ex.get("queries", d.examples)),
            int(ex.get("top", d.top)),
            int(ex.get("seed", d.seed)),
        )

    def ns(self, n_db: int) -> list[int]:
        """The listed N and the dense grid from 1, those within the database."""
        dense = log_grid(1, min(self.p_max, n_db), self.p_points) if n_db > 1 else [1]
        return sorted({n for n in self.listed if n <= n_db} | set(dense))

    def ks(self, n_db: int) -> list[int]:
        """The listed k and the mAP@k grid from ``min_k`` to the whole database."""
        lo = min(self.k_min, n_db)
        dense = log_grid(lo, n_db, self.k_points) if lo < n_db else [n_db]
        return sorted({k for k in self.map_listed if k <= n_db} | set(dense))


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.write_text(buf.getvalue())


def _write_per_query(path: Path, **arrays: np.ndarray) -> None:
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def read_codes(run: Run, part: str) -> np.ndarray:
    """The run's saved codes of ``part`` (query or database), checked to be ``run.bits`` wide:
    codes of another length under this run's path would be scored under its name."""
    path = run.code_file(part)
    fix = f"fit and encode the run again ({run.name} {run.bits} bits seed {run.seed}, its stage)"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; {fix}")
    try:
        codes = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise unreadable(path, exc, fix) from exc
    codes = check_codes(codes, f"{part} codes ({path})")
    if codes.shape[1] * 8 != run.bits:
        raise ValueError(
            f"{path} holds {codes.shape[1] * 8}-bit codes, but its path is that of the "
            f"{run.bits}-bit run; {fix}"
        )
    return codes


def evaluate_run(
    labels: np.ndarray,
    split: Mapping[str, np.ndarray],
    run: Run,
    topk: int | None,
    curves: Curves,
    radius: int,
    record: Mapping[str, Any],
) -> dict[str, Any]:
    """Score a run's saved codes; write its metrics JSON, its PR, P@N and mAP@k curves, and its
    per-query file (APs, lookup, each query's label and the examples' top hits)."""
    q, db = read_codes(run, "query"), read_codes(run, "database")
    n_db = len(split["database"])
    query_labels = labels[split["query"]]
    result = evaluate_retrieval(
        q,
        db,
        query_labels,
        labels[split["database"]],
        topk=topk,
        ns=curves.ns(n_db),
        radius=radius,
        ks=curves.ks(n_db),
    )
    pr = result.pop("pr_curve")
    pn = result.pop("precision_at_n")
    mk = result.pop("map_at_k")
    per_query = result.pop("per_query")
    shown = example_queries(len(q), curves.examples, curves.seed)
    top, _ = hamming_rank(q[shown], db, min(curves.top, n_db))
    metrics = {**record, **result}
    listed = dict(zip(pn["n"], pn["precision"], strict=True))
    metrics["precision_at_n"] = {str(n): listed[n] for n in curves.listed if n in listed}
    for key in ("mAP", "mAP_tie_aware"):
        at = dict(zip(mk["k"], mk[key], strict=True))
        metrics[f"{key}_at"] = {str(k): at[k] for k in curves.map_listed if k in at}
    # the five files together or none: a metrics file never sits beside another run's curves
    files = (run.per_query, run.pr_curve, run.p_at_n, run.map_at_k, run.metrics)
    with atomic_paths(*files) as (queries, pr_file, pn_file, mk_file, metrics_file):
        _write_per_query(
            queries,
            query=np.asarray(split["query"]),
            label=query_labels,
            example_query=shown,
            example_top=np.asarray(split["database"])[top],
            **per_query,
        )
        _write_csv(
            pr_file,
            list(PR_COLUMNS),
            [list(t) for t in zip(*(pr[c] for c in PR_COLUMNS), strict=True)],
        )
        _write_csv(
            pn_file,
            ["n", "precision", "precision_tie_aware"],
            [
                list(t)
                for t in zip(pn["n"], pn["precision"], pn["precision_tie_aware"], strict=True)
            ],
        )
        _write_csv(
            mk_file,
            ["k", "mAP", "mAP_tie_aware"],
            [list(t) for t in zip(mk["k"], mk["mAP"], mk["mAP_tie_aware"], strict=True)],
        )
        metrics_file.write_text(json_text(metrics))
    return metrics
