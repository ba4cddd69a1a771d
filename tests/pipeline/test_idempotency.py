"""Re-runs, retries and backfills of an interval: same outputs, no duplicate rows, runs or model
versions, and the champion never moves backwards in time."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from recsys.core.runplan import plan_run
from recsys.core.settings import Settings
from recsys.data.synthetic import GeneratorConfig, generate
from recsys.io.storage import Lake
from recsys.io.tracking import configure
from recsys.pipeline.context import StageContext
from recsys.pipeline.runner import run_all
from recsys.promotion.registry import champion_version
from tests.conftest import untuned_config

NEWEST = date(2026, 11, 8)
OLDER = NEWEST - timedelta(weeks=1)
OLDEST = NEWEST - timedelta(weeks=2)


def interval_end(week: date) -> datetime:
    """The data interval end of the scheduled (or backfill) run of ``week``."""
    return datetime.combine(week + timedelta(weeks=1), datetime.min.time(), tzinfo=UTC)


def training_runs(settings: Settings, week: date) -> pd.DataFrame:
    experiment = mlflow.get_experiment_by_name(settings.mlflow_experiment)
    return mlflow.search_runs([experiment.experiment_id], filter_string=f"tags.week = '{week.isoformat()}'")


def untuned(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """The subject is reuse, not the tuning grid (tests/training/test_tuning.py): untuned, with the
    regularisation the grid picks on sparse weekly logs, each training fits ALS twice, not four times."""
    monkeypatch.setenv("RECSYS_CONFIG", untuned_config(root, als={"reg_param": 1.0}))


def test_reruns_and_backfills_reuse_their_interval(env, monkeypatch, tmp_path):
    monkeypatch.setenv("RECSYS_MLFLOW_EXPERIMENT", f"exp_{tmp_path.name}"[:60])
    untuned(monkeypatch, tmp_path)
    settings = Settings.from_env()
    lake = Lake(settings.lake_dir)
    generate(lake, GeneratorConfig(n_users=400, n_items=200, weeks=3, seed=5), NEWEST)
    client = configure(settings)

    # the scheduled run of the newest week makes v1 the champion
    first = run_all(StageContext.create(NEWEST, settings, plan=plan_run("scheduled", interval_end(NEWEST))))
    assert first["register"].version == "1" and "champion" in first["register"].aliases
    assert first["train"].reused is False
    anonymized = pd.read_parquet(lake.data_file("anonymized", "events", NEWEST))
    recs = pd.read_parquet(lake.partition("recommendations", NEWEST) / "recommendations.parquet")

    # a re-run (or a retry) of the same interval: same partitions, same run, same version
    again = run_all(
        StageContext.create(NEWEST, settings, plan=plan_run("manual", None, {"week": "2026-11-08"}))
    )
    assert again["train"].reused is True and again["train"].run_id == first["train"].run_id
    assert again["register"].version == "1"
    assert len(client.search_model_versions(f"name = '{settings.model_name}'")) == 1
    assert len(training_runs(settings, NEWEST)) == 1
    pd.testing.assert_frame_equal(pd.read_parquet(lake.data_file("anonymized", "events", NEWEST)), anonymized)
    pd.testing.assert_frame_equal(
        pd.read_parquet(lake.partition("recommendations", NEWEST) / "recommendations.parquet"), recs
    )

    # a backfill of an older week registers its own version and never moves champion
    backfill = plan_run("backfill", interval_end(OLDER))
    assert backfill.week == OLDER
    older = run_all(StageContext.create(OLDER, settings, plan=backfill))
    assert older["register"].version == "2" and older["register"].promotion == "never"
    assert "champion" not in older["register"].aliases
    assert older["recommend"].status == "skipped" and "backfill" in older["recommend"].reason
    assert client.get_model_version(settings.model_name, "2").tags["trigger"] == "backfill"
    assert str(champion_version(client, settings.model_name).version) == "1"
    # ... and backfilling it again changes nothing
    repeat = run_all(StageContext.create(OLDER, settings, plan=backfill))
    assert repeat["train"].reused is True and repeat["register"].version == "2"
    assert len(training_runs(settings, OLDER)) == 1

    # a manual run of an even older week with promotion auto: the champion is trained on newer data
    manual = run_all(
        StageContext.create(OLDEST, settings, plan=plan_run("manual", None, {"week": "2026-10-25"}))
    )
    assert manual["register"].promotion == "never"
    assert "newer week (2026-11-08)" in manual["register"].note
    assert str(champion_version(client, settings.model_name).version) == "1"
    assert len(client.search_model_versions(f"name = '{settings.model_name}'")) == 3


def test_a_changed_training_config_is_a_new_run(env, monkeypatch, tmp_path):
    from recsys.pipeline.config import PipelineConfig

    monkeypatch.setenv("RECSYS_MLFLOW_EXPERIMENT", f"exp_{tmp_path.name}"[:60])
    untuned(monkeypatch, tmp_path)
    settings = Settings.from_env()
    generate(Lake(settings.lake_dir), GeneratorConfig(n_users=300, n_items=150, weeks=1, seed=2), NEWEST)
    run_all(StageContext.create(NEWEST, settings))
    bigger = PipelineConfig.model_validate(
        {"tuning": {"enabled": False}, "als": {"rank": 8, "reg_param": 1.0}}
    )
    changed = run_all(StageContext.create(NEWEST, settings, config=bigger))
    assert changed["train"].reused is False and changed["register"].version == "2"
    configure(settings)
    assert len(training_runs(settings, NEWEST)) == 2
