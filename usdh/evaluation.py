"""Scoring saved codes: every retrieval metric, written as JSON plus CSV curves for dvc plots, and
each query's figures (``queries/...npz``) for query-by-query comparisons."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from usdh.codes import check_codes
from usdh.io import atomic_path, save_json
from usdh.layout import Run
from usdh.metrics import evaluate_retrieval

__all__ = ["evaluate_run"]


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


def evaluate_run(
    labels: np.ndarray,
    split: Mapping[str, np.ndarray],
    run: Run,
    topk: int | None,
    ns: list[int],
    radius: int,
    record: Mapping[str, Any],
) -> dict[str, Any]:
    """Score a run's saved codes; write its metrics JSON and its PR and P@N curves."""
    q = check_codes(np.load(run.codes_dir / "query.npy"), "query codes")
    db = check_codes(np.load(run.codes_dir / "database.npy"), "database codes")
    n_db = len(split["database"])
    ns = [n for n in ns if n <= n_db]
    result = evaluate_retrieval(
        q, db, labels[split["query"]], labels[split["database"]], topk=topk, ns=ns, radius=radius
    )
    pr = result.pop("pr_curve")
    pn = result.pop("precision_at_n")
    per_query = result.pop("per_query")
    run.per_query.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(run.per_query) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, query=np.asarray(split["query"]), **per_query)
    _write_csv(
        run.pr_curve,
        ["radius", "precision", "recall"],
        [[r, p, c] for r, p, c in zip(pr["radius"], pr["precision"], pr["recall"], strict=True)],
    )
    _write_csv(
        run.p_at_n,
        ["n", "precision", "precision_tie_aware"],
        [list(t) for t in zip(pn["n"], pn["precision"], pn["precision_tie_aware"], strict=True)],
    )
    metrics = {**record, **result}
    metrics["precision_at_n"] = dict(zip(map(str, pn["n"]), pn["precision"], strict=True))
    save_json(run.metrics, metrics)
    return metrics
