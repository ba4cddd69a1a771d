import numpy as np
import pandas as pd
import pytest

from recsys.data.prepare import PrepareConfig, event_strength, prepare, split_by_time, to_pairs


def ev(user, item, day, kind, rating=np.nan, watch=np.nan):
    return {
        "user": user,
        "item_id": item,
        "ts": pd.Timestamp(f"2026-11-{day:02d}", tz="UTC"),
        "event_type": kind,
        "rating": rating,
        "watch_seconds": watch,
        "device_type": "tv",
    }


def test_strength_of_each_event_type():
    df = pd.DataFrame(
        [
            ev("a", 1, 16, "view", watch=1800),
            ev("a", 2, 16, "rating", rating=5.0),
            ev("a", 3, 16, "browse"),
            ev("a", 4, 16, "view", watch=99999),
        ]
    )
    assert event_strength(df).tolist() == [1.5, 2.0, 0.0, 2.0]


def test_pairs_sum_strength_keep_last_rating_and_time():
    df = pd.DataFrame(
        [
            ev("a", 1, 16, "view", watch=0),
            ev("a", 1, 17, "rating", rating=4.0),
            ev("a", 1, 18, "rating", rating=2.0),
        ]
    )
    pairs = to_pairs(df)
    assert len(pairs) == 1
    row = pairs.iloc[0]
    assert row["strength"] == pytest.approx(1.0 + 4 / 2.5 + 2 / 2.5)
    assert row["rating"] == 2.0
    assert row["last_ts"] == pd.Timestamp("2026-11-18", tz="UTC")


def test_split_holds_out_each_users_latest_pairs():
    rows = [
        {
            "user": "a",
            "item_id": i,
            "strength": 1.0,
            "rating": np.nan,
            "viewed": True,
            "last_ts": pd.Timestamp(f"2026-11-{10 + i:02d}", tz="UTC"),
        }
        for i in range(10)
    ]
    rows += [
        {
            "user": "b",
            "item_id": 1,
            "strength": 1.0,
            "rating": np.nan,
            "viewed": True,
            "last_ts": pd.Timestamp("2026-11-20", tz="UTC"),
        }
    ]
    train, holdout = split_by_time(pd.DataFrame(rows), PrepareConfig(holdout_fraction=0.2, min_user_pairs=5))
    assert sorted(holdout["item_id"]) == [8, 9] and set(holdout["user"]) == {"a"}
    assert train[train["user"] == "a"]["last_ts"].max() < holdout["last_ts"].min()
    assert len(train) + len(holdout) == 11  # user b has too few pairs: all train


def test_prepare_dedupes_drops_browse_only_and_filters_irrelevant_holdout():
    rows = [ev("a", i, 10 + i, "view", watch=600) for i in range(8)]
    rows.append(ev("a", 0, 10, "view", watch=600))  # exact duplicate
    rows.append(ev("a", 50, 12, "browse"))  # browse only: no preference
    rows.append(ev("a", 60, 25, "rating", rating=1.0))  # latest, but disliked: not relevant
    prepared = prepare(pd.DataFrame(rows), PrepareConfig(holdout_fraction=0.2, min_user_pairs=5))
    s = prepared.stats
    assert s["duplicates_dropped"] == 1
    assert s["pairs_without_preference"] == 1
    assert 50 not in set(prepared.train["item_id"]) | set(prepared.holdout["item_id"])
    assert 60 not in set(prepared.holdout["item_id"])
    # the held-out latest pair (item 60) is not relevant, so it is dropped from the holdout
    assert s["train_pairs"] == len(prepared.train) == 8 and prepared.holdout.empty
    assert len(s["train_digest"]) == 16
