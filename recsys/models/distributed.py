"""Batch top-k on Spark: blocks of users through ``mapInPandas``, each scored by the model's own kernel.

The single-machine path is ``model.recommend(users, k, exclude)``; the Spark path runs that very
method on every block of users an executor receives, so the lists are the same by construction:

* **ALS** (:class:`~recsys.models.factors.FactorModel`, also the popularity baseline): the user side
  travels in the Spark DataFrame, one row per user (``factors``: the user's factor row, null for a
  user the model does not know; ``seen``: positions of the user's training items in the model's
  item order; ``exclude``: item ids the user must not get). The item side (item ids, item factors,
  the popularity order) is broadcast once. Each block becomes a :class:`FactorModel` of the block's
  users over the broadcast items, and its :meth:`~recsys.models.factors.FactorModel.recommend`
  (blocked matrix products + the two-stage ``top_k``) ranks them. A user's scores depend only on
  the user's own row and the items, so a block gives each user what the whole model gives.
* **hybrid** (:class:`~recsys.models.hybrid.HybridModel`): its popularity term is computed from the
  whole history, and the model keeps its per-user inputs (profiles, counts, seen items) inside, so
  the model is broadcast as it is and each block calls its ``recommend``; the DataFrame carries the
  users and their exclusions. (Moving the hybrid's user side into the DataFrame needs the hybrid to
  take its item side ready made: see ``HybridModel``.)
* **re-ranked** (:class:`~recsys.models.rerank.Reranked`): each block asks its model for the
  candidates and re-ranks them with :func:`~recsys.models.rerank.rerank`, as ``Reranked.recommend``
  does; the genres are broadcast.

Nothing here collects the lists: :func:`spark_recommendations` yields a lazy DataFrame and
:func:`write_recommendations` writes it as Parquet from the executors.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from scipy import sparse
from threadpoolctl import threadpool_limits

from recsys.io.spark import handoff_dir, is_local
from recsys.models.factors import FactorModel
from recsys.models.hybrid import HybridModel
from recsys.models.rerank import Reranked, rerank

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

FACTOR_SCHEMA = "user string, rank long, item_id long, score double"
"""Spark schema of a FactorModel's lists (the :data:`RECOMMENDATION_COLUMNS`)."""

_DTYPES = {"rank": "int64", "item_id": "int64", "score": "float64"}


def schema_of(model: Any) -> str:
    """The Spark schema (DDL) of ``model``'s lists: a FactorModel's columns, the hybrid's ``source``
    after them, the re-ranker's ``explore`` last."""
    if isinstance(model, Reranked):
        return f"{schema_of(model.model)}, explore boolean"
    if isinstance(model, HybridModel):
        return f"{FACTOR_SCHEMA}, source string"
    if isinstance(model, FactorModel):
        return FACTOR_SCHEMA
    raise TypeError(
        f"no Spark path for a {type(model).__name__}: expected FactorModel, HybridModel or Reranked"
    )


def columns_of(model: Any) -> list[str]:
    """The column names of ``model``'s lists, in order (see :func:`schema_of`)."""
    return [field.split()[0] for field in schema_of(model).split(", ")]


# ---- the per-block kernels (run on the executors; plain functions, testable without Spark) ---------


def exclusions(batch: pd.DataFrame) -> dict[str, Iterable[int]]:
    """The block's ``exclude`` column as ``recommend`` takes it (users without one left out)."""
    if "exclude" not in batch.columns:
        return {}
    return {
        str(user): [int(i) for i in items]
        for user, items in zip(batch["user"].tolist(), batch["exclude"].tolist(), strict=True)
        if items is not None and len(items)
    }


def factor_block(
    batch: pd.DataFrame,
    items: np.ndarray,
    item_factors: np.ndarray,
    popular: np.ndarray,
    k: int,
    exclude_seen: bool = True,
) -> pd.DataFrame:
    """The lists of one block of users (``batch``: user, factors, seen[, exclude]) by
    :meth:`FactorModel.recommend` over the broadcast item side: a FactorModel of the block's known
    users (``factors`` not null) answers for every user of the block, the others getting its
    popularity fallback."""
    known = batch["factors"].notna().to_numpy()
    rank = item_factors.shape[1]
    factors = batch["factors"][known].tolist()
    seen_lists = [np.asarray(s if s is not None else (), dtype=np.int64) for s in batch["seen"][known]]
    lengths = np.fromiter((len(s) for s in seen_lists), dtype=np.int64, count=len(seen_lists))
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    indices = np.concatenate(seen_lists) if seen_lists else np.zeros(0, dtype=np.int64)
    block = FactorModel(
        users=batch["user"][known].to_numpy(dtype=str),
        items=items,
        user_factors=(
            np.stack([np.asarray(f, dtype=np.float32) for f in factors])
            if factors
            else np.zeros((0, rank), dtype=np.float32)
        ),
        item_factors=item_factors,
        seen=sparse.csr_matrix(
            (np.ones(len(indices), dtype=np.float32), indices, indptr), shape=(int(known.sum()), len(items))
        ),
        popular=popular,
    )
    exclude = exclusions(batch)
    return block.recommend(
        batch["user"].astype(str).tolist(), k=k, exclude=exclude or None, exclude_seen=exclude_seen
    )


