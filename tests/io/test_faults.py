"""Infrastructure faults raised for real (a full tmpfs, /dev/full, a read-only mount, a closed port)
are explained in one line that names the file or service and says what to do."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.core.errors import ServiceUnavailable, StorageFull, StorageReadOnly
from recsys.core.settings import Settings
from recsys.io.faults import explain
from recsys.io.storage import write_parquet, write_text
from tests.io.mounts import read_only, small_tmpfs
from tests.standalone import free_port


def _raised(action) -> BaseException:  # noqa: ANN001 - a callable that must raise
    with pytest.raises(Exception) as info:  # noqa: PT011 - whatever the library raises is the input
        action()
    return info.value


def _settings(tmp_path: Path, **extra: str) -> Settings:
    return Settings.from_env({"RECSYS_HOME": str(tmp_path / "home"), **extra})


def test_disk_full_names_the_partition_and_the_free_space(tmp_path):
    frame = pd.DataFrame({"x": np.random.default_rng(0).random(400_000)})  # ~3 MB of Parquet
    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        target = disk / "lake" / "prepared" / "week=2026-11-15" / "train.parquet"
        error = _raised(lambda: write_parquet(frame, target))
        fault = explain(error, _settings(tmp_path, RECSYS_LAKE_DIR=str(disk / "lake")))
    assert isinstance(fault, StorageFull) and fault.retryable
    message = str(fault)
    assert str(target.parent) in message and "free of 1.0 MiB" in message and "\n" not in message


def test_disk_full_without_a_file_name_lists_the_run_directories(tmp_path):
    def fill() -> None:
        with open("/dev/full", "w") as sink:  # noqa: PTH123 - the device that is always full
            sink.write("x")

    settings = _settings(tmp_path)
    fault = explain(_raised(fill), settings)
    assert isinstance(fault, StorageFull)
    assert str(settings.lake_dir) in str(fault) and "free" in str(fault)


def test_read_only_directory_names_the_file(tmp_path):
    folder = tmp_path / "reports"
    folder.mkdir()
    with read_only(folder):
        fault = explain(_raised(lambda: write_text("{}", folder / "accounting.json")), _settings(tmp_path))
    assert isinstance(fault, StorageReadOnly) and not fault.retryable
    assert str(folder) in str(fault) and "\n" not in str(fault)


def test_closed_port_is_a_service_down(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    error = _raised(lambda: urllib.request.urlopen(f"{uri}/api/2.0/mlflow/experiments/search", timeout=5))
    fault = explain(error, _settings(tmp_path, MLFLOW_TRACKING_URI=uri))
    assert isinstance(fault, ServiceUnavailable) and fault.retryable


def test_other_errors_are_not_infrastructure(tmp_path):
    assert explain(ValueError("rank must be positive"), _settings(tmp_path)) is None
    assert explain(KeyError("user_id"), None) is None


def test_a_jvm_message_without_errno_is_recognised(tmp_path):
    """Py4J hands Spark's IOException over as text only (the shape of the message it carries)."""
    error = RuntimeError(
        "An error occurred while calling o71.parquet.\n: java.io.IOException: Read-only file system"
    )
    fault = explain(error, _settings(tmp_path))
    assert isinstance(fault, StorageReadOnly) and "read-only file system" in str(fault)
    error = RuntimeError("Job aborted.\n: java.io.IOException: No space left on device")
    assert isinstance(explain(error, _settings(tmp_path)), StorageFull)
