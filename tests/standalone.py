"""`airflow standalone` for integration tests: a free loopback port, the environment, start and stop.

Real Airflow services (api-server, scheduler, dag-processor, triggerer) with their own AIRFLOW_HOME,
started by a test and stopped with every process they spawned.
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


def answers(api: httpx.Client, path: str) -> bool:
    try:
        return api.get(path).status_code == 200
    except httpx.HTTPError:
        return False
