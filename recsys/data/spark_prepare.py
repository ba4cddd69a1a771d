"""The prepare stage's data work as Spark jobs: the same train and holdout files, statistics and
train digest as :func:`recsys.data.prepare.prepare`, for a training window too big for one machine.

Everything prepare does to an event depends only on the event's user: deduplication (the key holds the
user), the pair sums, each user's time split. So the window's events are hash-partitioned by user into
blocks of about ``block_events`` events, each block sorted in input order (the window's weeks oldest
first, each file's rows in order, :data:`~recsys.io.spark_lake.ORDER`), and the pandas path's own
functions (:func:`~recsys.data.prepare.tagged_block`) run on each block in ``mapInPandas``: the sums
are pandas' (Kahan-compensated, in input order), so they and the train digest are equal to the last
bit, and the fast path is the distributed path. One shuffle; an executor holds one block at a time.

Each block's output rows are its pairs, tagged train, held out (relevant or not) or without
preference, plus one row counting the block's deduplicated events: the statistics are one
aggregation over them. The digest (:func:`~recsys.data.prepare.digest`) hashes each train row on the
executors with pandas' own row hash and feeds the hashes, in (user, item) order, through SHA-256 one
batch at a time. Only counts and one batch of row hashes at a time reach the driver.
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
from recsys.data.prepare import (
    BLOCK,
    DEDUP_KEY,
    EVENTS_COLUMN,
    HOLDOUT,
    KIND_COLUMN,
    NO_PREFERENCE,
    TRAIN,
    PrepareConfig,
    Window,
    prepare,
    tagged_block,
)
from recsys.io.lakefs import readable
from recsys.io.spark import spark_path
from recsys.io.spark_lake import BATCH_ROWS, ORDER, pandas_schema, read_file, sample
from recsys.io.storage import Lake, remove_tree

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

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


#: events per block of users prepared in one ``mapInPandas`` call (an executor's memory holds one)
BLOCK_EVENTS = 1_000_000


def prepare_spark(
    spark: SparkSession,
    lake: Lake,
    window: Window,
    config: PrepareConfig,
    scratch: Path,
    block_events: int = BLOCK_EVENTS,
) -> tuple[SparkPrepared, list[Any]]:
    """:func:`~recsys.data.prepare.prepare` on Spark over the window's partitions (read inside
    :func:`recsys.io.spark_lake.nanos_as_long`), by blocks of users (see the module docstring);
    ``scratch``: a folder the executors and the driver both reach, for the digest's row hashes."""
    # deferred: pyspark is heavy, loaded only for Spark stages
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    events, weeks = read_window_spark(spark, lake, window)
    example = prepare(sample(lake.data_file("anonymized", "events", window.week)), config)
    columns = list(example.train.columns)
    needed = [c for c in (*DEDUP_KEY, "rating", "watch_seconds") if c in events.columns]
    events_in = events.count()
    # at least one block per core of the session, so a small window still keeps every executor busy
    blocks = max(spark.sparkContext.defaultParallelism, -(-events_in // max(block_events, 1)))
    types = dict(events.dtypes)
    out_types = {"user": "string", "item_id": types["item_id"], "strength": "double", "last_ts": types["ts"]}
    out_types |= {"viewed": "boolean", "rating": "double"}
    schema = ", ".join(f"`{c}` {out_types[c]}" for c in columns)
    schema += f", {KIND_COLUMN} int, {EVENTS_COLUMN} long"

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        frames = [b for b in batches if len(b)]
        if not frames:
            return
        block = pd.concat(frames, ignore_index=True)  # the block's users' events, in input order:
        block = block.sort_values(ORDER, kind="stable").drop(columns=ORDER).reset_index(drop=True)
        yield tagged_block(block, config, columns)

    tagged = (
        events.select(*needed, ORDER)
        .repartition(blocks, "user")
        .mapInPandas(run, schema=schema)
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    kind = F.col(KIND_COLUMN)

    def count(k: int) -> Any:
        return F.count(F.when(kind == k, 1))

    def distinct(column: str, k: int) -> Any:
        return F.countDistinct(F.when(kind == k, F.col(column)))

    row = tagged.agg(
        F.sum(EVENTS_COLUMN).alias("deduped"),
        F.count(F.when(kind != BLOCK, 1)).alias("pairs"),
        count(NO_PREFERENCE).alias("without"),
        count(TRAIN).alias("train"),
        count(HOLDOUT).alias("holdout"),
        distinct("user", TRAIN).alias("users"),
        distinct("item_id", TRAIN).alias("items"),
        distinct("user", HOLDOUT).alias("holdout_users"),
    ).first()
    train = tagged.filter(kind == TRAIN).select(*columns)
    holdout = tagged.filter(kind == HOLDOUT).select(*columns)
    stats = {
        "events_in": int(events_in),
        "duplicates_dropped": int(events_in - int(row["deduped"] or 0)),
        "pairs": int(row["pairs"]),
        "pairs_without_preference": int(row["without"]),
        "train_pairs": int(row["train"]),
        "holdout_pairs": int(row["holdout"]),
        "users": int(row["users"]),
        "items": int(row["items"]),
        "holdout_users": int(row["holdout_users"]),
        "train_digest": digest_spark(train, example.train, scratch),
    }
    order = ["user", "last_ts", "item_id"]
    prepared = SparkPrepared(
        train=train.orderBy(*order),
        holdout=holdout.orderBy(*order),
        train_schema=pandas_schema(example.train, train),
        holdout_schema=pandas_schema(example.holdout, holdout),
        stats=stats,
        cached=[tagged],
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
