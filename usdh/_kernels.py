"""Numba kernels behind :mod:`usdh.search` and :mod:`usdh.metrics`.

Everything here works per query on Hamming distances, which are small integers (0..n_bits). That
makes two things cheap: ranking is a counting sort (O(N) per query, no comparison sort), and every
retrieval metric can be computed from per-distance counts plus one pass in database order, without
materialising the ranking. Queries run in parallel (``prange``); each query's work is independent,
so results do not depend on the number of threads.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from numba import types
from numba.extending import intrinsic

_JIT = {"nogil": True, "cache": True, "boundscheck": False}


@intrinsic
def _ctpop64(typingctx, x):  # pragma: no cover - compiled
    """LLVM's population count on a uint64 (one POPCNT instruction where the CPU has it)."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        fn = builder.module.declare_intrinsic("llvm.ctpop", [args[0].type])
        return builder.call(fn, args)

    return sig, codegen


@nb.njit(**_JIT)
def _dist_at(q, dbw, j):  # pragma: no cover - compiled
    d = 0
    for t in range(dbw.shape[1]):
        d += _ctpop64(q[t] ^ dbw[j, t])
    return d


@nb.njit(**_JIT)
def _distances(q, db, out):  # pragma: no cover - compiled
    """Hamming distances of one query (W words) to every database row, into ``out`` (uint8)."""
    n, w = db.shape
    if w == 1:
        q0 = q[0]
        for j in range(n):
            out[j] = _ctpop64(q0 ^ db[j, 0])
    elif w == 2:
        q0 = q[0]
        q1 = q[1]
        for j in range(n):
            out[j] = _ctpop64(q0 ^ db[j, 0]) + _ctpop64(q1 ^ db[j, 1])
    else:
        for j in range(n):
            out[j] = _dist_at(q, db, j)


@nb.njit(parallel=True, **_JIT)
def hamming_distance_matrix(qw, dbw, out):  # pragma: no cover - compiled
    """All distances into ``out`` (n_query, n_db), whose integer dtype the caller chooses."""
    for i in nb.prange(qw.shape[0]):
        _distances(qw[i], dbw, out[i])


@nb.njit(parallel=True, **_JIT)
def rank_topk(qw, dbw, n_bits, k):  # pragma: no cover - compiled
    """Top-k by (distance, database index) for every query, by counting sort."""
    nq = qw.shape[0]
    n = dbw.shape[0]
    idx = np.empty((nq, k), dtype=np.int32)
    dist = np.empty((nq, k), dtype=np.uint16)
    for i in nb.prange(nq):
        d = np.empty(n, dtype=np.uint16)
        _distances(qw[i], dbw, d)
        counts = np.zeros(n_bits + 2, dtype=np.int64)
        for j in range(n):
            counts[d[j] + 1] += 1
        # counts[r] becomes the first output slot of distance r
        for r in range(1, n_bits + 2):
            counts[r] += counts[r - 1]
        # the largest distance that still has a slot inside the top k
        cutoff = 0
        while cutoff < n_bits and counts[cutoff + 1] < k:
            cutoff += 1
        for j in range(n):
            r = d[j]
            if r <= cutoff:
                pos = counts[r]
                if pos < k:
                    idx[i, pos] = j
                    dist[i, pos] = r
                    counts[r] = pos + 1
    return idx, dist


@nb.njit(**_JIT)
def _relevant(qlab, dblab, j):  # pragma: no cover - compiled
    """Relevance by shared label: labels are one-hot (single-label) or multi-hot bit masks."""
    for t in range(qlab.shape[0]):
        if qlab[t] & dblab[j, t]:
            return True
    return False


@nb.njit(inline="always", **_JIT)
def _count_by_radius(q, dbw, qlab, dblab, d, rel, n_all, n_rel, i):  # pragma: no cover
    """Query ``i``'s distances into ``d`` and relevance into ``rel`` (per database row; None:
    not kept), and its per-radius counts of all and of relevant items added to row ``i`` of
    ``n_all`` and ``n_rel``."""
    _distances(q, dbw, d)
    for j in range(d.shape[0]):
        r = d[j]
        n_all[i, r] += 1
        isrel = _relevant(qlab, dblab, j)
        if rel is not None:  # decided when compiling: None is its own type
            rel[j] = isrel
        if isrel:
            n_rel[i, r] += 1


