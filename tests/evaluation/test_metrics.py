"""Known-answer tests for recsys.evaluation.metrics (every expected value below is worked out by hand)."""

from __future__ import annotations

import math
import random
import time

import numpy as np
import pytest
from sklearn.metrics import ndcg_score

from recsys.evaluation import metrics as m
from recsys.evaluation.metrics import (
    average_precision_at_k,
    catalog_coverage,
    hit_at_k,
    mae,
    ndcg_at_k,
    novelty,
    precision_at_k,
    ranking_metrics,
    recall_at_k,
    rmse,
    truncate,
)

PER_USER = [precision_at_k, recall_at_k, ndcg_at_k, average_precision_at_k, hit_at_k]


# ---- truncate --------------------------------------------------------------------------------
def test_truncate_cuts_and_copies():
    ranked = [5, 4, 3, 2, 1]
    top = truncate(ranked, 3)
    assert top == [5, 4, 3]
    top.append(99)
    assert ranked == [5, 4, 3, 2, 1]


def test_truncate_short_list_tuple_generator_array_none():
    assert truncate([1, 2], 10) == [1, 2]
    assert truncate((1, 2, 3), 2) == [1, 2]
    assert truncate(iter(range(100)), 3) == [0, 1, 2]
    assert truncate(np.array([7, 8, 9]), 2) == [7, 8]
    assert truncate(None, 5) == []
    assert truncate([1, 2], np.int64(1)) == [1]


@pytest.mark.parametrize("k", [0, -1, 2.0, "3", True, None])
def test_bad_k_is_rejected(k):
    with pytest.raises(ValueError, match="k must be a positive integer"):
        truncate([1, 2, 3], k)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        ranking_metrics({}, {"u": {1}}, k)


# ---- per-user known answers ------------------------------------------------------------------
def test_worked_example_from_the_brief():
    ranked, relevant = [1, 2, 3], {1, 3}
    assert precision_at_k(ranked, relevant, 3) == pytest.approx(2 / 3)
    assert recall_at_k(ranked, relevant, 3) == pytest.approx(1.0)
    assert average_precision_at_k(ranked, relevant, 3) == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert ndcg_at_k(ranked, relevant, 3) == pytest.approx((1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3)))
    assert hit_at_k(ranked, relevant, 3) == 1.0


def test_cut_at_k_ignores_items_below_k():
    ranked, relevant = [1, 2, 3], {1, 3}
    assert precision_at_k(ranked, relevant, 2) == pytest.approx(1 / 2)
    assert recall_at_k(ranked, relevant, 2) == pytest.approx(1 / 2)
    # ideal over min(k=2, R=2) = 2 positions
    assert ndcg_at_k(ranked, relevant, 2) == pytest.approx(1 / (1 + 1 / math.log2(3)))
    # AP@2: one hit at position 1 -> 1/1, normalised by min(2, 2) = 2
    assert average_precision_at_k(ranked, relevant, 2) == pytest.approx(0.5)
    assert hit_at_k([2, 3], {3}, 1) == 0.0


def test_perfect_list_scores_one():
    relevant = {10, 20, 30}
    for k in (1, 2, 3):
        ranked = [10, 20, 30, 40, 50]
        assert ndcg_at_k(ranked, relevant, k) == pytest.approx(1.0)
        assert average_precision_at_k(ranked, relevant, k) == pytest.approx(1.0)
        assert precision_at_k(ranked, relevant, k) == pytest.approx(1.0)
    # more relevant items than k: NDCG and AP still reach 1 (ideal over min(k, R)); recall cannot
    many = set(range(20))
    assert ndcg_at_k(list(range(5)), many, 5) == pytest.approx(1.0)
    assert average_precision_at_k(list(range(5)), many, 5) == pytest.approx(1.0)
    assert recall_at_k(list(range(5)), many, 5) == pytest.approx(5 / 20)


@pytest.mark.parametrize("ranked", [[], [7, 8, 9]])
def test_empty_or_irrelevant_list_scores_zero(ranked):
    for fn in PER_USER:
        assert fn(ranked, {1, 2}, 3) == 0.0


def test_empty_relevant_is_none_for_every_metric():
    for fn in PER_USER:
        assert fn([1, 2, 3], set(), 3) is None
        assert fn([1, 2, 3], [], 3) is None


def test_fewer_than_k_recommendations_precision_divides_by_k():
    ranked, relevant = [1, 2], {1, 2}
    assert precision_at_k(ranked, relevant, 10) == pytest.approx(2 / 10)
    assert recall_at_k(ranked, relevant, 10) == pytest.approx(1.0)
    assert ndcg_at_k(ranked, relevant, 10) == pytest.approx(1.0)  # ideal over min(10, 2) = 2
    assert average_precision_at_k(ranked, relevant, 10) == pytest.approx(1.0)


