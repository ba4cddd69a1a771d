"""Known-answer tests of the content-based model: catalogues where the right answer is obvious."""

import numpy as np
import pandas as pd
import pytest

from recsys.models.content import ContentConfig, ContentModel


def catalogue() -> pd.DataFrame:
    rows = [
        (1, "The Haunting (1963)", "Horror", 1963),
        (2, "The Haunting (1999)", "Horror", 1999),  # the remake
        (3, "Night of the Living Dead (1968)", "Horror", 1968),
        (4, "Some Like It Hot (1959)", "Comedy|Romance", 1959),
        (5, "Airplane! (1980)", "Comedy", 1980),
        (6, "The Naked Gun (1988)", "Comedy", 1988),
        (7, "Toy Story (1995)", "Animation|Children|Comedy", 1995),
        (8, "Alien (1979)", "Horror|Sci-Fi", 1979),
        (9, "Brand New Scream (2026)", "Horror", 2026),  # new this week: nobody watched it yet
        (10, "Untitled", None, None),
    ]
    return pd.DataFrame(rows, columns=["item_id", "title", "genres", "release_year"])


def test_the_most_similar_item_shares_genre_and_title_words():
    model = ContentModel.fit(catalogue())
    similar = model.similar(1, k=3)["item_id"].tolist()
    assert similar[0] == 2  # the remake: same genre, same title
    assert set(similar) <= {2, 3, 8, 9}  # only horror films
    assert 1 not in similar


def test_a_cold_user_who_watched_one_horror_film_gets_horror_first():
    model = ContentModel.fit(catalogue())
    history = pd.DataFrame({"user": ["cold"], "item_id": [3], "strength": [2.0]})
    recs = model.recommend(["cold"], history, k=4)
    genres = catalogue().set_index("item_id")["genres"]
    assert all("Horror" in genres[i] for i in recs["item_id"]), recs
    assert 3 not in recs["item_id"].tolist()  # already watched
    assert 9 in recs["item_id"].tolist()  # a new item nobody has engaged with is reachable by content
    assert recs["rank"].tolist() == [1, 2, 3, 4]
    assert recs["score"].is_monotonic_decreasing


def test_profiles_weigh_by_strength_and_users_without_known_items_get_nothing():
    model = ContentModel.fit(catalogue())
    history = pd.DataFrame(
        {"user": ["mix", "mix", "ghost"], "item_id": [1, 5, 999], "strength": [0.1, 5.0, 1.0]}
    )
    recs = model.recommend(["mix", "ghost", "nobody"], history, k=2)
    assert set(recs["user"]) == {"mix"}
    top = recs[recs.user == "mix"]["item_id"].tolist()
    assert set(top) <= {4, 6, 7}  # comedy dominates: its strength is 50 times the horror film's


def test_release_periods_are_close_to_their_neighbours():
    only_year = ContentConfig(genre_weight=0, title_weight=0, year_weight=1)
    frame = pd.DataFrame(
        {
            "item_id": [1, 2, 3],
            "title": ["a", "b", "c"],
            "genres": ["", "", ""],
            "release_year": [1994, 1996, 1950],
        }
    )
    model = ContentModel.fit(frame, only_year)
    scores = model.similar(1, k=2).set_index("item_id")["score"]
    assert scores.get(2, 0.0) > 0.0 and scores.get(3, 0.0) == 0.0  # 1994 and 1996: neighbouring periods


def test_tags_bring_items_together(tmp_path):
    frame = pd.DataFrame(
        {
            "item_id": [1, 2, 3],
            "title": ["One", "Two", "Three"],
            "genres": ["Drama", "Drama", "Drama"],
            "release_year": [2000, 2000, 2000],
        }
    )
    tags = pd.DataFrame(
        {"item_id": [1, 3, 3, 2], "tag": ["time travel", "Time Travel", "paradox", "courtroom"]}
    )
    model = ContentModel.fit(frame, ContentConfig(min_df=1), tags=tags)
    assert model.similar(1, k=1)["item_id"].tolist() == [3]
    assert any(name.startswith("tag=") for name in model.feature_names)
    loaded = ContentModel.load(model.save(tmp_path / "content"))
    assert loaded.feature_names == model.feature_names and loaded.meta["tags"] is True
    np.testing.assert_allclose(loaded.features.toarray(), model.features.toarray())
    pd.testing.assert_frame_equal(loaded.similar(1, k=2), model.similar(1, k=2))


def test_bad_catalogues_are_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="lacks column"):
        ContentModel.fit(pd.DataFrame({"item_id": [1], "title": ["x"]}))
    with pytest.raises(ValueError, match="empty"):
        ContentModel.fit(catalogue().iloc[0:0])
    with pytest.raises(KeyError, match="not in the content model"):
        ContentModel.fit(catalogue()).similar(12345)
    with pytest.raises(ValueError, match="k must be"):
        ContentModel.fit(catalogue()).recommend(["u"], pd.DataFrame({"user": ["u"], "item_id": [1]}), k=0)


