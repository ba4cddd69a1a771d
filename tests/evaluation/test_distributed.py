"""The Spark evaluation gives the pandas evaluation's metric dicts, on one small world and its edge
cases; a real local SparkSession (the shared ``spark`` fixture) and real Spark ALS."""

from __future__ import annotations

import math
import random

import numpy as np
import pandas as pd
import pytest

from recsys.evaluation.distributed import (
    gini_of_counts,
    holdout_frames,
    novelty_of_counts,
    score_model_spark,
    score_segments_spark,
    score_users,
)
from recsys.evaluation.evaluate import score_model, score_segments
from recsys.evaluation.metrics import gini_concentration, novelty
from recsys.models.content import ContentModel, ContentRecommender
from recsys.models.factors import FactorModel, popularity_model, seen_matrix
from recsys.models.hybrid import HybridConfig, HybridModel
from recsys.models.rerank import RerankConfig, Reranked
from recsys.models.sides import splits
from recsys.training.als import ALSConfig, train_als

K = 5
N_ITEMS = 30  # items 100..129; 126..129 appear only in the holdout (new items)
GENRES = {
    100 + i: {("Drama", "Comedy", "Horror")[i % 3]} | ({"Romance"} if i % 4 == 0 else set())
    for i in range(N_ITEMS)
}


