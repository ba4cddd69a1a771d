"""The training window: a run brings its window's earlier weeks up to ``anonymized`` (or warns, or
refuses, as configured), says "window: N of M weeks", and a week the lake has no data for fails at once.

Real stages (ingest, Great Expectations validation, anonymize, prepare) on a generated lake; no Spark.
"""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
import pytest

from recsys.cli.main import main
from recsys.core.errors import ConfigError, DataNotFoundError
from recsys.core.settings import Settings
from recsys.data.prepare import plan_window
from recsys.data.synthetic import GeneratorConfig, generate
from recsys.io.storage import Lake
from recsys.pipeline.config import PipelineConfig
from recsys.pipeline.context import StageContext
from recsys.pipeline.results import StageResult
from recsys.pipeline.runner import run_stage
from recsys.pipeline.summary import format_brief, format_summary, summary

NEWEST = date(2026, 11, 8)
WEEKS = [NEWEST - timedelta(weeks=2), NEWEST - timedelta(weeks=1), NEWEST]


@pytest.fixture
def lake(env) -> Lake:
    lake = Lake(Settings.from_env().lake_dir)
    generate(lake, GeneratorConfig(n_users=120, n_items=80, weeks=3, seed=4), NEWEST)
    return lake


def context(week: date, **prepare: object) -> StageContext:
    config = PipelineConfig.model_validate({"prepare": prepare}) if prepare else PipelineConfig()
    return StageContext.create(week, config=config)


def run_week(ctx: StageContext) -> dict[str, StageResult]:
    """The DAG's stages up to prepare: window, then the week's own ingest, validate, anonymize."""
    return {
        stage: run_stage(stage, ctx) for stage in ("window", "ingest", "validate", "anonymize", "prepare")
    }


def test_plan_window_sorts_the_weeks_by_what_the_lake_holds(lake):
    window = plan_window(lake, NEWEST, 5)
    assert window.weeks == [NEWEST - timedelta(weeks=i) for i in range(4, -1, -1)]
    assert window.ready == ()
    assert window.unprocessed == tuple(WEEKS)
    assert window.no_data == (NEWEST - timedelta(weeks=4), NEWEST - timedelta(weeks=3))
    assert window.describe() == (
        "window: 0 of 5 weeks; 3 weeks with raw data not anonymized (2026-10-25, 2026-11-01, 2026-11-08); "
        "2 weeks without raw data"
    )


def test_the_window_stage_processes_the_earlier_weeks_each_recorded_as_a_run(lake):
    results = run_week(context(NEWEST))
    filled = results["window"]
    assert filled.mode == "process"
    assert filled.processed == [w.isoformat() for w in WEEKS[:2]]  # not the run's own week
    assert filled.failed == {}
    for stage, result in results.items():  # what a stage returns (XCom) is what it recorded
        assert result.to_xcom() == lake.read_stage_result(NEWEST, stage), stage
    for week in WEEKS[:2]:  # recorded under their own week, like a normal run's stages
        for stage in ("ingest", "validate", "anonymize"):
            assert lake.read_stage_result(week, stage)["week"] == week.isoformat()
        accounting = lake.read_stage_result(week, "validate")["accounting"]["events"]
        assert accounting["rows_read"] == accounting["rows_valid"] + accounting["rows_quarantined"]
    prepared = results["prepare"]
    assert prepared.window_weeks == [w.isoformat() for w in WEEKS]
    assert prepared.window_size == 12
    assert prepared.window == "window: 3 of 12 weeks (2026-10-25 .. 2026-11-08); 9 weeks without raw data"
    trained_on = pd.read_parquet(lake.partition("prepared", NEWEST) / "train.parquet")
    first_week_users = set(pd.read_parquet(lake.data_file("anonymized", "events", WEEKS[0]))["user"])
    assert first_week_users & set(trained_on["user"])  # the earlier weeks are in the training data

    text = format_summary(summary(context(NEWEST)))
    assert "window      3 of 12 weeks (2026-10-25 .. 2026-11-08)" in text
    assert "(2 earlier weeks processed by this run)" in text
    assert format_brief(summary(context(NEWEST))).startswith(
        "week 2026-11-08: window: 3 of 12 weeks (2026-10-25 .. 2026-11-08)"
    )

    again = run_stage("window", context(NEWEST))  # a re-run finds nothing left to do
    assert again.processed == [] and again.window["weeks"] == 3


