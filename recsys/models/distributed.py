"""Batch top-k on Spark: blocks of users through ``mapInPandas``, each ranked by the model's own kernel.

The single-machine path is ``model.recommend(users, k, exclude)``; the Spark path runs that very
method on the executors, once per block of users, so the lists are the same by construction:

* **the same blocks.** ``recommend`` scores the users it knows in blocks (one matrix product each) of
  :func:`block_size` users, in the order asked. BLAS may round a user's float32 scores differently
  when the user sits elsewhere in a block of another size (about 1 score in 1,000 by one unit in
  the last place at the ml-1m shape, enough to swap two nearly tied items at the cut). So the
  driver cuts the users into Spark blocks of whole scoring blocks, as ``recommend`` would cut them
  (:func:`user_blocks`), Spark brings each block's users together in their order (range-partitioned
  by block, so the partitions get about as many users each, then ``sortWithinPartitions``), and the
  executor hands ``recommend`` exactly that block: the same products, bit for bit.
* **the model in two sides** (:mod:`recsys.models.sides`): what every user's scores share (a
  FactorModel's item factors and popularity order, a hybrid's item side, a re-ranker's item genres)
  is broadcast once; each user's own inputs (factors, seen items, a hybrid's content profile and
  count, a re-ranker's history genres) travel in the DataFrame next to the user as binary cells, with
  ``exclude``, the item ids the user must not get. Each block becomes a model of the block's users
  alone (:func:`~recsys.models.sides.block_scorer`) whose ``recommend`` ranks them; a re-ranker's
  candidates are then re-ranked with :func:`~recsys.models.rerank.rerank`, as
  ``Reranked.recommend`` does. No executor holds the history or another block's users.

An executor holds one block of users (and the broadcast) at a time. Nothing here collects the lists
unless asked: :func:`spark_recommendations` yields a lazy DataFrame, :func:`write_recommendations`
writes it as Parquet from the executors, :func:`collect_recommendations` brings it to the driver.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
from threadpoolctl import threadpool_limits

from recsys.io.spark import table_to_spark
from recsys.models import factors, hybrid, sides
from recsys.models.factors import FactorModel
from recsys.models.hybrid import HybridModel
from recsys.models.rerank import Reranked, rerank
from recsys.models.sides import ItemSide, block_scorer, history_genres, item_side, user_inputs

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

#: users per Spark block, about: a whole number of the model's scoring blocks (at least one), so each
#: ``recommend`` call on an executor amortises its set-up over several matrix products, and small
#: enough that 70k users make 18 blocks to spread over the cores
SPARK_BLOCK_USERS = 4096

FACTOR_SCHEMA = "user string, rank long, item_id long, score double"
"""Spark schema of a FactorModel's lists (the ``RECOMMENDATION_COLUMNS``)."""

_DTYPES = {"rank": "int64", "item_id": "int64", "score": "float64", "explore": "bool"}


def schema_of(served: Any) -> str:
    """The Spark schema (DDL) of ``served``'s lists: a FactorModel's columns, the hybrid's ``source``
    after them, the re-ranker's ``explore`` last."""
    if isinstance(served, Reranked):
        return f"{schema_of(served.model)}, explore boolean"
    if isinstance(served, HybridModel):
        return f"{FACTOR_SCHEMA}, source string"
    if isinstance(served, FactorModel):
        return FACTOR_SCHEMA
    raise TypeError(
        f"no Spark path for a {type(served).__name__}: expected a FactorModel, a HybridModel or a Reranked"
    )


def columns_of(served: Any) -> list[str]:
    """The column names of ``served``'s lists, in order (see :func:`schema_of`)."""
    return [field.split()[0] for field in schema_of(served).split(", ")]


def scoring_model(served: Any) -> FactorModel | HybridModel:
    """The model that scores ``served``'s lists (a re-ranker's model)."""
    model = sides.scoring_model(served)
    schema_of(model)  # refuses what has no Spark path
    return model


