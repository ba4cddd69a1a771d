"""The one place a SparkSession is made, and Spark sized for the data instead of Spark's defaults.

Spark's defaults are made for clusters and big data: 200 shuffle partitions, ALS in 10 user and 10
item blocks, no Arrow between pandas and the JVM. On 100k-1M interactions that is mostly
scheduling overhead. :func:`get_spark` configures the session for the machine (Arrow transfers,
shuffle partitions from the cores, driver memory from the RAM when not set), and
:func:`als_sizing` picks ALS's blocks, the input's partitions and the checkpoint interval from the
data size and the session's parallelism (so a Spark master with more executors gets more blocks).
:func:`pandas_to_spark` hands a pandas frame to a local session as a Parquet file, which Spark scans
natively, instead of through the driver.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import socket
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from recsys.core.errors import ConfigError, ServiceUnavailable
from recsys.core.processes import process_alive
from recsys.core.settings import Settings
from recsys.io.lakefs import LakeLocation, ObjectPath

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

#: seconds the preflight waits for a TCP connection to a ``spark://`` master
MASTER_CONNECT_TIMEOUT = 5.0
#: interactions per ALS block (and per input partition) below which splitting further only adds tasks
PAIRS_PER_BLOCK = 250_000
#: Hadoop's S3 filesystem: Spark reads an s3:// lake through it as s3a://
S3A_CLASS = "org.apache.hadoop.fs.s3a.S3AFileSystem"
#: the hadoop-aws release that matches the Hadoop client pyspark ships (jars/hadoop-client-api-3.5.0.jar)
HADOOP_AWS_VERSION = "3.5.0"
#: iterations from which ALS checkpoints its factors (long lineage overflows the stack, and a lost
#: executor would recompute every iteration); shorter fits skip the checkpoint writes
CHECKPOINT_FROM_ITERATIONS = 20
CHECKPOINT_INTERVAL = 10


def auto_driver_memory(total_bytes: int) -> str:
    """A quarter of the machine's memory, between 1 GiB and 8 GiB (Spark's own default is 1 GiB)."""
    gib = min(8, max(1, total_bytes // 4 // 2**30))
    return f"{gib}g"


def driver_memory(settings: Settings) -> str:
    if settings.spark_driver_memory != "auto":
        return settings.spark_driver_memory
    return auto_driver_memory(psutil.virtual_memory().total)


@dataclass(frozen=True)
class ALSSizing:
    """How one ALS fit is laid out on the session: blocks, input partitions, checkpointing."""

    blocks: int
    partitions: int
    checkpoint_interval: int  # -1: no checkpoints

    def describe(self) -> str:
        checkpoint = "off" if self.checkpoint_interval < 0 else f"every {self.checkpoint_interval} iterations"
        return f"{self.blocks} user/item blocks, {self.partitions} input partitions, checkpoints {checkpoint}"


def als_sizing(n_pairs: int, parallelism: int, max_iter: int, blocks: int | None = None) -> ALSSizing:
    """ALS layout for ``n_pairs`` interactions on ``parallelism`` task slots.

    One block per :data:`PAIRS_PER_BLOCK` interactions, at least 1 and at most the parallelism (more
    blocks than slots only queue), unless ``blocks`` is given. The input gets as many partitions as
    blocks. Checkpoints every :data:`CHECKPOINT_INTERVAL` iterations from
    :data:`CHECKPOINT_FROM_ITERATIONS` iterations on.
    """
    if n_pairs < 0 or parallelism < 1 or max_iter < 1:
        raise ValueError(
            f"bad ALS sizing input: n_pairs={n_pairs}, parallelism={parallelism}, max_iter={max_iter}"
        )
    chosen = blocks or max(1, min(parallelism, math.ceil(n_pairs / PAIRS_PER_BLOCK)))
    interval = CHECKPOINT_INTERVAL if max_iter >= CHECKPOINT_FROM_ITERATIONS else -1
    return ALSSizing(blocks=chosen, partitions=chosen, checkpoint_interval=interval)


def check_master(master: str, timeout: float = MASTER_CONNECT_TIMEOUT) -> None:
    """For a ``spark://host:port[,host:port…]`` master, a TCP connect to each address (``timeout``
    seconds each) until one accepts; none does: :class:`~recsys.core.errors.ServiceUnavailable` in one
    line. Without it, Spark retries the master for over a minute and ends in some 200 lines of JVM
    traceback. Other masters (``local[*]``, ``yarn``, ``k8s://``) are left to Spark."""
    if not master.startswith("spark://"):
        return
    problems = []
    for address in master.removeprefix("spark://").split(","):
        host, _, port = address.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"RECSYS_SPARK_MASTER {master!r}: expected spark://host:port[,host:port...]")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
                return
        except OSError as exc:
            problems.append(f"{host}:{port}: {exc.strerror or exc or exc.__class__.__name__}")
    raise ServiceUnavailable(
        f"Spark master {master} is not reachable ({'; '.join(problems)}): start the master, or set "
        "RECSYS_SPARK_MASTER to a running one (or local[*]), and re-run"
    )


