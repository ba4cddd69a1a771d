"""The ``default_args`` of the recsys DAGs: one owner, the same retries and the same failure notice.

Imported by the DAG files at parse time, so it imports nothing heavy.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from recsys.airflow.notify import RecsysNotifier


def default_args(
    retry_delay: timedelta = timedelta(minutes=2), exponential_backoff: bool = True
) -> dict[str, Any]:
    """Every task of a DAG: owner ``recsys``, ``RECSYS_TASK_RETRIES`` retries (default 2; tests set
    it to fail fast, and deterministic errors never retry: :func:`recsys.airflow.tasks.fail_fast`)
    ``retry_delay`` apart, growing exponentially unless ``exponential_backoff`` is False, and a
    ``task_failed`` notification with the error after the last try."""
    args: dict[str, Any] = {
        "owner": "recsys",
        "retries": int(os.environ.get("RECSYS_TASK_RETRIES", "2")),
        "retry_delay": retry_delay,
    }
    if exponential_backoff:
        args["retry_exponential_backoff"] = True
    args["on_failure_callback"] = [RecsysNotifier("task_failed"), release_week]
    return args


def release_week(context: Any) -> None:
    """After a task's last try failed, its run gives its week's lease back
    (:func:`recsys.airflow.tasks.release_week`)."""
    from recsys.airflow.tasks import release_week as release  # deferred: keeps Dag parsing light

    release(context)
