"""Infrastructure faults through the `recsys` command: one line on stderr, exit code 2, no traceback, fast.

Each fault is real: a closed loopback port for the MLflow server and for the Spark master, a SQLite
URI whose file is missing beside a lake with a registered week, a read-only store, a full tmpfs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest

from recsys.cli.main import main
from recsys.io.storage import Lake
from tests.conftest import TEST_KEY
from tests.io.mounts import mlflow_store_template, read_only, small_tmpfs
from tests.standalone import free_port

RECSYS = str(Path(sys.executable).parent / "recsys")
UNTIL = "2026-11-23"  # the week 2026-11-15


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Settings of one test: its own home, lake and SQLite store, local Spark, no config file."""
    for key, value in {
        "RECSYS_HOME": str(tmp_path / "home"),
        "RECSYS_LAKE_DIR": str(tmp_path / "lake"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "RECSYS_MLFLOW_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
        "RECSYS_SPARK_MASTER": "local[2]",
        "RECSYS_PSEUDONYM_KEY": TEST_KEY,
    }.items():
        monkeypatch.setenv(key, value)
    for key in ("RECSYS_CONFIG", "RECSYS_LAKE_URI"):
        monkeypatch.delenv(key, raising=False)
    return tmp_path


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, float]:
    """``recsys argv`` in this process: exit code, the one stderr line (asserted), seconds taken."""
    capsys.readouterr()
    started = time.monotonic()
    code = main(argv)
    elapsed = time.monotonic() - started
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and "Traceback" not in lines[0]
    return code, lines[0], elapsed


def test_unreachable_mlflow_server_is_one_line_within_seconds(home):
    uri = f"http://127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    started = time.monotonic()
    result = subprocess.run(
        [RECSYS, "registry"],
        env={**env, "MLFLOW_TRACKING_URI": uri},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert time.monotonic() - started < 30
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: MLflow tracking server {uri} is not reachable ([Errno 111] Connection refused): "
        "start it, or fix MLFLOW_TRACKING_URI, and re-run"
    ]


def test_unreachable_spark_master_is_one_line_within_seconds(home, capsys, monkeypatch):
    assert main(["generate", "--weeks", "1", "--users", "30", "--items", "20", "--until", UNTIL]) == 0
    config = home / "config.json"
    config.write_text(json.dumps({"validation": {"spark_min_rows": 0}}))  # validate on Spark
    master = f"spark://127.0.0.1:{free_port()}"
    monkeypatch.setenv("RECSYS_CONFIG", str(config))
    monkeypatch.setenv("RECSYS_SPARK_MASTER", master)
    code, line, elapsed = run(["validate", str(home / "lake" / "raw" / "events" / "week=2026-11-15")], capsys)
    assert code == 2 and elapsed < 30
    assert f"Spark master {master} is not reachable" in line and "RECSYS_SPARK_MASTER" in line


def test_missing_sqlite_store_beside_registered_weeks_is_refused(home, capsys, monkeypatch):
    Lake(home / "lake").write_stage_result(date(2026, 11, 15), "register", {"version": "3"})
    typo = home / "mlfow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{typo}")
    code, line, _ = run(["registry"], capsys)
    assert code == 2
    assert f"tracking store {typo} does not exist but the lake {home / 'lake'} has registered weeks" in line
    assert not typo.exists()


def test_read_only_mlflow_store_is_one_line(home, capsys, monkeypatch):
    folder = home / "store"
    folder.mkdir()
    store = folder / "mlflow.db"
    shutil.copy(mlflow_store_template(), store)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    monkeypatch.setenv("RECSYS_MLFLOW_EXPERIMENT", "weekly_retrain")  # not in the store yet: a write
    with read_only(folder):
        code, line, _ = run(["registry"], capsys)
    assert code == 2
    assert f"the MLflow store {store} is read-only" in line and "MLFLOW_TRACKING_URI" in line


def test_full_disk_is_one_line_naming_the_lake(home, capsys, monkeypatch):
    with small_tmpfs(home / "disk", "2m") as disk:
        monkeypatch.setenv("RECSYS_LAKE_DIR", str(disk / "lake"))
        code, line, elapsed = run(
            ["generate", "--weeks", "2", "--users", "3000", "--items", "200", "--until", UNTIL], capsys
        )
    assert code == 2 and elapsed < 30
    assert f"disk full writing {disk / 'lake' / 'raw'}" in line and "free of 2.0 MiB" in line
