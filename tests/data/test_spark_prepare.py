"""The prepare stage on Spark writes what the pandas path writes: a three-week window run both ways
(``engine`` pandas and spark) gives equal train and holdout files, statistics and train digest."""

from __future__ import annotations

import shutil
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.core.settings import Settings
from recsys.data.prepare import PrepareConfig, plan_window, read_window
from recsys.data.prepare import prepare as prepare_pairs
from recsys.data.spark_prepare import prepare_spark
from recsys.io.spark_lake import nanos_as_long
from recsys.io.storage import Lake, attempt_scope, write_parquet
from recsys.pipeline.config import PipelineConfig
from recsys.pipeline.context import StageContext
from recsys.pipeline.data_stages import prepare

WEEK = date(2026, 11, 8)
WEEKS = [WEEK - timedelta(weeks=2), WEEK - timedelta(weeks=1), WEEK]


def week_events(week: date, seed: int) -> pd.DataFrame:
    """Anonymized events of one week: views with fractional watch time, ratings (some missing),
    browses, many events per pair (sums where the order of addition shows), exact key duplicates
    with other values (the first one counts) and users with too few pairs to be held out."""
    rng = np.random.default_rng(seed)
    n = 3000
    users = np.array([f"{i:032x}" for i in rng.integers(0, 60, n)])
    kinds = rng.choice(["view", "rating", "browse"], n, p=[0.6, 0.3, 0.1])
    start = pd.Timestamp(week, tz="UTC")
    ts = start + pd.to_timedelta(rng.integers(0, 7 * 24 * 3600, n), unit="s")
    frame = pd.DataFrame(
        {
            "user": pd.array(users, dtype="string"),
            "item_id": rng.integers(0, 25, n).astype(np.int64),
            "ts": ts,
            "event_type": kinds,
            "rating": np.where(kinds == "rating", rng.choice([0.5, 1.5, 3.0, 3.5, 4.5, np.nan], n), np.nan),
            "watch_seconds": np.where(kinds == "view", rng.uniform(-5, 5000, n).round(3), np.nan),
            "device_type": rng.choice(["tv", "web"], n),
        }
    )
    dupes = frame.sample(40, random_state=seed).assign(watch_seconds=123.25, rating=5.0)
    lonely = frame.head(2).assign(user=pd.array(["f" * 32] * 2, dtype="string"))
    # events without a user: in no pair, but their duplicates are counted as the others are
    nobody = frame.iloc[[3, 4, 4, 5, 5, 5]].assign(user=pd.array([pd.NA] * 6, dtype="string"))
    return pd.concat([frame, dupes, lonely, nobody], ignore_index=True)


@pytest.fixture(scope="module")
def anonymized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("anonymized") / "lake"
    lake = Lake(root)
    for i, week in enumerate(WEEKS):
        write_parquet(week_events(week, seed=i), lake.data_file("anonymized", "events", week))
    return root


def run_prepare(anonymized: Path, tmp_path: Path, engine: str):
    root = tmp_path / engine
    shutil.copytree(anonymized.parent, root)
    settings = Settings.from_env(
        {
            "RECSYS_HOME": str(root / "home"),
            "RECSYS_LAKE_DIR": str(root / "lake"),
            "RECSYS_SPARK_MASTER": "local[2]",
        }
    )
    config = PipelineConfig.model_validate({"engine": {"engine": engine}, "prepare": {"window_weeks": 4}})
    with attempt_scope():
        result = prepare(StageContext.create(WEEK, settings, config))
    return Lake(root / "lake"), result


def test_one_window_both_ways_gives_the_same_files_stats_and_digest(spark, anonymized, tmp_path):
    pandas_lake, pandas_result = run_prepare(anonymized, tmp_path, "pandas")
    spark_lake, spark_result = run_prepare(anonymized, tmp_path, "spark")
    expected, got = pandas_result.to_xcom(), spark_result.to_xcom()
    assert expected.pop("profile") != got.pop("profile")  # each lake its own page
    assert got == expected
    assert expected["duplicates_dropped"] >= 40 + 3 and expected["pairs_without_preference"] > 0
    assert 0 < expected["holdout_pairs"] < expected["train_pairs"]
    for name in ("train.parquet", "holdout.parquet"):
        want = pd.read_parquet(pandas_lake.partition("prepared", WEEK) / name)
        have = pd.read_parquet(spark_lake.partition("prepared", WEEK) / name)
        pd.testing.assert_frame_equal(have, want, check_exact=True, obj=name)  # rows, order, dtypes, bits
    assert sorted(p.name for p in spark_lake.partition("prepared", WEEK).iterdir()) == [
        "_commit.json",
        "holdout.parquet",
        "train.parquet",
    ]


def test_many_small_blocks_of_users_give_the_whole_window_s_pairs(spark, anonymized, tmp_path):
    """The Spark path prepares blocks of users apart (one ``mapInPandas`` call each): cut into
    blocks of about 700 events (a dozen or more), the window still gives pandas' pairs, in order and
    to the last bit, and pandas' statistics, the digest included (sums where the order of addition
    shows, duplicates, events without a user)."""
    lake = Lake(anonymized)
    window = plan_window(lake, WEEK, 4)
    config = PrepareConfig(window_weeks=4)
    events, _ = read_window(lake, window)
    expected = prepare_pairs(events, config)
    with nanos_as_long(spark):
        prepared, weeks = prepare_spark(spark, lake, window, config, scratch=tmp_path, block_events=700)
        try:
            train, holdout = prepared.train.toPandas(), prepared.holdout.toPandas()
        finally:
            prepared.release()
    assert weeks == WEEKS and len(events) > 12 * 700
    assert prepared.stats == expected.stats
    for got, want in ((train, expected.train), (holdout, expected.holdout)):
        want = want.assign(last_ts=want["last_ts"].astype("int64"))  # Spark reads nanoseconds as long
        assert (
            got[["user", "item_id", "last_ts"]].values.tolist()
            == want[["user", "item_id", "last_ts"]].values.tolist()
        )
        assert got["strength"].tolist() == want["strength"].tolist()
        assert got["viewed"].tolist() == want["viewed"].tolist()
        assert got["rating"].fillna(-1).tolist() == want["rating"].fillna(-1).tolist()
