"""Batch top-k on Spark: blocks of users through ``mapInPandas``, each ranked by the model's own kernel.

The single-machine path is ``model.recommend(users, k, exclude)``; the Spark path runs that very
method on the executors, once per block of users, so the lists are the same by construction:

* **the same blocks.** ``recommend`` scores the users it knows in blocks (one matrix product each) of
  :func:`block_size` users, in the order asked. BLAS may round a user's float32 scores differently
  when the user sits elsewhere in a block of another size (about 1 score in 1,000 by one unit in
  the last place at the ml-1m shape, enough to swap two nearly tied items at the cut). So the
  driver cuts the users into Spark blocks of whole scoring blocks, as ``recommend`` would cut them
  (:func:`user_blocks`), Spark brings each block's users together in their order (range-partitioned
  by block, so the partitions get about as many users each, then ``sortWithinPartitions``), and the executor hands ``recommend`` exactly that block: the
  same products, bit for bit.
* **ALS** (:class:`~recsys.models.factors.FactorModel`, also the popularity baseline): the user side
  travels in the Spark DataFrame, one row per user (``factors``: the user's factor row, null for a
  user the model does not know; ``seen``: positions of the user's training items in the model's item
  order, left out when seen items are not excluded; ``exclude``: item ids the user must not get).
  ``factors`` and ``seen`` are binary cells of little-endian float32 and int32 values: Spark moves a
  binary cell to Arrow as one copy, where an array cell costs a conversion per element (at the 10M
  shape, 10M seen positions took seconds). The item side (item ids, item factors, the popularity
  order) is broadcast once. Each block becomes a :class:`FactorModel` of the block's users over the
  broadcast items (:func:`factor_block`) and its ``recommend`` ranks them.
* **hybrid** (:class:`~recsys.models.hybrid.HybridModel`): the same split. The item side
  (:meth:`~recsys.models.hybrid.HybridModel.item_side`: the content model, ALS's item factors and
  popularity order, the items' popularity term, computed from the whole history on the driver, and
  the blend) is broadcast; each user's inputs (:meth:`~recsys.models.hybrid.HybridModel.user_side`:
  interaction count, ALS factors, content profile, seen items) travel in the DataFrame as binary
  cells, and each block becomes a HybridModel of its users (:func:`hybrid_block`) whose
  ``recommend`` ranks them. No executor holds the history or another block's users.
* **re-ranked** (:class:`~recsys.models.rerank.Reranked`): each block asks the model for the
  candidates and re-ranks them with :func:`~recsys.models.rerank.rerank`, as ``Reranked.recommend``
  does; the items' genres are broadcast, each user's history genres travel in the DataFrame.

An executor holds one block of users (and the broadcast) at a time. Nothing here collects the lists
unless asked: :func:`spark_recommendations` yields a lazy DataFrame, :func:`write_recommendations`
writes it as Parquet from the executors, :func:`collect_recommendations` brings it to the driver.
"""

from __future__ import annotations

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
from recsys.models import factors, hybrid
from recsys.models.factors import FactorModel
from recsys.models.hybrid import HybridItems, HybridModel, HybridUsers
from recsys.models.rerank import Reranked, rerank

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

#: users per Spark block, about: a whole number of the model's scoring blocks (at least one), so each
#: ``recommend`` call on an executor amortises its set-up over several matrix products, and small
#: enough that 70k users make 18 blocks to spread over the cores
SPARK_BLOCK_USERS = 4096

#: joins a user's history genres in one cell of the user table (a control character: never in a name)
GENRE_SEPARATOR = "\x1f"

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
    model = served.model if isinstance(served, Reranked) else served
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


