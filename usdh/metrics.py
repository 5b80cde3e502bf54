"""Retrieval metrics over packed codes: mAP (index or tie-aware), PR by radius, precision@N.

Contract, shared by every function here:

* Ranking is by Hamming distance; with ``ties="index"`` equal distances are ordered by ascending
  database index (the convention of DeepBit's evaluation code and most deep-hashing repositories).
* ``ties="average"`` gives the expected value over all orders of equal-distance items, computed
  exactly (McSherry and Najork, "Computing information retrieval performance measures efficiently
  in the presence of tied scores", ECIR 2008). Short codes tie a lot, and the index order is
  arbitrary, so this is the figure that does not depend on how the database happens to be stored.
* AP@k sums precision at each relevant item ranked within the top k and divides by the number of
  relevant items within the top k; a query with none scores 0. ``topk=None`` means the whole
  database (ordinary AP).
* Labels are an integer vector (single-label: relevant means same label) or a 0/1 matrix
  (multi-label: relevant means at least one shared label). A multi-label query without any
  label is refused (nothing could be relevant to it); a database item without one is never
  relevant.
* Hash lookup within a radius (one figure, ``precision_within_radius``) averages over all queries,
  and a query with nothing inside the radius has precision 0, as in the evaluations of SH and ITQ;
  the share of such empty lookups is reported beside it.
* The precision-recall curve by radius leaves a query out of a radius' precision while its lookup
  is empty there (it has no precision there; counting it as 0 made short-code curves start at
  (0, 0)); a radius at which every lookup is empty has no precision (NaN). Recall averages over all
  queries.

All metrics come from one pass per query in compiled code: per-radius counts of all and of relevant
items, plus, for index tie-breaking, a running count in database order. Nothing is sorted.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import gammaln

from usdh import _kernels
from usdh.codes import to_words
from usdh.search import check_pair

__all__ = [
    "average_precisions",
    "evaluate_retrieval",
    "mean_average_precision",
    "precision_at_n",
    "precision_recall_curve",
    "precision_within_radius",
    "relevance_masks",
]

Ties = Literal["index", "average"]


def relevance_masks(
    query_labels: ArrayLike, db_labels: ArrayLike, n_query: int, n_db: int
) -> tuple[NDArray[np.uint64], NDArray[np.uint64]]:
    """Encode labels as bit masks so that relevant <=> the masks share a set bit.

    Single-label vectors become one-hot masks over the union of labels seen in either set, so the
    compiled kernels need only one relevance rule for both kinds of labels.
    """
    ql = np.asarray(query_labels)
    dl = np.asarray(db_labels)
    if ql.ndim != dl.ndim or ql.ndim not in (1, 2):
        raise ValueError(
            f"labels must both be 1-D integer vectors (single-label) or both 2-D 0/1 matrices "
            f"(multi-label); got query labels of shape {ql.shape} and database labels of shape "
            f"{dl.shape}"
        )
    if ql.shape[0] != n_query:
        raise ValueError(f"got {ql.shape[0]} query labels for {n_query} query codes")
    if dl.shape[0] != n_db:
        raise ValueError(f"got {dl.shape[0]} database labels for {n_db} database codes")
    if ql.ndim == 1:
        for name, lab in (("query_labels", ql), ("db_labels", dl)):
            if lab.dtype.kind not in "iub":
                raise ValueError(
                    f"{name} must be integer class labels, got dtype {lab.dtype}; for multi-label "
                    f"data pass a 2-D 0/1 matrix"
                )
        classes, inverse = np.unique(np.concatenate([ql, dl]), return_inverse=True)
        onehot = np.zeros((inverse.size, classes.size), dtype=bool)
        onehot[np.arange(inverse.size), inverse] = True
        qm, dm = onehot[:n_query], onehot[n_query:]
    else:
        if ql.shape[1] != dl.shape[1]:
            raise ValueError(
                f"query labels have {ql.shape[1]} classes but database labels have {dl.shape[1]}"
            )
        for name, lab in (("query_labels", ql), ("db_labels", dl)):
            if lab.dtype.kind not in "biuf" or not np.isin(lab, (0, 1)).all():
                raise ValueError(f"{name} must be a 0/1 matrix for multi-label data")
        qm, dm = ql.astype(bool), dl.astype(bool)
        _check_labelled_queries(qm)
    n_words = -(-qm.shape[1] // 64)

    def pack(m: NDArray[np.bool_]) -> NDArray[np.uint64]:
        padded = np.zeros((m.shape[0], n_words * 64), dtype=bool)
        padded[:, : m.shape[1]] = m
        return np.ascontiguousarray(np.packbits(padded, axis=1).view(np.uint64))

    return pack(qm), pack(dm)


def _check_labelled_queries(qm: NDArray[np.bool_]) -> None:
    """Refuse multi-label queries without any label: nothing can be relevant to them, so their
    AP would be a silent 0 pulling the mean down. (A database item without labels is fine: it
    is simply never relevant.)"""
    empty = np.flatnonzero(~qm.any(axis=1))
    if empty.size:
        first = ", ".join(map(str, empty[:5].tolist())) + (", ..." if empty.size > 5 else "")
        raise ValueError(
            f"{empty.size} of {qm.shape[0]} queries have no label (an all-zero row of "
            f"query_labels; rows {first}): such a query can have no relevant item, so its AP "
            f"would be a meaningless 0; drop those queries or fix their labels"
        )


def _check_ties(ties: str) -> None:
    if ties not in ("index", "average"):
        raise ValueError(f"ties must be 'index' or 'average', got {ties!r}")


def _check_cutoffs(values: Sequence[int | None], n_db: int, what: str) -> NDArray[np.int64]:
    out = []
    for v in values:
        if v is None:
            out.append(n_db)
            continue
        if isinstance(v, bool) or not isinstance(v, int | np.integer):
            raise ValueError(f"{what} must be a positive integer or None, got {v!r}")
        if v < 1:
            raise ValueError(f"{what} must be at least 1, got {v}")
        if v > n_db:
            raise ValueError(
                f"{what}={v} is larger than the database ({n_db} codes); use {what} <= {n_db} "
                f"or None for the whole database"
            )
        out.append(int(v))
    return np.asarray(out, dtype=np.int64)


@lru_cache(maxsize=4)
def _tables(n: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Harmonic numbers H(0..n) and log(m!) for m = 0..n, for the tie-aware formulas."""
    harm = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, n + 1))])
    lgam = gammaln(np.arange(n + 1) + 1.0)
    return harm, lgam


