"""The one place a SparkSession is made (a thin seam: tests and tasks share it)."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from recsys.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


def get_spark(settings: Settings, app_name: str = "recsys-retrain") -> SparkSession:
    """A SparkSession on ``settings.spark_master``, sized for one machine by default.

    Re-uses the active session when there is one, so several steps of one task share it.
    """
    from pyspark.sql import SparkSession

    local_dir = settings.home / "spark-tmp"
    local_dir.mkdir(parents=True, exist_ok=True)
    cores = os.cpu_count() or 2
    builder = (
        SparkSession.builder.master(settings.spark_master)
        .appName(app_name)
        .config("spark.driver.memory", settings.spark_driver_memory)
        .config("spark.sql.shuffle.partitions", str(max(2, cores * 2)))
        .config("spark.default.parallelism", str(max(2, cores * 2)))
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.local.dir", str(local_dir))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.extraJavaOptions", f"-Djava.io.tmpdir={local_dir}")
    )
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    logging.getLogger("py4j").setLevel(logging.WARNING)
    spark.sparkContext.setCheckpointDir(str(local_dir / "checkpoints"))
    log.info("Spark session on %s (Spark %s)", settings.spark_master, spark.version)
    return spark
