"""Known answers of the diversity re-rankers."""

import pandas as pd
import pytest

from recsys.metrics import intra_list_diversity
from recsys.rerank import cap_genres, mmr

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
