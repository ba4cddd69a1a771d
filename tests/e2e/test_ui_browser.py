"""The Airflow UI additions on a real Airflow: `airflow standalone` with the project's plugins (shared
with the other modules that need it, tests/e2e/conftest.py; this module has its own lake, MLflow store
and config on it), after a real weekly_retrain run and a drift_monitor run (`airflow dags test` on
its metadata DB, small synthetic data).

* the REST API lists the plugin with its extra links, FastAPI app and view;
* the task instances' extra links resolve, through the REST API, to the MLflow run / model version
  their task created (the train run, the validation run, the drift check run, version 1);
* in headless Chromium (Debian's package, installed by this test when missing), Airflow's own UI
  shows the links on the task instance (Details tab), and the model-history page shows the
  champion, the week's candidate and the drift check; screenshots of both are kept.

Every process started here (Chromium; the Airflow services after the last module that uses them) is
stopped by the tests.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.browser import Chromium
from tests.conftest import PROJECT_ROOT
from tests.standalone import BIN, SHARED_MLFLOW_UI, SHARED_MODEL, SharedStandalone

pytestmark = [pytest.mark.slow, pytest.mark.integration]

UNTIL = "2026-11-23"  # a Monday: the week trained is 2026-11-15 .. 2026-11-22
DRIFT_DAY = "2026-11-24"  # a drift check two days into the next week
MODEL = SHARED_MODEL  # in this module's own MLflow store
MLFLOW_UI = SHARED_MLFLOW_UI
CHROMIUM = "/usr/bin/chromium"


def ensure_chromium() -> str:
    """Debian's Chromium: installed with apt-get when the binary is missing (idempotent)."""
    found = shutil.which("chromium") or (CHROMIUM if Path(CHROMIUM).exists() else None)
    if found:
        return found
    if not shutil.which("apt-get") or os.geteuid() != 0:
        pytest.fail(f"{CHROMIUM} is missing; install it: apt-get install -y chromium chromium-driver")
    apt_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium", "chromium-driver"]):
        done = subprocess.run(cmd, env=apt_env, capture_output=True, text=True, timeout=1500)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} failed:\n{(done.stdout + done.stderr)[-3000:]}")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"apt-get installed chromium but {CHROMIUM} is not there")
    return CHROMIUM


def run(cmd: list[str], env: dict[str, str], timeout: int = 900) -> str:
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=PROJECT_ROOT)
    output = done.stdout + done.stderr
    if done.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {done.returncode}:\n" + "\n".join(output.splitlines()[-60:]))
    return output


def dag_test(dag_id: str, day: str, env: dict[str, str]) -> None:
    output = run([str(BIN / "airflow"), "dags", "test", dag_id, day], env)
    finished = [line for line in output.splitlines() if "DagRun Finished" in line]
    assert finished and "state=success" in finished[-1], "\n".join(output.splitlines()[-80:])


@pytest.fixture(scope="module")
def stack(shared_standalone: SharedStandalone):
    browser = ensure_chromium()
    root, env = shared_standalone.tenant("ui", {"tuning": {"enabled": False}})
    generate = ["generate", "--until", UNTIL, "--weeks", "1", "--users", "300", "--items", "150"]
    run([str(BIN / "recsys"), *generate], env)
    day = run([str(BIN / "recsys"), "run-dates", "--until", UNTIL, "--weeks", "1"], env).split()[0]
    shared_standalone.wait_ready()  # its metadata DB, where `airflow dags test` records the runs
    dag_test("weekly_retrain", day, env)
    dag_test("drift_monitor", DRIFT_DAY, env)
    yield {
        "api": shared_standalone.api,
        "env": env,
        "root": root,
        "port": shared_standalone.port,
        "browser": browser,
    }


def mlflow_client(env: dict[str, str]):
    from mlflow import MlflowClient

    uri = f"sqlite:///{Path(env['RECSYS_HOME']) / 'mlflow' / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def only_run(api: httpx.Client, dag_id: str) -> str:
    runs = api.get(f"/dags/{dag_id}/dagRuns").json()["dag_runs"]
    assert len(runs) == 1 and runs[0]["state"] == "success", runs
    return runs[0]["dag_run_id"]


def links(api: httpx.Client, dag_id: str, run_id: str, task_id: str) -> dict[str, str | None]:
    response = api.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/links")
    assert response.status_code == 200, response.text
    return response.json()["extra_links"]


def test_rest_api_lists_the_plugin(stack):
    api = stack["api"]
    plugins = api.get("/plugins").json()["plugins"]
    recsys = next(p for p in plugins if p["name"] == "recsys")
    assert recsys["global_operator_extra_links"] == [
        "<recsys_plugin.MlflowRunLink object>",
        "<recsys_plugin.ModelVersionLink object>",
    ]
    assert [a["url_prefix"] for a in recsys["fastapi_apps"]] == ["/recsys"]
    assert [(v["name"], v["href"], v["category"]) for v in recsys["external_views"]] == [
        ("Model history", "recsys/model-history", "browse")
    ]
    errors = api.get("/plugins/importErrors").json()
    assert errors["total_entries"] == 0, errors


