"""Approximate search beside exact: faiss's IndexBinaryIVF and IndexBinaryHNSW, top-1,000.

Where exact search stops being the right tool: each approximate index is measured for queries/s
and for its recall of the exact top-1,000 (tie-aware: a returned code counts when its distance is
below the exact 1,000th distance, and codes at that distance count up to the number the exact list
holds there), against the project's exact search in the same process, for a few settings of its
knob (IVF's ``nprobe``, HNSW's ``efSearch``). Build time is recorded beside each (``build_s``).

Databases: the pipeline's own 64-bit ITQ codes of CIFAR-10 (59,000 database codes, 1,000 queries of
the ``1k-5k-59k`` protocol; skipped until ``dvc repro`` or ``dvc pull`` has made them), and random
64-bit codes at 1,000,000 and 10,000,000 (no real database is that large here). Random codes have
no cluster structure, the hardest case for an inverted file. HNSW is not built at 10M: its build
alone would take most of an hour on the 2-core machine. In short mode (``--benchmark-disable``,
what CI runs) the random databases shrink 100-fold, so every path still runs.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from usdh.search import hamming_rank

faiss = pytest.importorskip("faiss")

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT / "codes/retrieval/cifar10/1k-5k-59k/itq/64/0"
N_QUERY, K, BITS = 1000, 1000, 64
SIZES = {"1M": 1_000_000, "10M": 10_000_000}
IVF_LISTS = {"59k": 1024, "1M": 4096, "10M": 4096}  # ~sqrt(n) * 4, capped by k-means' cost
NPROBE = [1, 16, 64, 256]
EF_SEARCH = [1000, 2000, 4000]  # HNSW needs efSearch >= k
_cache: dict[str, dict] = {}


def _short(config) -> bool:
    return bool(config.getoption("benchmark_disable", False))


def dataset(name: str, short: bool) -> dict:
    """Queries, database and the exact top-k's distances."""
    key = f"{name}-{short}"
    if key not in _cache:
        _cache.clear()  # one large database at a time
        if name == "59k":
            if not (REAL / "database.npy").is_file():
                pytest.skip(f"{REAL} is missing: run `dvc repro` (or `dvc pull`) first")
            q, db = np.load(REAL / "query.npy"), np.load(REAL / "database.npy")
        else:
            n = SIZES[name] // (100 if short else 1)
            rng = np.random.default_rng(7)
            q = rng.integers(0, 256, (N_QUERY, BITS // 8), dtype=np.uint8)
            db = rng.integers(0, 256, (n, BITS // 8), dtype=np.uint8)
        k = min(K, db.shape[0] // 10)
        t0 = time.perf_counter()
        _, exact = hamming_rank(q, db, k)
        _cache[key] = {
            "q": q,
            "db": db,
            "k": k,
            "exact": exact,
            "exact_s": time.perf_counter() - t0,
        }
    return _cache[key]


def tie_aware_recall(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean over queries of the share of the exact top-k an approximate top-k recovers, with
    ties at the k-th distance resolved in the approximate list's favour (any of them is right)."""
    k = exact.shape[1]
    kth = exact[:, -1:].astype(np.int64)
    found = found.astype(np.int64)
    valid = found >= 0
    below = ((found < kth) & valid).sum(axis=1)
    at = ((found == kth) & valid).sum(axis=1)
    exact_at = (exact.astype(np.int64) == kth).sum(axis=1)
    return float(((below + np.minimum(at, exact_at)) / k).mean())


def _search(benchmark, index, data, name: str) -> None:
    q, k = data["q"], data["k"]
    dist, labels = benchmark.pedantic(index.search, (q, k), rounds=3, iterations=1)
    dist = np.where(labels >= 0, dist, -1)  # faiss pads short lists with label -1
    recall = tie_aware_recall(dist, data["exact"])
    stats = benchmark.stats.stats if benchmark.stats else None
    benchmark.extra_info.update(
        {"n_db": data["db"].shape[0], "n_bits": BITS, "n_query": len(q), "k": k, "recall": recall}
    )
    if stats is not None and stats.median > 0:
        benchmark.extra_info["queries_per_s"] = round(len(q) / stats.median)
    assert 0.0 <= recall <= 1.0


@pytest.mark.parametrize("name", ["59k", *SIZES])
def test_exact(benchmark, request, name):
    """The reference every approximate row is read against (recall 1 by definition)."""
    benchmark.group = f"ann-top1000-{name}-64b"
    data = dataset(name, _short(request.config))
    benchmark.pedantic(hamming_rank, (data["q"], data["db"], data["k"]), rounds=3, iterations=1)
    stats = benchmark.stats.stats if benchmark.stats else None
    benchmark.extra_info.update({"n_db": data["db"].shape[0], "recall": 1.0})
    if stats is not None and stats.median > 0:
        benchmark.extra_info["queries_per_s"] = round(N_QUERY / stats.median)


_built: dict[str, tuple[object, float]] = {}


def _ivf(name: str, data: dict):
    key = f"ivf-{name}-{data['db'].shape[0]}"
    if key not in _built:
        _built.clear()
        t0 = time.perf_counter()
        quantizer = faiss.IndexBinaryFlat(BITS)
        nlist = min(IVF_LISTS[name], data["db"].shape[0] // 39)
        index = faiss.IndexBinaryIVF(quantizer, BITS, nlist)
        index.cp.seed = 0
        rng = np.random.default_rng(0)
        train = data["db"][rng.choice(data["db"].shape[0], min(64 * nlist, data["db"].shape[0]))]
        index.train(train)
        index.add(data["db"])
        _built[key] = (index, quantizer), time.perf_counter() - t0
    return _built[key]


@pytest.mark.parametrize("nprobe", NPROBE)
@pytest.mark.parametrize("name", ["59k", *SIZES])
def test_ivf(benchmark, request, name, nprobe):
    benchmark.group = f"ann-top1000-{name}-64b"
    data = dataset(name, _short(request.config))
    (index, _), build_s = _ivf(name, data)
    if nprobe > index.nlist:
        pytest.skip(f"nprobe {nprobe} > nlist {index.nlist}")
    index.nprobe = nprobe
    _search(benchmark, index, data, name)
    benchmark.extra_info.update({"nlist": index.nlist, "nprobe": nprobe, "build_s": build_s})


def _hnsw(name: str, data: dict):
    key = f"hnsw-{name}-{data['db'].shape[0]}"
    if key not in _built:
        _built.clear()
        t0 = time.perf_counter()
        index = faiss.IndexBinaryHNSW(BITS, 32)
        index.hnsw.efConstruction = 40
        index.add(data["db"])
        _built[key] = index, time.perf_counter() - t0
    return _built[key]


@pytest.mark.parametrize("ef", EF_SEARCH)
@pytest.mark.parametrize("name", ["59k", "1M"])
def test_hnsw(benchmark, request, name, ef):
    benchmark.group = f"ann-top1000-{name}-64b"
    data = dataset(name, _short(request.config))
    index, build_s = _hnsw(name, data)
    index.hnsw.efSearch = ef
    _search(benchmark, index, data, name)
    benchmark.extra_info.update({"M": 32, "efConstruction": 40, "efSearch": ef, "build_s": build_s})
