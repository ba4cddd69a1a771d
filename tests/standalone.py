"""`airflow standalone` for integration tests: a free loopback port, the environment, start and stop.

Real Airflow services (api-server, scheduler, dag-processor, triggerer) with their own AIRFLOW_HOME,
started by a test and stopped with every process they spawned; :class:`SharedStandalone` is one of
them shared by several test modules (tests/e2e/conftest.py).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import airflow_subprocess_env

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def standalone_env(root: Path, port: int, **extra: str) -> dict[str, str]:
    """:func:`airflow_subprocess_env` plus what `airflow standalone` needs on loopback ``port``."""
    return airflow_subprocess_env(
        root,
        AIRFLOW__API__HOST="127.0.0.1",
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{port}/execution/",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True",
        AIRFLOW__CORE__PARALLELISM="4",
        PATH=f"{BIN}:{os.environ.get('PATH', '')}",
        **extra,
    )


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 2.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


def stop_tree(proc: subprocess.Popen, grace: float = 30.0) -> None:
    """Stop a process and every process it started (some leave its process group)."""
    import psutil

    try:
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    for p in family:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(family, timeout=grace)
    for p in alive:
        try:
            print(
                f"killing {p.pid} ({' '.join(p.cmdline())[:100]}): still running {grace:.0f}s after SIGTERM"
            )
            p.kill()
        except psutil.NoSuchProcess:
            pass


@contextmanager
def airflow_standalone(env: dict[str, str], log_file: Path) -> Iterator[httpx.Client]:
    """Start `airflow standalone` with ``env`` (logging to ``log_file``); yield a client of its REST
    API (``/api/v2``) once the server answers; stop everything on exit."""
    port = env["AIRFLOW__API__PORT"]
    with log_file.open("w") as log:
        proc = subprocess.Popen(
            [str(BIN / "airflow"), "standalone"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        api = httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v2", timeout=30)
        try:
            yield api
        finally:
            api.close()
            stop_tree(proc)


# ---- one standalone shared by several test modules ----------------------------------------------

SHARED_MODEL = "stack_e2e_als"  # the registered model name of every module on the shared standalone
SHARED_MLFLOW_UI = "http://127.0.0.1:5000"  # the MLflow address its links point at


class SharedStandalone:
    """One `airflow standalone` for the test modules that need Airflow's services (REST API, scheduler,
    triggerer, UI), started once per session instead of once per module.

    The Airflow services, and the task processes they start, read the recsys settings from their
    environment once, at start: the environment here points ``RECSYS_HOME`` and ``RECSYS_CONFIG`` into
    ``current``, a symlink that :meth:`tenant` moves to a new folder for each module. So each module
    gets its own lake, MLflow store and stage config (the task processes resolve the link when they
    start), and the same model name (:data:`SHARED_MODEL`) in its own registry. Before moving the link,
    :meth:`tenant` pauses every Dag and deletes every Dag run (cancelling any backfill left running), so
    a module sees the Airflow metadata of a new installation: no runs, its Dags paused.

    The scheduler never creates scheduled runs (``[scheduler] use_job_schedule = False``): the modules
    trigger their runs (REST API, `airflow backfill create`, `airflow dags test`).
    """

    def __init__(self, root: Path):
        self.root = root
        self.current = root / "current"
        self.port = free_port()
        self.env = standalone_env(
            root,
            self.port,
            AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE="False",
            RECSYS_HOME=str(self.current / "home"),
            RECSYS_CONFIG=str(self.current / "config.json"),
            RECSYS_MODEL_NAME=SHARED_MODEL,
            RECSYS_MLFLOW_PUBLIC_URL=SHARED_MLFLOW_UI,
            RECSYS_SPARK_DRIVER_MEMORY="1g",
        )
        self.log_file = root / "standalone.log"
        self.api: httpx.Client | None = None
        self._running: Any = None
        self.tenants = 0

    def start(self) -> bool:
        """Start the services unless they run; do not wait for them (:meth:`wait_ready`). True: started
        now, on a new metadata DB."""
        if self._running is not None:
            return False
        self._switch(self.root / "tenants" / "none")
        self._running = airflow_standalone(self.env, self.log_file)
        self.api = self._running.__enter__()
        return True

    def wait_ready(self) -> None:
        wait_for(self.ready, 300, "the API server, a healthy scheduler and the parsed Dags")

    def stop(self) -> None:
        running, self._running, self.api = self._running, None, None
        if running is not None:
            running.__exit__(None, None, None)

    def ready(self) -> bool:
        assert self.api is not None
        try:
            health = self.api.get("/monitor/health").json()
            return (
                self.api.get("/dags/weekly_retrain").status_code == 200
                and self.api.get("/dags/drift_monitor").status_code == 200
                and health["scheduler"]["status"] == "healthy"
            )
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return False

    def tenant(self, name: str, config: dict[str, Any]) -> tuple[Path, dict[str, str]]:
        """A fresh start for one module: no Dag runs, Dags paused, a new folder (returned) with its
        RECSYS_HOME (``home``) and stage config (``config.json``, from ``config``) behind ``current``.
        Returns the folder and the environment for the module's own commands (the folder's paths,
        written out). The services may still be starting: :meth:`wait_ready` before using them."""
        import json

        if not self.start():  # new services on a new DB have nothing to reset, and start meanwhile
            self.reset()
        self.tenants += 1
        folder = self.root / "tenants" / f"{self.tenants:02d}-{name}"
        (folder / "home" / "mlflow").mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
        self._switch(folder)
        home = folder / "home"
        env = {
            **self.env,
            "RECSYS_HOME": str(home),
            "RECSYS_CONFIG": str(folder / "config.json"),
            "RECSYS_LAKE_DIR": str(home / "lake"),
            "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow' / 'mlflow.db'}",
            "RECSYS_MLFLOW_ARTIFACT_ROOT": str(home / "mlflow" / "artifacts"),
        }
        return folder, env

    def _switch(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        link = self.root / "current.new"
        link.unlink(missing_ok=True)
        link.symlink_to(folder, target_is_directory=True)
        os.replace(link, self.current)  # atomic: a process resolves the old folder or the new one

    def reset(self) -> None:
        """Pause every Dag, end and delete every Dag run, cancel unfinished backfills."""
        self.wait_ready()
        api = self.api
        assert api is not None
        for dag in api.get("/dags", params={"limit": 100}).json()["dags"]:
            dag_id = dag["dag_id"]
            if not dag["is_paused"]:
                response = api.patch(f"/dags/{dag_id}", json={"is_paused": True})
                assert response.status_code == 200, response.text
            backfills = api.get("/backfills", params={"dag_id": dag_id, "limit": 100}).json()["backfills"]
            for backfill in backfills:
                if not backfill["completed_at"]:
                    api.put(f"/backfills/{backfill['id']}/cancel")
            runs = api.get(f"/dags/{dag_id}/dagRuns", params={"limit": 100}).json()["dag_runs"]
            for run in runs:
                path = f"/dags/{dag_id}/dagRuns/{run['dag_run_id']}"
                if run["state"] not in ("success", "failed"):
                    api.patch(path, json={"state": "failed"})
                response = api.delete(path)
                assert response.status_code in (204, 404), response.text
            left = api.get(f"/dags/{dag_id}/dagRuns").json()["total_entries"]
            assert left == 0, f"{dag_id} still has {left} runs after the reset"
