"""The leak scanner's heavy parts as Spark jobs: the identifiers of the raw input, and the match of
every string cell of the week's Parquet partitions against them.

:mod:`recsys.privacy.scan` decides *what* is personal and how a value matches (its kernels:
normalizing a cell, cutting it into candidate spans, the generic email / IPv4 nets); this module
only runs those same Python kernels on the executors and does the rest relationally, so both
engines find the same things:

* identifiers: the raw CSV files are read by Spark's CSV reader (well-formed records only, as
  the pandas path and the ingest stage keep them), and only the distinct values of the identifier
  columns come back to the driver (what the text matcher needs anyway), never the events;
* Parquet cells: per file and string column, the distinct values and their counts
  (``groupBy``); the normalized values joined with the identifier table (exact match); the values
  holding separators cut into candidate spans on the executors and joined with the identifiers'
  text forms (whole-token match), the generic nets anti-joined with them. Only one summary row
  per (location, kind) comes back: total count, distinct values and the most frequent value (to
  be masked).

Nothing here gathers the lake's rows on the driver: its memory holds the identifier set and the
summaries.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa

from recsys.io.spark import pandas_to_spark, spark_path
from recsys.io.storage import check_committed

if TYPE_CHECKING:
    from pyspark.sql import (
        Column,
        DataFrame,
        SparkSession,
    )
    from pyspark.sql.types import DataType

log = logging.getLogger(__name__)

#: Spark's CSV reader drops a malformed record (wrong number of fields) by the whole record only
#: when it does not prune the columns it parses
_CSV_PRUNING = "spark.sql.csv.parser.columnPruning.enabled"


# ---- identifiers ---------------------------------------------------------------------------------


def collect_raw_values(
    spark: SparkSession,
    files: Sequence[tuple[Path, Sequence[str]]],
    columns_of: Callable[[Sequence[str]], dict[str, str]],
) -> dict[str, set[str]]:
    """Distinct non-empty values of the identifier columns of raw CSV ``files`` ((path, header)
    pairs), by kind, read by Spark. ``columns_of(header)``: identifier column name -> kind."""
    from pyspark.sql import functions as F  # deferred: pyspark is heavy, loaded only on the Spark path
    from pyspark.sql.types import (
        StringType,
        StructField,
        StructType,
    )  # deferred: pyspark is heavy, loaded only on the Spark path

    by_header: dict[tuple[str, ...], list[str]] = {}
    for path, header in files:
        if columns_of(header):
            by_header.setdefault(tuple(header), []).append(spark_path(spark, path))
    parts: list[DataFrame] = []
    for header, paths in by_header.items():
        schema = StructType([StructField(name, StringType()) for name in header])
        frame = (
            spark.read.schema(schema)
            .options(header=True, multiLine=True, escape='"', mode="DROPMALFORMED", encoding="UTF-8")
            .csv(paths)
        )
        for name, kind in columns_of(header).items():
            parts.append(frame.select(F.lit(kind).alias("kind"), F.col(_quoted(name)).alias("value")))
    values: dict[str, set[str]] = {}
    if not parts:
        return values
    union = parts[0]
    for part in parts[1:]:
        union = union.unionByName(part)
    distinct = union.where(F.col("value").isNotNull() & (F.col("value") != "")).distinct()
    previous = spark.conf.get(_CSV_PRUNING, "true")
    spark.conf.set(_CSV_PRUNING, "false")
    try:
        for row in distinct.toLocalIterator():
            values.setdefault(row["kind"], set()).add(row["value"])
    finally:
        spark.conf.set(_CSV_PRUNING, previous)
    return values


# ---- parquet cells -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CellKernels:
    """The scan's per-value Python functions, run on the executors (see :mod:`recsys.privacy.scan`).

    ``normalize``: distinct cell values -> the form compared with the identifiers;
    ``separated``: normalized values -> whether they are also searched as text;
    ``candidates(value, widths)``: (source, candidate) pairs of one normalized value: ``span``
    for each run of ``widths`` consecutive words (a hit when it is an identifier's text form), or a
    net's kind (``email``, ``ip``) for a value of that shape (a hit when it is *not* an input
    identifier)."""

    normalize: Callable[[pd.Series], pd.Series]
    separated: Callable[[pd.Series], pd.Series]
    candidates: Callable[[str, Sequence[int]], Iterable[tuple[str, str]]]


@dataclass(frozen=True)
class ParquetColumn:
    """One string-bearing column of a Parquet file to match: where findings go, and how to read it."""

    location: str  # e.g. lake:prepared/week=.../train.parquet[user]
    path: Path
    name: str
    arrow_type: pa.DataType
    user_column: bool


@dataclass(frozen=True)
class Summary:
    """What matched at one location, for one kind: never more than one (masked later) value."""

    kind: str
    matched: str  # input | pattern
    count: int
    distinct: int
    top_value: str  # the most frequent matched value (ties: the smallest); mask it before showing


def spark_type(arrow_type: pa.DataType, user_column: bool = False) -> DataType | None:
    """The Spark type to read a column as, with only its string leaves (None: no strings in it).

    Mirrors :func:`recsys.privacy.scan.string_values`: dictionaries by their values, lists and
    structs by their string leaves, and integer / decimal ids in user columns (top level only)."""
    from pyspark.sql import types as T  # deferred: pyspark is heavy, loaded only on the Spark path

    t = arrow_type
    if pa.types.is_dictionary(t):
        return spark_type(t.value_type)
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return T.StringType()
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        inner = spark_type(t.value_type)
        return T.ArrayType(inner) if inner is not None else None
    if pa.types.is_struct(t):
        fields = [(t.field(i).name, spark_type(t.field(i).type)) for i in range(t.num_fields)]
        kept = [T.StructField(name, sub) for name, sub in fields if sub is not None]
        return T.StructType(kept) if kept else None
    if user_column and pa.types.is_decimal(t):
        return T.DecimalType(t.precision, t.scale)
    if user_column and pa.types.is_integer(t):
        # as Spark reads Parquet's integer annotations
        return {
            pa.int8(): T.ByteType(),
            pa.int16(): T.ShortType(),
            pa.int32(): T.IntegerType(),
            pa.int64(): T.LongType(),
            pa.uint8(): T.ShortType(),
            pa.uint16(): T.IntegerType(),
            pa.uint32(): T.LongType(),
            pa.uint64(): T.DecimalType(20, 0),
        }[t]
    return None


def _leaves(column: Column, data_type: DataType) -> Column:
    """Every string leaf of ``column`` as an array<string> (never null; null leaves kept as nulls)."""
    from pyspark.sql import functions as F  # deferred: pyspark is heavy, loaded only on the Spark path
    from pyspark.sql import types as T  # deferred: pyspark is heavy, loaded only on the Spark path

    empty = F.array().cast(T.ArrayType(T.StringType()))
    if isinstance(data_type, T.StringType):
        return F.array(column)
    if isinstance(data_type, T.ArrayType):
        element = data_type.elementType
        return F.coalesce(F.flatten(F.transform(column, lambda x: _leaves(x, element))), empty)
    if isinstance(data_type, T.StructType):
        return F.concat(*[_leaves(column.getField(f.name), f.dataType) for f in data_type.fields])
    return F.array(column.cast("string"))


def _quoted(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _cells(spark: SparkSession, columns: Sequence[ParquetColumn]) -> DataFrame:
    """(loc, user, value) for every non-null string leaf of ``columns`` (loc: index in ``columns``)."""
    from pyspark.sql import functions as F  # deferred: pyspark is heavy, loaded only on the Spark path
    from pyspark.sql import types as T  # deferred: pyspark is heavy, loaded only on the Spark path

    by_file: dict[Path, list[tuple[int, ParquetColumn, DataType]]] = {}
    for index, column in enumerate(columns):
        data_type = spark_type(column.arrow_type, column.user_column)
        if data_type is not None:
            by_file.setdefault(column.path, []).append((index, column, data_type))
    parts = []
    for path, wanted in by_file.items():
        check_committed(path.parent)
        schema = T.StructType([T.StructField(c.name, t) for _, c, t in wanted])
        frame = (
            spark.read.schema(schema)
            .option("basePath", spark_path(spark, path.parent))
            .parquet(spark_path(spark, path))
        )
        for index, column, data_type in wanted:
            parts.append(
                frame.select(
                    F.lit(index).alias("loc"),
                    F.lit(column.user_column).alias("user"),
                    F.explode(_leaves(F.col(_quoted(column.name)), data_type)).alias("value"),
                )
            )
    union = parts[0]
    for part in parts[1:]:
        union = union.unionByName(part)
    return union.where(F.col("value").isNotNull())


def match_parquet_columns(
    spark: SparkSession,
    columns: Sequence[ParquetColumn],
    identifiers: pd.DataFrame,
    texts: pd.DataFrame,
    widths: Sequence[int],
    kernels: CellKernels,
) -> dict[str, list[Summary]]:
    """Match every string cell of ``columns`` against the identifiers, as Spark jobs.

    ``identifiers``: value, kind, cell (matched in every column), user (matched in user columns);
    ``texts``: text, kind (the identifiers' whole-token forms); ``widths``: their word counts.
    Returns location -> summaries (only locations with a match)."""
    from pyspark import StorageLevel  # deferred: pyspark is heavy, loaded only on the Spark path
    from pyspark.sql import functions as F  # deferred: pyspark is heavy, loaded only on the Spark path

    if not columns:
        return {}
    normalize, separated, candidates = kernels.normalize, kernels.separated, kernels.candidates
    width_list = list(widths)

    def normalized(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            lowered = normalize(batch["value"])
            yield batch.assign(lowered=lowered, sep=separated(lowered).astype(bool))

    def spans(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            rows = [
                (loc, count, source, candidate)
                for loc, count, value in zip(batch["loc"], batch["count"], batch["lowered"], strict=True)
                for source, candidate in candidates(value, width_list)
            ]
            yield pd.DataFrame(rows, columns=["loc", "count", "source", "candidate"])

    with pandas_to_spark(spark, identifiers) as ids, pandas_to_spark(spark, texts) as text_forms:
        counted = _cells(spark, columns).groupBy("loc", "user", "value").agg(F.count(F.lit(1)).alias("count"))
        cells = counted.mapInPandas(
            normalized, "loc int, user boolean, value string, count long, lowered string, sep boolean"
        ).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            # one left join each way: the identifier of a cell (exact), of a candidate span (text form)
            matched_cells = cells.join(
                ids,
                (cells["lowered"] == ids["id_value"]) & (ids["cell"] | (cells["user"] & ids["user_id"])),
                "left",
            )
            exact_hits = matched_cells.where(F.col("kind").isNotNull()).select(
                "loc", "kind", F.col("lowered").alias("hit"), "count", F.lit("input").alias("matched")
            )
            found = (
                matched_cells.where(F.col("kind").isNull() & F.col("sep"))
                .select("loc", "count", "lowered")
                .mapInPandas(spans, "loc int, count long, source string, candidate string")
            )
            looked_up = found.join(text_forms, found["candidate"] == text_forms["text"], "left")
            span = F.col("source") == "span"
            text_hits = looked_up.where(
                (span & F.col("kind").isNotNull()) | (~span & F.col("kind").isNull())
            ).select(
                "loc",
                F.when(span, F.col("kind")).otherwise(F.col("source")).alias("kind"),
                F.col("candidate").alias("hit"),
                "count",
                F.when(span, F.lit("input")).otherwise(F.lit("pattern")).alias("matched"),
            )
            per_value = (
                exact_hits.unionByName(text_hits)
                .groupBy("loc", "kind", "matched", "hit")
                .agg(F.sum("count").alias("n"))
            )
            summaries = per_value.groupBy("loc", "kind", "matched").agg(
                F.sum("n").alias("total"),
                F.count(F.lit(1)).alias("distinct"),
                F.min(F.struct((-F.col("n")).alias("neg"), F.col("hit").alias("hit"))).alias("top"),
            )
            rows = summaries.collect()
        finally:
            cells.unpersist()
    out: dict[str, list[Summary]] = {}
    for row in rows:
        out.setdefault(columns[row["loc"]].location, []).append(
            Summary(row["kind"], row["matched"], int(row["total"]), int(row["distinct"]), row["top"]["hit"])
        )
    return out


def identifier_frames(
    cells: dict[str, str], user_ids: dict[str, str], text: dict[str, str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The identifier tables :func:`match_parquet_columns` joins with, from an identifier set's maps."""
    values = list(dict.fromkeys([*cells, *user_ids]))
    identifiers = pd.DataFrame(
        {
            "id_value": pd.Series(values, dtype=object),
            "kind": pd.Series([cells.get(v) or user_ids[v] for v in values], dtype=object),
            "cell": pd.Series([v in cells for v in values], dtype=bool),
            "user_id": pd.Series([v in user_ids for v in values], dtype=bool),
        }
    )
    texts = pd.DataFrame(
        {"text": pd.Series(list(text), dtype=object), "kind": pd.Series(list(text.values()), dtype=object)}
    )
    # no identifiers: one row that cannot match, so Spark knows the columns' types
    if identifiers.empty:
        identifiers = pd.DataFrame(
            {"id_value": [""], "kind": ["user_id"], "cell": [False], "user_id": [False]}
        )
    if texts.empty:
        texts = pd.DataFrame({"text": [""], "kind": ["user_id"]})  # candidates are never empty
    return identifiers, texts
