"""Search at scale: 59,000 and 1,000,000 codes at 32 / 64 / 128 bits and 10,000,000 at 64 bits,
top-1,000, 1,000 queries.

Each setting is measured for ``usdh.search.hamming_rank`` and for ``faiss.IndexBinaryFlat`` in its
default mode and with ``use_heap=False`` (its fastest exact mode), in the same process. The roofline
benchmark measures this machine's memory read bandwidth, and every search records the bytes of
codes it scanned per second, so the report shows how close search is to the memory limit. Peak
memory of a 1,000,000- and a 10,000,000-code search is measured in a child process (numba's
allocations are invisible to tracemalloc, so the child's peak resident set size is the honest
figure).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import numba as nb
import numpy as np
import pytest

from usdh.search import hamming_rank

faiss = pytest.importorskip("faiss")

N_QUERY, K = 1000, 1000
SIZES = {"59k": 59_000, "1M": 1_000_000, "10M": 10_000_000}
_cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def problem(n_db: int, n_bits: int) -> tuple[np.ndarray, np.ndarray]:
    if (n_db, n_bits) not in _cache:
        rng = np.random.default_rng(n_bits)
        q = rng.integers(0, 256, (N_QUERY, n_bits // 8), dtype=np.uint8)
        db = rng.integers(0, 256, (n_db, n_bits // 8), dtype=np.uint8)
        _cache.clear()  # one 1M database at a time keeps memory modest
        _cache[(n_db, n_bits)] = (q, db)
    return _cache[(n_db, n_bits)]


def _record(benchmark, n_db: int, n_bits: int) -> None:
    stats = benchmark.stats.stats if benchmark.stats else None
    benchmark.extra_info.update({"n_db": n_db, "n_bits": n_bits, "n_query": N_QUERY, "k": K})
    if stats is not None and stats.median > 0:
        benchmark.extra_info["queries_per_s"] = round(N_QUERY / stats.median)
        scanned = N_QUERY * n_db * n_bits / 8
        benchmark.extra_info["code_bytes_scanned_per_s"] = round(scanned / stats.median)


FULL = [(s, b) for s in ("59k", "1M") for b in (32, 64, 128)]  # every code length
PARAMS = [*FULL, ("10M", 64)]
IDS = [f"{s}-{b}b" for s, b in PARAMS]
FULL_IDS = [f"{s}-{b}b" for s, b in FULL]


@pytest.mark.parametrize("size, n_bits", PARAMS, ids=IDS)
def test_usdh_search(benchmark, size, n_bits):
    benchmark.group = f"scale-top1000-{size}-{n_bits}b"
    q, db = problem(SIZES[size], n_bits)
    hamming_rank(q[:2], db, K)
    benchmark.pedantic(hamming_rank, (q, db, K), rounds=3, iterations=1)
    _record(benchmark, SIZES[size], n_bits)


@pytest.mark.parametrize("use_heap", [True, False], ids=["faiss-default", "faiss-no-heap"])
@pytest.mark.parametrize("size, n_bits", PARAMS, ids=IDS)
def test_faiss_search(benchmark, size, n_bits, use_heap):
    benchmark.group = f"scale-top1000-{size}-{n_bits}b"
    q, db = problem(SIZES[size], n_bits)
    index = faiss.IndexBinaryFlat(n_bits)
    index.add(db)
    index.use_heap = use_heap
    dist, _ = benchmark.pedantic(index.search, (q, K), rounds=3, iterations=1)
    _record(benchmark, SIZES[size], n_bits)
    assert (dist[:5] == hamming_rank(q[:5], db, K)[1]).all()


PAIRED_ROUNDS = 7


def _paired(q: np.ndarray, db: np.ndarray, index, rounds: int) -> dict[str, list[float]]:
    """Seconds of ours and of faiss, one right after the other, which goes first alternating."""
    ours: list[float] = []
    theirs: list[float] = []
    for r in range(rounds):
        for which in (0, 1) if r % 2 == 0 else (1, 0):
            start = time.perf_counter()
            if which == 0:
                hamming_rank(q, db, K)
            else:
                index.search(q, K)
            (ours if which == 0 else theirs).append(time.perf_counter() - start)
    return {"ours": ours, "theirs": theirs}


def test_paired_against_faiss(benchmark, request):
    """Ours against faiss's fastest exact mode at 1M x 64 bits, alternating in one loop.

    The two medians of ``scale-top1000-1M-64b`` are taken minutes apart, and on this shared virtual
    machine faiss's time alone moved from 0.69 to 1.0 s between runs; a ratio per pair, both
    timed within a second of each other, is what decides issue 16's goal of at least 1.5x.
    """
    benchmark.group = "paired-top1000-1M-64b"
    rounds = 1 if request.config.getoption("benchmark_disable", False) else PAIRED_ROUNDS
    q, db = problem(SIZES["1M"], 64)
    index = faiss.IndexBinaryFlat(64)
    index.add(db)
    index.use_heap = False
    hamming_rank(q[:2], db, K)
    got = benchmark.pedantic(_paired, (q, db, index, rounds), rounds=1, iterations=1)
    ratios = sorted(t / o for o, t in zip(got["ours"], got["theirs"], strict=True))
    benchmark.extra_info.update(
        {
            "n_db": SIZES["1M"],
            "n_bits": 64,
            "pairs": rounds,
            "queries_per_s": round(N_QUERY / float(np.median(got["ours"]))),
            "faiss_queries_per_s": round(N_QUERY / float(np.median(got["theirs"]))),
            "speedup_median": round(float(np.median(ratios)), 2),
            "speedup_min": round(ratios[0], 2),
            "speedup_max": round(ratios[-1], 2),
        }
    )


@nb.njit(parallel=True, cache=True)
def _read_all(words):  # pragma: no cover - compiled
    total = 0
    for i in nb.prange(words.shape[0]):
        total += words[i] & np.uint64(1)
    return total


def test_memory_read_bandwidth(benchmark):
    """The roofline: bytes per second this machine reads from memory (1 GiB, XOR-reduced)."""
    benchmark.group = "roofline"
    words = np.random.default_rng(0).integers(0, 2**63, 2**27, dtype=np.uint64)
    _read_all(words[:1024])
    benchmark.pedantic(_read_all, (words,), rounds=5, iterations=1)
    stats = benchmark.stats.stats if benchmark.stats else None
    if stats is not None and stats.median > 0:
        benchmark.extra_info["bytes_read_per_s"] = round(words.nbytes / stats.median)


_MEMORY_CHILD = textwrap.dedent(
    """
    import json, sys
    import numpy as np

    def reset_peak():
        # a forked child starts with its parent's high-water mark; Linux resets it on request
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")

    def peak_kb():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])

    from usdh.search import hamming_rank
    n_db, n_bits, search = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
    # (the search keeps O(k) per query, never O(n): no distance array of the database)
    rng = np.random.default_rng(0)
    q = rng.integers(0, 256, (1000, n_bits // 8), dtype=np.uint8)
    db = rng.integers(0, 256, (n_db, n_bits // 8), dtype=np.uint8)
    hamming_rank(q[:1], db[:10], 5)  # load the compiled kernels in both runs
    reset_peak()
    if search:
        hamming_rank(q, db, 1000)
    print(json.dumps({"peak_kb": peak_kb()}))
    """
)


def _peak_kb(n_db: int, search: bool) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_CHILD, str(n_db), "64", "1" if search else "0"],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_kb"]


@pytest.mark.parametrize("size", ["1M", "10M"])
def test_peak_memory_search(benchmark, size):
    """Extra peak memory of a 64-bit top-1,000 search beyond holding its inputs."""
    benchmark.group = f"memory-{size}-64b"
    n_db = SIZES[size]
    base = _peak_kb(n_db, False)
    peak = benchmark.pedantic(_peak_kb, (n_db, True), rounds=1, iterations=1)
    benchmark.extra_info["peak_rss_mb"] = round(peak / 1024, 1)
    benchmark.extra_info["peak_rss_without_search_mb"] = round(base / 1024, 1)
    benchmark.extra_info["database_mb"] = round(n_db * 8 / 2**20, 1)
    benchmark.extra_info["output_mb"] = round(1000 * 1000 * 6 / 2**20, 1)


N_FULL = 100  # queries for the full ranking and the argsort baseline at scale (memory and time)


@pytest.mark.parametrize("size, n_bits", FULL, ids=FULL_IDS)
def test_usdh_full_ranking(benchmark, size, n_bits):
    """The whole database ranked for 100 queries (a 1M full ranking of 1,000 queries is 6 GB)."""
    benchmark.group = f"scale-full-ranking-{size}"
    q, db = problem(SIZES[size], n_bits)
    idx, _ = benchmark.pedantic(hamming_rank, (q[:N_FULL], db), rounds=2, iterations=1)
    assert idx.shape == (N_FULL, SIZES[size])
    stats = benchmark.stats.stats if benchmark.stats else None
    benchmark.extra_info.update({"n_db": SIZES[size], "n_bits": n_bits, "n_query": N_FULL})
    if stats is not None and stats.median > 0:
        benchmark.extra_info["queries_per_s"] = round(N_FULL / stats.median)


@pytest.mark.parametrize("size", ["59k", "1M"])
def test_argsort_top1000_at_scale(benchmark, size):
    """The +-1 product + argsort approach, 100 queries, 64 bits (it is too slow for 1,000 at 1M)."""
    from benchmarks.alternatives import argsort_rank

    benchmark.group = f"scale-top1000-{size}-64b"
    q, db = problem(SIZES[size], 64)
    idx = benchmark.pedantic(argsort_rank, (q[:N_FULL], db, K), rounds=1, iterations=1)
    assert (idx[:3] == hamming_rank(q[:3], db, K)[0]).all()
    stats = benchmark.stats.stats if benchmark.stats else None
    benchmark.extra_info.update({"n_db": SIZES[size], "n_bits": 64, "n_query": N_FULL})
    if stats is not None and stats.median > 0:
        benchmark.extra_info["queries_per_s"] = round(N_FULL / stats.median)