def test_hit_at_position_three_of_five():
    ranked, relevant = ["a", "b", "c", "d", "e"], {"c", "z"}
    assert precision_at_k(ranked, relevant, 5) == pytest.approx(1 / 5)
    assert recall_at_k(ranked, relevant, 5) == pytest.approx(1 / 2)
    # DCG = 1/log2(4) = 0.5; IDCG = 1 + 1/log2(3)
    assert ndcg_at_k(ranked, relevant, 5) == pytest.approx(0.5 / (1 + 1 / math.log2(3)))
    # AP = (1/3) / min(5, 2)
    assert average_precision_at_k(ranked, relevant, 5) == pytest.approx(1 / 6)


def test_repeated_item_counts_once():
    assert precision_at_k([1, 1, 1], {1}, 3) == pytest.approx(1 / 3)
    assert ndcg_at_k([1, 1], {1}, 2) == pytest.approx(1.0)
    assert average_precision_at_k([1, 1, 2], {1, 2}, 3) == pytest.approx((1 + 2 / 3) / 2)


def test_relevant_may_be_any_collection_and_items_numpy():
    assert precision_at_k(np.array([1, 2, 3]), [3, 4], 3) == pytest.approx(1 / 3)
    assert recall_at_k([np.int64(4)], frozenset({4}), 1) == 1.0


# ---- ranking_metrics -------------------------------------------------------------------------
def test_ranking_metrics_keys_carry_k():
    result = ranking_metrics({"u": [1]}, {"u": {1}}, 10)
    assert set(result) == {"precision@10", "recall@10", "ndcg@10", "map@10", "hit_rate@10", "users_evaluated"}
    assert result["users_evaluated"] == 1
    assert isinstance(result["users_evaluated"], int)


def test_ranking_metrics_averages_and_edge_cases():
    recs = {
        "a": [1, 2, 3],  # the worked example
        "b": [9, 8, 7],  # no hit
        "c": [5],  # empty truth: excluded
        "x": [1, 2, 3],  # not in truth: ignored
        # "d" has truth but no recommendations: counts as an empty list
    }
    truth = {"a": {1, 3}, "b": {1}, "c": set(), "d": {4, 5}}
    result = ranking_metrics(recs, truth, 3)
    assert result["users_evaluated"] == 3  # a, b, d
    assert result["precision@3"] == pytest.approx((2 / 3) / 3)
    assert result["recall@3"] == pytest.approx(1 / 3)
    assert result["map@3"] == pytest.approx(((1 + 2 / 3) / 2) / 3)
    assert result["ndcg@3"] == pytest.approx(((1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))) / 3)
    assert result["hit_rate@3"] == pytest.approx(1 / 3)


def test_ranking_metrics_matches_per_user_functions():
    rng = random.Random(7)
    recs = {u: rng.sample(range(50), 8) for u in range(40)}
    truth = {u: set(rng.sample(range(50), rng.randint(0, 6))) for u in range(45)}
    result = ranking_metrics(recs, truth, 5)
    for key, fn in [
        ("precision@5", precision_at_k),
        ("recall@5", recall_at_k),
        ("ndcg@5", ndcg_at_k),
        ("map@5", average_precision_at_k),
        ("hit_rate@5", hit_at_k),
    ]:
        values = [fn(recs.get(u, []), rel, 5) for u, rel in truth.items()]
        values = [v for v in values if v is not None]
        assert result[key] == pytest.approx(sum(values) / len(values))
    assert result["users_evaluated"] == sum(1 for rel in truth.values() if rel)


def test_ranking_metrics_without_evaluable_users_is_nan():
    for truth in ({}, {"u": set()}):
        result = ranking_metrics({"u": [1, 2]}, truth, 5)
        assert result["users_evaluated"] == 0
        assert all(math.isnan(v) for key, v in result.items() if key != "users_evaluated")


