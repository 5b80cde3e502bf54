"""The input-size study's quality figures (usdh/input_size.py) against a brute-force reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usdh.input_size import cosine_scores, sample_rows


def reference(q, db, ql, dbl, k):
    """One query at a time, in plain Python: sort by cosine (stable), vote, average precision."""
    correct, aps = 0, []
    for x, label in zip(q, ql, strict=True):
        sims = [float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y))) for y in db]
        order = sorted(range(len(db)), key=lambda j: -sims[j])  # sorted() is stable
        votes: dict[int, int] = {}
        for j in order[:k]:
            votes[int(dbl[j])] = votes.get(int(dbl[j]), 0) + 1
        best = max(votes.values())
        correct += min(c for c, v in votes.items() if v == best) == label
        hits, precisions = 0, []
        for rank, j in enumerate(order, start=1):
            if dbl[j] == label:
                hits += 1
                precisions.append(hits / rank)
        aps.append(sum(precisions) / max(hits, 1))
    return correct / len(q), float(np.mean(aps))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    n_q=st.integers(1, 6),
    n_db=st.integers(1, 25),
    classes=st.integers(1, 4),
    k=st.integers(1, 5),
)
def test_cosine_scores_match_a_brute_force_reference(seed, n_q, n_db, classes, k):
    rng = np.random.default_rng(seed)
    # continuous features: no two cosines tie, so both orders are the same whatever the rounding
    q = rng.normal(size=(n_q, 3)).astype(np.float32)
    db = rng.normal(size=(n_db, 3)).astype(np.float32)
    ql, dbl = rng.integers(0, classes, n_q), rng.integers(0, classes, n_db)
    k = min(k, n_db)
    got = cosine_scores(q, db, ql, dbl, k)
    acc, m = reference(q, db, ql, dbl, k)
    assert got["knn_accuracy"] == pytest.approx(acc)
    assert got["cosine_mAP"] == pytest.approx(m)


def test_a_tied_vote_goes_to_the_lowest_label_and_ties_rank_in_database_order():
    db = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    got = cosine_scores(np.array([[1.0, 0.0]]), db, np.array([1]), np.array([1, 0, 1]), k=2)
    assert got["knn_accuracy"] == 0.0  # one vote each for 1 and 0: label 0 wins
    assert got["cosine_mAP"] == pytest.approx((1 / 1 + 2 / 3) / 2)


def test_the_sample_is_seeded_disjoint_and_refuses_too_many():
    q, db = sample_rows(100, 10, 50, seed=3)
    q2, db2 = sample_rows(100, 10, 50, seed=3)
    assert np.array_equal(q, q2) and np.array_equal(db, db2)
    assert len(q) == 10 and len(db) == 50 and not set(q) & set(db)
    with pytest.raises(ValueError, match="needs 61 images; the dataset has 60"):
        sample_rows(60, 11, 50, seed=0)
