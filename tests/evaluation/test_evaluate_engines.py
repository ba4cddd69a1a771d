"""The evaluate stage gives the same metrics whether the holdout is scored in pandas or on Spark."""

from __future__ import annotations

import logging
import math
from datetime import UTC, date, datetime, timedelta

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


def test_one_week_evaluated_both_ways_gives_the_same_metrics(env, monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("RECSYS_MLFLOW_EXPERIMENT", f"exp_{tmp_path.name}"[:60])
    settings = Settings.from_env()
    generate(Lake(settings.lake_dir), GeneratorConfig(n_users=400, n_items=200, weeks=3, seed=5), WEEK)
    # the served model re-ranked with exploration: a candidate that is no FactorModel
    config = PipelineConfig(
        tuning=TuningConfig(enabled=False),
        rerank=RerankConfig(method="mmr", exploration_share=0.2),
        engine=EngineConfig(engine="pandas"),
    )
    end = datetime.combine(WEEK + timedelta(weeks=1), datetime.min.time(), tzinfo=UTC)
    results = run_all(StageContext.create(WEEK, settings, config=config, plan=plan_run("scheduled", end)))
    on_pandas = results["evaluate"]
    assert on_pandas.candidate["users_evaluated"] > 0

    spark_config = config.model_copy(update={"engine": EngineConfig(engine="spark")})
    with caplog.at_level(logging.INFO, logger="recsys.pipeline.model_stages"):
        on_spark = run_stage("evaluate", StageContext.create(WEEK, settings, config=spark_config))
    assert any("evaluate: on Spark" in r.getMessage() for r in caplog.records)
    assert on_spark.k == on_pandas.k and on_spark.served_model == on_pandas.served_model
    assert_same(on_spark.candidate, on_pandas.candidate, "candidate")
    assert_same(on_spark.baseline, on_pandas.baseline, "baseline")
    assert_same(on_spark.champion, on_pandas.champion, "champion")
    assert_same(on_spark.models, on_pandas.models, "models")
    assert set(on_pandas.models) >= {"popularity", "als", "content"}