@nb.njit(parallel=True, **_JIT)
def radius_counts(qw, dbw, qlab, dblab, n_bits):  # pragma: no cover - compiled
    """Per query and Hamming radius r: how many database items, and how many relevant ones, at r."""
    nq = qw.shape[0]
    n = dbw.shape[0]
    n_all = np.zeros((nq, n_bits + 1), dtype=np.int64)
    n_rel = np.zeros((nq, n_bits + 1), dtype=np.int64)
    for i in nb.prange(nq):
        d = np.empty(n, dtype=np.uint16)
        _count_by_radius(qw[i], dbw, qlab[i], dblab, d, None, n_all, n_rel, i)
    return n_all, n_rel


@nb.njit(parallel=True, **_JIT)
def index_order_stats(qw, dbw, qlab, dblab, n_bits, cutoffs):  # pragma: no cover - compiled
    """Ranking metrics with ties broken by ascending database index, for several cut-offs at once.

    For each query and cut-off k returns the sum over relevant items ranked within k of precision at
    their rank, and the number of such items. The rank of item j is the number of items at a smaller
    distance, plus the number at the same distance with a smaller index, plus one; both counts come
    from the per-distance totals and a running count in database order, so no sort is needed.
    """
    nq = qw.shape[0]
    n = dbw.shape[0]
    nc = cutoffs.shape[0]
    prec_sum = np.zeros((nq, nc), dtype=np.float64)
    hits = np.zeros((nq, nc), dtype=np.int64)
    n_all = np.zeros((nq, n_bits + 1), dtype=np.int64)
    n_rel = np.zeros((nq, n_bits + 1), dtype=np.int64)
    kmax = 0
    for c in range(nc):
        kmax = max(kmax, cutoffs[c])
    for i in nb.prange(nq):
        d = np.empty(n, dtype=np.uint16)
        rel = np.empty(n, dtype=np.bool_)
        _count_by_radius(qw[i], dbw, qlab[i], dblab, d, rel, n_all, n_rel, i)
        below_all = np.zeros(n_bits + 1, dtype=np.int64)
        below_rel = np.zeros(n_bits + 1, dtype=np.int64)
        for r in range(1, n_bits + 1):
            below_all[r] = below_all[r - 1] + n_all[i, r - 1]
            below_rel[r] = below_rel[r - 1] + n_rel[i, r - 1]
        seen_all = np.zeros(n_bits + 1, dtype=np.int64)
        seen_rel = np.zeros(n_bits + 1, dtype=np.int64)
        for j in range(n):
            r = d[j]
            if below_all[r] >= kmax:
                continue
            rank = below_all[r] + seen_all[r] + 1
            seen_all[r] += 1
            if rel[j]:
                nrel = below_rel[r] + seen_rel[r] + 1
                seen_rel[r] += 1
                p = nrel / rank
                for c in range(nc):
                    if rank <= cutoffs[c]:
                        prec_sum[i, c] += p
                        hits[i, c] += 1
    return prec_sum, hits, n_all, n_rel


@nb.njit(**_JIT)
def _harmonic_diff(harm, a, b):  # pragma: no cover - compiled
    """sum_{t=a+1..b} 1/t, from a table of harmonic numbers."""
    return harm[b] - harm[a]


@nb.njit(**_JIT)
def _group_sum(harm, before, rel_before, m, s):  # pragma: no cover - compiled
    """Expected sum of precision over relevant items in the first s slots of a tie group.

    The group starts after ``before`` items (``rel_before`` relevant) and, of its first s slots,
    m are relevant, placed uniformly at random. Slot t (rank before + t) is relevant with
    probability m/s and, given that, is preceded inside the group by (t-1)(m-1)/(s-1) relevant
    items on average, so the precision at t is (rel_before + 1 + (t-1)(m-1)/(s-1)) / (before + t).
    Summing over t uses sum (a + b t)/(c + t) = b s + (a - b c) (H(c+s) - H(c)).
    """
    if m == 0 or s == 0:
        return 0.0
    if s == 1:
        return (rel_before + 1.0) / (before + 1.0)
    b = (m - 1.0) / (s - 1.0)
    a = rel_before + 1.0 - b
    c = before
    total = b * s + (a - b * c) * _harmonic_diff(harm, c, c + s)
    return total * m / s


