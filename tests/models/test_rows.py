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


# ---- the block-wise rows against a user-by-user reference, on a random world ----------------------


def random_world(seed: int = 11):
    """40 users (one without history), ALS on items 0..29, content on items 10..44, item 45 known to
    neither; histories with repeats, in random order."""
    rng = np.random.default_rng(seed)
    als_items = np.arange(30, dtype=np.int64)
    users = np.array([f"u{i:02d}" for i in range(39)], dtype=object)
    als = FactorModel(
        users,
        als_items,
        rng.normal(size=(len(users), 4)).astype(np.float32),
        rng.normal(size=(30, 4)).astype(np.float32),
        None,
        als_items,
    )
    genres = ["Horror", "Comedy", "Drama", "Horror|Comedy", "Drama|Romance", "Sci-Fi"]
    catalogue = pd.DataFrame(
        {
            "item_id": np.arange(10, 45),
            "title": [f"Film {i} {rng.choice(['night', 'day', 'love', 'war'])}" for i in range(10, 45)],
            "genres": [genres[i % len(genres)] for i in range(35)],
            "release_year": rng.integers(1960, 2026, 35),
        }
    )
    content = ContentModel.fit(catalogue)
    n = 400
    history = pd.DataFrame(
        {
            "user": rng.choice(users, n),
            "item_id": rng.integers(0, 46, n).astype(np.int64),
            "strength": rng.uniform(0.5, 3.0, n),
            "last_ts": pd.Timestamp("2026-11-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 10**6, n), "s"),
        }
    )
    return als, content, history, rng


def reference_reasons(recs: pd.DataFrame, history: pd.DataFrame, similarity: ItemSimilarity) -> list[float]:
    """The best similarity of each recommendation to its user's watched items (NaN: none), user by user."""
    best = []
    for user, item in zip(recs["user"], recs["item_id"], strict=True):
        seen = history.loc[history["user"] == user, "item_id"].to_numpy(dtype=np.int64)
        sims = similarity.matrix(np.array([item]), seen)[0] if len(seen) else np.array([])
        best.append(np.nanmax(sims) if np.isfinite(sims).any() else np.nan)
    return best


def test_explain_picks_the_most_similar_watched_title_for_every_user():
    als, content, history, rng = random_world()
    similarity = ItemSimilarity(als, content)
    recs = pd.DataFrame(
        {"user": rng.choice([*als.users, "newcomer"], 300), "item_id": rng.integers(0, 46, 300)}
    )
    out = explain(recs, history, similarity, {})
    want = reference_reasons(recs, history, similarity)
    for (user, item, reason), best in zip(
        out[["user", "item_id", "reason_item_id"]].itertuples(index=False), want, strict=True
    ):
        if np.isnan(best):
            assert pd.isna(reason), (user, item)
            continue
        watched = set(history.loc[history["user"] == user, "item_id"].tolist())
        assert int(reason) in watched
        got = similarity.matrix(np.array([item]), np.array([int(reason)]))[0, 0]
        assert got == pytest.approx(best, abs=1e-6), (user, item)
    assert (out["reason"] == "popular with everyone").sum() == int(np.isnan(want).sum())


def test_because_you_watched_excludes_each_users_history_and_ranks_by_similarity():
    als, content, history, _ = random_world(12)
    similarity = ItemSimilarity(als, content)
    rows = because_you_watched(history, similarity, {}, k=5, seeds_per_user=2)
    ranked = history.sort_values(
        ["user", "last_ts", "strength"], ascending=[True, False, False], kind="stable"
    )
    seeds = ranked.groupby("user").head(2)
    universe = np.arange(46, dtype=np.int64)
    assert rows["user"].is_monotonic_increasing
    for user, seed, position in zip(
        seeds["user"], seeds["item_id"], seeds.groupby("user").cumcount(), strict=True
    ):
        row = rows[(rows.user == user) & (rows.row_position == position)]
        watched = set(history.loc[history.user == user, "item_id"].tolist())
        sims = similarity.matrix(np.array([seed]), universe)[0]
        candidates = [
            (s, i) for i, s in zip(universe, sims, strict=True) if i not in watched and np.isfinite(s)
        ]
        want = sorted(candidates, key=lambda c: -c[0])[:5]
        assert row["row_id"].unique().tolist() == (
            [f"because:{seed}"] if want else []
        )  # 45: nothing knows it
        assert row["rank"].tolist() == list(range(1, len(want) + 1))
        assert row["score"].to_numpy() == pytest.approx([s for s, _ in want], abs=1e-6)
        assert not watched & set(row["item_id"].tolist())


def test_trending_gives_every_user_the_first_titles_they_have_not_watched():
    _, _, history, rng = random_world(13)
    week = pd.DataFrame({"user": rng.choice(["a", "b", "c", "d"], 200), "item_id": rng.integers(0, 46, 200)})
    users = sorted(set(history["user"])) + ["newcomer"]
    rows = trending(week, users, history, k=4)
    counts = week.groupby("item_id")["user"].nunique().reset_index(name="n")
    order = counts.sort_values(["n", "item_id"], ascending=[False, True])["item_id"].tolist()
    assert rows["user"].drop_duplicates().tolist() == users
    for user in users:
        watched = set(history.loc[history.user == user, "item_id"].tolist())
        got = rows[rows.user == user]
        assert got["item_id"].tolist() == [i for i in order if i not in watched][:4]
        assert got["rank"].tolist() == list(range(1, len(got) + 1))


def test_new_this_week_ranks_every_user_alike_to_a_user_by_user_ranking():
    _, content, history, _ = random_world(14)
    users = sorted(set(history["user"]))[:7] + ["newcomer"]
    new = np.array([40, 12, 33, 21, 44, 99])  # 99: not in the catalogue, left out
    rows = new_this_week(new, users, history, content, k=3)
    known = new[[content.knows(i) for i in new]]
    for user in users:
        profile = content.profiles(history, [user])
        scores = np.asarray(
            (profile @ content.features[[content.items.tolist().index(i) for i in known]].T).todense()
        )[0]
        want = known[np.argsort(-scores, kind="stable")[:3]]
        assert rows[rows.user == user]["item_id"].tolist() == want.tolist()
