"""The week lease: one holder at a time, on a local lake (flock) and in S3 (conditional writes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

import boto3
import pytest

from recsys.io.lease import FileLeaseStore, LeaseHeld, S3LeaseStore, WeekLease, lease_name, release_if_held
from tests.services import S3_ACCESS_KEY, S3_SECRET_KEY, s3_server

WEEK = date(2026, 11, 22)


@pytest.fixture(scope="module")
def s3_url(tmp_path_factory: pytest.TempPathFactory):
    with s3_server(tmp_path_factory.mktemp("s3"), ("leases",)) as url:
        yield url


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "file":
        return FileLeaseStore(tmp_path / "lake")
    client = boto3.client(
        "s3",
        endpoint_url=request.getfixturevalue("s3_url"),
        aws_access_key_id=S3_ACCESS_KEY,
        aws_secret_access_key=S3_SECRET_KEY,
        region_name="us-east-1",
    )
    return S3LeaseStore("leases", f"lake-{tmp_path.name}", client)


def test_a_second_holder_is_refused_at_once_with_who_holds_it(store) -> None:
    first = WeekLease(store, "weekly_retrain", WEEK, "cli pipeline run A").acquire()
    try:
        assert first.took_over == "free"
        started = time.monotonic()
        with pytest.raises(LeaseHeld) as refused:
            WeekLease(store, "weekly_retrain", WEEK, "Airflow run weekly_retrain/manual_1").acquire()
        assert time.monotonic() - started < 5
        message = str(refused.value)
        assert "\n" not in message
        assert "week 2026-11-22 of weekly_retrain is being worked on by cli pipeline run A" in message
        assert f"process {os.getpid()}" in message
        # another week and another pipeline are free
        WeekLease(store, "weekly_retrain", date(2026, 11, 29), "B").acquire().release()
        WeekLease(store, "ab_readout", WEEK, "B").acquire().release()
    finally:
        first.release()
    again = WeekLease(store, "weekly_retrain", WEEK, "Airflow run weekly_retrain/manual_1").acquire()
    assert again.took_over == "free"
    again.release()
    assert store.read(lease_name("weekly_retrain", WEEK)) is None


def test_a_waiting_run_gets_the_week_when_the_holder_releases_it(store) -> None:
    first = WeekLease(store, "weekly_retrain", WEEK, "A").acquire()
    threading.Timer(1.5, first.release).start()
    second = WeekLease(store, "weekly_retrain", WEEK, "B").acquire(wait=30)
    assert second.took_over == "free"
    second.release()


def test_the_same_holder_takes_its_week_again_and_keeps_it_between_tasks(store) -> None:
    task1 = WeekLease(store, "weekly_retrain", WEEK, "Airflow run R", gap=600).acquire()
    task1.pause()  # between two tasks of the same run
    record, _ = store.read(lease_name("weekly_retrain", WEEK))
    assert record.holder == "Airflow run R" and not record.active
    with pytest.raises(LeaseHeld, match="between two of its tasks"):
        WeekLease(store, "weekly_retrain", WEEK, "cli").acquire()
    task2 = WeekLease(store, "weekly_retrain", WEEK, "Airflow run R").acquire()
    assert task2.took_over is None  # already this run's: nothing to reconcile
    task2.pause()
    assert not release_if_held(store, "weekly_retrain", WEEK, "someone else")
    assert release_if_held(store, "weekly_retrain", WEEK, "Airflow run R")
    assert store.read(lease_name("weekly_retrain", WEEK)) is None


def test_an_expired_lease_is_taken_over(store) -> None:
    WeekLease(store, "weekly_retrain", WEEK, "a run on another machine", ttl=0.5).acquire()._stop_heartbeat()
    time.sleep(0.8)
    taker = WeekLease(store, "weekly_retrain", WEEK, "B").acquire()
    assert taker.took_over.startswith("taken over from a run on another machine: expired")
    taker.release()


def test_the_holder_renews_its_lease_while_it_works(store) -> None:
    lease = WeekLease(store, "weekly_retrain", WEEK, "A", ttl=0.9).acquire()
    try:
        time.sleep(2.0)  # more than twice the ttl: only the heartbeat keeps it
        with pytest.raises(LeaseHeld):
            WeekLease(store, "weekly_retrain", WEEK, "B").acquire()
    finally:
        lease.release()


def test_a_killed_holder_on_this_machine_is_taken_over_at_once(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    code = (
        "import sys, time; from datetime import date; from pathlib import Path\n"
        "from recsys.io.lease import FileLeaseStore, WeekLease\n"
        f"WeekLease(FileLeaseStore(Path({str(lake)!r})), 'weekly_retrain', date(2026, 11, 22), 'doomed', "
        "ttl=3600).acquire()\n"
        "print('held', flush=True); time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    store = FileLeaseStore(lake)
    with pytest.raises(LeaseHeld, match="doomed, working in process"):
        WeekLease(store, "weekly_retrain", WEEK, "B").acquire()
    proc.kill()
    proc.wait()
    taker = WeekLease(store, "weekly_retrain", WEEK, "B").acquire()
    assert (
        taker.took_over == f"taken over from doomed: its process {proc.pid} on {os.uname().nodename} is gone"
    )
    taker.release()


def test_many_contenders_one_winner(store) -> None:
    winners, refused = [], []
    barrier = threading.Barrier(6)

    def contend(i: int) -> None:
        barrier.wait()
        try:
            winners.append(WeekLease(store, "weekly_retrain", WEEK, f"run {i}").acquire())
        except LeaseHeld:
            refused.append(i)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1 and len(refused) == 5
    record, _ = store.read(lease_name("weekly_retrain", WEEK))
    assert record.holder == winners[0].holder
    winners[0].release()


def test_a_torn_lease_file_counts_as_expired(tmp_path: Path) -> None:
    store = FileLeaseStore(tmp_path / "lake")
    path = store.root / lease_name("weekly_retrain", WEEK)
    path.parent.mkdir(parents=True)
    path.write_text('{"holder": "half writ')
    taker = WeekLease(store, "weekly_retrain", WEEK, "B").acquire()
    assert taker.took_over.startswith("taken over from an unreadable lease record")
    assert json.loads(path.read_text())["holder"] == "B"
    taker.release()
