"""Links from the Airflow UI to MLflow: the MLflow UI's addresses, and which run or model version
a task's result (XCom ``return_value``) points at.

Plain, typed functions on plain data (no Airflow import, no MLflow call), so they are unit-tested
without a web server; ``plugins/recsys_plugin.py`` only wires them into Airflow as extra links.

MLflow UI addresses (MLflow 3, hash routes of its single-page app; ``base`` is
:attr:`~recsys.core.settings.Settings.mlflow_public_url`):

=================== =========================================================================
what                URL
=================== =========================================================================
run                 ``<base>/#/experiments/<experiment_id>/runs/<run_id>``
run, experiment     ``<base>/#/runs/<run_id>``: MLflow looks the run up and redirects to the
unknown             form above (so a task link needs no MLflow call)
run artifact        ``<base>/#/experiments/<experiment_id>/runs/<run_id>/artifacts/<path>``
experiment          ``<base>/#/experiments/<experiment_id>``
registered model    ``<base>/#/models/<name>``
model version       ``<base>/#/models/<name>/versions/<version>``
=================== =========================================================================
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

#: names of the Airflow extra links (buttons on a task instance)
# Artifacts the pages link to, logged under these names by the model report and the drift monitor.
REPORT_ARTIFACT = "report/model_report.html"
DRIFT_HISTORY_ARTIFACT = "drift/history.html"

RUN_LINK_NAME = "MLflow run"
MODEL_VERSION_LINK_NAME = "Model version"

#: keys of a task's result (XCom ``return_value``) that hold an MLflow run id, in order of preference
RUN_ID_KEYS = ("mlflow_run_id", "run_id")
#: tasks whose result has no run id but that work on another task's run (same DAG run)
RUN_FROM_TASK = {"evaluate": "train", "gate": "train"}
#: keys of a task's result that hold a model version number, in order of preference
VERSION_KEYS = ("version", "model_version", "champion")
#: the task whose result names the registered model when a result has a version but no name
NAME_FROM_TASK = "register"

#: what an MLflow run id looks like (anything else in a task result is not linked)
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_VERSION = re.compile(r"^[0-9]{1,9}$")


# ---- MLflow UI URLs ----------------------------------------------------------------------------
def mlflow_base(url: str) -> str:
    """The MLflow UI root a link starts from: no trailing slash, no fragment."""
    return url.split("#", 1)[0].rstrip("/")


def _segment(value: Any) -> str:
    return quote(str(value), safe="")


def run_url(base: str, run_id: str, experiment_id: str | None = None, artifact: str | None = None) -> str:
    """A run's page; ``artifact`` (a path inside the run) needs ``experiment_id``."""
    root = mlflow_base(base)
    if not experiment_id:
        return f"{root}/#/runs/{_segment(run_id)}"
    url = f"{root}/#/experiments/{_segment(experiment_id)}/runs/{_segment(run_id)}"
    if artifact:
        url += "/artifacts/" + "/".join(_segment(part) for part in artifact.split("/"))
    return url


def experiment_url(base: str, experiment_id: str) -> str:
    return f"{mlflow_base(base)}/#/experiments/{_segment(experiment_id)}"


def model_url(base: str, name: str) -> str:
    return f"{mlflow_base(base)}/#/models/{_segment(name)}"


def model_version_url(base: str, name: str, version: str | int) -> str:
    return f"{mlflow_base(base)}/#/models/{_segment(name)}/versions/{_segment(version)}"


# ---- task results -> links ---------------------------------------------------------------------
def run_id_of(result: Any) -> str | None:
    """The MLflow run id a task result (XCom ``return_value``) names, or None."""
    if not isinstance(result, Mapping):
        return None
    for key in RUN_ID_KEYS:
        value = result.get(key)
        if isinstance(value, str) and RUN_ID_PATTERN.match(value):
            return value
    return None


def model_version_of(result: Any) -> tuple[str | None, str] | None:
    """``(name or None, version)`` of the model version a task result names, or None."""
    if not isinstance(result, Mapping):
        return None
    for key in VERSION_KEYS:
        value = result.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str) and _VERSION.match(value):
            name = result.get("name")
            return (name if isinstance(name, str) and name else None), value
    return None


#: reads the ``return_value`` XCom of a task (by task id) of the same DAG run; None when there is none
ResultReader = Callable[[str], Any]


def task_run_link(base: str, task_id: str, read_result: ResultReader) -> str:
    """The "MLflow run" link of a task: its result's run, or the run of the task it works on
    (:data:`RUN_FROM_TASK`); "" when there is none."""
    run_id = run_id_of(read_result(task_id))
    if run_id is None and task_id in RUN_FROM_TASK:
        run_id = run_id_of(read_result(RUN_FROM_TASK[task_id]))
    return run_url(base, run_id) if run_id else ""


def task_model_version_link(base: str, task_id: str, read_result: ResultReader, default_name: str) -> str:
    """The "Model version" link of a task whose result names a version; "" when it names none.

    The model's name comes from the result, else from the run's ``register`` result, else
    ``default_name`` (the configured model name).
    """
    found = model_version_of(read_result(task_id))
    if found is None:
        return ""
    name, version = found
    if name is None and task_id != NAME_FROM_TASK:
        registered = read_result(NAME_FROM_TASK)
        if isinstance(registered, Mapping) and isinstance(registered.get("name"), str):
            name = registered["name"] or None
    return model_version_url(base, name or default_name, version)
