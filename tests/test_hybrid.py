"""Known-answer tests of the hybrid: ALS for warm users, content for cold users and new items."""

import numpy as np
import pandas as pd
import pytest

from recsys.content import ContentModel
from recsys.hybrid import HybridConfig, HybridModel
from recsys.model import FactorModel, seen_matrix


def world(seed: int = 0):
    """8 horror films (ids 100-107) and 8 comedies (200-207); ALS knows all but the new horror film
    999; warm users have watched 6 films of their genre, the cold user "c" one horror film."""
    rng = np.random.default_rng(seed)
    horror = list(range(100, 108))
    comedy = list(range(200, 208))
    catalogue = pd.DataFrame(
        {
            "item_id": [*horror, *comedy, 999],
            "title": [f"Scream {i}" for i in horror] + [f"Laugh {i}" for i in comedy] + ["Brand New Fright"],
            "genres": ["Horror"] * 8 + ["Comedy"] * 8 + ["Horror"],
            "release_year": [1990] * 17,
        }
    )
    users = [f"h{i}" for i in range(10)] + [f"k{i}" for i in range(10)]
    history = pd.DataFrame(
        [
            (u, int(item), 1.0)
            for u in users
            for item in rng.choice(horror if u.startswith("h") else comedy, size=6, replace=False)
        ]
        + [("c", 105, 1.0)],
        columns=["user", "item_id", "strength"],
    )
    als_items = np.array(horror + comedy, dtype=np.int64)
    # 2 factors: horror fans and films load on dimension 0, comedy on dimension 1
    user_factors = np.array([[1.0, 0.0] if u.startswith("h") else [0.0, 1.0] for u in users], np.float32)
    item_factors = np.array([[1.0, 0.0]] * 8 + [[0.0, 1.0]] * 8, np.float32)
    item_factors += rng.normal(0, 0.05, item_factors.shape).astype(np.float32)
    warm = history[history.user != "c"]
    als = FactorModel(
        np.array(users),
        als_items,
        user_factors,
        item_factors,
        seen_matrix(warm, np.array(users), als_items),
        popular=np.array(comedy + horror, dtype=np.int64),
    )
    return als, ContentModel.fit(catalogue), history, catalogue


def test_cold_users_are_served_from_content_and_strangers_from_popularity():
    als, content, history, _ = world()
    model = HybridModel(als, content, history, HybridConfig(cold_user_max=3))
    assert (model.segment("c"), model.segment("h0"), model.segment("nobody")) == ("cold", "warm", "unknown")
    recs = model.recommend(["c", "nobody"], k=5)
    cold = recs[recs.user == "c"]
    assert cold["item_id"].between(100, 107).sum() + (cold["item_id"] == 999).sum() == 5  # horror only
    assert 105 not in cold["item_id"].tolist()  # already watched
    assert set(cold["source"]) == {"content"}
    stranger = recs[recs.user == "nobody"]
    assert stranger["item_id"].tolist() == [200, 201, 202, 203, 204] and set(stranger["source"]) == {
        "popular"
    }


def test_a_new_item_unseen_by_als_reaches_warm_fans_of_its_genre_through_content():
    als, content, history, _ = world()
    model = HybridModel(als, content, history, HybridConfig(content_weight=0.3))
    recs = model.recommend([f"h{i}" for i in range(10)] + [f"k{i}" for i in range(10)], k=3)
    horror_fans = recs[recs.user.str.startswith("h")]
    comedy_fans = recs[recs.user.str.startswith("k")]
    # a horror fan has 2 unseen horror films left: the new one comes with them, before any comedy
    assert (horror_fans.groupby("user")["item_id"].apply(lambda s: 999 in s.tolist())).all()
    assert horror_fans["item_id"].isin([*range(100, 108), 999]).all()
    assert 999 not in comedy_fans["item_id"].tolist()
    assert set(horror_fans[horror_fans.item_id == 999]["source"]) == {"content"}
    assert set(horror_fans[horror_fans.item_id != 999]["source"]) == {"als+content"}
    assert 999 not in als.recommend(["h0"], k=16)["item_id"].tolist()  # ALS alone cannot


def test_with_no_content_weight_warm_users_get_the_als_ranking():
    als, content, history, _ = world(seed=3)
    model = HybridModel(als, content, history, HybridConfig(content_weight=0.0))
    users = [f"h{i}" for i in range(10)] + [f"k{i}" for i in range(10)]
    ours = model.recommend(users, k=8)
    ours = ours[ours.item_id != 999]  # the new item competes on content; ALS does not know it
    reference = als.recommend(users, k=8)
    for user in users:
        mine = ours[ours.user == user]["item_id"].tolist()
        assert mine == reference[reference.user == user]["item_id"].tolist()[: len(mine)]


def test_exclusions_and_bad_k():
    als, content, history, _ = world()
    model = HybridModel(als, content, history)
    first = model.recommend(["h0"], k=3)["item_id"].tolist()
    again = model.recommend(["h0"], k=3, exclude={"h0": first})["item_id"].tolist()
    assert not set(first) & set(again)
    with pytest.raises(ValueError, match="k must be"):
        model.recommend(["h0"], k=0)


def test_cold_users_lean_on_popularity_as_configured():
    als, content, history, _ = world()
    counts = history.groupby("item_id")["user"].nunique()
    model_top = (
        HybridModel(als, content, history, HybridConfig(cold_user_max=3, cold_popularity_weight=1.0))
        .recommend(["c"], k=3)["item_id"]
        .tolist()
    )
    unseen = counts.drop(105, errors="ignore").sort_values(ascending=False)
    assert [counts[i] for i in model_top] == unseen.iloc[:3].tolist()  # by distinct users, most first
    content_only = HybridModel(
        als, content, history, HybridConfig(cold_user_max=3, cold_popularity_weight=0.0)
    )
    assert set(content_only.recommend(["c"], k=3)["item_id"]) <= {*range(100, 108), 999}
