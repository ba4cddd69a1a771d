"""Known answers of the home-page rows and the reasons given for each item."""

import numpy as np
import pandas as pd
import pytest

from recsys.content import ContentModel
from recsys.model import FactorModel, seen_matrix
from recsys.rows import ROW_COLUMNS, ItemSimilarity, because_you_watched, explain, new_this_week, trending

TITLES = {
    100: "Scream",
    101: "Scream 2",
    102: "Fright Night",
    200: "Airplane!",
    201: "Hot Shots!",
    300: "New Fear",
}


def models():
    catalogue = pd.DataFrame(
        {
            "item_id": list(TITLES),
            "title": list(TITLES.values()),
            "genres": ["Horror", "Horror", "Horror", "Comedy", "Comedy", "Horror"],
            "release_year": [1996, 1997, 1985, 1980, 1991, 2026],
        }
    )
    content = ContentModel.fit(catalogue)
    users = np.array(["fan", "joker"])
    als_items = np.array([100, 101, 102, 200, 201], dtype=np.int64)
    item_factors = np.array([[1, 0], [0.95, 0.05], [0.9, 0.1], [0, 1], [0.05, 0.95]], dtype=np.float32)
    user_factors = np.array([[1, 0], [0, 1]], dtype=np.float32)
    history = pd.DataFrame(
        {
            "user": ["fan", "fan", "joker"],
            "item_id": [200, 100, 200],
            "strength": [1.0, 1.0, 1.0],
            "last_ts": pd.to_datetime(["2026-11-01", "2026-11-10", "2026-11-05"], utc=True),
        }
    )
    als = FactorModel(
        users, als_items, user_factors, item_factors, seen_matrix(history, users, als_items), als_items
    )
    return als, content, history


def test_each_pick_is_explained_by_the_most_similar_watched_title():
    als, content, history = models()
    recs = pd.DataFrame({"user": ["fan", "fan", "nobody"], "item_id": [101, 201, 102]})
    out = explain(recs, history, ItemSimilarity(als, content), TITLES)
    assert out["reason"].tolist() == [
        "Because you watched Scream",  # the fan watched a horror film and a comedy: horror explains horror
        "Because you watched Airplane!",
        "popular with everyone",  # no history
    ]
    assert out["reason_item_id"].tolist()[:2] == [100, 200] and out["reason_item_id"].isna().tolist()[2]


def test_because_you_watched_is_seeded_by_the_most_recent_title():
    als, content, history = models()
    rows = because_you_watched(history, ItemSimilarity(als, content), TITLES, k=2)
    fan = rows[rows.user == "fan"]
    assert set(fan["row_id"]) == {"because:100"}  # Scream (Nov 10) is more recent than Airplane! (Nov 1)
    assert fan["row_title"].iloc[0] == "Because you watched Scream"
    assert fan["item_id"].tolist() == [101, 102]  # the other horror films, most similar first
    assert list(rows.columns) == ROW_COLUMNS
    joker = rows[rows.user == "joker"]
    assert joker["row_id"].iloc[0] == "because:200" and joker["item_id"].iloc[0] == 201


def test_trending_leaves_out_what_each_user_watched():
    _, _, history = models()
    week = pd.DataFrame({"user": ["a", "b", "c", "a", "b", "c"], "item_id": [200, 200, 200, 101, 101, 102]})
    rows = trending(week, ["fan", "newcomer"], history, k=2)
    assert rows[rows.user == "newcomer"]["item_id"].tolist() == [200, 101]
    assert rows[rows.user == "fan"]["item_id"].tolist() == [101, 102]  # fan watched 200
    assert set(rows["reason"]) == {"trending"} and set(rows["row_id"]) == {"trending"}


def test_new_this_week_matches_the_profile():
    _, content, history = models()
    rows = new_this_week(
        np.array([300, 201]), ["fan", "joker"], history[history.item_id != 200], content, k=2
    )
    assert rows[rows.user == "fan"]["item_id"].tolist()[0] == 300  # a horror fan: the new horror film first
    assert set(rows["row_title"]) == {"New this week"}


def test_similarity_needs_a_model():
    with pytest.raises(ValueError, match="needs an ALS model"):
        ItemSimilarity(None, None)