def world(seed: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    """40 users: even users like even items, odd users odd ones (mostly); users 0-4 have 1-3
    training pairs (cold), 'stranger' none (unknown to every model), 'greedy' trained on every known
    item (nothing left to recommend); the holdout has items no training pair has."""
    rng = np.random.default_rng(seed)
    train, holdout = [], []
    known = list(range(100, 126))
    for u in range(40):
        liked = [i for i in known if i % 2 == u % 2] + list(rng.choice(known, 3, replace=False))
        rng.shuffle(liked)
        n_train = 1 + u % 3 if u < 5 else 8
        for j, item in enumerate(dict.fromkeys(int(i) for i in liked)):
            row = (f"u{u:02d}", item, 1.0, float(rng.integers(1, 6)))
            if j < n_train:
                train.append(row)
            elif j < n_train + 3:
                holdout.append(row)
        if u % 7 == 0:
            holdout.append((f"u{u:02d}", 126 + u % 4, 1.0, np.nan))  # a new item, no rating
    train.extend(("greedy", i, 1.0, 3.0) for i in known)
    holdout.extend([("greedy", 127, 1.0, 4.0), ("stranger", 101, 1.0, 2.0), ("stranger", 128, 1.0, 5.0)])
    columns = ["user", "item_id", "strength", "rating"]
    return pd.DataFrame(train, columns=columns), pd.DataFrame(holdout, columns=columns)


def assert_same(spark_metrics: dict, pandas_metrics: dict) -> None:
    assert list(spark_metrics) == list(pandas_metrics)
    for key, expected in pandas_metrics.items():
        got = spark_metrics[key]
        if isinstance(expected, dict):
            assert_same(got, expected)
        elif math.isnan(expected):
            assert math.isnan(got), key
        else:
            assert got == pytest.approx(expected, rel=1e-9, abs=1e-9), key


@pytest.fixture(scope="module")
def data(spark):
    train, holdout = world()
    return train, holdout, spark.createDataFrame(train), spark.createDataFrame(holdout)


@pytest.fixture(scope="module")
def frames(data):
    _, _, train_sdf, holdout_sdf = data
    with holdout_frames(train_sdf, holdout_sdf) as held:
        yield held


@pytest.fixture(scope="module")
def als(spark, data):
    train = data[0]
    return train_als(train, ALSConfig(rank=4, max_iter=5, reg_param=0.05, alpha=5.0, seed=1), spark)


def explicit_model(train: pd.DataFrame) -> FactorModel:
    """Hand-set factors of a model trained on explicit ratings (so RMSE / MAE are computed)."""
    rng = np.random.default_rng(0)
    users = np.array(sorted(train["user"].unique()))
    items = np.arange(100, 126, dtype=np.int64)
    return FactorModel(
        users=users,
        items=items,
        user_factors=rng.uniform(0.5, 1.5, (len(users), 3)).astype(np.float32),
        item_factors=rng.uniform(0.5, 1.5, (len(items), 3)).astype(np.float32),
        seen=seen_matrix(train, users, items),
        popular=items[::-1].copy(),
        meta={"kind": "als", "config": {"implicit_prefs": False}},
    )


def test_als_model_same_metrics_both_ways(data, frames, als):
    train, holdout, _, _ = data
    expected = score_model(als, train, holdout, K, N_ITEMS, GENRES)
    got = score_model_spark(als, frames, K, N_ITEMS, GENRES)
    assert_same(got, expected)
    assert got["users_evaluated"] == 42  # 40 users, greedy and stranger
    assert 0 < got[f"ndcg@{K}"] < 1 and math.isnan(got["rmse"])  # implicit: no rating error


def test_popularity_model_same_metrics_and_segments(data, frames):
    train, holdout, _, _ = data
    popular = popularity_model(train)
    assert_same(
        score_model_spark(popular, frames, K, N_ITEMS), score_model(popular, train, holdout, K, N_ITEMS)
    )
    expected = score_segments(popular, train, holdout, K, N_ITEMS, cold_user_max=4, item_genres=GENRES)
    got = score_segments_spark(popular, frames, K, N_ITEMS, cold_user_max=4, item_genres=GENRES)
    assert_same(got, expected)
    # u00-u04 (1-3 pairs) and stranger (none) are cold; only users holding a new item count there
    assert got["cold_users"]["users_evaluated"] == 6
    assert got["warm_users"]["users_evaluated"] == 36
    assert got["new_items"]["users_evaluated"] == 8  # u00, u07, ..., u35, greedy, stranger


def test_als_segments_same_both_ways(data, frames, als):
    train, holdout, _, _ = data
    expected = score_segments(als, train, holdout, K, N_ITEMS, cold_user_max=5)
    assert_same(score_segments_spark(als, frames, K, N_ITEMS, cold_user_max=5), expected)


def test_explicit_model_rating_errors_same_both_ways(data, frames):
    train, holdout, _, _ = data
    model = explicit_model(train)
    expected = score_model(model, train, holdout, K, N_ITEMS)
    got = score_model_spark(model, frames, K, N_ITEMS)
    assert_same(got, expected)
    assert got["rmse"] > 0 and got["mae"] > 0


def test_reranked_model_same_both_ways(data, frames, als):
    """A model that is no FactorModel (the served re-ranker) is broadcast and scored the same way."""
    train, holdout, _, _ = data
    model = Reranked(als, GENRES, train, RerankConfig(method="mmr", candidates=12, mmr_lambda=0.5))
    assert_same(
        score_model_spark(model, frames, K, N_ITEMS, GENRES),
        score_model(model, train, holdout, K, N_ITEMS, GENRES),
    )


def catalogue() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": list(GENRES),
            "title": [f"Film {i}" for i in GENRES],
            "genres": ["|".join(sorted(g)) for g in GENRES.values()],
            "release_year": [1990 + i % 20 for i in GENRES],
        }
    )


class Popular:
    """A Recommender with no sides to split (the same list for everyone): broadcast whole."""

    def recommend(self, users, k=10, exclude=None):  # noqa: ANN001, ANN201
        rows = [(u, r + 1, 100 + r, float(-r)) for u in users for r in range(k)]
        return pd.DataFrame(rows, columns=["user", "rank", "item_id", "score"])


