"""Known answers of the diversity re-rankers."""

import pandas as pd
import pytest
from pydantic import ValidationError

from recsys.evaluation.metrics import intra_list_diversity
from recsys.models.rerank import RerankConfig, cap_genres, mmr, rerank

GENRES = {1: {"Horror"}, 2: {"Horror"}, 3: {"Horror"}, 4: {"Comedy"}, 5: {"Drama"}, 6: set()}


def candidates() -> pd.DataFrame:
    # the model ranks three horror films first; then comedy, drama and an item without genres
    return pd.DataFrame(
        {
            "user": ["u"] * 6 + ["v"] * 2,
            "rank": [1, 2, 3, 4, 5, 6, 1, 2],
            "item_id": [1, 2, 3, 4, 5, 6, 4, 1],
            "score": [0.9, 0.85, 0.8, 0.5, 0.4, 0.1, 0.7, 0.6],
        }
    )


def lists(frame: pd.DataFrame) -> dict[str, list[int]]:
    return {u: g.sort_values("rank")["item_id"].tolist() for u, g in frame.groupby("user")}


def test_mmr_with_lambda_one_keeps_the_model_order():
    assert lists(mmr(candidates(), GENRES, k=3, lambda_=1.0)) == {"u": [1, 2, 3], "v": [4, 1]}


def test_mmr_trades_relevance_for_genre_diversity():
    out = mmr(candidates(), GENRES, k=3, lambda_=0.5)
    assert lists(out)["u"] == [1, 4, 5]  # the best horror film, then the best of other genres
    assert out[out.user == "u"]["rank"].tolist() == [1, 2, 3]
    before = intra_list_diversity({"u": [1, 2, 3]}, GENRES)
    after = intra_list_diversity(lists(out), GENRES, k=3)
    assert before == 0.0 and after > 0.9


def test_genre_caps_skip_then_fill():
    out = cap_genres(candidates(), GENRES, k=4, max_share=0.5)
    assert lists(out)["u"] == [1, 2, 4, 5]  # at most 2 horror films in 4
    strict = cap_genres(candidates()[candidates().item_id <= 3], GENRES, k=3, max_share=0.34)
    assert lists(strict)["u"] == [1, 2, 3]  # nothing else to fill with: the skipped ones come back


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="lambda_"):
        mmr(candidates(), GENRES, k=3, lambda_=1.5)
    with pytest.raises(ValueError, match="max_share"):
        cap_genres(candidates(), GENRES, k=3, max_share=0)
    with pytest.raises(ValueError, match="k must be"):
        mmr(candidates(), GENRES, k=0)
    with pytest.raises(ValueError, match="lack column"):
        mmr(candidates().drop(columns="score"), GENRES, k=2)


# ---- rerank: method + exploration share ----------------------------------------------------------
# ten drama films, then (deeper) one without genres, one drama-horror, a horror film and two comedies
CATALOGUE = {i: {"Drama"} for i in range(1, 11)} | {
    11: {"Comedy"},
    12: {"Comedy"},
    13: {"Horror"},
    14: set(),
    15: {"Drama", "Horror"},
}
MODEL_ORDER = [*range(1, 11), 14, 15, 13, 11, 12]


def deep(users: dict[str, list[int]]) -> pd.DataFrame:
    """Candidate lists in the given order, scores falling with the rank, plus a column to keep."""
    rows = [
        {"user": u, "rank": r, "item_id": i, "score": 1.0 - r / 100, "source": "als"}
        for u, items in users.items()
        for r, i in enumerate(items, start=1)
    ]
    return pd.DataFrame(rows)


def explored(frame: pd.DataFrame) -> dict[str, list[int]]:
    return {u: g.sort_values("rank").loc[g.explore, "item_id"].tolist() for u, g in frame.groupby("user")}


def test_rerank_config_defaults():
    config = RerankConfig()
    assert (config.method, config.mmr_lambda, config.max_share) == ("none", 0.7, 0.5)
    assert (config.exploration_share, config.candidates) == (0.0, 100)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"method": "random"},
        {"mmr_lambda": 1.5},
        {"mmr_lambda": -0.1},
        {"mmr_lambda": float("nan")},
        {"max_share": 0},
        {"max_share": 1.1},
        {"exploration_share": 0.6},
        {"exploration_share": -0.1},
        {"candidates": 0},
        {"max_genre_share": 0.5},  # unknown field: the name is cap_genres' max_share
    ],
)
def test_invalid_rerank_config_is_refused(kwargs):
    with pytest.raises(ValidationError):
        RerankConfig(**kwargs)