def test_ndcg_matches_sklearn_where_definitions_coincide():
    """sklearn scores a fixed item set and ranks it by score; ours scores a ranked top-k list.

    They coincide when every relevant item is among the scored items (otherwise sklearn cannot see
    it while our ideal DCG counts it), relevance is binary, scores have no ties (sklearn averages
    over ties) and every user has at least one relevant item (sklearn scores such a user 0, we
    exclude them). Both use the 1 / log2(position + 1) discount and an ideal DCG over the top k.
    """
    rng = np.random.default_rng(42)
    n_users, n_items, k = 30, 40, 10
    scores = rng.random((n_users, n_items))
    y_true = (rng.random((n_users, n_items)) < 0.15).astype(int)
    y_true[y_true.sum(axis=1) == 0, 0] = 1
    recs = {u: list(np.argsort(-scores[u])) for u in range(n_users)}
    truth = {u: set(np.flatnonzero(y_true[u]).tolist()) for u in range(n_users)}
    for u in range(n_users):
        expected = ndcg_score(y_true[u : u + 1], scores[u : u + 1], k=k)
        assert ndcg_at_k(recs[u], truth[u], k) == pytest.approx(expected)
    result = ranking_metrics(recs, truth, k)
    assert result["ndcg@10"] == pytest.approx(ndcg_score(y_true, scores, k=k))


def test_ranking_metrics_is_fast_for_6000_users():
    rng = random.Random(0)
    recs = {f"user{u}": rng.sample(range(3000), 10) for u in range(6000)}
    truth = {f"user{u}": set(rng.sample(range(3000), rng.randint(1, 30))) for u in range(6000)}
    start = time.perf_counter()
    result = ranking_metrics(recs, truth, 10)
    elapsed = time.perf_counter() - start
    assert result["users_evaluated"] == 6000
    assert elapsed < 1.0, f"ranking_metrics took {elapsed:.2f}s for 6000 users"


# ---- rating error ----------------------------------------------------------------------------
def test_rmse_and_mae_known_answers():
    y_true = [3.0, 4.0, 5.0, 1.0]
    y_pred = [2.0, 4.0, 3.0, 1.0]  # errors 1, 0, 2, 0
    assert rmse(y_true, y_pred) == pytest.approx(math.sqrt((1 + 0 + 4 + 0) / 4))
    assert mae(y_true, y_pred) == pytest.approx(3 / 4)


def test_rmse_and_mae_exclude_nan_pairs():
    y_true = np.array([3.0, 4.0, 5.0, np.nan])
    y_pred = np.array([2.0, np.nan, 3.0, 1.0])  # only pairs 0 and 2 remain: errors 1, 2
    assert rmse(y_true, y_pred) == pytest.approx(math.sqrt((1 + 4) / 2))
    assert mae(y_true, y_pred) == pytest.approx(3 / 2)


def test_rmse_and_mae_empty_or_all_nan_is_nan():
    assert math.isnan(rmse([], []))
    assert math.isnan(mae([], []))
    assert math.isnan(rmse([1.0, 2.0], [np.nan, np.nan]))
    assert math.isnan(mae([1.0, 2.0], [np.nan, np.nan]))