def test_content_hybrid_and_unsplit_models_same_both_ways(data, frames, als):
    """Content alone and the hybrid (re-ranked too) travel as an item side and per-user inputs;
    a model without sides is broadcast whole: the same metrics as pandas every way."""
    train, holdout, _, _ = data
    content = ContentModel.fit(catalogue())
    hybrid = HybridModel(als, content, train, HybridConfig(cold_user_max=3))
    models = {
        "content": ContentRecommender(content, train),
        "hybrid": hybrid,
        "reranked hybrid": Reranked(hybrid, GENRES, train, RerankConfig(method="mmr", candidates=12)),
        "unsplit": Popular(),
    }
    assert [splits(m) for m in models.values()] == [True, True, True, False]
    for name, model in models.items():
        expected = score_segments(model, train, holdout, K, N_ITEMS, cold_user_max=4, item_genres=GENRES)
        got = score_segments_spark(model, frames, K, N_ITEMS, cold_user_max=4, item_genres=GENRES)
        assert_same(got, expected)
        assert got["all"]["users_evaluated"] == 42, name
        assert 0 < got["all"][f"ndcg@{K}"] < 1, name


def test_no_new_items_and_empty_holdout(spark, data, als):
    """Edge cases: a segment without users is NaN with users_evaluated 0; an empty holdout scores
    NaN everywhere but coverage 0, both ways."""
    train, holdout, train_sdf, _ = data
    old_only = holdout[holdout["item_id"] < 126].reset_index(drop=True)
    with holdout_frames(train_sdf, spark.createDataFrame(old_only)) as held:
        got = score_segments_spark(als, held, K, N_ITEMS)
        assert_same(got, score_segments(als, train, old_only, K, N_ITEMS))
        assert got["new_items"]["users_evaluated"] == 0 and math.isnan(got["new_items"][f"ndcg@{K}"])
    empty = holdout.iloc[0:0]
    with holdout_frames(
        train_sdf,
        spark.createDataFrame(empty, schema="user string, item_id bigint, strength double, rating double"),
    ) as held:
        got = score_model_spark(als, held, K, N_ITEMS)
        assert_same(got, score_model(als, train, empty, K, N_ITEMS))
        assert got["users_evaluated"] == 0 and got[f"coverage@{K}"] == 0.0


def test_score_users_empty_truth_and_no_recommendations(data):
    """A user the model gives nothing (every item excluded) scores 0 on every metric; an empty
    (new-item) truth is NaN, left out of the means by the aggregation."""
    train = data[0]
    model = explicit_model(train)
    block = pd.DataFrame(
        {
            "user": ["greedy", "u10"],
            "truth": [np.array([127]), np.array([110, 112])],
            "new_truth": [np.array([127]), np.array([], dtype=np.int64)],
            "exclude": [None, np.array([100, 102])],
            "n_train": [26, 8],
        }
    )
    out = score_users(model, block, K, GENRES)
    greedy, u10 = out.iloc[0], out.iloc[1]
    assert list(greedy["items"]) == [] and greedy["precision"] == 0.0 and greedy["new_ndcg"] == 0.0
    assert math.isnan(greedy["diversity"])
    assert len(u10["items"]) == K and not {100, 102} & set(u10["items"])  # exclusions applied
    assert math.isnan(u10["new_precision"]) and not math.isnan(u10["precision"])
    assert list(out["n_train"]) == [26, 8]


@pytest.mark.parametrize("seed", range(5))
def test_catalogue_metrics_from_counts_match_the_metric_functions(seed):
    rng = random.Random(seed)
    lists = {u: rng.sample(range(50), rng.randint(0, 8)) for u in range(30)}
    popularity = {i: rng.randint(0, 9) for i in range(60)}
    popularity[0] = popularity[0] or 1  # not all zero
    counts: dict[int, int] = {}
    for items in lists.values():
        for item in items:
            counts[item] = counts.get(item, 0) + 1
    n = np.array(list(counts.values()), dtype=np.int64)
    pop = np.array([popularity.get(i, 0) for i in counts], dtype=np.int64)
    assert gini_of_counts(n, 64) == pytest.approx(gini_concentration(lists, 64), abs=1e-12)
    expected = novelty(lists, popularity)
    got = novelty_of_counts(n, pop, sum(popularity.values()))
    assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(expected, abs=1e-12)
    assert math.isnan(gini_of_counts(np.array([], dtype=np.int64), 5))
    with pytest.raises(ValueError, match="catalog_size"):
        gini_of_counts(np.ones(6, dtype=np.int64), 5)