def test_none_keeps_the_model_order_and_the_columns():
    frame = deep({"a": MODEL_ORDER, "b": [4, 2]})
    out = rerank(frame, CATALOGUE, {"a": {"Drama"}}, k=10, config=RerankConfig())
    assert lists(out) == {"a": MODEL_ORDER[:10], "b": [4, 2]}  # b's candidates run out
    assert set(frame.columns) | {"explore"} == set(out.columns)
    assert (out["source"] == "als").all()
    assert out.groupby("user")["rank"].apply(list).to_dict() == {"a": list(range(1, 11)), "b": [1, 2]}
    assert out["explore"].dtype == bool and not out["explore"].any()
    # the scores are the model's
    merged = out.merge(frame, on=["user", "item_id"], suffixes=("", "_model"))
    assert (merged["score"] == merged["score_model"]).all()


def test_candidates_limits_the_depth_seen():
    out = rerank(deep({"a": MODEL_ORDER}), CATALOGUE, {}, k=10, config=RerankConfig(candidates=3))
    assert lists(out) == {"a": [1, 2, 3]}


def test_exploration_share_puts_unseen_genres_at_spread_slots():
    config = RerankConfig(exploration_share=0.2)  # 2 of 10 slots
    out = rerank(deep({"a": MODEL_ORDER}), CATALOGUE, {"a": {"Drama"}}, k=10, config=config)
    # the best horror / comedy candidates (13, then 11) take ranks 5 and 10; the genre-less item 14
    # and the drama-horror 15 do not count as unexplored
    assert lists(out) == {"a": [1, 2, 3, 4, 13, 5, 6, 7, 8, 11]}
    assert explored(out) == {"a": [13, 11]}
    assert out.loc[out.explore, "rank"].tolist() == [5, 10]
    assert out["item_id"].is_unique
    assert len(out) == 10 and out["rank"].tolist() == list(range(1, 11))
    for item in out.loc[out.explore, "item_id"]:
        assert not CATALOGUE[item] & {"Drama"}


def test_exploration_picks_by_score_not_by_position():
    frame = deep({"a": MODEL_ORDER})
    frame.loc[frame.item_id == 11, "score"] = 0.95  # e.g. a re-scored list: the comedy now outscores 13
    out = rerank(frame, CATALOGUE, {"a": {"Drama"}}, k=10, config=RerankConfig(exploration_share=0.2))
    assert explored(out) == {"a": [11, 13]}


def test_exploration_positions_for_half_the_list():
    catalogue = {i: {"Drama"} for i in range(1, 11)} | {i: {f"G{i}"} for i in range(11, 17)}
    frame = deep({"a": [*range(1, 17)]})
    out = rerank(frame, catalogue, {"a": {"Drama"}}, k=10, config=RerankConfig(exploration_share=0.5))
    assert out.loc[out.explore, "rank"].tolist() == [2, 4, 6, 8, 10]
    assert lists(out)["a"] == [1, 11, 2, 12, 3, 13, 4, 14, 5, 15]


def test_exploration_slots_round_down_without_float_error():
    catalogue = {i: {"Drama"} for i in range(1, 101)} | {i: {f"G{i}"} for i in range(101, 141)}
    frame = deep({"a": [*range(1, 141)]})
    for share, slots in ((0.29, 29), (0.15, 15), (0.005, 0)):  # 100 * 0.29 is 28.999999999999996
        config = RerankConfig(exploration_share=share, candidates=200)
        out = rerank(frame, catalogue, {"a": {"Drama"}}, k=100, config=config)
        assert int(out["explore"].sum()) == slots
        assert len(out) == 100 and out["item_id"].is_unique


def test_user_who_has_seen_every_genre_gets_no_exploration():
    frame = deep({"a": MODEL_ORDER, "b": MODEL_ORDER})
    history = {"a": {"Drama"}, "b": {"Drama", "Comedy", "Horror"}}
    out = rerank(frame, CATALOGUE, history, k=10, config=RerankConfig(exploration_share=0.2))
    assert lists(out)["b"] == MODEL_ORDER[:10]
    assert explored(out) == {"a": [13, 11], "b": []}


