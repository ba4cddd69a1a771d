"""Spark's Python workers (mapInPandas) run this interpreter, the one with the project installed.

Spark starts them with ``PYSPARK_PYTHON`` (default: whatever ``python3`` is on the PATH), read when the
session's SparkContext is made; conftest modules load before any test, hence before the shared
``spark`` fixture makes the session.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