SCRATCH_PREFIX = "pid-"


def scratch_root(settings: Settings) -> Path:
    """Where each process's Spark scratch lives (``spark.local.dir``: shuffle files, hand-offs, checkpoints)."""
    return settings.home / "spark-tmp"


def clean_dead_scratch(settings: Settings) -> list[Path]:
    """Remove the Spark scratch of processes of this machine that no longer run (a killed task's)."""
    root = scratch_root(settings)
    removed = []
    if not root.is_dir():
        return removed
    for folder in root.glob(f"{SCRATCH_PREFIX}*"):
        pid = folder.name.removeprefix(SCRATCH_PREFIX)
        if pid.isdigit() and int(pid) != os.getpid() and not process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


#: the Spark application name of the stage this code runs in (:func:`spark_app_name`)
_app_name: ContextVar[str] = ContextVar("recsys_spark_app", default="recsys-retrain")


@contextmanager
def spark_app_name(name: str) -> Iterator[None]:
    """Name the Spark application a block starts and the job group of the jobs it runs
    (``recsys-retrain <stage> <week>``), so the master's and the history server's pages say which
    stage ran which jobs."""
    token = _app_name.set(name)
    try:
        yield
    finally:
        _app_name.reset(token)


def get_spark(settings: Settings, app_name: str | None = None) -> SparkSession:
    """A SparkSession on ``settings.spark_master``, sized for one machine by default.

    Re-uses the active session when there is one, so several steps of one task share it (its
    settings are then the first session's).
    """
    from pyspark.sql import SparkSession  # deferred: pyspark is heavy, loaded only when a session is made

    check_master(settings.spark_master)
    # scratch of this process only: what a killed process leaves is found and removed by the next run
    # (clean_dead_scratch), never mixed with a live one's
    local_dir = scratch_root(settings) / f"{SCRATCH_PREFIX}{os.getpid()}"
    local_dir.mkdir(parents=True, exist_ok=True)
    cores = os.cpu_count() or 2
    memory = driver_memory(settings)
    builder = (
        SparkSession.builder.master(settings.spark_master)
        .appName(app_name or _app_name.get())
        .config("spark.driver.memory", memory)
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.execution.arrow.pyspark.fallback.enabled", "true")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.local.dir", str(local_dir))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.extraJavaOptions", f"-Djava.io.tmpdir={local_dir}")
    )
    if settings.lake_uri:  # Spark reads the lake in place through S3A, configured as boto3 is
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            builder = builder.config("spark.hadoop.fs.s3a.endpoint", endpoint).config(
                "spark.hadoop.fs.s3a.path.style.access", "true"
            )
    if settings.spark_master.startswith("local"):
        # one machine: as many partitions as cores (a cluster keeps Spark's own, from its executors)
        builder = builder.config("spark.sql.shuffle.partitions", str(max(2, cores))).config(
            "spark.default.parallelism", str(max(2, cores))
        )
    spark = builder.getOrCreate()
    # the jobs a stage starts carry its name, also when one process runs several stages in one session
    # (`airflow dags test`, `recsys pipeline`): the master's and history server's job lists say which
    spark.sparkContext.setJobGroup(app_name or _app_name.get(), app_name or _app_name.get())
    if is_local(spark) and "PYSPARK_PYTHON" not in os.environ:
        # the Python workers (mapInPandas, pandas_udf) run this interpreter, with its pandas, pyarrow and
        # recsys; Spark's default is whatever python3 is on the PATH. A cluster's image sets PYSPARK_PYTHON
        spark.sparkContext.pythonExec = sys.executable
    spark.sparkContext.setLogLevel("ERROR")
    logging.getLogger("py4j").setLevel(logging.WARNING)
    spark.sparkContext.setCheckpointDir(str(local_dir / "checkpoints"))
    log.info(
        "Spark session on %s (Spark %s, driver memory %s, parallelism %d)",
        settings.spark_master,
        spark.version,
        memory,
        spark.sparkContext.defaultParallelism,
    )
    return spark


