"""The prepare stage's data work as Spark jobs: the same train and holdout files, statistics and
train digest as :func:`recsys.data.prepare.prepare`, for a training window too big for one machine.

Every step is the pandas path's, as Spark expressions over the window's anonymized partitions:

* duplicates of (user, item, ts, event_type): the first in input order is kept (input order: the
  window's weeks oldest first, each file's rows in order, :data:`~recsys.io.spark_lake.ORDER`);
* event strength as :func:`~recsys.data.prepare.event_strength`; a pair's strength is the sum of its
  events' strengths **in input order with Kahan compensation**, which is what pandas' grouped sum
  computes, so the sums, and the train digest, are equal to the last bit; the latest rating is the
  rating of the pair's last rating event that has one;
* each user's latest ``holdout_fraction`` of pairs (by last event, then item) is held out for users
  with at least ``min_user_pairs`` pairs; held-out pairs that are not relevant are dropped;
* the digest (:func:`~recsys.data.prepare.digest`) hashes each train row on the executors with
  pandas' own row hash and feeds the hashes, in (user, item) order, through SHA-256 one batch at a time.

Only counts and one batch of row hashes at a time reach the driver.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.core.errors import DataNotFoundError
from recsys.data.prepare import RATING_SCALE, VIEW_HOURS_CAP, PrepareConfig, Window, prepare
from recsys.io.lakefs import readable
from recsys.io.spark import spark_path
from recsys.io.spark_lake import BATCH_ROWS, ORDER, pandas_schema, read_file, sample
from recsys.io.storage import Lake, remove_tree

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

KEY_COLUMNS = ["user", "item_id", "ts", "event_type"]
_HASH = "_row_hash"


def read_window_spark(spark: SparkSession, lake: Lake, window: Window) -> tuple[DataFrame, list[Any]]:
    """:func:`~recsys.data.prepare.read_window` on Spark: the ready weeks' anonymized events (each
    partition checked as committed), with their input order in :data:`~recsys.io.spark_lake.ORDER`."""
    week, weeks = window.week, list(window.ready)
    if week not in weeks:
        raise DataNotFoundError(
            f"no anonymized events for week {week.isoformat()} at "
            f"{lake.data_file('anonymized', 'events', week)}: run the anonymize stage first"
        )
    frames = [
        read_file(spark, lake.data_file("anonymized", "events", w), index=i) for i, w in enumerate(weeks)
    ]
    events = frames[0]
    for frame in frames[1:]:
        events = events.unionByName(frame, allowMissingColumns=True)
    return events, weeks


def _number(column: str) -> Column:
    """A float column with missing (null or NaN) as 0, like ``pd.to_numeric(...).fillna(0.0)``."""
    from pyspark.sql import functions as F  # deferred: pyspark is heavy, loaded only for Spark stages

    value = F.col(column).cast("double")
    return F.when(value.isNull() | F.isnan(value), F.lit(0.0)).otherwise(value)


def strength() -> Column:
    """:func:`~recsys.data.prepare.event_strength` as a Spark column."""
    from pyspark.sql import functions as F  # deferred: pyspark is heavy

    kind = F.col("event_type")
    watch = F.greatest(_number("watch_seconds"), F.lit(0.0))
    return (
        F.when(kind == "view", F.lit(1.0) + F.least(watch / 3600.0, F.lit(VIEW_HOURS_CAP)))
        .when(kind == "rating", _number("rating") / RATING_SCALE)
        .otherwise(F.lit(0.0))
    )


def _kahan_sum(values: Column) -> Column:
    """The sum of ``values`` (an array of (order, value) structs sorted by order) as pandas' grouped sum
    computes it: Kahan-compensated, in order (pandas/_libs/groupby.pyx ``group_sum``)."""
    from pyspark.sql import functions as F  # deferred: pyspark is heavy

    def step(acc: Column, x: Column) -> Column:
        y = x["value"] - acc["c"]
        t = acc["s"] + y
        c = (t - acc["s"]) - y
        return F.struct(t.alias("s"), F.when(F.isnan(c), F.lit(0.0)).otherwise(c).alias("c"))

    start = F.struct(F.lit(0.0).alias("s"), F.lit(0.0).alias("c"))
    return F.aggregate(values, start, step, lambda acc: acc["s"])


def to_pairs_spark(events: DataFrame) -> DataFrame:
    """:func:`~recsys.data.prepare.to_pairs` on Spark (rows without a user or item are left out, as
    pandas' groupby leaves them out), with ``_events``: how many events each pair sums."""
    from pyspark.sql import functions as F  # deferred: pyspark is heavy

    keyed = events.filter(F.col("user").isNotNull() & F.col("item_id").isNotNull())
    scored = keyed.select(
        "user",
        "item_id",
        "ts",
        (F.col("event_type") == "view").alias("is_view"),
        F.struct(F.col(ORDER).alias("order"), strength().alias("value")).alias("_strength"),
    )
    pairs = scored.groupBy("user", "item_id").agg(
        _kahan_sum(F.array_sort(F.collect_list("_strength"))).alias("strength"),
        F.max("ts").alias("last_ts"),
        F.coalesce(F.bool_or("is_view"), F.lit(False)).alias("viewed"),
        F.count(F.lit(1)).alias("_events"),
    )
    rated = keyed.filter(
        (F.col("event_type") == "rating") & F.col("rating").isNotNull() & ~F.isnan(F.col("rating"))
    )
    last_rating = rated.groupBy("user", "item_id").agg(F.max_by("rating", "ts").alias("rating"))
    return pairs.join(last_rating, on=["user", "item_id"], how="left")


def split_by_time_spark(pairs: DataFrame, config: PrepareConfig) -> DataFrame:
    """:func:`~recsys.data.prepare.split_by_time` on Spark: ``pairs`` with ``_holdout`` (bool)."""
    # deferred: pyspark is heavy, loaded only for Spark stages
    from pyspark.sql import Window as W
    from pyspark.sql import functions as F  # deferred: pyspark is heavy

    by_user = W.partitionBy("user")
    ordered = by_user.orderBy("last_ts", "item_id")
    size = F.count(F.lit(1)).over(by_user)
    position = F.row_number().over(ordered) - 1
    n_holdout = F.greatest(F.floor(size * F.lit(config.holdout_fraction)), F.lit(1))
    holdout = (size >= config.min_user_pairs) & (position >= size - n_holdout)
    return pairs.withColumn("_holdout", holdout)


@dataclass
class SparkPrepared:
    """The window's train and holdout pairs as ordered Spark frames, their file schemas and statistics."""

    train: DataFrame
    holdout: DataFrame
    train_schema: pa.Schema
    holdout_schema: pa.Schema
    stats: dict[str, Any]
    cached: list[DataFrame]

    def release(self) -> None:
        for frame in self.cached:
            frame.unpersist()


def prepare_spark(
    spark: SparkSession, lake: Lake, window: Window, config: PrepareConfig, scratch: Path
) -> tuple[SparkPrepared, list[Any]]:
    """:func:`~recsys.data.prepare.prepare` on Spark over the window's partitions (read inside
    :func:`recsys.io.spark_lake.nanos_as_long`); ``scratch``: a folder the executors and the
    driver both reach, for the digest's row hashes."""
    # deferred: pyspark is heavy, loaded only for Spark stages
    from pyspark import StorageLevel
    from pyspark.sql import Window as W
    from pyspark.sql import functions as F  # deferred: pyspark is heavy

    events, weeks = read_window_spark(spark, lake, window)
    example = prepare(sample(lake.data_file("anonymized", "events", window.week)), config)
    first = W.partitionBy(*KEY_COLUMNS).orderBy(ORDER)

    def dedup(frame: DataFrame) -> DataFrame:
        return frame.withColumn("_n", F.row_number().over(first)).filter(F.col("_n") == 1).drop("_n")

    pairs = to_pairs_spark(dedup(events)).persist(StorageLevel.MEMORY_AND_DISK)
    split = split_by_time_spark(pairs.filter(F.col("strength") > 0), config).persist(
        StorageLevel.MEMORY_AND_DISK
    )
    columns = list(example.train.columns)
    relevant = F.col("viewed") | (F.coalesce(F.col("rating"), F.lit(-1.0)) >= config.relevance_min_rating)
    train = split.filter(~F.col("_holdout")).select(*columns)
    holdout = split.filter(F.col("_holdout") & relevant).select(*columns)
    events_in = events.count()
    n_pairs, without, keyed_rows = pairs.agg(
        F.count(F.lit(1)), F.count(F.when(F.col("strength") <= 0, 1)), F.sum("_events")
    ).first()
    # the events the pairs sum are the deduplicated ones with a user and an item: only the few others
    # are deduplicated apart (the window's sort of every event runs once, for the pairs)
    unkeyed = dedup(events.filter(F.col("user").isNull() | F.col("item_id").isNull())).count()
    deduped_rows = int(keyed_rows or 0) + int(unkeyed)
    train_pairs, users, items = train.agg(
        F.count(F.lit(1)), F.countDistinct("user"), F.countDistinct("item_id")
    ).first()
    holdout_pairs, holdout_users = holdout.agg(F.count(F.lit(1)), F.countDistinct("user")).first()
    stats = {
        "events_in": int(events_in),
        "duplicates_dropped": int(events_in - deduped_rows),
        "pairs": int(n_pairs),
        "pairs_without_preference": int(without),
        "train_pairs": int(train_pairs),
        "holdout_pairs": int(holdout_pairs),
        "users": int(users),
        "items": int(items),
        "holdout_users": int(holdout_users),
        "train_digest": digest_spark(train, example.train, scratch),
    }
    order = ["user", "last_ts", "item_id"]
    prepared = SparkPrepared(
        train=train.orderBy(*order),
        holdout=holdout.orderBy(*order),
        train_schema=pandas_schema(example.train, train),
        holdout_schema=pandas_schema(example.holdout, holdout),
        stats=stats,
        cached=[pairs, split],
    )
    return prepared, weeks


def digest_spark(train: DataFrame, example: pd.DataFrame, scratch: Path) -> str:
    """:func:`~recsys.data.prepare.digest` of a Spark frame: pandas' row hash of (user, item_id,
    strength) on the executors (with the pandas path's dtypes), SHA-256 over them in (user, item_id)
    order on the driver, one batch at a time."""
    from pyspark.sql import functions as F  # deferred: pyspark is heavy

    keyed = ["user", "item_id", "strength"]
    dtypes = example[keyed].dtypes.to_dict()

    def hashes(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for frame in frames:
            rows = pd.util.hash_pandas_object(frame[keyed].astype(dtypes), index=False)
            yield pd.DataFrame(
                {"user": frame["user"], "item_id": frame["item_id"], _HASH: rows.to_numpy().view(np.int64)}
            )

    schema = f"user string, item_id {dict(train.dtypes)['item_id']}, {_HASH} long"
    hashed = train.select(*keyed).mapInPandas(hashes, schema=schema).orderBy("user", "item_id")
    scratch.mkdir(parents=True, exist_ok=True)
    folder = scratch / "spark-digest"
    try:
        hashed.select(F.col(_HASH)).write.mode("overwrite").parquet(spark_path(train.sparkSession, folder))
        sha = hashlib.sha256()
        for part in sorted(folder.glob("part-*.parquet")):
            for batch in pq.ParquetFile(readable(part)).iter_batches(batch_size=BATCH_ROWS):
                sha.update(batch.column(_HASH).to_numpy().view(np.uint64).tobytes())
    finally:
        remove_tree(folder)
    return sha.hexdigest()[:16]
