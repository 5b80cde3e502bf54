"""Exact Hamming search and retrieval evaluation, each beside the alternatives a user would pick.

Setting (the foundation issue's): 1,000 queries against 59,000 random codes (CIFAR-10's
1k-5k-59k database size), top-1,000 and the full ranking. Compared in the same process:
``usdh.search.hamming_rank`` (counting sort, numba), ``faiss.IndexBinaryFlat`` with default settings
and with ``use_heap=False`` (its fastest exact mode), and the +-1 product + argsort approach. The
evaluation benchmark compares ``usdh.metrics`` with the argsort mAP of deep-hashing repositories.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.alternatives import argsort_map, argsort_rank
from usdh.metrics import evaluate_retrieval, mean_average_precision
from usdh.search import hamming_rank

faiss = pytest.importorskip("faiss")

N_QUERY, N_DB, K = 1000, 59000, 1000


def make_problem(n_bits: int, n_db: int = N_DB, n_query: int = N_QUERY, seed: int = 0):
    rng = np.random.default_rng(seed)
    q = rng.integers(0, 256, (n_query, n_bits // 8), dtype=np.uint8)
    db = rng.integers(0, 256, (n_db, n_bits // 8), dtype=np.uint8)
    ql = rng.integers(0, 10, n_query)
    dl = rng.integers(0, 10, n_db)
    return q, db, ql, dl


@pytest.fixture(scope="module")
def problem64():
    q, db, ql, dl = make_problem(64)
    hamming_rank(q[:2], db, k=K)  # compile outside the timing
    mean_average_precision(q[:2], db, ql[:2], dl, topk=K)
    return q, db, ql, dl


def _qps(benchmark, n_query: int) -> None:
    stats = benchmark.stats.stats if benchmark.stats else None
    if stats is not None and stats.median > 0:
        benchmark.extra_info["queries_per_s"] = round(n_query / stats.median)


@pytest.mark.benchmark(group="search-top1000-59k-64b")
def test_usdh_top1000(benchmark, problem64):
    q, db, _, _ = problem64
    idx, _ = benchmark(hamming_rank, q, db, K)
    _qps(benchmark, len(q))
    assert idx.shape == (len(q), K)


@pytest.mark.benchmark(group="search-top1000-59k-64b")
@pytest.mark.parametrize("use_heap", [True, False], ids=["faiss-default", "faiss-no-heap"])
def test_faiss_top1000(benchmark, problem64, use_heap):
    q, db, _, _ = problem64
    index = faiss.IndexBinaryFlat(64)
    index.add(db)
    index.use_heap = use_heap
    dist, _ = benchmark(index.search, q, K)
    _qps(benchmark, len(q))
    _, ours = hamming_rank(q, db, K)
    assert (dist == ours).all()


@pytest.mark.benchmark(group="search-top1000-59k-64b")
def test_argsort_top1000(benchmark, problem64):
    q, db, _, _ = problem64
    idx = benchmark.pedantic(argsort_rank, (q, db, K), rounds=1, iterations=1)
    _qps(benchmark, len(q))
    assert (idx == hamming_rank(q, db, K)[0]).all()


@pytest.mark.benchmark(group="search-full-ranking-59k-64b")
def test_usdh_full_ranking(benchmark, problem64):
    q, db, _, _ = problem64
    idx, _ = benchmark.pedantic(hamming_rank, (q, db), rounds=3, iterations=1)
    _qps(benchmark, len(q))
    assert idx.shape == (len(q), len(db))


@pytest.mark.benchmark(group="evaluate-59k-64b")
@pytest.mark.parametrize("topk", [None, K], ids=["mAP@all", "mAP@1000"])
def test_usdh_map(benchmark, problem64, topk):
    q, db, ql, dl = problem64
    value = benchmark(mean_average_precision, q, db, ql, dl, topk)
    assert value == pytest.approx(argsort_map(q[:50], db, ql[:50], dl, topk), abs=0.05)


@pytest.mark.benchmark(group="evaluate-59k-64b")
def test_usdh_evaluate_all_metrics(benchmark, problem64):
    q, db, ql, dl = problem64
    benchmark(evaluate_retrieval, q, db, ql, dl, K, (100, 1000))


@pytest.mark.benchmark(group="evaluate-59k-64b")
@pytest.mark.parametrize("topk", [None, K], ids=["mAP@all", "mAP@1000"])
def test_argsort_map(benchmark, problem64, topk):
    q, db, ql, dl = problem64
    value = benchmark.pedantic(argsort_map, (q, db, ql, dl, topk), rounds=1, iterations=1)
    assert value == pytest.approx(mean_average_precision(q, db, ql, dl, topk), abs=1e-9)
