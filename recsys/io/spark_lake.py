"""Spark over the lake's Parquet partitions: read a committed partition, write a Spark result as the
one Parquet file (same name, columns and pandas dtypes) that the pandas path of a stage writes.

Spark 4 cannot read the lake's nanosecond timestamps (pandas writes ``timestamp[ns, UTC]``): inside
:func:`nanos_as_long` they are read as ``long`` nanoseconds since the epoch, which compare, sort and
aggregate exactly, and :func:`write_single_parquet` casts them back to the timestamp type of the
target schema. :func:`read_file` adds ``_order``, a row's position in the stage's input (week by
week, then row by row in the file), so "first" and "last" mean what they mean in the pandas path.

Spark writes its part files into a scratch folder next to the target (inside the stage's commit
folder, so on a cluster the executors write where the lake is) and the driver streams them, in
order and one record batch at a time, into the target file with the target schema: the driver
holds one batch, never the table.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.io.lakefs import ObjectPath
from recsys.io.spark import spark_path
from recsys.io.storage import check_committed, remove_tree

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

#: the column :func:`read_file` adds: a row's position in the stage's input
ORDER = "_order"
#: rows per file that ``_order`` can tell apart (the file's index times this, plus the row's index)
ROWS_PER_FILE = 1 << 40
#: rows per record batch when Spark's part files are streamed into the target file
BATCH_ROWS = 200_000
NANOS_AS_LONG = "spark.sql.legacy.parquet.nanosAsLong"


@contextmanager
def nanos_as_long(spark: SparkSession) -> Iterator[None]:
    """Read Parquet nanosecond timestamps as ``long`` (Spark refuses them otherwise) for the block."""
    before = spark.conf.get(NANOS_AS_LONG, "false")
    spark.conf.set(NANOS_AS_LONG, "true")
    try:
        yield
    finally:
        spark.conf.set(NANOS_AS_LONG, before)


def read_file(spark: SparkSession, path: Path, index: int = 0) -> DataFrame:
    """The Parquet file ``path`` of a committed partition (refused in one line when a killed run left
    the partition uncommitted), with :data:`ORDER` = ``index`` * :data:`ROWS_PER_FILE` + row index."""
    from pyspark.sql import functions as F  # deferred: pyspark is heavy, loaded only for Spark stages

    check_committed(path.parent)
    frame = spark.read.parquet(spark_path(spark, path))
    order = F.lit(index * ROWS_PER_FILE) + F.col("_metadata.row_index")
    return frame.withColumn(ORDER, order.cast("long"))


def sample(path: Path, rows: int = 1000) -> pd.DataFrame:
    """The first ``rows`` rows of a Parquet file as pandas reads them (dtypes from its pandas metadata):
    what the pandas path is run on to learn its output schema."""
    check_committed(path.parent)
    source = pq.ParquetFile(path.open("rb") if isinstance(path, ObjectPath) else path)
    for batch in source.iter_batches(batch_size=rows):
        return pa.Table.from_batches([batch], schema=source.schema_arrow).to_pandas()
    return source.schema_arrow.empty_table().to_pandas()


_ARROW_OF_SPARK = {
    "string": pa.string(),
    "bigint": pa.int64(),
    "int": pa.int32(),
    "double": pa.float64(),
    "float": pa.float32(),
    "boolean": pa.bool_(),
}


def pandas_schema(example: pd.DataFrame, spark_frame: DataFrame) -> pa.Schema:
    """The schema (with pandas metadata) the pandas path writes for ``example``, its output on a sample;
    a column the sample leaves all empty takes the type Spark computes for it."""
    schema = pa.Schema.from_pandas(example, preserve_index=False)
    spark_types = dict(spark_frame.dtypes)
    fields = []
    for f in schema:
        if pa.types.is_null(f.type):
            f = f.with_type(_ARROW_OF_SPARK.get(spark_types.get(f.name, "string"), pa.string()))
        fields.append(f)
    return pa.schema(fields, metadata=schema.metadata)


def write_single_parquet(frame: DataFrame, dest: Path, schema: pa.Schema) -> int:
    """Write ``frame`` (ordered as it should be in the file) as the one Parquet file ``dest`` with
    ``schema``; ``long`` columns whose target is a timestamp are nanoseconds (:func:`nanos_as_long`).
    Returns the rows written."""
    from pyspark.sql import functions as F  # deferred: pyspark is heavy, loaded only for Spark stages

    scratch = dest.with_name(f"spark-{dest.stem}")
    spark = frame.sparkSession
    frame.select(*(F.col(f"`{f.name}`") for f in schema)).write.mode("overwrite").parquet(
        spark_path(spark, scratch)
    )
    rows = 0
    objects = isinstance(dest, ObjectPath)
    try:
        with pq.ParquetWriter(
            dest.key if objects else dest, schema, filesystem=dest.fs if objects else None
        ) as writer:
            for part in sorted(scratch.glob("part-*.parquet")):
                source = pq.ParquetFile(part.open("rb") if objects else part)
                for batch in source.iter_batches(batch_size=BATCH_ROWS):
                    arrays = [batch.column(f.name).cast(f.type) for f in schema]
                    writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=schema))
                    rows += batch.num_rows
            if rows == 0:
                writer.write_table(schema.empty_table())
    finally:
        remove_tree(scratch)
    return rows