def test_content_recommender_masks_exclusions_without_letting_them_shape_the_profile():
    from recsys.models.content import ContentRecommender

    catalogue = pd.DataFrame(
        {
            "item_id": [1, 2, 3, 4, 5, 6],
            "title": ["Night Terror", "Night Fright", "Night Scream", "Big Laugh", "Big Grin", "Big Joke"],
            "genres": ["Horror", "Horror", "Horror", "Comedy", "Comedy", "Comedy"],
            "release_year": [1990] * 6,
        }
    )
    model = ContentModel.fit(catalogue)
    history = pd.DataFrame({"user": ["u"], "item_id": [1]})  # no strength column: weight 1
    recs = ContentRecommender(model, history).recommend(["u"], k=3, exclude={"u": [2, 4, 5]})
    # 2 is horror but excluded; the excluded comedies do not pull the profile towards comedy
    assert recs["item_id"].tolist()[0] == 3
    assert not set(recs["item_id"]) & {1, 2, 4, 5}


def test_the_catalogue_tags_column_is_used_when_no_tags_frame_is_given(tmp_path):
    """Same genre, same year, no shared title word: only the lake's tags column (``|``-joined) makes
    films 1 and 3 alike."""
    frame = pd.DataFrame(
        {
            "item_id": [1, 2, 3, 4],
            "title": ["One (2000)", "Two (2000)", "Three (2000)", "Four (2000)"],
            "genres": ["Drama"] * 4,
            "release_year": [2000] * 4,
            "tags": ["time travel|paradox", "courtroom", "Time Travel", ""],
        }
    )
    model = ContentModel.fit(frame)
    assert model.similar(1, k=1)["item_id"].tolist() == [3]
    scores = model.similar(1, k=3).set_index("item_id")["score"]
    assert scores[3] > scores[2] and scores[2] == pytest.approx(scores[4])
    assert "tag=travel" in model.feature_names and model.meta["tags"] is True
    assert ContentModel.load(model.save(tmp_path / "content")).meta["tags"] is True

    # without the column the three other films are equally close to film 1
    untagged = ContentModel.fit(frame.drop(columns=["tags"]))
    plain = untagged.similar(1, k=3)["score"]
    assert plain.max() == pytest.approx(plain.min())
    assert untagged.meta["tags"] is False
    # a column without any tag (a raw catalogue without tags, or missing values) changes nothing
    for empty in ([""] * 4, [None] * 4):
        same = ContentModel.fit(frame.assign(tags=empty))
        assert same.feature_names == untagged.feature_names and same.meta["tags"] is False
        np.testing.assert_allclose(same.features.toarray(), untagged.features.toarray())

    # an explicit tags frame still wins over the column
    explicit = pd.DataFrame({"item_id": [1, 2], "tag": ["courtroom drama", "Courtroom Drama"]})
    assert ContentModel.fit(frame, tags=explicit).similar(1, k=1)["item_id"].tolist() == [2]


def test_users_scored_block_by_block_get_the_lists_of_one_block(monkeypatch):
    """The scores are dense per block of users (at the 10M shape all users at once took 8 GiB): the
    lists, watched items masked, are the same whatever the block size."""
    import recsys.models.content as content

    model = ContentModel.fit(catalogue())
    rng = np.random.default_rng(4)
    users = [f"u{i}" for i in range(23)] + ["ghost"]
    history = pd.DataFrame(
        {
            "user": np.repeat(users[:-1], 3),
            "item_id": rng.integers(1, 11, size=69),
            "strength": rng.uniform(0.1, 3.0, size=69),
        }
    )
    whole = model.recommend(users, history, k=4)
    monkeypatch.setattr(content, "BLOCK_USERS", 5)
    pd.testing.assert_frame_equal(model.recommend(users, history, k=4), whole)
    assert "ghost" not in set(whole["user"]) and whole["user"].nunique() == 23
    seen = set(zip(history["user"], history["item_id"], strict=True))
    assert not any((u, i) in seen for u, i in zip(whole["user"], whole["item_id"], strict=True))


def test_scores_split_into_common_and_rare_features_are_the_cosines():
    """Genres and release periods (common) are multiplied densely, title words (rare) sparsely: the
    sum is the cosine of the plain sparse product, for a profile of either kind or none."""
    rng = np.random.default_rng(9)
    genres = ["Horror", "Comedy", "Drama", "Horror|Comedy", "Sci-Fi"]
    frame = pd.DataFrame(
        {
            "item_id": np.arange(1, 2001),
            "title": [f"Word{i % 100} Other{i % 7} Solo{i} ({1950 + i % 60})" for i in range(2000)],
            "genres": [genres[i] for i in rng.integers(0, 5, size=2000)],
            "release_year": 1950 + np.arange(2000) % 60,
        }
    )
    model = ContentModel.fit(frame)
    counts = model.features.getnnz(axis=0)
    assert (counts * 64 > 2000).any() and (counts * 64 <= 2000).any()  # both kinds of feature
    history = pd.DataFrame({"user": ["a", "a", "b", "c"], "item_id": [1, 50, 7, 99_999]})
    profiles = model.profiles(history, ["a", "b", "c"])
    plain = np.asarray((profiles @ model.features.T).todense())
    scores = model.score(profiles)
    assert scores.dtype == np.float32 and scores.shape == (3, 2000)
    np.testing.assert_allclose(scores, plain, rtol=1e-5, atol=1e-6)
    assert not scores[2].any()  # c knows no item: no profile, cosine 0 everywhere
