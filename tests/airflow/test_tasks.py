"""``fail_fast`` sorts what a task raised for Airflow: AirflowFailException for what a retry cannot fix
(bad config, a read-only store), a retryable one-line error for what it can (disk full, a service down)."""

from __future__ import annotations

import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from recsys.airflow.tasks import fail_fast
from recsys.core.errors import ConfigError, ServiceUnavailable, StorageFull
from recsys.io.spark import check_master
from recsys.io.storage import write_text
from tests.io.mounts import read_only
from tests.standalone import free_port


def test_errors_a_retry_cannot_fix_fail_at_once(tmp_path, env):
    with pytest.raises(AirflowFailException, match="train of run-1: bad rank") as info:
        with fail_fast("train of run-1"):
            raise ConfigError("bad rank")
    assert isinstance(info.value.__cause__, ConfigError)

    folder = tmp_path / "reports"
    folder.mkdir()
    with read_only(folder), pytest.raises(AirflowFailException) as info:
        with fail_fast("validate of run-1"):
            write_text("{}", folder / "accounting.json")
    message = str(info.value)
    assert message.startswith("validate of run-1: ") and str(folder) in message and "\n" not in message


def test_faults_a_retry_can_fix_are_retried_with_one_line(env):
    master = f"spark://127.0.0.1:{free_port()}"
    with pytest.raises(ServiceUnavailable) as down, fail_fast("train of run-1"):
        check_master(master, timeout=2)
    assert str(down.value).startswith(f"train of run-1: Spark master {master} is not reachable")

    with pytest.raises(StorageFull) as full, fail_fast("prepare of run-1"):
        with open("/dev/full", "w") as sink:  # noqa: PTH123 - the device that is always full
            sink.write("x")
    assert str(full.value).startswith("prepare of run-1: disk full") and env["RECSYS_LAKE_DIR"] in str(
        full.value
    )


def test_other_errors_and_airflows_own_pass_through(env):
    with pytest.raises(ZeroDivisionError), fail_fast("evaluate of run-1"):
        _ = 1 / 0
    with pytest.raises(AirflowSkipException), fail_fast("ab_readout of run-1"):
        raise AirflowSkipException("no experiment")


def test_a_week_an_airflow_run_keeps_between_its_tasks_is_refused_to_others_until_it_fails(env):
    from datetime import date
    from pathlib import Path
    from types import SimpleNamespace

    from recsys.airflow.tasks import lease_holder, release_week
    from recsys.io.lease import FileLeaseStore, LeaseHeld, WeekLease, lease_name
    from recsys.pipeline.context import StageContext
    from recsys.pipeline.leases import WEEKLY
    from recsys.pipeline.runner import run_stage

    week = date(2026, 11, 8)
    store = FileLeaseStore(Path(env["RECSYS_LAKE_DIR"]))
    holder = lease_holder("weekly_retrain", "manual__2026-11-16")
    WeekLease(store, WEEKLY, week, holder).acquire().pause()  # its train task ended, register is next
    with pytest.raises(LeaseHeld) as refused:
        with fail_fast("ingest of cli"):
            run_stage("ingest", StageContext.create(week))
    assert "Airflow run weekly_retrain/manual__2026-11-16, between two of its tasks" in str(refused.value)

    # its next task fails for good: the failure callback gives the week back
    dag_run = SimpleNamespace(
        dag_id="weekly_retrain", run_id="manual__2026-11-16", run_type="manual", conf={"week": "2026-11-08"}
    )
    release_week({"dag_run": dag_run, "data_interval_end": None})
    assert store.read(lease_name(WEEKLY, week)) is None
