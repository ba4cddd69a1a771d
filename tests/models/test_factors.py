"""Known-answer tests for the factor scorer: hand-set factors with an obvious right top-k."""

import numpy as np
import pandas as pd
import pytest

from recsys.models.factors import FactorModel, popularity_model, seen_matrix


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


@pytest.mark.parametrize("n_items", [7, 640, 641, 3706, 10_000])
@pytest.mark.parametrize("k", [1, 10, 25])
def test_top_k_matches_a_full_sort(n_items, k):
    from recsys.models.factors import top_k

    rng = np.random.default_rng(n_items * 31 + k)
    scores = rng.normal(size=(300, n_items)).astype(np.float32)
    before = scores.copy()
    top, values = top_k(scores, k)
    expected = np.argsort(-scores, axis=1, kind="stable")[:, : min(k, n_items)]
    np.testing.assert_array_equal(top, expected)  # continuous scores: no ties, so the order is unique
    np.testing.assert_array_equal(values, np.take_along_axis(scores, expected, axis=1))
    np.testing.assert_array_equal(scores, before)  # the input is left alone


def test_top_k_rows_with_fewer_finite_scores_than_k():
    from recsys.models.factors import top_k

    rng = np.random.default_rng(3)
    scores = rng.normal(size=(4, 5000)).astype(np.float32)
    scores[0, :] = -np.inf
    scores[0, [17, 4999]] = [2.0, 1.0]  # only two finite scores in row 0
    scores[1, :] = -np.inf  # nothing left in row 1
    top, values = top_k(scores, 10)
    assert top.shape == (4, 10) and (top >= 0).all() and (top < 5000).all()
    assert top[0, :2].tolist() == [17, 4999] and np.isneginf(values[0, 2:]).all()
    assert np.isneginf(values[1]).all()


def test_large_catalogue_recommend_excludes_seen_and_extra_items_exactly():
    rng = np.random.default_rng(11)
    n_users, n_items = 700, 4000
    users = np.array([f"u{i}" for i in range(n_users)])
    items = np.arange(100, 100 + n_items, dtype=np.int64)
    uf = rng.normal(size=(n_users, 8)).astype(np.float32)
    itf = rng.normal(size=(n_items, 8)).astype(np.float32)
    brute = uf @ itf.T
    seen_pairs = pd.DataFrame(
        {"user": np.repeat(users, 30), "item_id": items[np.argsort(-brute, axis=1)[:, :30].ravel()]}
    )
    model = FactorModel(users, items, uf, itf, seen_matrix(seen_pairs, users, items), popular=items)
    # u0 is also barred from its 31st..35th best items and from an item id the model does not know
    extra = items[np.argsort(-brute[0])[30:35]].tolist() + [99]
    recs = model.recommend(["stranger", *users.tolist()], k=10, exclude={"u0": extra})
    brute[np.arange(n_users)[:, None], np.argsort(-brute, axis=1)[:, :30]] = -np.inf
    brute[0, extra[:-1] - items[0]] = -np.inf
    expected = items[np.argsort(-brute, axis=1)[:, :10]]
    got = recs[recs.user != "stranger"]["item_id"].to_numpy().reshape(n_users, 10)
    np.testing.assert_array_equal(got, expected)
    assert recs[recs.user == "stranger"]["score"].isna().all()
    assert recs["user"].iloc[0] == "u0"  # known users first, in the order asked
