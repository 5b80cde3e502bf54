"""Retrieval metrics against brute-force references: many ties, single- and multi-label, topk."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests import reference as ref
from usdh import metrics as M


@st.composite
def retrieval_case(draw, max_db: int = 30, multilabel: bool | None = None):
    n_bytes = draw(st.sampled_from([1, 2, 8]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n_q = draw(st.integers(1, 4))
    n_db = draw(st.integers(1, max_db))
    pool = rng.integers(0, 256, (draw(st.integers(1, 5)), n_bytes), dtype=np.uint8)
    q = pool[rng.integers(0, len(pool), n_q)]
    db = pool[rng.integers(0, len(pool), n_db)]
    if multilabel is None:
        multilabel = draw(st.booleans())
    n_cls = draw(st.integers(1, 4))
    if multilabel:
        ql = (rng.random((n_q, n_cls)) < 0.4).astype(np.uint8)
        # every query has a label (one without is refused); database rows may have none
        ql[np.flatnonzero(ql.sum(1) == 0), rng.integers(0, n_cls)] = 1
        dl = (rng.random((n_db, n_cls)) < 0.4).astype(np.uint8)
    else:
        ql = rng.integers(0, n_cls, n_q)
        dl = rng.integers(0, n_cls, n_db)
    return q, db, ql, dl


@settings(max_examples=200, deadline=None)
@given(retrieval_case(max_db=60), st.data())
def test_map_index_ties_matches_brute_force(case, data):
    q, db, ql, dl = case
    topk = data.draw(st.one_of(st.none(), st.integers(1, db.shape[0])))
    d, rel = ref.distances(q, db), ref.relevance(ql, dl)
    k = db.shape[0] if topk is None else topk
    expected = [ref.ap_index(d[i], rel[i], k) for i in range(q.shape[0])]
    got = M.average_precisions(q, db, ql, dl, topk=topk)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    assert M.mean_average_precision(q, db, ql, dl, topk=topk) == pytest.approx(np.mean(expected))


@settings(max_examples=150, deadline=None)
@given(retrieval_case(max_db=7), st.data())
def test_tie_aware_map_equals_mean_over_all_tie_orders(case, data):
    q, db, ql, dl = case
    topk = data.draw(st.one_of(st.none(), st.integers(1, db.shape[0])))
    d, rel = ref.distances(q, db), ref.relevance(ql, dl)
    k = db.shape[0] if topk is None else topk
    expected = [ref.ap_tie_average(d[i], rel[i], k) for i in range(q.shape[0])]
    got = M.average_precisions(q, db, ql, dl, topk=topk, ties="average")
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)


@settings(max_examples=100, deadline=None)
@given(retrieval_case(max_db=7), st.data())
def test_precision_at_n_both_tie_rules(case, data):
    q, db, ql, dl = case
    ns = data.draw(st.lists(st.integers(1, db.shape[0]), min_size=1, max_size=3))
    d, rel = ref.distances(q, db), ref.relevance(ql, dl)
    exp_index = [np.mean([rel[i, ref.ranking(d[i])[:n]].mean() for i in range(len(q))]) for n in ns]
    exp_ties = [
        np.mean([ref.precision_at_n_tie_average(d[i], rel[i], n) for i in range(len(q))])
        for n in ns
    ]
    np.testing.assert_allclose(M.precision_at_n(q, db, ql, dl, ns=ns), exp_index, atol=1e-12)
    np.testing.assert_allclose(
        M.precision_at_n(q, db, ql, dl, ns=ns, ties="average"), exp_ties, atol=1e-12
    )


@settings(max_examples=100, deadline=None)
@given(retrieval_case(max_db=40))
def test_pr_curve_by_radius_matches_brute_force(case):
    q, db, ql, dl = case
    d, rel = ref.distances(q, db), ref.relevance(ql, dl)
    n_bits = q.shape[1] * 8
    precision, recall = M.precision_recall_curve(q, db, ql, dl)
    assert precision.shape == recall.shape == (n_bits + 1,)
    for r in range(n_bits + 1):
        inside = d <= r
        found = (inside & rel).sum(1)
        # precision: over the queries whose lookup is not empty (none: no precision, NaN)
        nonempty = inside.sum(1) > 0
        p = [found[i] / inside[i].sum() for i in range(len(q)) if nonempty[i]]
        rc = np.where(rel.sum(1) > 0, found / np.maximum(rel.sum(1), 1), 0.0)
        if p:
            assert precision[r] == pytest.approx(np.mean(p))
        else:
            assert np.isnan(precision[r])
        assert recall[r] == pytest.approx(rc.mean())
        # the lookup figure counts an empty lookup as precision 0, over all queries
        zero = np.where(nonempty, found / np.maximum(inside.sum(1), 1), 0.0)
        assert M.precision_within_radius(q, db, ql, dl, r=r) == pytest.approx(zero.mean())


@settings(max_examples=60, deadline=None)
@given(retrieval_case(max_db=7), st.data())
def test_evaluate_retrieval_agrees_with_the_single_metrics(case, data):
    q, db, ql, dl = case
    topk = data.draw(st.integers(1, db.shape[0]))
    ns = [1, db.shape[0]]
    ks = data.draw(st.lists(st.integers(1, db.shape[0]), min_size=1, max_size=4, unique=True))
    out = M.evaluate_retrieval(q, db, ql, dl, topk=topk, ns=ns, radius=2, ks=ks)
    # the mAP@k curve: mAP at each k, both tie rules
    assert out["map_at_k"]["k"] == ks
    for k, a, b in zip(ks, out["map_at_k"]["mAP"], out["map_at_k"]["mAP_tie_aware"], strict=True):
        assert a == pytest.approx(M.mean_average_precision(q, db, ql, dl, topk=k))
        assert b == pytest.approx(M.mean_average_precision(q, db, ql, dl, topk=k, ties="average"))
    assert out["mAP"] == pytest.approx(M.mean_average_precision(q, db, ql, dl, topk=topk))
    assert out["mAP_all"] == pytest.approx(M.mean_average_precision(q, db, ql, dl))
    assert out["mAP_tie_aware"] == pytest.approx(
        M.mean_average_precision(q, db, ql, dl, topk=topk, ties="average")
    )
    assert out["mAP_all_tie_aware"] == pytest.approx(
        M.mean_average_precision(q, db, ql, dl, ties="average")
    )
    np.testing.assert_allclose(
        out["precision_at_n"]["precision"], M.precision_at_n(q, db, ql, dl, ns)
    )
    # each query's figures: the per-query functions, and their means are the scalars
    pq = out["per_query"]
    np.testing.assert_allclose(pq["ap"], M.average_precisions(q, db, ql, dl, topk=topk))
    np.testing.assert_allclose(
        pq["ap_all_tie_aware"], M.average_precisions(q, db, ql, dl, ties="average")
    )
    assert pq["precision_r2"].mean() == pytest.approx(out["precision_r2"])
    assert pq["precision_r2"].mean() == pytest.approx(M.precision_within_radius(q, db, ql, dl, 2))
    # brute force: the items within distance 2 of each query
    qb, dbb = np.unpackbits(q, axis=1), np.unpackbits(db, axis=1)
    dist = (qb[:, None, :] != dbb[None, :, :]).sum(axis=2)
    ql_, dl_ = np.asarray(ql), np.asarray(dl)
    rel = ql_[:, None] == dl_[None, :] if ql_.ndim == 1 else (ql_ @ dl_.T) > 0
    found = (dist <= 2).any(axis=1)
    assert np.array_equal(pq["found_r2"], found)
    assert out["empty_r2"] == pytest.approx(1 - found.mean())
    n_rel = rel.sum(axis=1)
    recall = np.where(n_rel > 0, (rel & (dist <= 2)).sum(axis=1) / np.maximum(n_rel, 1), 0.0)
    np.testing.assert_allclose(pq["recall_r2"], recall)
    assert out["recall_r2"] == pytest.approx(recall.mean())
    inside = dist <= 2
    if found.any():
        p = [(rel[i] & inside[i]).sum() / inside[i].sum() for i in np.flatnonzero(found)]
        assert out["precision_r2_nonempty"] == pytest.approx(np.mean(p))
    else:
        assert out["precision_r2_nonempty"] is None


def test_class_sorted_database_inflates_index_tie_map_but_not_tie_aware():
    """The effect the foundation issue measured: random 16-bit codes, database stored by class.

    Storing the same database in another order changes mAP with index tie-breaking, but the
    tie-aware figure depends only on per-radius counts, so it is exactly unchanged.
    """
    rng = np.random.default_rng(0)
    n_db, n_q = 10000, 300
    db = rng.integers(0, 256, (n_db, 2), dtype=np.uint8)
    dl = rng.integers(0, 10, n_db)
    q = rng.integers(0, 256, (n_q, 2), dtype=np.uint8)
    ql = rng.integers(0, 10, n_q)
    by_class = np.argsort(dl, kind="stable")
    m_shuffled = M.mean_average_precision(q, db, ql, dl, topk=1000)
    m_sorted = M.mean_average_precision(q, db[by_class], ql, dl[by_class], topk=1000)
    t_shuffled = M.mean_average_precision(q, db, ql, dl, topk=1000, ties="average")
    t_sorted = M.mean_average_precision(
        q, db[by_class], ql, dl[by_class], topk=1000, ties="average"
    )
    assert m_sorted > m_shuffled + 0.005
    assert t_sorted == pytest.approx(t_shuffled, rel=1e-12)
    assert abs(t_shuffled - m_shuffled) < 0.01


def test_perfect_codes_give_map_one():
    labels = np.arange(8) % 4
    codes = np.packbits(np.eye(8, dtype=bool)[labels], axis=1)
    assert M.mean_average_precision(codes, codes, labels, labels) == 1.0
    assert M.mean_average_precision(codes, codes, labels, labels, ties="average") == 1.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"query_labels": np.zeros(3, dtype=int)}, "3 query labels for 2"),
        ({"db_labels": np.zeros(4, dtype=int)}, "4 database labels for 5"),
        ({"query_labels": np.zeros(2)}, "integer class labels"),
        ({"query_labels": np.zeros((2, 3)), "db_labels": np.zeros((5, 4))}, "3 classes"),
        ({"query_labels": np.full((2, 3), 2), "db_labels": np.zeros((5, 3))}, "0/1 matrix"),
        ({"query_labels": np.zeros((2, 3))}, "must both be 1-D"),
        ({"topk": 6}, "larger than the database"),
        ({"topk": 0}, "at least 1"),
        ({"ties": "random"}, "ties must be"),
        ({"db_codes": np.zeros((5, 2), dtype=np.uint8)}, "16"),
        ({"db_codes": np.zeros((0, 1), dtype=np.uint8), "db_labels": np.zeros(0, int)}, "empty"),
    ],
)
def test_metrics_reject_bad_input(kwargs, match):
    args = {
        "query_codes": np.zeros((2, 1), dtype=np.uint8),
        "db_codes": np.zeros((5, 1), dtype=np.uint8),
        "query_labels": np.zeros(2, dtype=int),
        "db_labels": np.zeros(5, dtype=int),
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        M.mean_average_precision(**args)


def test_multilabel_queries_without_a_label_are_refused_by_every_metric():
    """An all-zero query row can have no relevant item: refused, not a silent AP of 0."""
    rng = np.random.default_rng(0)
    q = rng.integers(0, 256, (9, 2), dtype=np.uint8)
    db = rng.integers(0, 256, (20, 2), dtype=np.uint8)
    ql = np.ones((9, 3), dtype=np.uint8)
    ql[[1, 2, 4, 5, 7, 8]] = 0
    dl = (rng.random((20, 3)) < 0.5).astype(np.uint8)
    calls = [
        M.mean_average_precision,
        M.average_precisions,
        M.precision_recall_curve,
        M.precision_within_radius,
        lambda *a: M.precision_at_n(*a, ns=[5]),
        lambda *a: M.evaluate_retrieval(*a, topk=5),
        lambda q, db, ql, dl: M.relevance_masks(ql, dl, len(q), len(db)),
    ]
    for call in calls:
        with pytest.raises(ValueError) as err:
            call(q, db, ql, dl)
        msg = str(err.value)
        assert "6 of 9 queries have no label" in msg and "rows 1, 2, 4, 5, 7, ..." in msg
        assert "drop those queries or fix their labels" in msg
    one = np.ones((9, 3), dtype=np.uint8)
    one[3] = 0
    with pytest.raises(ValueError, match=r"1 of 9 queries have no label \(.*; rows 3\)"):
        M.mean_average_precision(q, db, one, dl)


def test_multilabel_database_rows_without_a_label_are_never_relevant():
    q = np.array([[0], [255]], dtype=np.uint8)
    db = np.array([[0], [0], [255], [255]], dtype=np.uint8)
    ql = np.array([[1, 0], [0, 1]], dtype=np.uint8)
    dl = np.array([[0, 0], [1, 0], [0, 0], [0, 1]], dtype=np.uint8)  # rows 0 and 2: no label
    # each query's one relevant item is ranked second, behind an unlabelled one at distance 0
    np.testing.assert_allclose(M.average_precisions(q, db, ql, dl), [0.5, 0.5])
    # single-label data is unchanged: every label value is a class, 0 included
    sl = np.array([0, 1])
    assert M.mean_average_precision(q, db, sl, np.array([0, 0, 1, 1])) == 1.0
