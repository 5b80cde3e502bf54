"""Code format and exact Hamming search, against brute force and against faiss."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests import reference as ref
from usdh import _kernels
from usdh.codes import check_codes, pack_bits, swap_bitorder, to_words, unpack_bits
from usdh.search import PRUNE_MIN_DB, _rank_pruned, hamming_distances, hamming_rank


@st.composite
def code_pair(draw, max_db: int = 40):
    """Query and database codes drawn from few distinct values, so that ties are frequent."""
    n_bytes = draw(st.sampled_from([1, 2, 3, 8, 9, 16]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n_q = draw(st.integers(0, 6))
    n_db = draw(st.integers(1, max_db))
    pool = rng.integers(0, 256, (draw(st.integers(1, 6)), n_bytes), dtype=np.uint8)
    q = pool[rng.integers(0, len(pool), n_q)]
    db = pool[rng.integers(0, len(pool), n_db)]
    # flip a few random bits so distances vary but stay tied in places
    db ^= (rng.random(db.shape) < 0.05).astype(np.uint8) << rng.integers(0, 8, db.shape).astype(
        np.uint8
    )
    return q, db


def test_pack_bits_order_is_numpy_packbits():
    bits = np.array([[1, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0]])
    codes = pack_bits(bits)
    assert codes.dtype == np.uint8
    assert codes.tolist() == [[0b10000001, 0b11110000]]
    assert (unpack_bits(codes) == bits).all()


def test_pack_bits_accepts_sign_codes_and_booleans():
    signs = np.array([[1.0, -1.0, -1.0, 1.0, 1.0, 1.0, -1.0, -1.0]])
    assert (pack_bits(signs) == pack_bits(signs > 0)).all()
    assert (pack_bits(signs) == pack_bits((signs > 0).astype(np.int8))).all()


def test_codes_are_faiss_compatible():
    faiss = pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    q = pack_bits(rng.random((5, 64)) > 0.5)
    db = pack_bits(rng.random((300, 64)) > 0.5)
    index = faiss.IndexBinaryFlat(64)
    index.add(db)
    dist_f, idx_f = index.search(q, 300)
    _, dist = hamming_rank(q, db)
    assert (np.sort(dist_f, axis=1) == dist).all()
    assert (np.take_along_axis(hamming_distances(q, db), idx_f, 1) == dist_f).all()


def test_to_words_pads_without_changing_distances():
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 256, (4, 3), dtype=np.uint8)
    words = to_words(codes)
    assert words.shape == (4, 1) and words.dtype == np.uint64
    assert (np.unpackbits(words.view(np.uint8), axis=1)[:, 24:] == 0).all()


@settings(max_examples=150, deadline=None)
@given(code_pair(), st.data())
def test_hamming_rank_matches_brute_force(pair, data):
    q, db = pair
    k = data.draw(st.one_of(st.none(), st.integers(1, db.shape[0])))
    idx, dist = hamming_rank(q, db, k=k)
    d = ref.distances(q, db)
    kk = db.shape[0] if k is None else k
    assert idx.shape == dist.shape == (q.shape[0], kk)
    for i in range(q.shape[0]):
        order = ref.ranking(d[i])[:kk]
        assert idx[i].tolist() == order.tolist()
        assert dist[i].tolist() == d[i, order].tolist()
    assert (hamming_distances(q, db) == d).all()


@settings(max_examples=150, deadline=None)
@given(code_pair(max_db=300), st.data())
def test_the_pruned_top_k_matches_brute_force(pair, data):
    """The sampled-radius road (forced here on small databases, with samples small enough to
    misjudge the radius either way, so the exact re-ranking of flagged queries runs too)."""
    q, db = pair
    if q.shape[1] > 8:  # the pruned road serves codes of one 64-bit word
        q, db = q[:, :8], db[:, :8]
    k = data.draw(st.integers(1, db.shape[0]))
    n_chunks = data.draw(st.integers(1, 8))
    chunk = data.draw(st.integers(1, 16))
    slack = data.draw(st.sampled_from([0.3, 1.0, 1.5, 4.0]))
    qw, dbw = to_words(q), to_words(db)
    idx, dist = _rank_pruned(
        qw, dbw, q.shape[1] * 8, k, n_chunks=n_chunks, chunk=chunk, slack=slack
    )
    d = ref.distances(q, db)
    for i in range(q.shape[0]):
        order = ref.ranking(d[i])[:k]
        assert idx[i].tolist() == order.tolist()
        assert dist[i].tolist() == d[i, order].tolist()


def test_hamming_rank_takes_the_pruned_road_at_scale_and_agrees_with_faiss():
    faiss = pytest.importorskip("faiss")
    rng = np.random.default_rng(3)
    # clustered codes (many ties, a skewed distance histogram), in class order as datasets are
    centers = rng.integers(0, 256, (10, 8), dtype=np.uint8)
    db = np.repeat(centers, 10_000, axis=0)
    db ^= (rng.random(db.shape) < 0.1).astype(np.uint8) << rng.integers(0, 8, db.shape).astype(
        np.uint8
    )
    q = db[rng.choice(len(db), 40, replace=False)] ^ np.uint8(1)
    assert len(db) >= PRUNE_MIN_DB
    idx, dist = hamming_rank(q, db, 500)
    index = faiss.IndexBinaryFlat(64)
    index.add(db)
    fdist, _ = index.search(q, 500)
    assert (dist == fdist).all()
    exact_idx, exact_dist = _kernels.rank_topk(to_words(q), to_words(db), 64, 500)
    assert (idx == exact_idx).all() and (dist == exact_dist).all()


@pytest.mark.parametrize(
    "codes, match",
    [
        (np.zeros((3, 4), dtype=np.int64), "packed uint8"),
        (np.zeros(4, dtype=np.uint8), "2-D"),
        (np.zeros((3, 0), dtype=np.uint8), "zero bytes"),
    ],
)
def test_check_codes_rejects_bad_codes(codes, match):
    with pytest.raises(ValueError, match=match):
        check_codes(codes)


def test_search_rejects_bad_input():
    db = np.zeros((10, 4), dtype=np.uint8)
    with pytest.raises(ValueError, match="64 bits but database codes have 32"):
        hamming_rank(np.zeros((2, 8), dtype=np.uint8), db)
    with pytest.raises(ValueError, match="larger than the database"):
        hamming_rank(db[:2], db, k=11)
    with pytest.raises(ValueError, match="at least 1"):
        hamming_rank(db[:2], db, k=0)
    with pytest.raises(ValueError, match="empty"):
        hamming_rank(db[:2], db[:0])
    with pytest.raises(ValueError, match="packed uint8"):
        hamming_rank(db[:2].astype(np.float32), db)


def test_pack_bits_rejects_bad_bits():
    with pytest.raises(ValueError, match="multiple of 8"):
        pack_bits(np.ones((2, 12)))
    with pytest.raises(ValueError, match="NaN"):
        pack_bits(np.full((2, 8), np.nan))


# -- bit order: ours (numpy.packbits) against faiss's own packer ----------------------------------
@given(st.integers(1, 20), st.integers(1, 8), st.integers(0, 2**32 - 1))
def test_swap_bitorder_matches_faiss_fvecs2bitvecs(n, n_bytes, seed):
    faiss = pytest.importorskip("faiss")
    x = np.random.default_rng(seed).standard_normal((n, 8 * n_bytes)).astype(np.float32)
    theirs = np.zeros((n, n_bytes), dtype=np.uint8)
    faiss.fvecs2bitvecs(faiss.swig_ptr(x), faiss.swig_ptr(theirs), x.shape[1], n)
    ours = pack_bits(x)
    assert np.array_equal(swap_bitorder(ours), theirs)
    assert np.array_equal(pack_bits(x, bitorder="little"), theirs)
    assert np.array_equal(swap_bitorder(theirs), ours)  # the same operation back
    # the two orders differ as bytes (unless a code is a bit palindrome), not as distances
    assert np.array_equal(
        hamming_distances(ours, ours[::-1]), hamming_distances(theirs, theirs[::-1])
    )


def test_pack_bits_refuses_an_unknown_bitorder():
    with pytest.raises(ValueError, match="bitorder"):
        pack_bits(np.ones((1, 8)), bitorder="middle")