@nb.njit(**_JIT)
def _log_comb(lgam, n, k):  # pragma: no cover - compiled
    return lgam[n] - lgam[k] - lgam[n - k]


@nb.njit(parallel=True, **_JIT)
def tie_aware_ap(n_all, n_rel, cutoffs, harm, lgam):  # pragma: no cover - compiled
    """Expected AP@k over all orders of equal-distance items (McSherry and Najork, ECIR 2008).

    AP@k is the sum of precision at each relevant item ranked within k, divided by the number of
    relevant items within k. Groups before the one that straddles k contribute their expected sum
    (linearity). In the straddling group the number M of relevant items that fall inside k is
    hypergeometric, and the denominator depends on it, so we condition on M exactly:
    E[AP@k] = sum_m P(M = m) (S_before + E[group sum | m]) / (R_before + m).
    """
    nq, nr = n_all.shape
    nc = cutoffs.shape[0]
    out = np.zeros((nq, nc), dtype=np.float64)
    for i in nb.prange(nq):
        for c in range(nc):
            k = cutoffs[c]
            before = 0
            rel_before = 0
            s_before = 0.0
            straddled = False
            result = 0.0
            for r in range(nr):
                g = n_all[i, r]
                if g == 0:
                    continue
                rg = n_rel[i, r]
                if before + g <= k:
                    s_before += _group_sum(harm, before, rel_before, rg, g)
                    before += g
                    rel_before += rg
                    if before == k:
                        break
                    continue
                # this group straddles the cut-off: s of its g slots fall inside k
                s = k - before
                lo = max(0, s - (g - rg))
                hi = min(s, rg)
                for m in range(lo, hi + 1):
                    denom = rel_before + m
                    if denom == 0:
                        continue
                    logp = (
                        _log_comb(lgam, rg, m)
                        + _log_comb(lgam, g - rg, s - m)
                        - _log_comb(lgam, g, s)
                    )
                    gs = _group_sum(harm, before, rel_before, m, s)
                    result += np.exp(logp) * (s_before + gs) / denom
                straddled = True
                break
            if not straddled and rel_before > 0:
                result = s_before / rel_before
            out[i, c] = result
    return out


@nb.njit(**_JIT)
def _radius_from_sample(q, dbw, n_bits, k, n_chunks, chunk, slack):  # pragma: no cover
    """The radius within which about ``slack * k`` database codes lie, estimated from
    ``n_chunks`` contiguous runs of ``chunk`` codes spread evenly over the database (contiguous
    so the sample reads whole cache lines; spread so a database sorted by class is still sampled
    evenly), and the buffer size that count suggests."""
    n = dbw.shape[0]
    hist = np.zeros(n_bits + 1, dtype=np.int64)
    m = 0
    step = n // n_chunks
    for c in range(n_chunks):
        start = c * step
        for j in range(start, min(start + chunk, n)):
            hist[_dist_at(q, dbw, j)] += 1
            m += 1
    target = slack * k * m / n
    acc = 0
    r = 0
    while True:
        acc += hist[r]
        if acc >= target or r == n_bits:
            break
        r += 1
    return r, min(n, int(1.5 * acc * n / m) + 2 * k)


@nb.njit(**_JIT)
def _keep(cand_i, cand_d, c, cap, j, d):  # pragma: no cover - compiled
    if c < cap:
        cand_i[c] = j
        cand_d[c] = d
    return c + 1


_TILE = 32  # database codes per tile; a tile with a code within the radius is rescanned


@nb.njit(**_JIT)
def _rescan(q, dbw, r, start, stop, cand_i, cand_d, c, cap):  # pragma: no cover - compiled
    for j in range(start, stop):
        d = _dist_at(q, dbw, j)
        if d <= r:
            c = _keep(cand_i, cand_d, c, cap, j, d)
    return c