def packed(values: np.ndarray, dtype: Any) -> bytes:
    """One cell of the user table: ``values`` as little-endian ``dtype`` bytes (:func:`unpacked`)."""
    return np.ascontiguousarray(values, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()


def unpacked(cells: Sequence[bytes], dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    """(values, lengths): binary cells of little-endian ``dtype`` values (a column of the user table)
    as one array of all their values and each cell's number of values."""
    little = np.dtype(dtype).newbyteorder("<")
    lengths = np.fromiter((len(c) for c in cells), dtype=np.int64, count=len(cells)) // little.itemsize
    values = np.frombuffer(b"".join(cells), dtype=little).astype(np.dtype(dtype), copy=False)
    return values, lengths


def factor_block(
    block: pd.DataFrame,
    items: np.ndarray,
    item_factors: np.ndarray,
    popular: np.ndarray,
    k: int,
    exclude_seen: bool = True,
) -> pd.DataFrame:
    """The lists of one block of users (``block``: user, factors[, seen][, exclude], in the order
    asked; ``factors`` and ``seen`` cells as :func:`packed` makes them) by
    :meth:`FactorModel.recommend` over the broadcast item side: a FactorModel of the block's known
    users (``factors`` not null) answers for every user of the block, the others getting its
    popularity fallback. Without a ``seen`` column the known users have seen nothing."""
    known = block["factors"].notna().to_numpy()
    rank = item_factors.shape[1]
    flat, _ = unpacked(block["factors"][known].tolist(), np.float32)
    n_known = int(known.sum())
    if "seen" in block.columns:
        cells = [c if c is not None else b"" for c in block["seen"][known].tolist()]
        indices, lengths = unpacked(cells, np.int32)
    else:
        indices, lengths = np.zeros(0, dtype=np.int32), np.zeros(n_known, dtype=np.int64)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    model = FactorModel(
        users=block["user"][known].to_numpy(dtype=str),
        items=items,
        user_factors=flat.reshape(n_known, rank),
        item_factors=item_factors,
        seen=sparse.csr_matrix(
            (np.ones(len(indices), dtype=np.float32), indices, indptr), shape=(n_known, len(items))
        ),
        popular=popular,
    )
    exclude = exclusions(block)
    return model.recommend(
        block["user"].astype(str).tolist(), k=k, exclude=exclude or None, exclude_seen=exclude_seen
    )


def history_genres(block: pd.DataFrame) -> dict[str, set[str]]:
    """The re-ranker's genres of what each user of the block watched, from the user table's
    ``history_genres`` cells (:data:`GENRE_SEPARATOR`-joined)."""
    return {
        str(user): set(cell.split(GENRE_SEPARATOR)) if cell else set()
        for user, cell in zip(block["user"].tolist(), block["history_genres"].tolist(), strict=True)
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
    side: Any, kind: str, k: int, exclude_seen: bool, columns: list[str]
) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """The ``mapInPandas`` function over one partition; ``side`` is the broadcast (the item side, or
    the whole hybrid, and the re-ranking when there is one)."""

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        value = side.value
        base, reranking = value["base"], value.get("rerank")
        depth = max(k, reranking["config"].candidates) if reranking else k
        # one BLAS thread per Python worker: Spark already runs one task per core
        with threadpool_limits(limits=1, user_api="blas"):
            for block in whole_blocks(batches):
                if kind == "factors":
                    lists = factor_block(block, *base, k=depth, exclude_seen=exclude_seen)
                else:
                    exclude = exclusions(block)
                    lists = hybrid_block(block, base).recommend(
                        block["user"].astype(str).tolist(),
                        k=depth,
                        exclude=exclude or None,
                        exclude_seen=exclude_seen,
                    )
                if reranking:
                    history = history_genres(block)
                    lists = rerank(lists, reranking["genres"], history, k, reranking["config"])
                yield typed(lists, columns)

    return run


# ---- on the driver ----------------------------------------------------------------------------


def exclusion_frame(train: DataFrame) -> DataFrame:
    """(user, exclude): each user's training items, from a Spark frame of (user, item_id) pairs
    (what the recommend stage excludes; ``evaluation.train_items`` on the single-machine path)."""
    from pyspark.sql import functions as F  # deferred: pyspark is heavy, loaded only on the Spark path

    return train.groupBy("user").agg(F.collect_set(F.col("item_id").cast("long")).alias("exclude"))


def _binary_cells(flat: np.ndarray, lengths: np.ndarray, valid: np.ndarray) -> pa.Array:
    """A binary Arrow array over ``flat``'s bytes (little-endian), cell i holding ``lengths[i]``
    values, null where not ``valid``: no Python object per cell."""
    data = np.ascontiguousarray(flat, dtype=flat.dtype.newbyteorder("<"))
    offsets = np.concatenate([[0], np.cumsum(np.where(valid, lengths, 0))]) * data.dtype.itemsize
    validity = None if valid.all() else pa.array(valid).buffers()[1]
    return pa.Array.from_buffers(
        pa.large_binary(),
        len(lengths),
        [validity, pa.py_buffer(offsets.astype(np.int64)), pa.py_buffer(data.tobytes())],
        null_count=int((~valid).sum()),
    )


def user_table(
    served: Any, users: Sequence[str], block_users: int = SPARK_BLOCK_USERS, with_seen: bool = True
) -> pa.Table:
    """The Spark input of :func:`spark_recommendations`: (user, block, position), and for a FactorModel
    each user's ``factors`` (null when unknown) and, ``with_seen``, ``seen`` item positions, as binary
    cells (:func:`packed`) over the model's buffers (no Python object per user)."""
    blocks = user_blocks(served, users, block_users)
    table = pa.Table.from_pandas(blocks, preserve_index=False)
    if isinstance(served, Reranked):
        genres = served.history_genres
        table = table.append_column(
            "history_genres",
            pa.array([GENRE_SEPARATOR.join(sorted(genres.get(u, ()))) for u in blocks["user"].tolist()]),
        )
    model = scoring_model(served)
    if isinstance(model, HybridModel):
        return _hybrid_columns(table, model, blocks["user"], with_seen)
    rows = pd.Index(model.users.astype(str)).get_indexer(blocks["user"])
    known = rows >= 0
    picked = np.where(known, rows, 0)
    flat = np.ascontiguousarray(model.user_factors[picked], dtype=np.float32)[known].ravel()
    table = table.append_column("factors", _binary_cells(flat, np.full(len(picked), model.rank), known))
    if not with_seen:
        return table
    seen = model.seen.tocsr()[picked]
    keep = np.repeat(known, np.diff(seen.indptr))
    return table.append_column(
        "seen", _binary_cells(seen.indices[keep].astype(np.int32), np.diff(seen.indptr), known)
    )


def _hybrid_columns(table: pa.Table, model: HybridModel, users: pd.Series, with_seen: bool) -> pa.Table:
    """``table`` with a hybrid's per-user inputs (:meth:`HybridModel.user_side`) as binary cells, null
    for a user without history: ``count``, ``factors`` (also null where ALS does not know the user),
    the content profile (``profile_items`` int32 feature positions, ``profile_values`` float32) and
    ``seen`` (int32 positions in the hybrid's item universe)."""
    has = model.user_rows(users.to_numpy(dtype=object)) >= 0
    side = model.user_side(users[has].tolist())
    n = len(users)

    def spread(values: np.ndarray, fill: Any) -> np.ndarray:
        out = np.full(n, fill, dtype=values.dtype)
        out[has] = values
        return out

    counts = pa.array(spread(side.counts, 0), mask=~has)
    als = spread(side.als_known, False)
    factors = _binary_cells(side.als_factors[side.als_known].ravel(), np.full(n, model.als.rank), als)
    profile_lengths = spread(np.diff(side.profiles.indptr), 0)
    table = (
        table.append_column("count", counts)
        .append_column("factors", factors)
        .append_column(
            "profile_items", _binary_cells(side.profiles.indices.astype(np.int32), profile_lengths, has)
        )
        .append_column(
            "profile_values", _binary_cells(side.profiles.data.astype(np.float32), profile_lengths, has)
        )
    )
    if not with_seen:
        return table
    seen_lengths = spread(np.diff(side.seen.indptr), 0)
    return table.append_column("seen", _binary_cells(side.seen.indices.astype(np.int32), seen_lengths, has))


def hybrid_block(block: pd.DataFrame, items: HybridItems) -> HybridModel:
    """The HybridModel of one block of the user table (:func:`_hybrid_columns`) over the broadcast
    item side: its users with history, their inputs unpacked."""
    has = block["count"].notna().to_numpy()
    rows = block[has]
    n = len(rows)
    als_known = rows["factors"].notna().to_numpy()
    factors = np.zeros((n, items.als_item_factors.shape[1]), np.float32)
    flat, _ = unpacked(rows["factors"][als_known].tolist(), np.float32)
    factors[als_known] = flat.reshape(int(als_known.sum()), factors.shape[1])

    def matrix(index_column: str, values: np.ndarray | None, width: int) -> sparse.csr_matrix:
        indices, lengths = unpacked(rows[index_column].tolist(), np.int32)
        data = np.ones(len(indices), dtype=np.float32) if values is None else values
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        return sparse.csr_matrix((data, indices, indptr), shape=(n, width))

    profile_values, _ = unpacked(rows["profile_values"].tolist(), np.float32)
    seen = (
        matrix("seen", None, items.n_items)
        if "seen" in rows.columns
        else sparse.csr_matrix((n, items.n_items), dtype=np.float32)
    )
    users = HybridUsers(
        users=rows["user"].to_numpy(dtype=str),
        counts=rows["count"].to_numpy(dtype=np.int64),
        als_known=als_known,
        als_factors=factors,
        profiles=matrix("profile_items", profile_values, items.n_features),
        seen=seen,
    )
    return items.block(users)


@contextmanager
def _to_spark(spark: SparkSession, table: pa.Table) -> Iterator[DataFrame]:
    """``table`` as a Spark DataFrame for the ``with`` block: on a local master through an
    uncompressed Parquet file in Spark's local dir (scanned natively), elsewhere through Arrow."""
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


def _broadcast(spark: SparkSession, served: Any) -> tuple[Any, str]:
    """(broadcast, kind): the item side of a FactorModel, or the whole hybrid; a re-ranker's genres."""
    model = scoring_model(served)
    if isinstance(model, FactorModel):
        kind, base = "factors", (model.items, model.item_factors, model.popular)
    else:
        kind, base = "hybrid", model.item_side()
    value: dict[str, Any] = {"base": base}
    if isinstance(served, Reranked):
        value["rerank"] = {
            "genres": dict(served.item_genres),
            "config": served.config,
        }
    return spark.sparkContext.broadcast(value), kind


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
    side, kind = _broadcast(spark, served)
    try:
        with _to_spark(spark, table) as wanted:
            if exclude is not None:
                wanted = wanted.join(exclude.select("user", "exclude"), on="user", how="left")
            # by range: about as many users to each partition (hashing 18 blocks into 4 partitions
            # may give one of them twice its share), a block whole in one partition all the same
            by_block = wanted.repartitionByRange(partitions, "block")
            blocks = by_block.sortWithinPartitions("block", "position")
            yield blocks.mapInPandas(_block_function(side, kind, k, exclude_seen, columns), schema_of(served))
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