def test_warn_trains_on_what_is_anonymized_and_says_how_much_is_missing(lake, caplog):
    results = run_week(context(NEWEST, window_fill="warn"))
    assert results["window"].processed == []
    assert lake.read_stage_result(WEEKS[0], "ingest") is None
    assert results["prepare"].window_weeks == [NEWEST.isoformat()]
    assert results["prepare"].window == (
        "window: 1 of 12 weeks (2026-11-08 .. 2026-11-08); 2 weeks with raw data not anonymized "
        "(2026-10-25, 2026-11-01); 9 weeks without raw data"
    )
    assert "trains on less than its window" in caplog.text


def test_refuse_fails_the_run_naming_the_weeks(lake):
    with pytest.raises(ConfigError, match=r"2 weeks with raw data not anonymized \(2026-10-25, 2026-11-01\)"):
        run_stage("window", context(NEWEST, window_fill="refuse"))
    assert lake.read_stage_result(WEEKS[0], "ingest") is None  # nothing was processed
    run_week(context(WEEKS[0], window_fill="refuse"))  # the first week of a history has nothing earlier
    run_week(context(WEEKS[1], window_fill="refuse"))
    assert run_week(context(NEWEST, window_fill="refuse"))["prepare"].window_weeks == [
        w.isoformat() for w in WEEKS
    ]


def test_an_earlier_week_that_fails_validation_is_left_out_with_its_reason(lake):
    events = lake.raw_files("events", WEEKS[1])[0]
    header = events.read_text(encoding="utf-8").splitlines()[0]
    events.write_text(header + "\n", encoding="utf-8")  # an empty batch: validation stops it
    results = run_week(context(NEWEST))
    assert results["window"].processed == [WEEKS[0].isoformat()]
    reason = results["window"].failed[WEEKS[1].isoformat()]
    assert reason.startswith("validate: ")
    assert results["prepare"].window_weeks == [WEEKS[0].isoformat(), NEWEST.isoformat()]
    assert "1 week left out, failed to process (2026-11-01)" in results["prepare"].window
    assert "left out 2026-11-01: validate: " in format_summary(summary(context(NEWEST)))


def test_a_week_without_raw_data_cannot_be_run_and_says_what_the_lake_holds(lake):
    with pytest.raises(DataNotFoundError) as caught:
        run_stage("window", context(date(1997, 9, 14)))
    message = str(caught.value)
    assert "week 1997-09-14 cannot be run: no raw events in" in message
    assert "the lake's raw events cover 3 weeks, 2026-10-25 .. 2026-11-08" in message
    assert "\n" not in message


def test_an_empty_lake_says_how_to_land_data(env):
    with pytest.raises(DataNotFoundError, match="has no raw events at all .*recsys load-movielens"):
        run_stage("window", context(NEWEST))


def test_run_dates_follow_the_lake(lake, capsys):
    assert main(["run-dates", "--weeks", "2"]) == 0  # no --until: the lake's newest week
    assert capsys.readouterr().out.split() == ["2026-11-08", "2026-11-15"]
    assert main(["run-dates", "--weeks", "all"]) == 0
    assert capsys.readouterr().out.split() == ["2026-11-01", "2026-11-08", "2026-11-15"]
    assert main(["run-dates", "--weeks", "all", "--from", "2026-11-03"]) == 0
    assert capsys.readouterr().out.split() == ["2026-11-08", "2026-11-15"]
    assert main(["run-dates", "--weeks", "all", "--until", "2026-11-09"]) == 0  # week 11-01 is the last
    assert capsys.readouterr().out.split() == ["2026-11-01", "2026-11-08"]
    assert main(["run-dates", "--weeks", "all", "--until", "2020-01-01"]) == 2
    assert "has no raw events up to week 2019-12-22" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run-dates", "--weeks", "some"])