@nb.njit(**_JIT)
def _pass_block(qs, nb_q, dbw, rs, cand_i, cand_d, caps, counts):  # pragma: no cover - compiled
    """Every code within radius ``rs[b]`` of each of the ``nb_q`` queries ``qs[:nb_q]``, in
    database order; their number goes to ``counts[b]``.

    The database is read in tiles. First each tile is only counted (how many codes lie within
    the radius): a branch-free loop that LLVM vectorises (VPOPCNTQ where the CPU has it), and for
    64-bit codes four queries share each load. Only tiles that hold a code within the radius, a
    minority, are scanned again one code at a time to keep those codes.
    """
    n, w = dbw.shape
    for start in range(0, n, _TILE):
        stop = min(start + _TILE, n)
        if w == 1 and nb_q == 4:
            a0, a1, a2, a3 = qs[0, 0], qs[1, 0], qs[2, 0], qs[3, 0]
            r0, r1, r2, r3 = rs[0], rs[1], rs[2], rs[3]
            h0 = h1 = h2 = h3 = 0
            for j in range(start, stop):
                x = dbw[j, 0]
                h0 += _ctpop64(a0 ^ x) <= r0
                h1 += _ctpop64(a1 ^ x) <= r1
                h2 += _ctpop64(a2 ^ x) <= r2
                h3 += _ctpop64(a3 ^ x) <= r3
            hits = (h0, h1, h2, h3)
            for b in range(4):
                if hits[b]:
                    counts[b] = _rescan(
                        qs[b], dbw, rs[b], start, stop, cand_i[b], cand_d[b], counts[b], caps[b]
                    )
            continue
        for b in range(nb_q):
            r = rs[b]
            h = 0
            for j in range(start, stop):
                h += _dist_at(qs[b], dbw, j) <= r
            if h:
                counts[b] = _rescan(
                    qs[b], dbw, r, start, stop, cand_i[b], cand_d[b], counts[b], caps[b]
                )


@nb.njit(**_JIT)
def _place(cand_i, cand_d, c, r, k, idx_row, dist_row):  # pragma: no cover - compiled
    """Counting sort of the kept codes by distance (stable: database order within a distance)."""
    slots = np.zeros(r + 2, dtype=np.int64)
    for t in range(c):
        slots[cand_d[t] + 1] += 1
    for s in range(1, r + 2):
        slots[s] += slots[s - 1]
    for t in range(c):
        d = cand_d[t]
        pos = slots[d]
        if pos < k:
            idx_row[pos] = cand_i[t]
            dist_row[pos] = d
        slots[d] = pos + 1


_BLOCK = 4  # 64-bit queries that share one pass over the database


@nb.njit(parallel=True, **_JIT)
def rank_topk_pruned(qw, dbw, n_bits, k, n_chunks, chunk, slack):  # pragma: no cover - compiled
    """Top-k as ``rank_topk`` returns it, from one pass over the database per query.

    A sample of the database estimates, per query, the radius r within which about ``slack * k``
    codes lie; one pass keeps only the codes within r, in database order (64-bit codes: four
    queries share the pass, so each database word is read once for all four), and a counting
    sort of those gives exactly the order of ranking everything. Nothing n-sized is written, so
    memory is O(k) per query. Where the estimate was off (fewer than k codes within r, or more
    than the buffer sized from it holds) the query is flagged for the exact kernel: the result
    never depends on the sample, only the time does.
    """
    nq = qw.shape[0]
    idx = np.empty((nq, k), dtype=np.int32)
    dist = np.empty((nq, k), dtype=np.uint16)
    redo = np.zeros(nq, dtype=np.bool_)
    block = _BLOCK
    n_blocks = (nq + block - 1) // block
    for blk in nb.prange(n_blocks):
        lo = blk * block
        nb_q = min(block, nq - lo)
        radius = np.full(_BLOCK, -1, dtype=np.int64)  # -1 keeps nothing (an empty slot)
        cap = np.zeros(_BLOCK, dtype=np.int64)
        for b in range(nb_q):
            radius[b], cap[b] = _radius_from_sample(
                qw[lo + b], dbw, n_bits, k, n_chunks, chunk, slack
            )
        width = max(1, cap.max())
        cand_i = np.empty((_BLOCK, width), dtype=np.int32)
        cand_d = np.empty((_BLOCK, width), dtype=np.uint16)
        count = np.zeros(_BLOCK, dtype=np.int64)
        _pass_block(qw[lo : lo + nb_q], nb_q, dbw, radius, cand_i, cand_d, cap, count)
        for b in range(nb_q):
            i = lo + b
            if count[b] < k or count[b] > cap[b]:
                redo[i] = True
            else:
                _place(cand_i[b], cand_d[b], count[b], radius[b], k, idx[i], dist[i])
    return idx, dist, redo
