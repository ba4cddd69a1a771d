"""The recommend stage writes the same files whether its top-k runs in pandas or on Spark."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta

import pandas as pd

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


def test_one_week_both_ways_writes_the_same_recommendations_and_rows(env, monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("RECSYS_MLFLOW_EXPERIMENT", f"exp_{tmp_path.name}"[:60])
    settings = Settings.from_env()
    lake = Lake(settings.lake_dir)
    generate(lake, GeneratorConfig(n_users=400, n_items=200, weeks=3, seed=5), WEEK)
    # re-ranked with exploration: the deepest path (candidates, then MMR and exploration per block)
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

    spark_config = config.model_copy(update={"engine": EngineConfig(engine="spark")})
    with caplog.at_level(logging.INFO, logger="recsys.pipeline.release_stages"):
        again = run_stage("recommend", StageContext.create(WEEK, settings, config=spark_config))
    assert any("on Spark" in r.getMessage() for r in caplog.records)
    assert again.status == "written" and again.rows == results["recommend"].rows
    for name, frame in pandas_files.items():
        pd.testing.assert_frame_equal(pd.read_parquet(folder / name), frame, check_like=False)
    assert pandas_files["recommendations.parquet"]["explore"].any()