def spark_path(spark: SparkSession, path: LakeLocation) -> str:
    """The address Spark reads a lake path by: the local path, or ``s3a://`` for an object store,
    once this Spark is known to have the S3A connector (a one-line error naming what to add if not)."""
    if not isinstance(path, ObjectPath):
        return str(path)
    jvm = spark.sparkContext._jvm
    try:
        loader = jvm.java.lang.Thread.currentThread().getContextClassLoader()
        jvm.java.lang.Class.forName(S3A_CLASS, False, loader)
    except Exception:  # noqa: BLE001 - py4j raises its own error type for a missing class
        raise ConfigError(
            f"the lake is in S3 ({path}) but this Spark has no S3A connector ({S3A_CLASS}): add "
            f"org.apache.hadoop:hadoop-aws:{HADOOP_AWS_VERSION} and its AWS SDK bundle to Spark's jars (the team "
            "image does, see the Dockerfile), or set the stage's engine to pandas"
        ) from None
    return f"s3a://{path.key}"


def is_local(spark: SparkSession) -> bool:
    """Whether the session runs on a local master (driver and executors share this machine's disk)."""
    return spark.sparkContext.master.startswith("local")


def handoff_dir(spark: SparkSession) -> Path:
    """Where :func:`pandas_to_spark` puts its Parquet files: ``handoff/`` in Spark's first local dir (or the temp dir)."""
    configured = spark.sparkContext.getConf().get("spark.local.dir")
    base = Path(configured.split(",")[0]) if configured else Path(tempfile.gettempdir())
    return base / "handoff"


@contextmanager
def table_to_spark(
    spark: SparkSession, table: pa.Table, row_group_size: int | None = None
) -> Iterator[DataFrame]:
    """An Arrow ``table`` as a Spark DataFrame, for as long as the ``with`` block runs: as
    :func:`pandas_to_spark` (an uncompressed Parquet file of ``row_group_size`` rows per group, the
    unit Spark splits its scan by, on a local master; Arrow elsewhere)."""
    if not is_local(spark):
        yield spark.createDataFrame(table.to_pandas())
        return
    directory = handoff_dir(spark)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{uuid.uuid4().hex}.parquet"
    try:
        pq.write_table(table, path, compression="none", row_group_size=row_group_size)
        yield spark.read.parquet(str(path))
    finally:
        path.unlink(missing_ok=True)


@contextmanager
def pandas_to_spark(spark: SparkSession, frame: pd.DataFrame) -> Iterator[DataFrame]:
    """``frame`` as a Spark DataFrame, for as long as the ``with`` block runs.

    On a local master the frame goes through an uncompressed Parquet file in Spark's local dir,
    which Spark scans natively and in parallel. That is much faster than ``createDataFrame``, whose
    Arrow batches are turned into rows on the driver before the first job starts: at 830k rating
    triples (MovieLens-1M shape) the ALS fit took 4.5 s from Parquet against 7.7 s from Arrow
    (docs/benchmarks.md). A cluster's executors cannot read the driver's disk, so on any other master
    the frame goes through Arrow. The file is removed when the block ends; use the DataFrame (and
    materialize what is derived from it) inside the block.
    """
    if not is_local(spark):
        yield spark.createDataFrame(frame)
        return
    with table_to_spark(spark, pa.Table.from_pandas(frame, preserve_index=False)) as sdf:
        yield sdf


class EngineConfig(BaseModel):
    """Where a stage's data work runs: pandas on the task's machine, or Spark jobs over the lake's
    Parquet partitions (see :func:`choose_engine`)."""

    model_config = ConfigDict(extra="forbid")

    engine: Literal["auto", "pandas", "spark"] = Field(
        "auto",
        description="auto: Spark when the week's data has at least spark_min_rows rows or the Spark master "
        "is not local, else pandas; pandas or spark: always that engine",
    )
    spark_min_rows: int = Field(
        20_000_000,
        ge=0,
        description="rows (events or interactions) from which auto moves a stage's data work to a local Spark: "
        "on a local master Spark caps the driver's memory but is slower (anonymize and prepare of 2M events took "
        "3.5x pandas' time on two cores), so only weeks too big for one process go there",
    )


def choose_engine(config: EngineConfig, rows: int, master: str) -> Literal["pandas", "spark"]:
    """The engine a stage uses for ``rows`` input rows on the Spark ``master`` (see :class:`EngineConfig`)."""
    if config.engine != "auto":
        return config.engine
    if not master.startswith("local") or rows >= config.spark_min_rows:
        return "spark"
    return "pandas"
