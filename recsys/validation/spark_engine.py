"""The Spark engine of the validate stage: the same suites, rows and reasons as the pandas engine.

``recsys.validation.validate.run_validation`` uses it for a kind whose staged batch has more rows than
``ValidationConfig.spark_min_rows``. Nothing here holds the batch in memory:

1. the staged parquet is typed in chunks of ``CHUNK_ROWS`` rows with the very same pandas typers as
   the pandas engine (so a value parses the same way on both), each chunk written to two parquet
   datasets keyed by ``_row`` (the row's position in the batch, as in the pandas engine): the typed
   columns, and the text as staged (for the quarantine);
2. the GX suites run on Spark DataFrames of those datasets (a GX Spark data source); row-level
   results come back as ``_row`` ids (``unexpected_index_column_names``, result format COMPLETE);
3. duplicates (first of each key kept, by ``_row``) and the bot rule are Spark window functions;
4. valid and quarantined rows are written by Spark, then streamed into single parquet files with
   the same schema as the pandas engine writes.

Only row ids of quarantined rows (and GX's lists of unexpected values) reach the driver: memory on
the driver grows with the quarantined rows, which ``max_quarantine_share`` bounds.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.core.schemas import QUARANTINE_REASON, SOURCE_FILE, SOURCE_LINE
from recsys.data.ingest import MALFORMED_SCHEMA, RAW_LINE
from recsys.validation.casting import (
    OUTPUT_COLUMNS,
    TYPERS,
    empty_staged,
    output_schema,
    quarantine_schema,
    typed_schema,
    write_frame,
)
from recsys.validation.outcomes import (
    Flags,
    KindJob,
    KindOutcome,
    batch_stats,
    bot_entry,
    finish,
    parse_entry,
    record_row_results,
    table_checks,
)
from recsys.validation.suites import BOT, COLUMNS_REJECTED, DUPLICATE, IS_RATING, ROW_ID, GxRunner

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

CHUNK_ROWS = 200_000  # staged rows typed at a time


def _col(name: str) -> Column:
    from pyspark.sql import functions as F  # deferred: pyspark is heavy, loaded only for a Spark batch

    return F.col("`" + name.replace("`", "``") + "`")


def _read(spark: SparkSession, path: Path, schema: pa.Schema) -> DataFrame:
    """Read parquet with a known schema: no schema inference (a Spark job per read) needed."""
    from pyspark.sql import types as T  # deferred: pyspark is heavy, loaded only for a Spark batch

    def spark_type(t: pa.DataType) -> Any:
        if pa.types.is_timestamp(t):
            return T.TimestampType()
        if pa.types.is_integer(t):
            return T.LongType()
        if pa.types.is_floating(t):
            return T.DoubleType()
        if pa.types.is_boolean(t):
            return T.BooleanType()
        return T.StringType()

    fields = [T.StructField(f.name, spark_type(f.type), True) for f in schema]
    return spark.read.schema(T.StructType(fields)).parquet(str(path))


def _parts(folder: Path) -> list[Path]:
    return sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []


def _type_in_chunks(job: KindJob, work: Path) -> tuple[Path, Path, dict[str, list[np.ndarray]]]:
    """Type the staged batch chunk by chunk; returns the text and typed dataset folders and the
    row ids of unparseable values, by reason."""
    text_dir, typed_dir = work / "text", work / "typed"
    text_dir.mkdir(parents=True)
    typed_dir.mkdir(parents=True)
    source = pq.ParquetFile(job.staged_file)
    schema = typed_schema(job.kind, ts_unit="us").append(pa.field(ROW_ID, pa.int64()))  # Spark: no ns
    text_schema = source.schema_arrow.append(pa.field(ROW_ID, pa.int64()))
    # every reason the typer knows, in its order (as the pandas engine lists them)
    unparseable: dict[str, list[np.ndarray]] = {r: [] for r in TYPERS[job.kind](empty_staged(job.kind))[1]}
    offset = 0
    for i, batch in enumerate(source.iter_batches(batch_size=CHUNK_ROWS)):
        chunk = batch.to_pandas()
        chunk.index = pd.RangeIndex(offset, offset + len(chunk))
        typed, masks = TYPERS[job.kind](chunk)
        for reason, mask in masks.items():
            unparseable[reason].append(np.flatnonzero(mask) + offset)
        typed[ROW_ID] = chunk.index.to_numpy(dtype=np.int64)
        table = pa.Table.from_pandas(typed, schema=schema, preserve_index=False, safe=False)
        pq.write_table(table, typed_dir / f"part-{i:05d}.parquet")
        rows = pa.array(np.arange(offset, offset + len(chunk), dtype=np.int64))
        pq.write_table(
            pa.Table.from_batches([batch.append_column(ROW_ID, rows)]), text_dir / f"part-{i:05d}.parquet"
        )
        offset += len(chunk)
    if offset == 0:  # Spark needs a file to know the schema
        pq.write_table(schema.empty_table(), typed_dir / "part-00000.parquet")
        pq.write_table(text_schema.empty_table(), text_dir / "part-00000.parquet")
    return text_dir, typed_dir, unparseable


def _ids_frame(spark: SparkSession, ids: np.ndarray, folder: Path) -> DataFrame:
    folder.mkdir(parents=True)
    pq.write_table(pa.table({ROW_ID: pa.array(ids, pa.int64())}), folder / "part-00000.parquet")
    return _read(spark, folder, pa.schema([(ROW_ID, pa.int64())]))


def _collect_ids(df: DataFrame, folder: Path) -> np.ndarray:
    """The ``_row`` ids of ``df``, through parquet (no row-by-row collect)."""
    df.select(ROW_ID).write.mode("overwrite").parquet(str(folder))
    parts = _parts(folder)
    if not parts:
        return np.empty(0, dtype=np.int64)
    ids = pa.concat_tables([pq.read_table(p) for p in parts])[ROW_ID].to_numpy()
    return np.sort(ids.astype(np.int64))


def _combine(folder: Path, dest: Path, schema: pa.Schema, micros: tuple[str, ...] = ()) -> int:
    """Stream Spark's part files (in order) into one parquet file with ``schema``; returns its rows.

    ``micros``: columns Spark wrote as microseconds since the epoch (see :func:`_to_micros`).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    rows = 0
    with pq.ParquetWriter(dest, schema) as writer:
        for part in _parts(folder):
            for batch in pq.ParquetFile(part).iter_batches(batch_size=CHUNK_ROWS):
                arrays = []
                for f in schema:
                    column = batch.column(f.name)
                    if f.name in micros:
                        column = column.cast(pa.int64()).cast(pa.timestamp("us", tz="UTC"))
                    arrays.append(column.cast(f.type))
                writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=schema))
                rows += batch.num_rows
        if rows == 0:
            writer.write_table(schema.empty_table())
    return rows


