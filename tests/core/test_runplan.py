"""Run plans: which week a weekly_retrain run works on, with what data, and why."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from recsys.core.errors import ConfigError
from recsys.core.runplan import plan_run

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)  # a Wednesday; its week started Sunday 2026-11-22


def test_scheduled_and_backfill_runs_work_on_the_week_before_their_interval_end():
    end = datetime(2026, 11, 15, tzinfo=UTC)
    scheduled = plan_run("scheduled", end, None, now=NOW)
    backfill = plan_run("backfill", end, {}, now=NOW)
    assert scheduled.week == backfill.week == date(2026, 11, 8)
    assert scheduled.trigger == "schedule" and not scheduled.backfill and scheduled.through is None
    assert backfill.backfill and backfill.trigger == "backfill"


def test_airflow_run_type_enum_is_understood():
    from airflow.utils.types import DagRunType

    assert plan_run(DagRunType.BACKFILL_JOB, datetime(2026, 11, 15, tzinfo=UTC), now=NOW).backfill


def test_manual_run_without_interval_uses_now():
    plan = plan_run("manual", None, None, now=NOW)
    assert plan.week == date(2026, 11, 15) and plan.trigger == "manual"


def test_conf_week_reruns_any_past_week():
    plan = plan_run("manual", NOW, {"week": "2026-11-04"}, now=NOW)  # a Wednesday: floored to Sunday
    assert plan.week == date(2026, 11, 1) and plan.through is None


def test_early_retrain_conf_targets_the_week_in_progress():
    conf = {
        "trigger": "drift",
        "week": "2026-11-22",
        "through": "2026-11-25T06:00:00+00:00",
        "reasons": ["x"],
    }
    plan = plan_run("operator_triggered", NOW, conf, now=NOW)
    assert plan.week == date(2026, 11, 22)
    assert plan.through == datetime(2026, 11, 25, 6, tzinfo=UTC) and plan.in_progress
    assert plan.trigger == "drift" and plan.reasons == ["x"]
    assert "in progress" in plan.describe() and "drift" in plan.describe()


def test_through_alone_names_its_week_and_naive_times_are_utc():
    plan = plan_run("manual", None, {"through": "2026-11-24T00:00"}, now=NOW)
    assert plan.week == date(2026, 11, 22) and plan.through == datetime(2026, 11, 24, tzinfo=UTC)


def test_through_at_or_after_the_week_end_means_a_complete_week():
    plan = plan_run("manual", None, {"week": "2026-11-08", "through": "2026-11-20T00:00:00+00:00"}, now=NOW)
    assert plan.week == date(2026, 11, 8) and plan.through is None


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"week": "2026-12-06"}, "in the future"),
        ({"week": "next week"}, "conf 'week'"),
        ({"through": "tomorrow"}, "not an ISO date-time"),
        ({"week": "2026-11-22", "through": "2026-11-21T00:00:00+00:00"}, "not after week"),
    ],
)
def test_bad_conf_gets_a_clear_error(conf, message):
    with pytest.raises(ConfigError, match=message):
        plan_run("manual", NOW, conf, now=NOW)


def test_a_logical_date_in_the_future_says_so_without_blaming_the_conf():
    with pytest.raises(ConfigError, match=r"^week 2027-01-03 is in the future .*nothing to work on yet$"):
        plan_run("manual", datetime(2027, 1, 11, tzinfo=UTC), {}, now=NOW)


def test_any_week_of_a_history_can_be_planned():
    from recsys.core.intervals import DAG_START

    assert DAG_START == datetime(1970, 1, 4, tzinfo=UTC) and DAG_START.weekday() == 6  # a Sunday
    plan = plan_run("backfill", datetime(1997, 9, 21, tzinfo=UTC), {}, now=NOW)
    assert plan.week == date(1997, 9, 14) and plan.backfill
