"""Exact Hamming search over packed codes.

Ranking is by Hamming distance, ties broken by ascending database index, so results are fully
determined by the codes (no dependence on thread count or sort stability). Distances are small
integers, so each query is ranked by a counting sort in O(N): XOR and popcount over 64-bit words,
a histogram of distances, then one pass that places each candidate in its slot.

A short list (k much smaller than the database, codes of up to 64 bits) takes a faster road to the
same answer: a sample of the database estimates the radius that holds a little more than k codes,
one vectorised pass keeps only the codes within it, and the counting sort runs on those; a query
whose estimate was off is ranked the long way (``_kernels.rank_topk_pruned``).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from usdh import _kernels
from usdh.codes import check_codes, to_words

__all__ = ["check_pair", "hamming_distances", "hamming_rank"]


def check_pair(
    query_codes: ArrayLike, db_codes: ArrayLike
) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    """Validate query and database codes: packed uint8, same width, database non-empty."""
    q = check_codes(query_codes, "query_codes", allow_empty=True)
    db = check_codes(db_codes, "db_codes")
    if q.shape[1] != db.shape[1]:
        raise ValueError(
            f"query codes have {q.shape[1] * 8} bits but database codes have {db.shape[1] * 8}; "
            f"both must come from the same hasher and code length"
        )
    return q, db


def hamming_distances(query_codes: ArrayLike, db_codes: ArrayLike) -> NDArray[np.integer]:
    """All pairwise Hamming distances, shape (n_query, n_db) (uint8 below 256 bits, else uint16)."""
    q, db = check_pair(query_codes, db_codes)
    dtype = np.uint8 if q.shape[1] * 8 < 256 else np.uint16
    out = np.empty((q.shape[0], db.shape[0]), dtype=dtype)
    _kernels.hamming_distance_matrix(to_words(q), to_words(db), out)
    return out


def hamming_rank(
    query_codes: ArrayLike, db_codes: ArrayLike, k: int | None = None
) -> tuple[NDArray[np.int32], NDArray[np.uint16]]:
    """Exact Hamming ranking: the k nearest database codes of every query.

    Returns ``(indices, distances)``, both of shape ``(n_query, k)``, each row sorted by distance
    and then by database index. ``k=None`` returns the full ranking of the database.

    Indices are int32 and distances uint16 (not faiss's int64 / int32): a full ranking of 1,000
    queries over a million codes is then 6 GB instead of 12, and writing fresh memory is what
    dominates a full ranking. Databases are limited to 2**31 - 1 codes and codes to 65,535 bits.
    """
    q, db = check_pair(query_codes, db_codes)
    n_db = db.shape[0]
    if k is None:
        k = n_db
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise ValueError(f"k must be an integer or None, got {k!r}")
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if k > n_db:
        raise ValueError(
            f"k={k} is larger than the database ({n_db} codes); use k <= {n_db} or k=None for "
            f"the full ranking"
        )
    if n_db >= 2**31 or q.shape[1] * 8 > 65535:
        raise ValueError(
            f"hamming_rank supports up to 2**31 - 1 database codes of up to 65,535 bits, got "
            f"{n_db} codes of {q.shape[1] * 8} bits; split the database into shards"
        )
    qw, dbw = to_words(q), to_words(db)
    if dbw.shape[1] == 1 and n_db >= PRUNE_MIN_DB and k * 16 <= n_db:
        return _rank_pruned(qw, dbw, q.shape[1] * 8, k)
    return _kernels.rank_topk(qw, dbw, q.shape[1] * 8, k)


PRUNE_MIN_DB = 65_536  # below this one exact pass is as fast as sampling first
SAMPLE_CHUNK = 256  # contiguous codes per sample chunk (whole cache lines)
SAMPLE_HITS = 50  # codes the sample should see within the radius, so the estimate is steady
SLACK = 1.5  # the radius is chosen to hold about SLACK * k codes


def _rank_pruned(
    qw: NDArray[np.uint64],
    dbw: NDArray[np.uint64],
    n_bits: int,
    k: int,
    *,
    n_chunks: int | None = None,
    chunk: int = SAMPLE_CHUNK,
    slack: float = SLACK,
) -> tuple[NDArray[np.int32], NDArray[np.uint16]]:
    """The pruned kernel, with the queries it flags ranked again by the exact one."""
    n_db = dbw.shape[0]
    if n_chunks is None:
        # a sample of SAMPLE_HITS * n / (slack * k) codes sees about SAMPLE_HITS within the radius
        wanted = int(SAMPLE_HITS * n_db / (slack * k))
        n_chunks = max(64, min(wanted, n_db // 4) // chunk)
    idx, dist, redo = _kernels.rank_topk_pruned(qw, dbw, n_bits, k, n_chunks, chunk, slack)
    if redo.any():
        again = np.flatnonzero(redo)
        idx[again], dist[again] = _kernels.rank_topk(qw[again], dbw, n_bits, k)
    return idx, dist
