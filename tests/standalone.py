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
    trigger their runs (REST API, `airflow backfill create`, `airflow dags test`). The Dag processor
    parses the Dag files at start and not again (they do not change during a session).
    """

    def __init__(self, root: Path):
        self.root = root
        self.current = root / "current"
        self.port = free_port()
        self.env = standalone_env(
            root,
            self.port,
            AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE="False",
            # the Dag files do not change during a session: parsed at start, not again every 30 s (four
            # parsing processes every 30 s beside the modules' task processes, on two cores)
            AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL="3600",
            # a task's calls to the Execution API wait longer than the default 5 s when the machine is
            # busy (module set-ups run beside these modules: tests.standalone.LANE), not fail the task
            AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT="30",
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


# ---- module set-ups run early, beside the shared standalone's modules ------------------------------


_tracked: set[subprocess.Popen] = set()


def run_tracked(
    cmd: list[str], *, env: dict[str, str], timeout: float, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, capture_output=True, text=True)`` in a new session, known to
    :meth:`Lane.stop` while it runs: a set-up still running in the background when the session ends is
    stopped with every process it started."""
    proc = subprocess.Popen(
        cmd,
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    _tracked.add(proc)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_tree(proc, grace=10)
        proc.communicate()
        raise
    finally:
        _tracked.discard(proc)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


class Lane:
    """Module set-ups run one after the other in a background thread, from the start of the shared
    standalone (tests/e2e/conftest.py).

    The standalone's modules spend most of their time waiting on Airflow's scheduler, which runs one
    task process at a time: one of the machine's two cores is mostly idle meanwhile. A module whose
    fixture only runs subprocesses over state of its own (its own AIRFLOW_HOME, lake and MLflow store:
    test_history_airflow, test_e2e_airflow) does that work then instead of later, on the critical
    path; its tests, and every check, are unchanged and run in their place, on the fixture's value
    (:meth:`result`). A module run without the standalone's modules sets up in its fixture, as before.
    """

    def __init__(self) -> None:
        import queue
        import threading

        self._jobs: queue.Queue = queue.Queue()
        self._results: dict[str, tuple[bool, Any, float]] = {}
        self._done: dict[str, threading.Event] = {}
        self._consumed: set[str] = set()
        self._stopped = False
        self._thread: threading.Thread | None = None

    def submit(self, name: str, setup: Callable[[], Any]) -> None:
        """Run ``setup`` in the background (after those submitted before), unless ``name`` was
        submitted or set up already."""
        import threading

        if name in self._done or name in self._consumed or self._stopped:
            return
        self._done[name] = threading.Event()
        self._jobs.put((name, setup))
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="module-setups", daemon=True)
            self._thread.start()

    def _work(self) -> None:
        while True:
            name, setup = self._jobs.get()
            started = time.monotonic()
            if self._stopped:
                outcome: tuple[bool, Any] = (False, RuntimeError("the session ended before this set-up"))
            else:
                try:
                    outcome = (True, setup())
                except BaseException as exc:  # noqa: BLE001 - raised again in the module's fixture
                    outcome = (False, exc)
            self._results[name] = (*outcome, time.monotonic() - started)
            self._done[name].set()

    def result(self, name: str, setup: Callable[[], Any]) -> Any:
        """The value of the set-up ``name``: waited for if it was submitted, else ``setup()`` now."""
        if name not in self._done:
            self._consumed.add(name)
            return setup()
        waited = time.monotonic()
        self._done[name].wait()
        ok, value, seconds = self._results.pop(name)
        print(
            f"\n[{name}: set up in the background in {seconds:.0f}s; waited {time.monotonic() - waited:.0f}s]"
        )
        if not ok:
            raise value
        return value

    def stop(self) -> None:
        """End of the session: stop what a set-up still runs (its processes and theirs)."""
        self._stopped = True
        for proc in list(_tracked):
            stop_tree(proc, grace=10)


LANE = Lane()
