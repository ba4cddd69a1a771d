"""Which engine a stage's data work runs on (recsys.io.spark.choose_engine)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from recsys.io.spark import EngineConfig, choose_engine


@pytest.mark.parametrize(
    ("config", "rows", "master", "expected"),
    [
        (EngineConfig(), 10, "local[*]", "pandas"),
        (EngineConfig(spark_min_rows=1_000), 999, "local[2]", "pandas"),
        (EngineConfig(spark_min_rows=1_000), 1_000, "local[2]", "spark"),
        (EngineConfig(), 10, "spark://master:7077", "spark"),  # a cluster takes the data work
        (EngineConfig(engine="pandas"), 10**9, "spark://master:7077", "pandas"),
        (EngineConfig(engine="spark"), 0, "local[*]", "spark"),
    ],
)
def test_choose_engine(config, rows, master, expected):
    assert choose_engine(config, rows, master) == expected


def test_engine_config_refuses_unknown_values():
    with pytest.raises(ValidationError):
        EngineConfig(engine="dask")
    with pytest.raises(ValidationError):
        EngineConfig(spark_min_rows=-1)
    with pytest.raises(ValidationError):
        EngineConfig(spark_rows=5)  # a typo is refused, not ignored
