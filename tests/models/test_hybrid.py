"""Known-answer tests of the hybrid: ALS for warm users, content for cold users and new items."""

import numpy as np
import pandas as pd
import pytest

from recsys.models.content import ContentModel
from recsys.models.factors import FactorModel, seen_matrix
from recsys.models.hybrid import BlendWeights, HybridConfig, HybridModel, learn_blend


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


def test_new_users_are_served_from_content_and_strangers_from_popularity():
    """ "c" watched one horror film after ALS was trained: content (with a little popularity) serves
    them horror first; a user without any history gets the most popular items."""
    als, content, history, _ = world()
    model = HybridModel(als, content, history, HybridConfig(cold_user_max=3))
    assert (model.segment("c"), model.segment("h0"), model.segment("nobody")) == ("new", "warm", "unknown")
    recs = model.recommend(["c", "nobody"], k=5)
    cold = recs[recs.user == "c"]
    assert cold["item_id"].isin([*range(100, 108), 999]).all() and len(cold) == 5  # horror only
    assert 105 not in cold["item_id"].tolist()  # already watched
    assert set(cold["source"]) == {"content"}
    stranger = recs[recs.user == "nobody"]
    assert stranger["item_id"].tolist() == [200, 201, 202, 203, 204]
    assert set(stranger["source"]) == {"popular"}


def cold_world():
    """world() plus 30 cold users ALS knows badly: each watched one horror film, but their ALS
    factors lean to comedy (too little data); they go on to watch more horror."""
    als, content, history, catalogue = world()
    cold = [f"x{i}" for i in range(30)]
    rng = np.random.default_rng(1)
    watched = rng.choice(range(100, 108), size=len(cold))
    history = pd.concat(
        [history, pd.DataFrame({"user": cold, "item_id": watched, "strength": 1.0})], ignore_index=True
    )
    factors = np.vstack([als.user_factors, np.tile([[0.2, 0.3]], (len(cold), 1))]).astype(np.float32)
    users = np.concatenate([als.users, np.array(cold)])
    als = FactorModel(
        users, als.items, factors, als.item_factors, seen_matrix(history, users, als.items), als.popular
    )
    validation = pd.DataFrame(
        [(u, int(i)) for u, w in zip(cold, watched, strict=True) for i in range(100, 108) if i != w],
        columns=["user", "item_id"],
    )
    return als, content, history, validation


def test_a_cold_user_known_to_als_keeps_als_and_is_corrected_by_content():
    als, content, history, _ = cold_world()
    alone = HybridModel(als, content, history, HybridConfig(cold=BlendWeights(content=0.0, popularity=0.0)))
    blended = HybridModel(als, content, history, HybridConfig(cold=BlendWeights(content=2.0, popularity=0.0)))
    assert blended.segment("x0") == "cold"
    horror = [*range(100, 108), 999]
    assert not alone.recommend(["x0"], k=3)["item_id"].isin(horror).any()  # ALS alone: comedy
    top = blended.recommend(["x0"], k=3)
    assert top["item_id"].isin(horror).all() and set(top["source"]) <= {"als+content", "content"}


def test_learn_blend_finds_the_content_weight_cold_users_need():
    als, content, history, validation = cold_world()
    config = HybridConfig(cold_user_max=3, content_grid=[0.0, 0.5, 2.0], popularity_grid=[0.0, 1.0])
    learned, report = learn_blend(als, content, history, validation, config, k=5)
    assert report["cold"]["users"] == 30
    assert learned.cold.content > 0.0
    assert report["cold"]["best"] > report["cold"]["als_only"]
    # no warm user has validation pairs: the configured warm weights are kept, and said so
    assert report["warm"]["users"] == 0 and "kept" in report["warm"]
    assert learned.warm == config.warm
    # the learned weights do what the report says: cold users now get horror
    top = HybridModel(als, content, history, learned).recommend(["x0", "x1"], k=3)
    assert top["item_id"].isin([*range(100, 108), 999]).all()


def test_learn_blend_keeps_als_when_it_is_already_right():
    """Warm users whose ALS lists are perfect: the smallest weights that reach the best score win."""
    als, content, history, _ = world()
    warm = [f"h{i}" for i in range(10)] + [f"k{i}" for i in range(10)]
    seen = history.groupby("user")["item_id"].apply(set)
    validation = pd.DataFrame(
        [
            (u, i)
            for u in warm
            for i in (range(100, 108) if u.startswith("h") else range(200, 208))
            if i not in seen[u]
        ],
        columns=["user", "item_id"],
    )
    config = HybridConfig(cold_user_max=3, min_users=5)
    learned, report = learn_blend(als, content, history, validation, config, k=2)
    assert report["warm"]["users"] == 20
    assert report["warm"]["best"] == pytest.approx(report["warm"]["als_only"])
    assert learned.warm == BlendWeights(content=0.0, popularity=0.0)


def test_a_new_item_unseen_by_als_reaches_warm_fans_of_its_genre_through_content():
    als, content, history, _ = world()
    model = HybridModel(als, content, history, HybridConfig(warm=BlendWeights(content=0.3)))
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
    model = HybridModel(als, content, history, HybridConfig(warm=BlendWeights()))
    users = [f"h{i}" for i in range(10)] + [f"k{i}" for i in range(10)]
    ours = model.recommend(users, k=8)
    ours = ours[ours.item_id != 999]  # the new item competes on content; ALS does not know it
    reference = als.recommend(users, k=8)
    for user in users:
        mine = ours[ours.user == user]["item_id"].tolist()
        assert mine == reference[reference.user == user]["item_id"].tolist()[: len(mine)]


def test_exclusions_bad_k_and_bad_config():
    als, content, history, _ = world()
    model = HybridModel(als, content, history)
    first = model.recommend(["h0"], k=3)["item_id"].tolist()
    again = model.recommend(["h0"], k=3, exclude={"h0": first})["item_id"].tolist()
    assert not set(first) & set(again)
    with pytest.raises(ValueError, match="k must be"):
        model.recommend(["h0"], k=0)
    with pytest.raises(ValueError, match="grid"):
        HybridConfig(content_grid=[])
    with pytest.raises(ValueError):
        HybridConfig(cold=BlendWeights(content=-1.0))


def test_new_users_lean_on_popularity_as_configured():
    als, content, history, _ = world()
    counts = history.groupby("item_id")["user"].nunique()
    by_popularity = HybridModel(als, content, history, HybridConfig(new_user_popularity=10.0))
    top = by_popularity.recommend(["c"], k=3)["item_id"].tolist()
    unseen = counts.drop(105, errors="ignore")
    assert counts[top[0]] == unseen.max()  # the most popular film comes first, whatever its genre
    assert [counts[i] for i in top] == sorted((counts[i] for i in top), reverse=True)  # most watched first
    content_only = HybridModel(als, content, history, HybridConfig(new_user_popularity=0.0))
    assert set(content_only.recommend(["c"], k=3)["item_id"]) <= {*range(100, 108), 999}


def test_save_and_load_give_the_same_recommendations(tmp_path):
    als, content, history, _ = world()
    config = HybridConfig(warm=BlendWeights(content=0.4, popularity=0.1), cold_user_max=2)
    model = HybridModel(als, content, history, config, meta={"week": "2026-11-15"})
    loaded = HybridModel.load(model.save(tmp_path / "hybrid"))
    users = ["h0", "k3", "c", "nobody"]
    pd.testing.assert_frame_equal(loaded.recommend(users, k=4), model.recommend(users, k=4))
    assert loaded.config == config and loaded.meta == {"week": "2026-11-15"}