def test_rmse_length_mismatch_raises():
    with pytest.raises(ValueError, match="differ in length"):
        rmse([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="differ in length"):
        mae([1.0], [1.0, 2.0])


# ---- coverage and novelty --------------------------------------------------------------------
def test_catalog_coverage():
    recs = {"a": [1, 2, 3], "b": [3, 4], "c": []}
    assert catalog_coverage(recs, 10) == pytest.approx(4 / 10)
    assert catalog_coverage(recs, 10, k=1) == pytest.approx(2 / 10)  # items 1 and 3
    assert catalog_coverage({}, 10) == 0.0


def test_catalog_coverage_rejects_bad_sizes():
    with pytest.raises(ValueError, match="catalog_size"):
        catalog_coverage({"a": [1]}, 0)
    with pytest.raises(ValueError, match="distinct items"):
        catalog_coverage({"a": [1, 2, 3]}, 2)


def test_novelty_known_answers():
    # shares 1/2, 1/4, 1/4 -> self-information 1, 2, 2 bits
    popularity = {"pop": 2.0, "mid": 1.0, "niche": 1.0}
    assert novelty({"a": ["pop"]}, popularity) == pytest.approx(1.0)
    assert novelty({"a": ["pop", "niche"], "b": ["mid"]}, popularity) == pytest.approx((1 + 2 + 2) / 3)
    # shares given directly give the same answer
    shares = {"pop": 0.5, "mid": 0.25, "niche": 0.25}
    assert novelty({"a": ["pop", "niche"], "b": ["mid"]}, shares) == pytest.approx(5 / 3)
    assert novelty({"a": ["pop", "niche"]}, popularity, k=1) == pytest.approx(1.0)


def test_novelty_skips_unknown_items_and_empty_is_nan():
    popularity = {"pop": 2.0, "mid": 1.0, "zero": 0.0, "niche": 1.0}
    assert novelty({"a": ["pop", "unknown", "zero"]}, popularity) == pytest.approx(1.0)
    assert math.isnan(novelty({}, popularity))
    assert math.isnan(novelty({"a": ["unknown"]}, popularity))


def test_novelty_rejects_bad_popularity():
    with pytest.raises(ValueError, match=">= 0"):
        novelty({"a": [1]}, {1: -1.0})
    with pytest.raises(ValueError, match=">= 0"):
        novelty({"a": [1]}, {1: float("nan")})
    with pytest.raises(ValueError, match="sums to 0"):
        novelty({"a": [1]}, {1: 0.0})


def test_metric_key():
    assert m.metric_key("ndcg", 10) == "ndcg@10"
    assert m.RANKING_METRICS == ("precision", "recall", "ndcg", "map", "hit_rate")


def test_intra_list_diversity_known_answers():
    from recsys.evaluation.metrics import intra_list_diversity

    genres = {1: {"Horror"}, 2: {"Horror"}, 3: {"Comedy"}, 4: {"Horror", "Comedy"}, 5: set()}
    assert intra_list_diversity({"u": [1, 2]}, genres) == 0.0
    assert intra_list_diversity({"u": [1, 3]}, genres) == 1.0
    # pairs (1,3)=1, (1,4)=0.5, (3,4)=0.5 -> 2/3; item 5 (no genres) and 99 (unknown) are left out
    assert math.isclose(intra_list_diversity({"u": [1, 3, 4, 5, 99]}, genres), 2 / 3)
    assert math.isclose(intra_list_diversity({"a": [1, 2], "b": [1, 3], "c": [1]}, genres), 0.5)
    assert intra_list_diversity({"u": [1, 3]}, genres, k=1) != intra_list_diversity({"u": [1, 3]}, genres)
    assert math.isnan(intra_list_diversity({"u": [5, 99]}, genres))


def test_intra_list_diversity_of_many_lists_is_the_pairwise_mean():
    from recsys.evaluation.metrics import intra_list_diversity

    rng = np.random.default_rng(8)
    names = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi", "War"]
    genres = {i: set(rng.choice(names, rng.integers(0, 4), replace=False).tolist()) for i in range(60)}
    recs = {u: rng.integers(0, 70, rng.integers(0, 12)).tolist() for u in range(300)}  # 60..69: unknown
    per_list = []
    for ranked in recs.values():
        sets = [frozenset(genres.get(i) or ()) for i in ranked[:8]]
        sets = [s for s in sets if s]
        pairs = [1 - len(a & b) / len(a | b) for n, a in enumerate(sets) for b in sets[n + 1 :]]
        if pairs:
            per_list.append(sum(pairs) / len(pairs))
    assert math.isclose(intra_list_diversity(recs, genres, k=8), sum(per_list) / len(per_list), rel_tol=1e-12)


def test_each_list_s_diversity_in_order_nan_without_a_pair():
    """``list_diversities`` (what the Spark evaluation scores a batch of users with): each list's
    value is that list's own intra-list diversity, in the given order; NaN for a list without two
    items with genres."""
    from recsys.evaluation.metrics import intra_list_diversity, list_diversities

    rng = np.random.default_rng(9)
    names = ["Action", "Comedy", "Drama", "Horror", "Romance"]
    genres = {i: set(rng.choice(names, rng.integers(0, 3), replace=False).tolist()) for i in range(40)}
    recs = {f"u{u}": rng.integers(0, 45, rng.integers(0, 9)).tolist() for u in range(200)}
    each = list_diversities(recs, genres, k=6)
    assert each.shape == (200,)
    for value, ranked in zip(each, recs.values(), strict=True):
        alone = intra_list_diversity({"one": ranked}, genres, k=6)
        assert (math.isnan(value) and math.isnan(alone)) or math.isclose(value, alone, rel_tol=1e-12)
    assert np.isnan(each).any() and (~np.isnan(each)).sum() > 100
    assert math.isclose(np.nanmean(each), intra_list_diversity(recs, genres, k=6), rel_tol=1e-12)
    assert np.isnan(list_diversities(recs, {}, k=6)).all()


def test_gini_concentration_known_answers():
    from recsys.evaluation.metrics import gini_concentration

    assert gini_concentration({"a": [1, 2], "b": [3, 4]}, catalog_size=4) == pytest.approx(0.0)
    # one item takes every slot of a 4-item catalogue: (n - 1) / n
    assert gini_concentration({"a": [1], "b": [1], "c": [1]}, catalog_size=4) == pytest.approx(0.75)
    assert gini_concentration({"a": [1, 2]}, catalog_size=2, k=1) == pytest.approx(0.5)
    assert math.isnan(gini_concentration({"a": []}, catalog_size=3))
    with pytest.raises(ValueError, match="catalog_size"):
        gini_concentration({"a": [1, 2, 3]}, catalog_size=2)
