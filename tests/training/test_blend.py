"""Known-answer tests of the hybrid's blend-weight learning on the hand-built worlds."""

import numpy as np
import pandas as pd
import pytest

from recsys.models.hybrid import BlendWeights, HybridConfig, HybridModel
from recsys.training.blend import learn_blend, sample_users
from tests.models.worlds import cold_world, world


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


def test_a_segment_over_max_users_is_learned_on_a_fixed_sample_of_them():
    als, content, history, validation = cold_world()
    config = HybridConfig(
        cold_user_max=3, content_grid=[0.0, 0.5, 2.0], popularity_grid=[0.0, 1.0], min_users=5, max_users=12
    )
    learned, report = learn_blend(als, content, history, validation, config, k=5)
    assert (report["cold"]["users"], report["cold"]["of"]) == (12, 30)
    cold_users = np.array(sorted(validation["user"].unique()), dtype=object)
    sample = sample_users(cold_users, 12)
    assert len(set(sample)) == 12 and set(sample) <= set(cold_users)
    # the same users whatever their order; and learning on them alone gives the same weights
    assert sorted(sample_users(cold_users[::-1].copy(), 12).tolist()) == sorted(sample.tolist())
    alone, alone_report = learn_blend(
        als,
        content,
        history,
        validation[validation["user"].isin(sample)],
        config.model_copy(update={"max_users": 30}),
        k=5,
    )
    assert alone.cold == learned.cold and alone_report["cold"]["best"] == report["cold"]["best"]
