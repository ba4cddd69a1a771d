"""Known-answer tests of the hybrid: ALS for warm users, content for cold users and new items."""

import pickle

import numpy as np
import pandas as pd
import pytest

from recsys.models.hybrid import BlendWeights, HybridConfig, HybridModel
from tests.models.worlds import cold_world, world


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


def test_a_cold_user_known_to_als_keeps_als_and_is_corrected_by_content():
    als, content, history, _ = cold_world()
    alone = HybridModel(als, content, history, HybridConfig(cold=BlendWeights(content=0.0, popularity=0.0)))
    blended = HybridModel(als, content, history, HybridConfig(cold=BlendWeights(content=2.0, popularity=0.0)))
    assert blended.segment("x0") == "cold"
    horror = [*range(100, 108), 999]
    assert not alone.recommend(["x0"], k=3)["item_id"].isin(horror).any()  # ALS alone: comedy
    top = blended.recommend(["x0"], k=3)
    assert top["item_id"].isin(horror).all() and set(top["source"]) <= {"als+content", "content"}


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


def test_a_block_of_users_over_the_item_side_ranks_them_as_the_whole_model():
    """The Spark path's split (recsys.models.distributed): the item side, broadcast, holds no user;
    a block built from it and some users' inputs gives those users the whole model's lists."""
    als, content, history, _ = cold_world()
    model = HybridModel(als, content, history, HybridConfig(cold_user_max=3))
    items = model.item_side()
    more = pd.DataFrame(
        {"user": [f"extra{i}" for i in range(500)], "item_id": 100 + np.arange(500) % 8, "strength": 1.0}
    )
    crowded = HybridModel(als, content, pd.concat([history, more], ignore_index=True), model.config)
    assert len(pickle.dumps(crowded.item_side())) == len(pickle.dumps(items))  # no per-user data
    users = ["x3", "c", "h1", "k2", "x0"]  # cold, new (unknown to ALS), warm
    block = items.block(model.user_side([*users, "nobody"]))
    assert block.users.tolist() == users  # "nobody" has no history: no inputs
    asked = [*users, "nobody"]
    exclude = {"h1": [101, 999], "nobody": [200]}
    pd.testing.assert_frame_equal(
        block.recommend(asked, k=6, exclude=exclude),
        model.recommend(asked, k=6, exclude=exclude),
        check_exact=True,
    )
    kept = block.recommend(users, k=6, exclude_seen=False)
    pd.testing.assert_frame_equal(kept, model.recommend(users, k=6, exclude_seen=False), check_exact=True)