class _Prepared:
    """Validated inputs in the form the kernels take, reused across metrics."""

    def __init__(
        self,
        query_codes: ArrayLike,
        db_codes: ArrayLike,
        query_labels: ArrayLike,
        db_labels: ArrayLike,
    ) -> None:
        q, db = check_pair(query_codes, db_codes)
        self.n_bits = q.shape[1] * 8
        self.n_query, self.n_db = q.shape[0], db.shape[0]
        self.qlab, self.dblab = relevance_masks(query_labels, db_labels, q.shape[0], db.shape[0])
        self.qw, self.dbw = to_words(q), to_words(db)

    def index_stats(
        self, cutoffs: NDArray[np.int64]
    ) -> tuple[NDArray[np.float64], NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
        return _kernels.index_order_stats(
            self.qw, self.dbw, self.qlab, self.dblab, self.n_bits, cutoffs
        )

    def radius_counts(self) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        return _kernels.radius_counts(self.qw, self.dbw, self.qlab, self.dblab, self.n_bits)


def _ap_from_counts(
    n_all: NDArray[np.int64], n_rel: NDArray[np.int64], cutoffs: NDArray[np.int64]
) -> NDArray[np.float64]:
    harm, lgam = _tables(int(n_all[0].sum()) if n_all.size else 0)
    return _kernels.tie_aware_ap(n_all, n_rel, cutoffs, harm, lgam)


def _ap_index(prec_sum: NDArray[np.float64], hits: NDArray[np.int64]) -> NDArray[np.float64]:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(hits > 0, prec_sum / np.maximum(hits, 1), 0.0)


def _precision_at(
    n_all: NDArray[np.int64], n_rel: NDArray[np.int64], ns: NDArray[np.int64]
) -> NDArray[np.float64]:
    """Expected precision@N when tied items are in random order: (n_q, len(ns))."""
    cum_all = np.cumsum(n_all, axis=1)
    cum_rel = np.cumsum(n_rel, axis=1)
    out = np.empty((n_all.shape[0], ns.size))
    rows = np.arange(n_all.shape[0])
    for c, n in enumerate(ns):
        # r: the radius whose group contains position n
        r = np.argmax(cum_all >= n, axis=1)
        before_all = cum_all[rows, r] - n_all[rows, r]
        before_rel = cum_rel[rows, r] - n_rel[rows, r]
        frac = n_rel[rows, r] / np.maximum(n_all[rows, r], 1)
        out[:, c] = (before_rel + (n - before_all) * frac) / n
    return out


def average_precisions(
    query_codes: ArrayLike,
    db_codes: ArrayLike,
    query_labels: ArrayLike,
    db_labels: ArrayLike,
    topk: int | None = None,
    ties: Ties = "index",
) -> NDArray[np.float64]:
    """AP@topk of every query, shape (n_query,); see the module docstring for the contract."""
    _check_ties(ties)
    data = _Prepared(query_codes, db_codes, query_labels, db_labels)
    cutoffs = _check_cutoffs([topk], data.n_db, "topk")
    if data.n_query == 0:
        return np.zeros(0)
    if ties == "index":
        prec_sum, hits, _, _ = data.index_stats(cutoffs)
        return _ap_index(prec_sum, hits)[:, 0]
    n_all, n_rel = data.radius_counts()
    return _ap_from_counts(n_all, n_rel, cutoffs)[:, 0]


def mean_average_precision(
    query_codes: ArrayLike,
    db_codes: ArrayLike,
    query_labels: ArrayLike,
    db_labels: ArrayLike,
    topk: int | None = None,
    ties: Ties = "index",
) -> float:
    """mAP@topk (``topk=None``: over the whole database); see the module docstring."""
    aps = average_precisions(query_codes, db_codes, query_labels, db_labels, topk, ties)
    if aps.size == 0:
        raise ValueError("query_codes is empty; mAP needs at least one query")
    return float(aps.mean())


def precision_recall_curve(
    query_codes: ArrayLike, db_codes: ArrayLike, query_labels: ArrayLike, db_labels: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Precision and recall of Hamming-radius lookup, one point per radius 0..n_bits.

    Precision averages over the queries whose lookup within the radius is not empty (NaN where
    every lookup is empty); recall averages over all queries (0 for a query with no relevant item
    in the database).
    """
    data = _Prepared(query_codes, db_codes, query_labels, db_labels)
    n_all, n_rel = data.radius_counts()
    precision, recall, _ = _pr_from_counts(n_all, n_rel)
    return precision, recall


def _pr_from_counts(
    n_all: NDArray[np.int64], n_rel: NDArray[np.int64]
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Precision (over non-empty lookups), recall and the share of non-empty lookups, by radius."""
    if n_all.shape[0] == 0:
        raise ValueError("query_codes is empty; the curve needs at least one query")
    retrieved = np.cumsum(n_all, axis=1)
    hits = np.cumsum(n_rel, axis=1)
    total = hits[:, -1:]
    found = retrieved > 0
    n_found = found.sum(axis=0)
    p_sum = np.where(found, hits / np.maximum(retrieved, 1), 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(n_found > 0, p_sum / np.maximum(n_found, 1), np.nan)
    recall = np.where(total > 0, hits / np.maximum(total, 1), 0.0)
    return precision, recall.mean(axis=0), n_found / n_all.shape[0]


def precision_within_radius(
    query_codes: ArrayLike,
    db_codes: ArrayLike,
    query_labels: ArrayLike,
    db_labels: ArrayLike,
    r: int = 2,
) -> float:
    """Mean precision of hash lookup within Hamming radius ``r`` over all queries (an empty
    lookup counts as 0, the convention of the SH and ITQ evaluations)."""
    data = _Prepared(query_codes, db_codes, query_labels, db_labels)
    if not _is_radius(r, data.n_bits):
        raise ValueError(f"r must be an integer radius in 0..{data.n_bits}, got {r!r}")
    if data.n_query == 0:
        raise ValueError("query_codes is empty; the lookup needs at least one query")
    n_all, n_rel = data.radius_counts()
    return float(_lookup(n_all, n_rel, int(r))[0].mean())


def precision_at_n(
    query_codes: ArrayLike,
    db_codes: ArrayLike,
    query_labels: ArrayLike,
    db_labels: ArrayLike,
    ns: Sequence[int] = (100, 500, 1000),
    ties: Ties = "index",
) -> NDArray[np.float64]:
    """Mean precision of the top N ranked items, one value per N in ``ns``."""
    _check_ties(ties)
    data = _Prepared(query_codes, db_codes, query_labels, db_labels)
    cut = _check_cutoffs(list(ns), data.n_db, "N")
    if data.n_query == 0:
        raise ValueError("query_codes is empty; precision@N needs at least one query")
    if ties == "index":
        _, hits, _, _ = data.index_stats(cut)
        return (hits / cut).mean(axis=0)
    n_all, n_rel = data.radius_counts()
    return _precision_at(n_all, n_rel, cut).mean(axis=0)


def evaluate_retrieval(
    query_codes: ArrayLike,
    db_codes: ArrayLike,
    query_labels: ArrayLike,
    db_labels: ArrayLike,
    topk: int | None = None,
    ns: Sequence[int] = (),
    radius: int = 2,
    ks: Sequence[int | None] = (),
) -> dict[str, Any]:
    """Every metric the reports need, from one pass over the database per query.

    Returns mAP at ``topk`` and over the whole database, each with index and tie-aware ties,
    precision and recall within ``radius`` (precision over all queries, an empty lookup counting
    0, and over the non-empty lookups only) and the share of queries whose lookup within it finds
    nothing (``empty_r<radius>``), the PR curve by radius, precision@N at ``ns`` and mAP@k at
    ``ks`` (both tie rules), and ``per_query``: each query's APs and lookup figures (arrays of
    ``n_query``), so methods can be compared query by query.
    """
    data = _Prepared(query_codes, db_codes, query_labels, db_labels)
    if data.n_query == 0:
        raise ValueError("query_codes is empty; evaluation needs at least one query")
    if not _is_radius(radius, data.n_bits):
        raise ValueError(
            f"radius must be an integer Hamming radius in 0..{data.n_bits}, got {radius!r}"
        )
    k = _check_cutoffs([topk], data.n_db, "topk")[0]
    n_list = _check_cutoffs(list(ns), data.n_db, "N")
    k_list = _check_cutoffs(list(ks), data.n_db, "k")
    cutoffs = np.concatenate([[k, data.n_db], n_list, k_list]).astype(np.int64)
    prec_sum, hits, n_all, n_rel = data.index_stats(cutoffs)
    ap_index = _ap_index(prec_sum[:, :2], hits[:, :2])
    ap_ties = _ap_from_counts(n_all, n_rel, cutoffs[:2])
    at_n = slice(2, 2 + n_list.size)
    at_k = slice(2 + n_list.size, cutoffs.size)
    precision, recall, found_share = _pr_from_counts(n_all, n_rel)
    q_precision, q_recall, q_found = _lookup(n_all, n_rel, radius)
    return {
        "topk": int(k),
        "mAP": float(ap_index[:, 0].mean()),
        "mAP_tie_aware": float(ap_ties[:, 0].mean()),
        "mAP_all": float(ap_index[:, 1].mean()),
        "mAP_all_tie_aware": float(ap_ties[:, 1].mean()),
        f"precision_r{radius}": float(q_precision.mean()),
        f"precision_r{radius}_nonempty": (
            float(q_precision[q_found].mean()) if q_found.any() else None
        ),
        f"recall_r{radius}": float(recall[radius]),
        f"empty_r{radius}": float(1.0 - q_found.mean()),
        "pr_curve": {
            "radius": list(range(data.n_bits + 1)),
            "precision": precision.tolist(),
            "recall": recall.tolist(),
            "nonempty": found_share.tolist(),
        },
        "precision_at_n": {
            "n": n_list.tolist(),
            "precision": (hits[:, at_n] / np.maximum(n_list, 1)).mean(axis=0).tolist(),
            "precision_tie_aware": _precision_at(n_all, n_rel, n_list).mean(axis=0).tolist(),
        },
        "map_at_k": {
            "k": k_list.tolist(),
            "mAP": _ap_index(prec_sum[:, at_k], hits[:, at_k]).mean(axis=0).tolist(),
            "mAP_tie_aware": _ap_from_counts(n_all, n_rel, k_list).mean(axis=0).tolist(),
        },
        "n_query": data.n_query,
        "n_db": data.n_db,
        "n_bits": data.n_bits,
        "per_query": _per_query(ap_index, ap_ties, radius, q_precision, q_recall, q_found),
    }


def _is_radius(r: Any, n_bits: int) -> bool:
    """Whether ``r`` is an integer Hamming radius in 0..n_bits (a bool is not)."""
    return not isinstance(r, bool) and isinstance(r, int | np.integer) and 0 <= r <= n_bits


def _per_query(
    ap_index: NDArray[np.float64],
    ap_ties: NDArray[np.float64],
    radius: int,
    q_precision: NDArray[np.float64],
    q_recall: NDArray[np.float64],
    q_found: NDArray[np.bool_],
) -> dict[str, NDArray[Any]]:
    """``evaluate_retrieval``'s ``per_query``: each query's APs (at topk and over the whole
    database, both tie rules) and its lookup figures within ``radius``."""
    return {
        "ap": ap_index[:, 0],
        "ap_tie_aware": ap_ties[:, 0],
        "ap_all": ap_index[:, 1],
        "ap_all_tie_aware": ap_ties[:, 1],
        f"precision_r{radius}": q_precision,
        f"recall_r{radius}": q_recall,
        f"found_r{radius}": q_found,
    }


def _lookup(
    n_all: NDArray[np.int64], n_rel: NDArray[np.int64], radius: int
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
    """Per query: precision and recall of the lookup within ``radius`` (precision 0 when it finds
    nothing, as in ``precision_within_radius``) and whether it found anything."""
    retrieved = n_all[:, : radius + 1].sum(axis=1)
    hits = n_rel[:, : radius + 1].sum(axis=1)
    total = n_rel.sum(axis=1)
    precision = np.where(retrieved > 0, hits / np.maximum(retrieved, 1), 0.0)
    recall = np.where(total > 0, hits / np.maximum(total, 1), 0.0)
    return precision, recall, retrieved > 0