def _to_micros(df: DataFrame, columns: list[str], timestamps: tuple[str, ...]) -> DataFrame:
    """Select ``columns``, timestamps as microseconds since the epoch: a parquet type that reads the
    same whatever ``spark.sql.parquet.outputTimestampType`` says."""
    from pyspark.sql import functions as F  # deferred: pyspark is heavy, loaded only for a Spark batch

    return df.select(*(F.unix_micros(_col(c)).alias(c) if c in timestamps else _col(c) for c in columns))


def _write_quarantine(
    spark: SparkSession, quarantined: DataFrame, job: KindJob, text_columns: list[str], work: Path
) -> int:
    schema = quarantine_schema(text_columns)
    malformed_dir = work / "malformed"
    malformed_dir.mkdir(parents=True)
    write_frame(job.malformed, malformed_dir / "part-00000.parquet", MALFORMED_SCHEMA)
    malformed = _read(spark, malformed_dir, MALFORMED_SCHEMA)
    everything = quarantined.unionByName(malformed, allowMissingColumns=True)
    everything = everything.orderBy(SOURCE_FILE, SOURCE_LINE).select(*(_col(f.name) for f in schema))
    everything.write.mode("overwrite").parquet(str(work / "quarantine"))
    return _combine(work / "quarantine", job.quarantine_file, schema)


