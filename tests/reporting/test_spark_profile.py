"""The weekly data profile computed by Spark aggregations gives the pandas profile's figures: one week
(with earlier weeks and a catalogue) profiled both ways; counts exact, means and percentiles to
float rounding."""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from recsys.io.spark_lake import nanos_as_long
from recsys.io.storage import Lake, write_parquet
from recsys.reporting import spark_profile
from recsys.reporting.data_profile import profile_from_lake
from recsys.reporting.spark_profile import percentile_of_histogram, profile_from_lake_spark
from tests.data.test_spark_prepare import WEEK, WEEKS, week_events


def catalogue() -> pd.DataFrame:
    genres = ["Drama|Comedy", "Action", None, "Comedy| Sci-Fi ", "Drama"]
    return pd.DataFrame(
        {
            "item_id": np.arange(30, dtype=np.int64),  # 25-29 never played; 0-24 played
            "title": [f"Film {i}" for i in range(30)],
            "genres": [genres[i % 5] for i in range(30)],
            "added_at": [pd.Timestamp(WEEK, tz="UTC") + timedelta(days=i % 10) for i in range(30)],
        }
    )


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    lake = Lake(tmp_path_factory.mktemp("profile") / "lake")
    for i, week in enumerate(WEEKS):
        events = week_events(week, seed=10 + i)
        if week == WEEK:  # a few events outside the week and a few without a user
            events.loc[:4, "ts"] = events.loc[:4, "ts"] - timedelta(weeks=1)
            events.loc[5:7, "user"] = pd.NA
        write_parquet(events, lake.data_file("anonymized", "events", week))
    write_parquet(catalogue(), lake.data_file("anonymized", "items", WEEK))
    return lake


def assert_same(got: object, want: object, where: str = "profile") -> None:
    if isinstance(want, float) and isinstance(got, float):
        assert math.isclose(got, want, rel_tol=1e-12, abs_tol=1e-12), f"{where}: {got} != {want}"
    elif isinstance(want, dict) and isinstance(got, dict):
        assert got.keys() == want.keys(), where
        for key in want:
            assert_same(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list) and isinstance(got, list):
        assert len(got) == len(want), f"{where}: {len(got)} != {len(want)} items"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_same(g, w, f"{where}[{i}]")
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


def test_one_week_profiled_both_ways_gives_the_same_figures(spark, lake, monkeypatch):
    expected, _ = profile_from_lake(lake, WEEK, history_weeks=4)

    def no_fallback(*args: object, **kwargs: object) -> None:
        raise AssertionError("the Spark profile fell back to the pandas path")

    monkeypatch.setattr(spark_profile, "profile_from_lake", no_fallback)
    with nanos_as_long(spark):
        got, page = profile_from_lake_spark(spark, lake, WEEK, history_weeks=4)
    want, have = expected.to_dict(), got.to_dict()
    # ties among the most played titles: compare them in one order
    for profile in (want, have):
        profile["top_titles"].sort(key=lambda t: (-t["plays"], t["item_id"]))
    top_plays = sorted((t["plays"] for t in want["top_titles"]), reverse=True)
    assert [t["plays"] for t in have["top_titles"]] == top_plays
    want.pop("top_titles"), have.pop("top_titles")
    assert_same(have, want)
    assert want["users_new"] is not None and want["events_outside_week"] == 5 and want["genres"]
    assert want["notes"] and want["popularity_gini"] is not None
    assert "<html" in page.lower() and "Most-watched genres" in page


@pytest.mark.parametrize("q", [0, 10, 25, 50, 75, 90, 99, 100])
def test_percentile_of_a_histogram_is_numpys_percentile_of_the_sample(q):
    rng = np.random.default_rng(q)
    sample = rng.choice([1.0, 2.5, 3.0, 7.25, 40.0], size=int(rng.integers(1, 60)))
    values, counts = np.unique(sample, return_counts=True)
    assert percentile_of_histogram(values, counts, q) == float(np.percentile(sample, q))
