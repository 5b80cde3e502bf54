"""What the per-query files show besides the verdict, on the main protocol at one code length: the
AP of each query class, and each method's top hits for the seeded example queries."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from usdh.layout import Run
from usdh.report.figures import display_name, example_figures, per_class_figure
from usdh.report.inputs import read_run_queries

__all__ = [
    "load_images",
    "per_class_table",
    "per_query",
    "per_seed",
    "query_figures",
    "shown_bits",
]

#: the per-query arrays that are the same for every seed (the rest are averaged over seeds)
SAME_FOR_EVERY_SEED = {"query", "label", "example_query", "example_top"}


def per_seed(root: Path, df: pd.DataFrame, method: str, bits: int) -> dict[str, np.ndarray]:
    """A method's per-query arrays at one code length on the one protocol of ``df``, stacked
    over its seeds (seeds x queries); ``query``, ``label`` and the examples' arrays, the same for
    every seed, are the first seed's. Rows of the ``settings`` group say so in a ``group``
    column (else: the retrieval table's runs)."""
    rows = df[(df["method"] == method) & (df["bits"] == bits)]
    if rows[["dataset", "protocol"]].drop_duplicates().shape[0] > 1:
        raise ValueError("per-query arrays are compared within one dataset and protocol")
    arrays: dict[str, list[np.ndarray]] = {}
    queries = None
    for r in rows.sort_values("seed").itertuples():
        group = str(getattr(r, "group", "retrieval"))
        run = Run(group, r.dataset, r.protocol, method, bits, int(r.seed), root)
        data = read_run_queries(run, ("query",))
        if queries is not None and not np.array_equal(queries, data["query"]):
            raise ValueError(f"{run.per_query}: the queries differ between seeds")
        queries = data["query"]
        for key, value in data.items():
            arrays.setdefault(key, []).append(value)
    return {
        key: values[0] if key in SAME_FOR_EVERY_SEED else np.stack(values)
        for key, values in arrays.items()
    }


def per_query(root: Path, df: pd.DataFrame, method: str, bits: int) -> dict[str, np.ndarray]:
    """:func:`per_seed`, each array averaged over the seeds."""
    return {
        key: value if key in SAME_FOR_EVERY_SEED else value.mean(axis=0)
        for key, value in per_seed(root, df, method, bits).items()
    }


def load_images(root: Path, dataset: str) -> Any:
    """The prepared dataset (classes and images) when it is on disk, for the figures that show
    class names and thumbnails; None otherwise (a report from metrics alone)."""
    from usdh.data import load_prepared
    from usdh.layout import prepared_dir

    folder = prepared_dir(dataset, root)
    return load_prepared(folder) if (folder / "meta.json").is_file() else None


def shown_bits(part: pd.DataFrame, bits: int) -> int:
    """``bits`` when ``part`` has runs at that length, else its middle length."""
    if bits not in set(part["bits"]):
        bits = int(sorted(part["bits"].unique())[len(part["bits"].unique()) // 2])
    return bits


def per_class_table(
    root: Path, part: pd.DataFrame, classes: Sequence[str] | None, bits: int
) -> pd.DataFrame:
    """Methods x classes: the mean AP (tie-aware, at the protocol's cut-off, %) of each class's
    queries at ``bits``, seeds averaged per query (single-label data; empty otherwise)."""
    rows = {}
    for method in part["method"].drop_duplicates():
        if part[(part["method"] == method) & (part["bits"] == bits)].empty:
            continue
        pq = per_query(root, part, method, bits)
        if "label" not in pq or np.asarray(pq["label"]).ndim != 1:
            return pd.DataFrame()
        labels = np.asarray(pq["label"]).astype(int)
        ap = pd.Series(pq["ap_tie_aware"] * 100).groupby(labels).mean()
        rows[method] = ap
    if not rows:
        return pd.DataFrame()
    table = pd.DataFrame(rows).T.sort_index(axis=1)
    if classes is not None:
        table.columns = [classes[int(c)] for c in table.columns]
    return table


def _examples(root: Path, part: pd.DataFrame, bits: int, images: Any, stem: Path) -> list[Path]:
    """The retrieval examples' figures (none without single-label images on disk)."""
    if images is None or np.asarray(images.labels).ndim != 1:
        return []
    examples, query_ids = {}, None
    for method in part["method"].drop_duplicates():
        pq = per_query(root, part, method, bits)
        if "example_top" in pq:
            examples[method] = (pq["example_query"], pq["example_top"])
            query_ids = pq["query"]
    if not examples:
        return []
    return example_figures(
        examples,
        query_ids,
        np.asarray(images.labels),
        images.image,
        images.classes,
        f"{display_name(part)}: top 10 at {bits} bits",
        stem,
    )


def query_figures(
    root: Path, part: pd.DataFrame, bits: int, figures_dir: Path
) -> tuple[dict[str, pd.DataFrame], dict[str, list[Path]]]:
    """The per-class table and figure and the retrieval examples of ``part`` (the main
    protocol's results) at ``bits``: the tables and the figures written, by kind."""
    dataset, protocol = str(part["dataset"].iloc[0]), str(part["protocol"].iloc[0])
    stem = f"{dataset}_{protocol}_{bits}bits"
    images = load_images(root, dataset)
    classes = images.classes if images is not None else None
    per_class = per_class_table(root, part, classes, bits)
    tables: dict[str, pd.DataFrame] = {}
    figures: dict[str, list[Path]] = {"per_class": []}
    if len(per_class):
        tables["per_class"] = per_class.map(lambda v: f"{v:.2f}").reset_index(names="method")
        figures["per_class"].append(
            per_class_figure(
                per_class,
                f"{display_name(part)}: AP per query class (%), {bits} bits",
                figures_dir / f"per_class_{stem}.png",
            )
        )
    figures["examples"] = _examples(root, part, bits, images, figures_dir / f"examples_{stem}")
    return tables, figures
