"""Known-answer tests for the factor scorer: hand-set factors with an obvious right top-k."""

import numpy as np
import pandas as pd
import pytest

from recsys.model import FactorModel, popularity_model, seen_matrix


def hand_model() -> FactorModel:
    # two tastes: user "x" likes dimension 0, user "y" likes dimension 1
    users = np.array(["x", "y"])
    items = np.array([10, 11, 12, 13], dtype=np.int64)
    uf = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    itf = np.array([[0.9, 0.0], [0.8, 0.1], [0.0, 0.7], [0.1, 0.95]], dtype=np.float32)
    train = pd.DataFrame({"user": ["x"], "item_id": [10]})
    return FactorModel(
        users, items, uf, itf, seen_matrix(train, users, items), popular=np.array([12, 10, 13, 11])
    )


def test_top_k_is_highest_dot_product_excluding_seen():
    recs = hand_model().recommend(["x", "y"], k=2)
    x = recs[recs.user == "x"]
    y = recs[recs.user == "y"]
    assert x["item_id"].tolist() == [11, 13]  # 10 was seen
    assert y["item_id"].tolist() == [13, 12]
    assert y["rank"].tolist() == [1, 2]
    assert y["score"].iloc[0] == pytest.approx(0.95)


def test_extra_exclusions_and_unknown_users_fall_back_to_popularity():
    recs = hand_model().recommend(["y", "stranger"], k=2, exclude={"y": [13], "stranger": [12]})
    assert recs[recs.user == "y"]["item_id"].tolist() == [12, 11]
    fallback = recs[recs.user == "stranger"]
    assert fallback["item_id"].tolist() == [10, 13]
    assert fallback["score"].isna().all()


def test_k_larger_than_catalogue_and_bad_k():
    recs = hand_model().recommend(["x"], k=10)
    assert sorted(recs["item_id"]) == [11, 12, 13]
    with pytest.raises(ValueError):
        hand_model().recommend(["x"], k=0)


def test_save_load_round_trip(tmp_path):
    model = hand_model()
    model.meta = {"kind": "als"}
    loaded = FactorModel.load(model.save(tmp_path / "m"))
    pd.testing.assert_frame_equal(loaded.recommend(["x", "y"], k=3), model.recommend(["x", "y"], k=3))
    assert loaded.meta == {"kind": "als"}


def test_popularity_model_ranks_by_distinct_users():
    train = pd.DataFrame({"user": ["a", "b", "c", "a", "b", "c"], "item_id": [1, 1, 1, 2, 2, 3]})
    model = popularity_model(train)
    assert model.popular.tolist() == [1, 2, 3]
    recs = model.recommend(["c"], k=2)
    assert recs["item_id"].tolist() == [2]  # c has seen 1 and 3


def test_blocked_scoring_matches_brute_force():
    rng = np.random.default_rng(0)
    users = np.array([f"u{i}" for i in range(5000)])
    items = np.arange(300, dtype=np.int64)
    uf = rng.normal(size=(5000, 8)).astype(np.float32)
    itf = rng.normal(size=(300, 8)).astype(np.float32)
    empty = pd.DataFrame({"user": pd.Series(dtype=str), "item_id": pd.Series(dtype=np.int64)})
    model = FactorModel(users, items, uf, itf, seen_matrix(empty, users, items), popular=items)
    recs = model.recommend(users.tolist(), k=5)
    brute = np.argsort(-(uf @ itf.T), axis=1)[:, :5]
    assert (recs["item_id"].to_numpy().reshape(5000, 5) == items[brute]).mean() > 0.999
