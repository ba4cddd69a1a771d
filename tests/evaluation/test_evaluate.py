"""The holdout's per-user sets the evaluation shares between models (recsys.evaluation.evaluate)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys.evaluation.evaluate import (
    HoldoutSets,
    grouped_items,
    recommendation_lists,
    score_model,
    score_segments,
    train_items,
    truth_sets,
)
from recsys.models.factors import popularity_model


def test_grouped_items_keeps_each_users_order_and_sorts_users() -> None:
    rng = np.random.default_rng(3)
    users = pd.Series([f"u{x}" for x in rng.integers(0, 50, 2_000)], dtype=object)
    items = pd.Series(rng.integers(0, 300, 2_000), dtype="int64")
    got = grouped_items(users, items)
    want = {u: g.astype(int).tolist() for u, g in pd.DataFrame({"u": users, "i": items}).groupby("u")["i"]}
    assert got == want
    assert list(got) == sorted(want)
    assert all(type(i) is int for values in got.values() for i in values)


def test_grouped_items_of_nothing_is_empty() -> None:
    assert grouped_items(pd.Series([], dtype=object), pd.Series([], dtype="int64")) == {}


def test_recommendation_lists_follow_rank_not_row_order() -> None:
    recs = pd.DataFrame({"user": ["b", "a", "a", "b"], "item_id": [7, 5, 6, 8], "rank": [2, 2, 1, 1]})
    assert recommendation_lists(recs) == {"a": [6, 5], "b": [8, 7]}


def test_holdout_sets_exclude_only_holdout_users_training_items() -> None:
    train = pd.DataFrame({"user": ["a", "a", "b", "c"], "item_id": [1, 2, 3, 4]})
    holdout = pd.DataFrame({"user": ["b", "a", "b"], "item_id": [9, 8, 7]})
    sets = HoldoutSets.of(train, holdout)
    assert sets.users == ["a", "b"]
    assert sets.truth == truth_sets(holdout) == {"a": {8}, "b": {9, 7}}
    assert sets.exclude == {"a": [1, 2], "b": [3]}
    assert train_items(train)["c"] == [4]


def test_score_model_is_the_same_with_shared_sets() -> None:
    rng = np.random.default_rng(5)
    train = pd.DataFrame(
        {"user": [f"u{x}" for x in rng.integers(0, 40, 600)], "item_id": rng.integers(0, 60, 600)}
    ).drop_duplicates()
    holdout = pd.DataFrame(
        {"user": [f"u{x}" for x in range(40)], "item_id": rng.integers(0, 60, 40), "rating": np.nan}
    )
    model = popularity_model(train)
    alone = score_model(model, train, holdout, 5, 60)
    shared = score_model(model, train, holdout, 5, 60, sets=HoldoutSets.of(train, holdout))
    assert alone == shared
    assert alone["users_evaluated"] == 40


class CountingModel:
    """A popularity model that counts its rankings."""

    def __init__(self, model) -> None:
        self.model, self.calls = model, 0

    def recommend(self, users, k, exclude=None):
        self.calls += 1
        return self.model.recommend(users, k=k, exclude=exclude)


def test_a_model_scored_twice_on_shared_sets_is_ranked_once() -> None:
    train = pd.DataFrame({"user": ["a", "a", "b", "c", "c"], "item_id": [1, 2, 3, 1, 4]})
    holdout = pd.DataFrame({"user": ["a", "b"], "item_id": [3, 1], "rating": np.nan})
    sets = HoldoutSets.of(train, holdout)
    counted, other = CountingModel(popularity_model(train)), CountingModel(popularity_model(train))
    first = score_model(counted, train, holdout, 2, 4, sets=sets)
    by_segment = score_segments(counted, train, holdout, 2, 4, sets=sets)
    assert counted.calls == 1
    assert by_segment["all"]["ndcg@2"] == first["ndcg@2"]
    score_model(other, train, holdout, 2, 4, sets=sets)
    score_model(counted, train, holdout, 3, 4, sets=sets)  # another k: ranked again
    assert (counted.calls, other.calls) == (2, 1)