def _typed(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """``frame`` with the Spark schema's column order and dtypes (an empty frame too)."""
    out = frame.reindex(columns=list(columns))
    types = {c: t for c, t in _DTYPES.items() if c in out.columns}
    if "explore" in out.columns:
        types["explore"] = "bool"
    if out.empty:
        return pd.DataFrame({c: pd.Series(dtype=types.get(c, object)) for c in columns})
    return out.astype(types)


def _block_function(
    side: Any, kind: str, k: int, exclude_seen: bool, columns: list[str]
) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """The ``mapInPandas`` function: ``side`` is the broadcast (item side, or the whole hybrid) and
    the re-ranking when there is one."""

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        value = side.value
        base, reranking = value["base"], value.get("rerank")
        depth = max(k, reranking["config"].candidates) if reranking else k
        # one BLAS thread per Python worker: Spark already runs one task per core
        with threadpool_limits(limits=1, user_api="blas"):
            for batch in batches:
                if kind == "factors":
                    lists = factor_block(batch, *base, k=depth, exclude_seen=exclude_seen)
                else:
                    exclude = exclusions(batch)
                    lists = base.recommend(
                        batch["user"].astype(str).tolist(),
                        k=depth,
                        exclude=exclude or None,
                        exclude_seen=exclude_seen,
                    )
                if reranking:
                    lists = rerank(lists, reranking["genres"], reranking["history"], k, reranking["config"])
                yield _typed(lists, columns)

    return run


# ---- the Spark side (driver) -----------------------------------------------------------------------


def exclusion_frame(train: DataFrame) -> DataFrame:
    """(user, exclude): each user's training items, from a Spark frame of (user, item_id) pairs
    (what the recommend stage excludes; ``evaluation.train_items`` on the single-machine path)."""
    from pyspark.sql import functions as F  # deferred: pyspark is heavy, loaded only on the Spark path

    return train.groupBy("user").agg(F.collect_set(F.col("item_id").cast("long")).alias("exclude"))


def use_this_python(spark: SparkSession) -> None:
    """On a local master, run the Python workers with this interpreter (its pandas, pyarrow, recsys)
    unless ``PYSPARK_PYTHON`` names one: Spark's default is whatever ``python3`` is on the PATH."""
    context = spark.sparkContext
    if is_local(spark) and "PYSPARK_PYTHON" not in os.environ and context.pythonExec != sys.executable:
        context.pythonExec = sys.executable


@contextmanager
def _factor_table(spark: SparkSession, model: FactorModel) -> Iterator[DataFrame]:
    """The model's user side (user, factors, seen) as a Spark DataFrame, for the ``with`` block.

    Built as Arrow arrays over the model's own buffers (no per-user Python objects); on a local
    master handed over as a Parquet file in Spark's local dir, elsewhere through Arrow."""
    seen = model.seen.tocsr()
    rank = model.rank
    table = pa.table(
        {
            "user": pa.array(model.users.astype(str)),
            "factors": pa.FixedSizeListArray.from_arrays(
                pa.array(np.ascontiguousarray(model.user_factors, dtype=np.float32).ravel()), rank
            ),
            "seen": pa.ListArray.from_arrays(
                pa.array(seen.indptr.astype(np.int32)), pa.array(seen.indices.astype(np.int32))
            ),
        }
    )
    if not is_local(spark):
        yield spark.createDataFrame(table.to_pandas())
        return
    directory = handoff_dir(spark)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{uuid.uuid4().hex}.parquet"
    try:
        pq.write_table(table, path, compression="none", row_group_size=64_000)
        yield spark.read.parquet(str(path))
    finally:
        path.unlink(missing_ok=True)


def _broadcast_side(spark: SparkSession, served: Any) -> tuple[Any, str, Any]:
    """(broadcast, kind, scoring model) of ``served``: the item side of a FactorModel, or the whole
    hybrid; a re-ranker's genres with it."""
    model = served.model if isinstance(served, Reranked) else served
    if isinstance(model, FactorModel):
        kind, base = "factors", (model.items, model.item_factors, model.popular)
    elif isinstance(model, HybridModel):
        kind, base = "hybrid", model
    else:
        raise TypeError(f"no Spark path for a {type(model).__name__}: expected FactorModel or HybridModel")
    value: dict[str, Any] = {"base": base}
    if isinstance(served, Reranked):
        value["rerank"] = {
            "genres": dict(served.item_genres),
            "history": served.history_genres,
            "config": served.config,
        }
    return spark.sparkContext.broadcast(value), kind, model


@contextmanager
def spark_recommendations(
    spark: SparkSession,
    served: Any,
    users: DataFrame,
    k: int = 10,
    exclude_seen: bool = True,
) -> Iterator[DataFrame]:
    """The top-``k`` lists of ``users`` (a Spark DataFrame with ``user`` and optionally ``exclude``,
    an array of item ids) as ``served.recommend(users, k, exclude)`` gives them, computed on the
    executors in blocks of users (one Arrow batch each): a lazy Spark DataFrame with the columns of
    :func:`schema_of`, valid inside the ``with`` block (use or write it there).

    ``served`` is a FactorModel, a HybridModel or a Reranked of either."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    use_this_python(spark)
    schema, columns = schema_of(served), columns_of(served)
    side, kind, model = _broadcast_side(spark, served)
    wanted = users.select("user", *(["exclude"] if "exclude" in users.columns else []))
    try:
        if kind == "factors":
            with _factor_table(spark, model) as table:
                joined = wanted.join(table, on="user", how="left")
                yield joined.mapInPandas(_block_function(side, kind, k, exclude_seen, columns), schema)
        else:
            yield wanted.mapInPandas(_block_function(side, kind, k, exclude_seen, columns), schema)
    finally:
        side.unpersist()


def write_recommendations(
    spark: SparkSession, served: Any, users: DataFrame, path: str, k: int = 10, exclude_seen: bool = True
) -> None:
    """:func:`spark_recommendations` written as Parquet to ``path`` (a directory) by the executors;
    nothing is collected to the driver."""
    with spark_recommendations(spark, served, users, k, exclude_seen) as lists:
        lists.write.mode("overwrite").parquet(path)


def collect_recommendations(
    spark: SparkSession,
    served: Any,
    users: Sequence[str],
    k: int = 10,
    exclude: DataFrame | Mapping[str, Iterable[int]] | None = None,
    exclude_seen: bool = True,
) -> pd.DataFrame:
    """The lists of ``users`` computed on Spark and brought to the driver, in the order
    ``served.recommend(users, k, exclude)`` gives them: a drop-in for it where the caller needs the
    lists in pandas. ``exclude``: a Spark frame (user, exclude) or a mapping."""
    requested = pd.DataFrame({"user": pd.Series(list(users), dtype=object).astype(str)})
    frame = spark.createDataFrame(requested, "user string")
    if isinstance(exclude, Mapping):
        pairs = pd.DataFrame(
            {"user": [str(u) for u in exclude], "exclude": [[int(i) for i in v] for v in exclude.values()]}
        )
        exclude = spark.createDataFrame(pairs, "user string, exclude array<long>") if len(pairs) else None
    if exclude is not None:
        frame = frame.join(exclude.select("user", "exclude"), on="user", how="left")
    with spark_recommendations(spark, served, frame, k, exclude_seen) as lists:
        out = lists.toPandas()
    return in_served_order(_typed(out, columns_of(served)), list(users), served)


def in_served_order(lists: pd.DataFrame, users: Sequence[str], served: Any) -> pd.DataFrame:
    """``lists`` ordered as the single-machine ``recommend`` orders them: a re-ranker's by user; a
    model's known users first in the order asked, then the fallback (NaN-scored) users, each user's
    rows by rank."""
    if isinstance(served, Reranked):
        return lists.sort_values(["user", "rank"], kind="stable").reset_index(drop=True)
    position = pd.Index(pd.Series(list(users), dtype=object).astype(str)).get_indexer(
        lists["user"].astype(str)
    )
    keys = pd.DataFrame(
        {"fallback": lists["score"].isna().to_numpy(), "position": position, "rank": lists["rank"].to_numpy()}
    )
    order = keys.sort_values(["fallback", "position", "rank"], kind="stable").index
    return lists.iloc[order].reset_index(drop=True)[columns_of(served)]