def validate_kind_spark(job: KindJob, runner: GxRunner, spark: SparkSession) -> KindOutcome:
    """Validate one kind on Spark; see the module docstring."""
    # deferred: pyspark is heavy, loaded only for a Spark batch
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    kind, config = job.kind, job.config
    work = job.work_dir
    work.mkdir(parents=True, exist_ok=True)
    n = job.rows
    checks: list[dict[str, Any]] = []
    failures: list[str] = []
    flags = Flags()
    staged_schema = pq.ParquetFile(job.staged_file).schema_arrow
    text_columns = [c for c in staged_schema.names if c not in (SOURCE_FILE, SOURCE_LINE)]
    staged = _read(spark, job.staged_file, staged_schema)
    columns_ok = table_checks(
        kind,
        runner.validate(
            f"{kind}_table", staged.select(*(_col(c) for c in text_columns)), job.table_suite(), spark=True
        ),
        checks,
        failures,
    )
    schema = output_schema(kind)
    timestamps = tuple(f.name for f in schema if pa.types.is_timestamp(f.type))
    cached: list[DataFrame] = []
    try:
        if not columns_ok:
            by_reason: Counter = Counter({COLUMNS_REJECTED: n} if n else {})
            quarantined = staged.withColumn(QUARANTINE_REASON, F.lit(COLUMNS_REJECTED)).withColumn(
                RAW_LINE, F.lit(None).cast("string")
            )
            rows_quarantined = _write_quarantine(spark, quarantined, job, text_columns, work)
            write_frame(
                pd.DataFrame({f.name: pd.Series([], dtype=object) for f in schema}), job.valid_file, schema
            )
            rows_valid = 0
            item_ids: list[int] | None = [] if kind == "items" else None
        else:
            text_dir, typed_dir, unparseable = _type_in_chunks(job, work)
            for reason, parts in unparseable.items():
                ids = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
                checks.append(parse_entry(kind, reason, flags.add(reason, ids), n))
            typed_columns = typed_schema(kind, ts_unit="us").append(pa.field(ROW_ID, pa.int64()))
            typed = _read(spark, typed_dir, typed_columns).persist()
            cached.append(typed)
            results = runner.validate(kind, typed, job.row_suite(), spark=True)
            unique_checks = record_row_results(kind, results, checks, flags)
            survivors = typed.join(_ids_frame(spark, flags.rows(), work / "flagged"), ROW_ID, "left_anti")
            # duplicates among the rows still valid: keep the first of each key (by row id)
            for i, (key, entry) in enumerate(unique_checks):
                ranked = survivors.withColumn(
                    "_rank", F.row_number().over(Window.partitionBy(*(_col(k) for k in key)).orderBy(ROW_ID))
                )
                dup = _collect_ids(ranked.filter(F.col("_rank") > 1), work / f"duplicates-{i}")
                entry["rows_quarantined"] = flags.add(DUPLICATE, dup)
                survivors = ranked.filter(F.col("_rank") == 1).drop("_rank")
            if kind == "events":
                survivors = _bot_rule(
                    survivors, flags, checks, config.max_events_per_user_per_day, work, cached
                )
            valid_dir = work / "valid"
            _to_micros(survivors.orderBy(ROW_ID), list(OUTPUT_COLUMNS[kind]), timestamps).write.mode(
                "overwrite"
            ).parquet(str(valid_dir))
            rows_valid = _combine(valid_dir, job.valid_file, schema, timestamps)
            if job.batch_suite is not None and rows_valid:
                valid = _read(
                    spark, valid_dir, pa.schema([("user_id", pa.string()), ("event_type", pa.string())])
                )
                valid = valid.withColumn(IS_RATING, (F.col("event_type") == "rating").cast("double"))
                results = runner.validate(f"{kind}_batch", valid, job.batch_suite(), spark=True)
                table_checks(kind, results, checks, failures)
            reasons_dir = work / "reasons"
            reasons_dir.mkdir()
            reasons = flags.frame()
            reasons_schema = pa.schema([(ROW_ID, pa.int64()), (QUARANTINE_REASON, pa.string())])
            write_frame(reasons, reasons_dir / "part-00000.parquet", reasons_schema)
            text = _read(spark, text_dir, staged_schema.append(pa.field(ROW_ID, pa.int64())))
            quarantined = (
                text.join(_read(spark, reasons_dir, reasons_schema), ROW_ID)
                .drop(ROW_ID)
                .withColumn(RAW_LINE, F.lit(None).cast("string"))
            )
            rows_quarantined = _write_quarantine(spark, quarantined, job, text_columns, work)
            by_reason = flags.counts()
            item_ids = (
                pq.read_table(job.valid_file, columns=["item_id"])["item_id"].to_pylist()
                if kind == "items"
                else None
            )
    finally:
        for df in cached:
            df.unpersist()
        shutil.rmtree(work, ignore_errors=True)
    by_reason.update(job.malformed[QUARANTINE_REASON].tolist() if len(job.malformed) else [])
    outcome = KindOutcome(
        kind=kind,
        engine="spark",
        rows_staged=n,
        rows_malformed=len(job.malformed),
        rows_valid=rows_valid,
        rows_quarantined=rows_quarantined,
        valid_file=job.valid_file,
        quarantine_file=job.quarantine_file,
        by_reason=by_reason,
        checks=checks,
        failures=failures,
        stats=batch_stats(kind, n, checks),
        notes=list(job.notes),
        item_ids=item_ids,
    )
    return finish(outcome, config)


def _bot_rule(
    survivors: DataFrame,
    flags: Flags,
    checks: list[dict[str, Any]],
    limit: int,
    work: Path,
    cached: list[DataFrame],
) -> DataFrame:
    """Quarantine every event of a user-day (UTC) with more than ``limit`` events; returns the rest."""
    # deferred: pyspark is heavy, loaded only for a Spark batch
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    counted = survivors.withColumn("_day", F.floor(F.unix_seconds("ts") / 86400)).withColumn(
        "_per_day", F.count(F.lit(1)).over(Window.partitionBy("user_id", "_day"))
    )
    counted = counted.persist()
    cached.append(counted)
    over = F.col("_per_day") > limit
    stats = counted.agg(
        F.count(F.lit(1)).alias("rows"),
        F.max("_per_day").alias("top"),
        F.count(F.when(over, 1)).alias("bot_rows"),
        F.countDistinct(F.when(over, F.col("user_id"))).alias("users"),
        F.countDistinct(F.when(over, F.col("user_id")), F.when(over, F.col("_day"))).alias("user_days"),
    ).first()
    bots = np.empty(0, dtype=np.int64)
    if stats["bot_rows"]:
        bots = _collect_ids(counted.filter(over), work / "bots")
    flags.add(BOT, bots)
    checks.append(
        bot_entry(
            limit,
            int(stats["rows"]),
            len(bots),
            int(stats["users"]),
            int(stats["user_days"]),
            int(stats["top"] or 0),
        )
    )
    return counted.filter(~over).drop("_day", "_per_day")