def block_size(model: FactorModel | HybridModel) -> int:
    """Users per scoring block of ``model.recommend``: a FactorModel's about 8 MiB of float32 scores
    (between 64 and ``factors.BLOCK_USERS``), the hybrid's ``hybrid.BLOCK_USERS``."""
    if isinstance(model, HybridModel):
        return hybrid.BLOCK_USERS
    return int(max(64, min(factors.BLOCK_USERS, (8 << 20) // (4 * max(len(model.items), 1)))))


def knows(model: FactorModel | HybridModel, users: Sequence[str]) -> np.ndarray:
    """Whether ``model`` scores each of ``users`` (else its popularity fallback answers)."""
    if isinstance(model, HybridModel):
        return model.user_rows(np.asarray(users, dtype=object)) >= 0
    return pd.Index(model.users.astype(str)).get_indexer(pd.Index(users, dtype=object)) >= 0


def user_blocks(served: Any, users: Sequence[str], block_users: int = SPARK_BLOCK_USERS) -> pd.DataFrame:
    """(user, block, position) of ``users``, blocked as ``served.recommend(users)`` blocks them: the
    users the model knows, in the order asked, a whole number of its scoring blocks (``block_size``;
    as many as fit in ``block_users``, at least one) to a block, so that ``recommend`` on one block
    scores the same sub-blocks; the others after them, in blocks of the same size (each gets the
    fallback, whatever its block)."""
    model = scoring_model(served)
    names = pd.Series(list(users), dtype=object).astype(str)
    known = knows(model, names.tolist())
    size = block_size(model) * max(1, block_users // block_size(model))
    ordinal = np.where(known, np.cumsum(known) - 1, np.cumsum(~known) - 1)
    known_blocks = -(-int(known.sum()) // size)
    block = np.where(known, ordinal // size, known_blocks + ordinal // size)
    return pd.DataFrame(
        {"user": names.to_numpy(), "block": block.astype(np.int64), "position": np.arange(len(names))}
    )


# ---- on the executors (plain functions, testable without Spark) -----------------------------------


def exclusions(block: pd.DataFrame) -> dict[str, Iterable[int]]:
    """The block's ``exclude`` column as ``recommend`` takes it (users without one left out)."""
    if "exclude" not in block.columns:
        return {}
    return {
        str(user): [int(i) for i in items]
        for user, items in zip(block["user"].tolist(), block["exclude"].tolist(), strict=True)
        if items is not None and len(items)
    }


def whole_blocks(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """The users of a partition sorted by (block, position), however Spark cut them into Arrow
    batches, as one frame per block, in the order asked. Holds one block (and one batch) at a time."""
    pending: pd.DataFrame | None = None
    for batch in batches:
        if batch.empty:
            continue
        pending = batch if pending is None else pd.concat([pending, batch], ignore_index=True)
        last = pending["block"].iloc[-1]
        done = pending["block"].to_numpy() != last
        if done.any():
            for _, block in pending[done].groupby("block", sort=False):
                yield block.sort_values("position", kind="stable").reset_index(drop=True)
            pending = pending[~done].reset_index(drop=True)
    if pending is not None and not pending.empty:
        yield pending.sort_values("position", kind="stable").reset_index(drop=True)


def typed(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """``frame`` with the given columns in order and the Spark schema's dtypes (an empty frame too)."""
    out = frame.reindex(columns=list(columns))
    types = {c: t for c, t in _DTYPES.items() if c in out.columns}
    if out.empty:
        return pd.DataFrame({c: pd.Series(dtype=types.get(c, object)) for c in columns})
    return out.astype(types)


def _block_function(
    side: Any, k: int, exclude_seen: bool, columns: list[str]
) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """The ``mapInPandas`` function over one partition; ``side`` is the broadcast
    :class:`~recsys.models.sides.ItemSide`."""

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        items: ItemSide = side.value
        reranking = items.rerank_config
        depth = max(k, reranking.candidates) if reranking else k
        # one BLAS thread per Python worker: Spark already runs one task per core
        with threadpool_limits(limits=1, user_api="blas"):
            for block in whole_blocks(batches):
                exclude = exclusions(block)
                lists = block_scorer(block, items).recommend(
                    block["user"].astype(str).tolist(),
                    k=depth,
                    exclude=exclude or None,
                    exclude_seen=exclude_seen,
                )
                if reranking:
                    lists = rerank(lists, items.rerank_genres or {}, history_genres(block), k, reranking)
                yield typed(lists, columns)

    return run


# ---- on the driver ----------------------------------------------------------------------------


def exclusion_frame(train: DataFrame) -> DataFrame:
    """(user, exclude): each user's training items, from a Spark frame of (user, item_id) pairs
    (what the recommend stage excludes; ``evaluation.train_items`` on the single-machine path)."""
    from pyspark.sql import functions as F  # deferred: pyspark is heavy, loaded only on the Spark path

    return train.groupBy("user").agg(F.collect_set(F.col("item_id").cast("long")).alias("exclude"))


def user_table(
    served: Any, users: Sequence[str], block_users: int = SPARK_BLOCK_USERS, with_seen: bool = True
) -> pa.Table:
    """The Spark input of :func:`spark_recommendations`: (user, block, position) of
    :func:`user_blocks` and each user's inputs (:func:`~recsys.models.sides.user_inputs`)."""
    blocks = user_blocks(served, users, block_users)
    table = pa.Table.from_pandas(blocks, preserve_index=False)
    inputs = user_inputs(served, blocks["user"].tolist(), with_seen=with_seen)
    for name in inputs.column_names[1:]:
        table = table.append_column(name, inputs.column(name))
    return table


@contextmanager
def spark_recommendations(
    spark: SparkSession,
    served: Any,
    users: Sequence[str],
    k: int = 10,
    exclude: DataFrame | None = None,
    exclude_seen: bool = True,
    block_users: int = SPARK_BLOCK_USERS,
) -> Iterator[DataFrame]:
    """The top-``k`` lists of ``users`` as ``served.recommend(users, k, exclude)`` gives them, computed
    on the executors block by block: a lazy Spark DataFrame with the columns of :func:`schema_of`,
    valid inside the ``with`` block (write or collect it there).

    ``served`` is a FactorModel, a HybridModel or a Reranked of either; ``exclude`` a Spark frame
    (user, exclude: array of item ids), e.g. :func:`exclusion_frame` of the training pairs;
    ``block_users`` about how many users an executor ranks at a time (:func:`user_blocks`)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    columns = columns_of(served)
    table = user_table(served, users, block_users, with_seen=exclude_seen)
    n_blocks = len(set(table.column("block").to_pylist())) if table.num_rows else 1
    partitions = max(1, min(n_blocks, 2 * spark.sparkContext.defaultParallelism))
    side = spark.sparkContext.broadcast(item_side(served))
    try:
        with table_to_spark(spark, table, row_group_size=64_000) as wanted:
            if exclude is not None:
                wanted = wanted.join(exclude.select("user", "exclude"), on="user", how="left")
            # by range: about as many users to each partition (hashing 18 blocks into 4 partitions
            # may give one of them twice its share), a block whole in one partition all the same
            by_block = wanted.repartitionByRange(partitions, "block")
            blocks = by_block.sortWithinPartitions("block", "position")
            yield blocks.mapInPandas(_block_function(side, k, exclude_seen, columns), schema_of(served))
    finally:
        side.unpersist()


def write_recommendations(
    spark: SparkSession,
    served: Any,
    users: Sequence[str],
    path: str,
    k: int = 10,
    exclude: DataFrame | None = None,
    exclude_seen: bool = True,
) -> None:
    """:func:`spark_recommendations` written as Parquet into the directory ``path`` by the executors;
    nothing is collected to the driver."""
    with spark_recommendations(spark, served, users, k, exclude, exclude_seen) as lists:
        lists.write.mode("overwrite").parquet(path)


def collect_recommendations(
    spark: SparkSession,
    served: Any,
    users: Sequence[str],
    k: int = 10,
    exclude: DataFrame | Mapping[str, Iterable[int]] | None = None,
    exclude_seen: bool = True,
    block_users: int = SPARK_BLOCK_USERS,
) -> pd.DataFrame:
    """The lists of ``users`` computed on Spark and brought to the driver, the frame
    ``served.recommend(users, k, exclude)`` gives: a drop-in for it where the caller needs the lists
    in pandas. ``exclude``: a Spark frame (user, exclude) or a mapping."""
    if isinstance(exclude, Mapping):
        pairs = pd.DataFrame(
            {"user": [str(u) for u in exclude], "exclude": [[int(i) for i in v] for v in exclude.values()]}
        )
        exclude = spark.createDataFrame(pairs, "user string, exclude array<long>") if len(pairs) else None
    with spark_recommendations(spark, served, users, k, exclude, exclude_seen, block_users) as lists:
        out = lists.toPandas()
    return in_served_order(typed(out, columns_of(served)), users, served)


def in_served_order(lists: pd.DataFrame, users: Sequence[str], served: Any) -> pd.DataFrame:
    """``lists`` ordered as the single-machine ``recommend`` orders them: a re-ranker's by user; a
    model's known users first in the order asked, then the others, each user's rows by rank."""
    if isinstance(served, Reranked):
        return lists.sort_values(["user", "rank"], kind="stable").reset_index(drop=True)
    blocks = user_blocks(served, users)
    key = pd.Series(
        blocks["block"].to_numpy() * (len(blocks) + 1) + blocks["position"].to_numpy(), index=blocks["user"]
    )
    order = pd.DataFrame(
        {"key": key.reindex(lists["user"].astype(str)).to_numpy(), "rank": lists["rank"].to_numpy()}
    ).sort_values(["key", "rank"], kind="stable")
    return lists.iloc[order.index].reset_index(drop=True)[columns_of(served)]