def test_task_instance_links_resolve_to_mlflow(stack):
    api, env = stack["api"], stack["env"]
    client = mlflow_client(env)
    (version,) = client.search_model_versions(f"name = '{MODEL}'")
    train_run = version.run_id
    run_id = only_run(api, "weekly_retrain")

    train = links(api, "weekly_retrain", run_id, "train")
    assert train == {"MLflow run": f"{MLFLOW_UI}/#/runs/{train_run}", "Model version": None}
    for task in ("evaluate", "gate"):  # they work on the train run
        assert links(api, "weekly_retrain", run_id, task)["MLflow run"] == f"{MLFLOW_UI}/#/runs/{train_run}"
    register = links(api, "weekly_retrain", run_id, "register")
    assert register == {
        "MLflow run": f"{MLFLOW_UI}/#/runs/{train_run}",
        "Model version": f"{MLFLOW_UI}/#/models/{MODEL}/versions/{version.version}",
    }
    assert links(api, "weekly_retrain", run_id, "ingest") == {"MLflow run": None, "Model version": None}

    validation = links(api, "weekly_retrain", run_id, "validate")["MLflow run"]
    assert validation and validation.startswith(f"{MLFLOW_UI}/#/runs/")
    validation_run = client.get_run(validation.rsplit("/", 1)[-1])
    assert client.get_experiment(validation_run.info.experiment_id).name == "weekly_retrain_validation"

    check = links(api, "drift_monitor", only_run(api, "drift_monitor"), "check")["MLflow run"]
    assert check and check.startswith(f"{MLFLOW_UI}/#/runs/")
    check_run = client.get_run(check.rsplit("/", 1)[-1])
    assert client.get_experiment(check_run.info.experiment_id).name == "weekly_retrain_drift"
    assert check_run.data.tags["decision"]


def test_model_history_page_in_chromium(stack, tmp_path):
    env, port = stack["env"], stack["port"]
    url = f"http://127.0.0.1:{port}/recsys/model-history"
    client = mlflow_client(env)
    (version,) = client.search_model_versions(f"name = '{MODEL}'")
    experiment = client.get_experiment_by_name("weekly_retrain")

    champion = ('id="champion"', f"version {version.version}")
    passed = version.tags["validation_status"] == "passed"
    with Chromium(stack["browser"], tmp_path / "profile", height=1100) as browser:
        browser.open(url)
        dom = browser.wait_for(f"{MODEL}: model history", "Last check", *(champion if passed else ()))
        shot = browser.screenshot(tmp_path / "model-history.png")
    assert f'href="{MLFLOW_UI}/#/models/{MODEL}/versions/{version.version}"' in dom
    assert f'href="{MLFLOW_UI}/#/experiments/{experiment.experiment_id}/runs/{version.run_id}"' in dom
    assert 'id="versions"' in dom and "2026-11-15" in dom
    assert version.tags["validation_status"].upper() in dom
    assert 'id="mlflow-error"' not in dom
    assert shot.stat().st_size > 10_000
    print(f"\nmodel-history screenshot: {shot}")

    data = httpx.get(f"http://127.0.0.1:{port}/recsys/api/model-history", timeout=60).json()
    assert [v["version"] for v in data["versions"]] == [str(version.version)]
    assert (
        data["checks"]
        and data["checks"][0]["decision"]
        == client.search_runs([client.get_experiment_by_name("weekly_retrain_drift").experiment_id])[
            0
        ].data.tags["decision"]
    )
    assert json.dumps(data)  # JSON-able all the way down


def test_airflow_ui_shows_the_links_on_the_task_instance(stack, tmp_path):
    api, env, port = stack["api"], stack["env"], stack["port"]
    (version,) = mlflow_client(env).search_model_versions(f"name = '{MODEL}'")
    run_id = only_run(api, "weekly_retrain")
    url = f"http://127.0.0.1:{port}/dags/weekly_retrain/runs/{run_id}/tasks/register/details"
    run_link = f'href="{MLFLOW_UI}/#/runs/{version.run_id}"'
    version_link = f'href="{MLFLOW_UI}/#/models/{MODEL}/versions/{version.version}"'
    # Airflow's UI is a React app: wait (in real time) until it has called the API and rendered
    with Chromium(stack["browser"], tmp_path / "profile") as browser:
        browser.open(url)
        dom = browser.wait_for("Extra Links", run_link, version_link)
        shot = browser.screenshot(tmp_path / "airflow-task-links.png")
    assert ">MLflow run<" in dom and ">Model version<" in dom
    assert shot.stat().st_size > 10_000
    print(f"\nAirflow task-instance screenshot: {shot}")