def test_too_few_unexplored_candidates_leave_the_rest_to_the_model():
    history = {"a": {"Drama", "Comedy"}}  # only the horror film 13 is new
    out = rerank(
        deep({"a": MODEL_ORDER}), CATALOGUE, history, k=10, config=RerankConfig(exploration_share=0.2)
    )
    assert lists(out) == {"a": [*range(1, 10), 13]}
    assert explored(out) == {"a": [13]}


def test_exploration_never_duplicates_an_item():
    # the horror film is already in the model's top 3, and item 1 is listed twice
    frame = deep({"a": [1, 13, 2, 1, 3, 11, 12]})
    out = rerank(frame, CATALOGUE, {"a": {"Drama"}}, k=5, config=RerankConfig(exploration_share=0.4))
    assert lists(out) == {"a": [1, 13, 11, 2, 12]}  # 13 stays a model pick; 11 and 12 explore
    assert explored(out) == {"a": [11, 12]}
    assert out["item_id"].is_unique


def test_rerank_mmr_and_genre_cap_change_the_list():
    history = {"u": {"Horror"}, "v": set()}
    mmr_out = rerank(candidates(), GENRES, history, k=3, config=RerankConfig(method="mmr", mmr_lambda=0.5))
    assert (
        lists(mmr_out) == lists(mmr(candidates(), GENRES, k=3, lambda_=0.5)) == {"u": [1, 4, 5], "v": [4, 1]}
    )
    capped = rerank(
        candidates(), GENRES, history, k=4, config=RerankConfig(method="genre_cap", max_share=0.5)
    )
    assert lists(capped)["u"] == [1, 2, 4, 5]
    assert lists(rerank(candidates(), GENRES, history, k=4, config=RerankConfig()))["u"] == [1, 2, 3, 4]


def test_rerank_method_then_exploration():
    # genre_cap gives [1, 2, 4, 5]; the first two stay, and the two exploration slots (share 0.5)
    # go to the unseen comedy 4 and drama 5, at ranks 2 and 4
    history = {"u": {"Horror"}}
    config = RerankConfig(method="genre_cap", max_share=0.5, exploration_share=0.5)
    out = rerank(candidates()[candidates().user == "u"], GENRES, history, k=4, config=config)
    assert lists(out) == {"u": [1, 4, 2, 5]}
    assert explored(out) == {"u": [4, 5]}
    assert out.loc[out.explore, "rank"].tolist() == [2, 4]


def test_rerank_refuses_bad_input():
    with pytest.raises(ValueError, match="k must be"):
        rerank(candidates(), GENRES, {}, k=0, config=RerankConfig())
    with pytest.raises(ValueError, match="lack column"):
        rerank(candidates().drop(columns="item_id"), GENRES, {}, k=2, config=RerankConfig())
    empty = rerank(candidates().iloc[0:0], GENRES, {}, k=2, config=RerankConfig())
    assert empty.empty and {"rank", "explore"} <= set(empty.columns)


def test_reranked_model_asks_for_a_deeper_list_and_serves_k_with_exploration():
    from recsys.models.rerank import RerankConfig, Reranked

    class Ranked:
        """A model that ranks items 1..20 in id order; items 1-15 are Drama, 16-20 Western."""

        def __init__(self) -> None:
            self.asked: list[int] = []

        def recommend(self, users, k=10, exclude=None):
            self.asked.append(k)
            excluded = set((exclude or {}).get("u", ()))
            items = [i for i in range(1, 21) if i not in excluded][:k]
            return pd.DataFrame(
                {
                    "user": "u",
                    "rank": range(1, len(items) + 1),
                    "item_id": items,
                    "score": [30.0 - i for i in items],
                }
            )

    genres = {i: {"Drama"} if i <= 15 else {"Western"} for i in range(1, 21)}
    history = pd.DataFrame({"user": ["u"], "item_id": [1]})
    model = Ranked()
    config = RerankConfig(exploration_share=0.2, candidates=20)
    out = Reranked(model, genres, history, config).recommend(["u"], k=5, exclude={"u": [2]})
    assert model.asked == [20]
    assert len(out) == 5 and out["rank"].tolist() == [1, 2, 3, 4, 5]
    assert 2 not in out["item_id"].tolist()
    explored = out[out["explore"]]
    assert explored["item_id"].tolist() == [16]  # int(5 * 0.2) = 1 slot: the best unseen-genre item
    assert out.loc[~out["explore"], "item_id"].tolist() == [1, 3, 4, 5]
