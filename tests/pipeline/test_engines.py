"""The stages with two engines give the same results whether they run in pandas or on Spark: one week
through the pipeline in pandas, then evaluate and recommend again on Spark (one pipeline week for
both checks)."""

from __future__ import annotations

import logging
import math
from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pytest

from recsys.core.runplan import plan_run
from recsys.core.settings import Settings
from recsys.data.synthetic import GeneratorConfig, generate
from recsys.io.spark import EngineConfig
from recsys.io.storage import Lake
from recsys.models.rerank import RerankConfig
from recsys.pipeline.config import PipelineConfig
from recsys.pipeline.context import StageContext
from recsys.pipeline.runner import run_all, run_stage
from recsys.training.tuning import TuningConfig

WEEK = date(2026, 11, 8)


def assert_same(got: object, expected: object, where: str = "") -> None:
    if isinstance(expected, dict):
        assert isinstance(got, dict) and list(got) == list(expected), where
        for key, value in expected.items():
            assert_same(got[key], value, f"{where}/{key}")
    elif expected is None or (isinstance(expected, float) and math.isnan(expected)):
        assert got is None or (isinstance(got, float) and math.isnan(got)), where
    else:
        assert got == pytest.approx(expected, rel=1e-9, abs=1e-9), where


def test_one_week_both_ways_gives_the_same_metrics_recommendations_and_rows(
    env, monkeypatch, tmp_path, caplog
):
    monkeypatch.setenv("RECSYS_MLFLOW_EXPERIMENT", f"exp_{tmp_path.name}"[:60])
    settings = Settings.from_env()
    lake = Lake(settings.lake_dir)
    generate(lake, GeneratorConfig(n_users=400, n_items=200, weeks=3, seed=5), WEEK)
    # re-ranked with exploration: a served candidate that is no FactorModel, and recommend's deepest
    # path (candidates, then MMR and exploration per block)
    config = PipelineConfig(
        tuning=TuningConfig(enabled=False),
        rerank=RerankConfig(method="mmr", exploration_share=0.2),
        engine=EngineConfig(engine="pandas"),
    )
    end = datetime.combine(WEEK + timedelta(weeks=1), datetime.min.time(), tzinfo=UTC)
    results = run_all(StageContext.create(WEEK, settings, config=config, plan=plan_run("scheduled", end)))
    assert results["recommend"].status == "written"
    folder = lake.partition("recommendations", WEEK)
    pandas_files = {
        name: pd.read_parquet(folder / name) for name in ("recommendations.parquet", "rows.parquet")
    }
    on_pandas = results["evaluate"]
    assert on_pandas.candidate["users_evaluated"] > 0
    spark_config = config.model_copy(update={"engine": EngineConfig(engine="spark")})

    # evaluate
    with caplog.at_level(logging.INFO, logger="recsys.pipeline.model_stages"):
        on_spark = run_stage("evaluate", StageContext.create(WEEK, settings, config=spark_config))
    assert any("evaluate: on Spark" in r.getMessage() for r in caplog.records)
    assert on_spark.k == on_pandas.k and on_spark.served_model == on_pandas.served_model
    assert_same(on_spark.candidate, on_pandas.candidate, "candidate")
    assert_same(on_spark.baseline, on_pandas.baseline, "baseline")
    assert_same(on_spark.champion, on_pandas.champion, "champion")
    assert_same(on_spark.models, on_pandas.models, "models")
    assert set(on_pandas.models) >= {"popularity", "als", "content"}

    # recommend
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="recsys.pipeline.release_stages"):
        again = run_stage("recommend", StageContext.create(WEEK, settings, config=spark_config))
    assert any("on Spark" in r.getMessage() for r in caplog.records)
    assert again.status == "written" and again.rows == results["recommend"].rows
    for name, frame in pandas_files.items():
        pd.testing.assert_frame_equal(pd.read_parquet(folder / name), frame, check_like=False)
    assert pandas_files["recommendations.parquet"]["explore"].any()
