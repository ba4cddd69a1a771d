"""Reconciling a week after a dead run: its scratch is removed, live processes' scratch is not."""

from __future__ import annotations

import subprocess
import sys
from datetime import date

from recsys.core.settings import Settings
from recsys.io.spark import SCRATCH_PREFIX, clean_dead_scratch, scratch_root
from recsys.pipeline.leases import clean_scratch, lease_pipeline

WEEK = date(2026, 11, 8)


def test_the_scratch_of_the_week_is_removed_and_nothing_else(tmp_path):
    lake = tmp_path / "lake"
    dead = [
        lake / "anonymized" / "events" / ".week=2026-11-08.tmp-1a2b3c4d",
        lake / "prepared" / ".week=2026-11-08.tmp-5e6f7a8b",
    ]
    for folder in dead:
        folder.mkdir(parents=True)
        (folder / "data.parquet").write_bytes(b"half")
    half_file = lake / "recommendations" / "week=2026-11-08" / ".rows.parquet.tmp-0011aabb"
    half_file.parent.mkdir(parents=True)
    half_file.write_bytes(b"half")
    work = lake / ".ingest-2026-11-08-0a1b2c3d"  # a killed ingest's working folder at the lake's root
    (work / "events.staged.parquet").parent.mkdir(parents=True)
    (work / "events.staged.parquet").write_bytes(b"half")
    dead.append(work)
    kept = [
        lake / ".ingest-2026-11-15-0a1b2c3d" / "events.staged.parquet",  # another week's
        lake / "prepared" / "week=2026-11-08" / "train.parquet",
        lake / "prepared" / ".week=2026-11-15.tmp-99999999" / "train.parquet",  # another week's
        lake / "anonymized" / "events" / "week=2026-11-08" / "data.parquet",
    ]
    for path in kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"whole")
    removed = clean_scratch(lake, WEEK)
    assert sorted(removed) == sorted([*dead, half_file])
    assert all(p.exists() for p in kept) and not any(p.exists() for p in dead)


def test_spark_scratch_of_dead_processes_is_removed(tmp_path):
    settings = Settings.from_env({"RECSYS_HOME": str(tmp_path)})
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead = scratch_root(settings) / f"{SCRATCH_PREFIX}{int(gone.stdout)}"
    alive = scratch_root(settings) / f"{SCRATCH_PREFIX}{subprocess.os.getpid()}"
    for folder in (dead, alive):
        (folder / "blockmgr-1").mkdir(parents=True)
    assert clean_dead_scratch(settings) == [dead]
    assert alive.exists() and not dead.exists()


def test_the_ab_stages_have_their_own_lease():
    assert lease_pipeline("feedback") == lease_pipeline("ab_readout") == "ab_readout"
    assert lease_pipeline("train") == lease_pipeline("promote") == "weekly_retrain"


def test_reconciling_with_mlflow_down_still_cleans_the_lake_and_says_why(tmp_path, caplog):
    from recsys.pipeline.context import StageContext
    from recsys.pipeline.leases import reconcile_week
    from tests.standalone import free_port

    settings = Settings.from_env(
        {"RECSYS_HOME": str(tmp_path), "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}
    )
    scratch = settings.lake_dir / "prepared" / ".week=2026-11-08.tmp-00000000"
    scratch.mkdir(parents=True)
    reconcile_week(StageContext.create(WEEK, settings), "weekly_retrain", "free")
    assert not scratch.exists()
    assert "could not check MLflow for runs left RUNNING" in caplog.text
    assert "is not reachable" in caplog.text
