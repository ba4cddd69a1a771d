"""MLflow's store checked before it is used: a server that does not answer, a mistyped SQLite URI beside
a lake with registered weeks and a read-only store are refused in one line, within seconds."""

from __future__ import annotations

import http.server
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date

import pytest

from recsys.core.errors import ServiceUnavailable, StorageReadOnly, TrackingStoreMissing
from recsys.core.settings import Settings
from recsys.io.storage import Lake
from recsys.io.tracking import HTTP_CLIENT_BOUNDS, check_server, configure, preflight
from tests.io.mounts import mlflow_store_template, read_only
from tests.standalone import free_port

WEEK = date(2026, 11, 15)


@contextmanager
def answering() -> Iterator[tuple[str, list[int]]]:
    """A loopback HTTP server answering every GET with the status last put in the yielded list."""
    statuses = [200]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server hook's name
            self.send_response(statuses[-1])
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", statuses
    finally:
        server.shutdown()
        server.server_close()


def test_unreachable_server_is_refused_within_seconds(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    settings = Settings.from_env({"RECSYS_HOME": str(tmp_path), "MLFLOW_TRACKING_URI": uri})
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable, match="MLflow tracking server") as info:
        configure(settings)
    assert time.monotonic() - started < 30
    assert uri in str(info.value) and "MLFLOW_TRACKING_URI" in str(info.value)
    assert "\n" not in str(info.value) and info.value.retryable


def test_server_that_answers_passes_unless_its_gateway_says_down():
    with answering() as (uri, statuses):
        for status in (200, 401, 404):  # up (an auth proxy or a server without /health counts as up)
            statuses.append(status)
            check_server(uri, timeout=5)
        statuses.append(503)
        with pytest.raises(ServiceUnavailable, match="HTTP 503"):
            check_server(uri, timeout=5)


def test_missing_sqlite_store_beside_registered_weeks_is_refused(tmp_path):
    store = tmp_path / "mlfow.db"  # the typo
    settings = Settings.from_env(
        {
            "RECSYS_HOME": str(tmp_path),
            "RECSYS_LAKE_DIR": str(tmp_path / "lake"),
            "MLFLOW_TRACKING_URI": f"sqlite:///{store}",
        }
    )
    lake = Lake(settings.lake_dir)
    lake.write_stage_result(WEEK, "train", {})
    preflight(settings)  # trained but never registered: a new store is fine
    lake.write_stage_result(WEEK, "register", {"version": "1"})
    with pytest.raises(TrackingStoreMissing) as info:
        configure(settings)
    message = str(info.value)
    assert f"tracking store {store} does not exist" in message and str(settings.lake_dir) in message
    assert "2026-11-15" in message and "fix MLFLOW_TRACKING_URI or restore the store" in message
    assert not store.exists()


def test_read_only_store_is_one_line_naming_it(tmp_path):
    folder = tmp_path / "store"
    folder.mkdir()
    store = folder / "mlflow.db"
    shutil.copy(mlflow_store_template(), store)
    settings = Settings.from_env(
        {
            "RECSYS_HOME": str(tmp_path),
            "MLFLOW_TRACKING_URI": f"sqlite:///{store}",
            "RECSYS_MLFLOW_EXPERIMENT": "needs_creating",  # configure writes: creates the experiment
        }
    )
    with read_only(folder), pytest.raises(StorageReadOnly) as info:
        configure(settings)
    message = str(info.value)
    assert f"MLflow store {store} is read-only" in message and "\n" not in message
    assert not info.value.retryable


def test_mlflow_http_retries_are_bounded(tmp_path, monkeypatch):
    store = tmp_path / "mlflow.db"
    shutil.copy(mlflow_store_template(), store)
    settings = Settings.from_env({"RECSYS_HOME": str(tmp_path), "MLFLOW_TRACKING_URI": f"sqlite:///{store}"})
    for name in HTTP_CLIENT_BOUNDS:
        monkeypatch.setenv(name, "0")  # recorded, so the test's changes are undone
        monkeypatch.delenv(name)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "7")  # one set by the user is kept
    configure(settings)
    from mlflow.environment_variables import (
        MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR,
        MLFLOW_HTTP_REQUEST_MAX_RETRIES,
        MLFLOW_HTTP_REQUEST_TIMEOUT,
    )

    assert MLFLOW_HTTP_REQUEST_MAX_RETRIES.get() == 2
    assert MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.get() == 1
    assert MLFLOW_HTTP_REQUEST_TIMEOUT.get() == 7
