"""The DAG folder parses cleanly, with nothing heavy or networked at import, and every task is set up to retry."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import PROJECT_ROOT

DAGS = PROJECT_ROOT / "dags"
EXPECTED_TASKS = [
    "window",
    "ingest",
    "validate",
    "anonymize",
    "prepare",
    "content",
    "train",
    "evaluate",
    "gate",
    "register",
    "review_needed",
    "no_review",
    "review",
    "promote",
    "recommend",
    "privacy_scan",
]


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert "weekly_retrain" in dagbag.dag_ids


def test_weekly_retrain_shape(dagbag):
    dag = dagbag.dags["weekly_retrain"]
    assert sorted(dag.task_ids) == sorted(EXPECTED_TASKS)
    chain = EXPECTED_TASKS[:11]
    for upstream, downstream in zip(chain, chain[1:], strict=False):
        assert dag.get_task(upstream).downstream_task_ids == {downstream}, upstream
    assert dag.get_task("review").downstream_task_ids == {"promote"}
    assert dag.get_task("recommend").upstream_task_ids == {"promote", "no_review"}
    assert dag.get_task("recommend").downstream_task_ids == {"privacy_scan"}
    assert dag.get_task("privacy_scan").trigger_rule == "none_failed"
    assert dag.max_active_runs == 1
    assert dag.catchup is False
    assert set(dag.tags) >= {"recsys", "retrain"}
    for task in dag.tasks:
        if task.task_id in ("review", "no_review"):
            continue  # a person's answer is not retried; an empty operator does nothing to retry
        assert task.retries >= 1, f"{task.task_id} has no retries"
        assert task.execution_timeout is not None, f"{task.task_id} has no timeout"
    review = dag.get_task("review")
    assert type(review).__name__ == "ApprovalOperator"
    assert review.response_timeout is not None
    assert dag.get_task("recommend").trigger_rule == "none_failed"
    assert dag.get_task("review_needed").downstream_task_ids == {"review", "no_review"}


def test_timetable_gives_a_real_one_week_interval(dagbag):
    from airflow.serialization.encoders import coerce_to_core_timetable

    from recsys.core.intervals import partition_week

    timetable = coerce_to_core_timetable(dagbag.dags["weekly_retrain"].timetable)
    info = timetable.infer_manual_data_interval(run_after=datetime(2026, 11, 22, tzinfo=UTC))
    assert info.end - info.start == timedelta(weeks=1)
    assert partition_week(info.end) == info.start.date()


@pytest.mark.parametrize("dag_file", ["weekly_retrain.py", "drift_monitor.py"])
def test_dag_import_is_light_and_needs_no_connections(dag_file):
    """Importing a DAG file must not import pyspark, mlflow, great_expectations or the pipeline
    (``recsys.pipeline.*``: the stages, runner, monitor, ...), nor open connections."""
    code = (
        "import sys, runpy\n"
        f"runpy.run_path({str(DAGS / dag_file)!r})\n"
        "heavy = [m for m in sys.modules if m in ('pyspark', 'mlflow', 'great_expectations')"
        " or m.startswith('recsys.pipeline.')]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip().splitlines()[-1:] in ([""], []), (
        f"heavy modules imported at parse time: {out.stdout}"
    )


def test_model_rollback_is_manual_with_params(dagbag):
    dag = dagbag.dags["model_rollback"]
    assert dag.timetable.__class__.__name__ == "NullTimetable" or dag.schedule is None
    assert set(dag.params.keys()) == {"version", "reason"}
    assert all(task.retries >= 1 for task in dag.tasks)


def test_weekly_retrain_takes_week_and_early_retrain_params(dagbag):
    params = dagbag.dags["weekly_retrain"].params
    assert {"week", "through", "trigger", "reasons"} <= set(params.keys())
    assert params["week"] is None and params["through"] is None


def test_drift_monitor_shape(dagbag):
    from airflow.serialization.encoders import coerce_to_core_timetable

    dag = dagbag.dags["drift_monitor"]
    assert dag.get_task("refresh").downstream_task_ids == {"check"}
    assert dag.get_task("check").downstream_task_ids == {"drifted", "trigger_retrain"}
    assert dag.get_task("drifted").downstream_task_ids == {"trigger_retrain"}
    trigger = dag.get_task("trigger_retrain")
    assert type(trigger).__name__ == "TriggerDagRunOperator"
    assert trigger.trigger_dag_id == "weekly_retrain" and trigger.trigger_dag_id in dagbag.dag_ids
    assert trigger.skip_when_already_exists and not trigger.wait_for_completion
    assert dag.max_active_runs == 1 and dag.catchup is False
    timetable = coerce_to_core_timetable(dag.timetable)
    info = timetable.infer_manual_data_interval(run_after=datetime(2026, 11, 22, tzinfo=UTC))
    assert info.end - info.start == timedelta(days=1)
    for task in dag.tasks:
        assert task.retries >= 1, f"{task.task_id} has no retries"


def test_ab_readout_shape(dagbag):
    dag = dagbag.dags["ab_readout"]
    assert sorted(dag.task_ids) == ["ingest_feedback", "readout"]
    assert dag.get_task("ingest_feedback").downstream_task_ids == {"readout"}
    # a week without feedback to ingest (skipped) may still be read out from earlier weeks
    assert dag.get_task("readout").trigger_rule == "none_failed"
    assert dag.max_active_runs == 1 and dag.catchup is False
    assert "week" in dag.params
    assert all(task.retries >= 1 for task in dag.tasks)


def test_every_dag_accepts_any_week_of_a_history(dagbag):
    """No DAG starts after the data it may be asked to run: a logical date before a DAG's start gives an
    Airflow run with no task that is marked successful (found with ml-100k's 1997 weeks)."""
    from recsys.core.intervals import DAG_START

    assert {dag_id: dag.start_date for dag_id, dag in dagbag.dags.items()} == dict.fromkeys(
        dagbag.dags, DAG_START
    )
    assert dagbag.dags["weekly_retrain"].catchup is False  # so an old start creates no flood of runs
