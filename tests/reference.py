"""Independent brute-force references for search and metrics: slow, obvious, and sort-based."""

from __future__ import annotations

import itertools

import numpy as np


def distances(q: np.ndarray, db: np.ndarray) -> np.ndarray:
    """Hamming distances by unpacking to bits and counting mismatches."""
    qb = np.unpackbits(q, axis=1).astype(bool)
    db_b = np.unpackbits(db, axis=1).astype(bool)
    return (qb[:, None, :] != db_b[None, :, :]).sum(-1)


def relevance(ql: np.ndarray, dl: np.ndarray) -> np.ndarray:
    """(n_query, n_db) boolean relevance: same label, or at least one shared label."""
    if ql.ndim == 1:
        return ql[:, None] == dl[None, :]
    return (ql.astype(bool)[:, None, :] & dl.astype(bool)[None, :, :]).any(-1)


def ranking(drow: np.ndarray) -> np.ndarray:
    """Order by distance, then index (lexsort keys: last is primary)."""
    return np.lexsort((np.arange(drow.size), drow))


def ap_of_order(rel_in_order: np.ndarray) -> float:
    r = rel_in_order.astype(float)
    if r.sum() == 0:
        return 0.0
    prec = np.cumsum(r) / np.arange(1, r.size + 1)
    return float((prec * r).sum() / r.sum())


def ap_index(drow: np.ndarray, rel: np.ndarray, k: int) -> float:
    return ap_of_order(rel[ranking(drow)[:k]])


def tie_orders(drow: np.ndarray):
    """Every order that sorts by distance, ties in any order."""
    groups = [np.flatnonzero(drow == d) for d in np.unique(drow)]
    for perms in itertools.product(*(itertools.permutations(g) for g in groups)):
        yield np.concatenate(perms)


def ap_tie_average(drow: np.ndarray, rel: np.ndarray, k: int) -> float:
    """Expected AP@k over all tie orders, by enumeration (tiny inputs only)."""
    return float(np.mean([ap_of_order(rel[o[:k]]) for o in tie_orders(drow)]))


def precision_at_n_tie_average(drow: np.ndarray, rel: np.ndarray, n: int) -> float:
    return float(np.mean([rel[o[:n]].mean() for o in tie_orders(drow)]))
