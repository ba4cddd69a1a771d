"""Known answers of the home-page rows and the reasons given for each item."""

import numpy as np
import pandas as pd
import pytest

from recsys.models.content import ContentModel
from recsys.models.factors import FactorModel, seen_matrix
from recsys.models.rows import (
    ROW_COLUMNS,
    ItemSimilarity,
    because_you_watched,
    explain,
    new_this_week,
    trending,
)

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


def test_page_rows_are_ordered_and_each_row_is_built_from_the_right_data():
    from datetime import UTC, datetime

    from recsys.models.rows import RowsConfig, page_rows

    als, content, history = models()
    catalogue = pd.DataFrame(
        {
            "item_id": list(TITLES),
            "title": list(TITLES.values()),
            "genres": ["Horror", "Horror", "Horror", "Comedy", "Comedy", "Horror"],
            "added_at": ["2020-01-01T00:00:00Z"] * 5 + ["2026-11-09T12:00:00Z"],  # New Fear: this week
        }
    )
    picks = explain(als.recommend(["fan", "joker"], k=2), history, ItemSimilarity(als, content), TITLES)
    start, end = datetime(2026, 11, 8, tzinfo=UTC), datetime(2026, 11, 15, tzinfo=UTC)
    rows = page_rows(
        picks,
        als,
        content,
        history,
        catalogue,
        TITLES,
        start,
        end,
        RowsConfig(because_rows=1),
        ["fan", "joker"],
    )
    assert list(rows.columns) == ROW_COLUMNS
    fan = rows[rows.user == "fan"]
    order = fan.drop_duplicates("row_id")[["row_position", "row_id", "row_title"]].values.tolist()
    assert order == [
        [0, "top_picks", "Top picks for you"],
        [1, "because:100", "Because you watched Scream"],  # the fan's most recent title
        [2, "new", "New this week"],  # nothing trends that the fan has not watched: no empty row
    ]
    joker = rows[rows.user == "joker"].drop_duplicates("row_id")
    assert joker["row_id"].tolist() == ["top_picks", "because:200", "trending", "new"]
    assert joker["row_position"].tolist() == [0, 1, 2, 3]
    # only the fan's Scream (2026-11-10) is in the week: it trends, but not for the fan who watched it
    assert rows.loc[(rows.row_id == "trending") & (rows.user == "joker"), "item_id"].tolist() == [100]
    assert rows.loc[(rows.row_id == "trending") & (rows.user == "fan"), "item_id"].tolist() == []
    assert set(rows.loc[rows.row_id == "new", "item_id"]) == {300}
    top = rows[rows.row_id == "top_picks"]
    assert (
        top[["user", "rank", "item_id"]].values.tolist() == picks[["user", "rank", "item_id"]].values.tolist()
    )
    without = page_rows(
        picks,
        als,
        content,
        history,
        catalogue,
        TITLES,
        start,
        end,
        RowsConfig(because_rows=0, trending=False, new_this_week=False),
        ["fan", "joker"],
    )
    assert set(without["row_id"]) == {"top_picks"}
