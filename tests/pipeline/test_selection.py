"""The search of hyper-parameters and blend runs at most every ``tuning.every_weeks`` weeks: the weeks
between refit what the last search chose (recsys.pipeline.reuse.find_selection)."""

from __future__ import annotations

import json
from datetime import date, timedelta

import mlflow
import pytest

from recsys.core.runplan import RunPlan
from recsys.core.settings import Settings
from recsys.data.synthetic import GeneratorConfig, generate
from recsys.io.storage import Lake
from recsys.io.tracking import configure
from recsys.pipeline.config import PipelineConfig
from recsys.pipeline.context import StageContext
from recsys.pipeline.reuse import (
    SELECTION_TAG,
    Selection,
    earlier_selection,
    find_selection,
    selection_digest,
)
from recsys.pipeline.runner import run_stage
from recsys.reporting.model_report import render_model_report

LAST = date(2026, 11, 8)
FIRST = LAST - timedelta(weeks=2)
STAGES = ("window", "ingest", "validate", "anonymize", "prepare", "content", "train")
CONFIG = {"tuning": {"grid": {"reg_param": [0.1, 1.0]}, "every_weeks": 2}, "als": {"rank": 8}}


@pytest.fixture(scope="module")
def weeks(tmp_path_factory):
    """Three weeks trained in order with a search every two weeks."""
    root = tmp_path_factory.mktemp("selection")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECSYS_HOME", str(root))
        mp.setenv("RECSYS_PSEUDONYM_KEY", "selection-test-key-0123456789abcdef")
        mp.setenv("RECSYS_MLFLOW_EXPERIMENT", "selection")
        config_file = root / "config.json"
        config_file.write_text(json.dumps(CONFIG), encoding="utf-8")
        mp.setenv("RECSYS_CONFIG", str(config_file))
        settings = Settings.from_env()
        generate(Lake(settings.lake_dir), GeneratorConfig(n_users=300, n_items=150, weeks=3, seed=3), LAST)
        trained = {}
        for week in (FIRST, FIRST + timedelta(weeks=1), LAST):
            ctx = StageContext.create(week, settings)
            for stage in STAGES:
                result = run_stage(stage, ctx)
            trained[week] = result
        client = configure(settings)
        runs = {week: client.get_run(result.run_id) for week, result in trained.items()}
        yield {"settings": settings, "trained": trained, "runs": runs, "client": client, "mp": mp}


def test_the_week_after_a_search_refits_its_choice(weeks):
    first, second = weeks["trained"][FIRST], weeks["trained"][FIRST + timedelta(weeks=1)]
    runs = weeks["runs"]
    assert [t["params"] for t in first.tuning["trials"]] == [{"reg_param": 0.1}, {"reg_param": 1.0}]
    chosen = Selection.from_tag(runs[FIRST].data.tags[SELECTION_TAG])
    assert chosen is not None and chosen.week == FIRST and chosen.run_id == first.run_id
    assert chosen.als.model_dump() == first.als and chosen.blend is not None

    # the next week searches nothing: no trial, no blend learned; the same config and weights refitted
    assert second.tuning["reused_from"] == {"week": FIRST.isoformat(), "run_id": first.run_id}
    assert second.als == first.als and second.hybrid == first.hybrid
    run = runs[FIRST + timedelta(weeks=1)]
    assert run.data.tags["selection_reused_from"] == first.run_id
    assert run.data.params["als.reg_param"] == runs[FIRST].data.params["als.reg_param"]
    client = weeks["client"]
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "hybrid")]
    assert "hybrid/blend.json" not in artifacts
    assert [a.path for a in client.list_artifacts(first.run_id, "hybrid")] == ["hybrid/blend.json"]
    children = mlflow.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    assert children.empty
    report = render_model_report({"tuning": second.tuning})
    assert f"search of week {FIRST.isoformat()}" in report and "at most every 2 weeks" in report


def test_a_search_older_than_every_weeks_is_not_reused(weeks):
    last = weeks["trained"][LAST]
    # two weeks after the search, with every_weeks 2: the week searches again
    assert "trials" in last.tuning and "reused_from" not in last.tuning
    chosen = Selection.from_tag(weeks["runs"][LAST].data.tags[SELECTION_TAG])
    assert chosen is not None and chosen.week == LAST and chosen.run_id == last.run_id


def test_a_drift_retrain_a_changed_config_or_every_week_searches(weeks):
    settings = weeks["settings"]
    second = FIRST + timedelta(weeks=1)
    config = PipelineConfig.model_validate(CONFIG)
    configure(settings)
    assert find_selection(StageContext.create(second, settings, config=config), selection_digest(config))
    drift = RunPlan(week=second, trigger="drift", run_type="manual")
    assert earlier_selection(StageContext.create(second, settings, config=config, plan=drift)) is None
    wider = PipelineConfig.model_validate({**CONFIG, "tuning": {"grid": {"reg_param": [0.1, 1.0, 10.0]}}})
    assert (
        find_selection(StageContext.create(second, settings, config=wider), selection_digest(wider)) is None
    )
    weekly = PipelineConfig.model_validate({**CONFIG, "tuning": {**CONFIG["tuning"], "every_weeks": 1}})
    assert selection_digest(weekly) == selection_digest(config)  # the cadence is not part of the search
    assert (
        find_selection(StageContext.create(second, settings, config=weekly), selection_digest(weekly)) is None
    )


def test_a_tag_that_is_not_a_selection_is_ignored():
    assert Selection.from_tag("") is None
    assert Selection.from_tag('{"week": "2026-11-01"}') is None
    assert Selection.from_tag('{"week": "2026-11-01", "run_id": "r", "als": {"rank": -1}}') is None
    kept = Selection(date(2026, 11, 1), "r", PipelineConfig().als)
    assert Selection.from_tag(kept.to_tag()) == kept
