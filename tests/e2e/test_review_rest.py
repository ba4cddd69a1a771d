"""Promotion mode `manual`: the weekly DAG waits at its ApprovalOperator and follows the answer given
through Airflow's REST API. Real Airflow services (`airflow standalone`: api-server, scheduler,
dag-processor, triggerer on loopback), shared with the other modules that need them
(tests/e2e/conftest.py); this module has its own lake, MLflow store and config on them."""

from __future__ import annotations

import subprocess
import time
from datetime import UTC, datetime

import httpx
import pytest

from tests.standalone import BIN, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture(scope="module")
def airflow_stack(shared_standalone):
    # one week of 200 synthetic users evaluates about 80: below the gate's default minimum (100)
    config = {"promotion": "manual", "gate": {"min_users_evaluated": 50}, "tuning": {"enabled": False}}
    root, env = shared_standalone.tenant("review", config)
    today = datetime.now(tz=UTC).date().isoformat()
    subprocess.run(
        [
            str(BIN / "recsys"),
            "generate",
            "--until",
            today,
            "--weeks",
            "1",
            "--users",
            "200",
            "--items",
            "100",
        ],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    shared_standalone.wait_ready()
    yield shared_standalone.api, env, root


def task_states(api: httpx.Client, run_id: str) -> dict[str, str | None]:
    body = api.get(f"/dags/weekly_retrain/dagRuns/{run_id}/taskInstances").json()
    return {t["task_id"]: t["state"] for t in body["task_instances"]}


def run_state(api: httpx.Client, run_id: str) -> str:
    return api.get(f"/dags/weekly_retrain/dagRuns/{run_id}").json()["state"]


def registry(env) -> list[dict]:
    import json

    out = subprocess.run(
        [str(BIN / "recsys"), "registry", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout)


def review_and_answer(api: httpx.Client, run_id: str, answer: str) -> None:
    wait_for(
        lambda: (
            task_states(api, run_id).get("review") == "awaiting_input" or run_state(api, run_id) == "failed"
        ),
        600,
        f"run {run_id} to wait for review",
    )
    assert run_state(api, run_id) != "failed", task_states(api, run_id)
    # Let the executor report the paused task first: an answer within a second of the pause races with
    # that report in Airflow 3.3.2 (LocalExecutor marks the resumed task failed). People take longer.
    time.sleep(8)
    detail = api.get(f"/dags/weekly_retrain/dagRuns/{run_id}/taskInstances/review/-1/hitlDetails").json()
    assert "Gate: **PASSED**" in detail["body"] and detail["options"] == ["Approve", "Reject"]
    response = api.patch(
        f"/dags/weekly_retrain/dagRuns/{run_id}/taskInstances/review/-1/hitlDetails",
        json={"chosen_options": [answer]},
    )
    assert response.status_code == 200, response.text
    wait_for(lambda: run_state(api, run_id) in ("success", "failed"), 300, f"run {run_id} to finish")


def test_manual_review_approve_then_reject(airflow_stack):
    api, env, _ = airflow_stack
    last_sunday = subprocess.run(
        [str(BIN / "recsys"), "run-dates", "--weeks", "1"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[0]
    first = api.post(
        "/dags/weekly_retrain/dagRuns",
        json={"logical_date": f"{last_sunday}T00:00:00Z", "dag_run_id": "review-approve"},
    )
    assert first.status_code == 200, first.text
    assert api.patch("/dags/weekly_retrain", json={"is_paused": False}).status_code == 200

    # answer whichever run reaches review first (the shared standalone schedules no run by itself)
    def next_waiting() -> str | None:
        runs = api.get("/dags/weekly_retrain/dagRuns").json()["dag_runs"]
        for run in runs:
            if (
                run["state"] == "running"
                and task_states(api, run["dag_run_id"]).get("review") == "awaiting_input"
            ):
                return run["dag_run_id"]
        return None

    approved = wait_for(next_waiting, 600, "a run waiting for review")
    before = registry(env)
    assert before[0]["aliases"] == ["challenger"] and before[0]["status"] == "passed"
    review_and_answer(api, approved, "Approve")
    assert run_state(api, approved) == "success", task_states(api, approved)
    after = registry(env)
    assert after[0]["aliases"] == ["champion"], after

    # no logical date (the first run has that one): the run works on the last complete week, the same
    second = api.post(
        "/dags/weekly_retrain/dagRuns",
        json={"logical_date": None, "dag_run_id": "review-reject"},
    )
    assert second.status_code in (200, 409), second.text
    rejected = wait_for(next_waiting, 600, "a second run waiting for review")
    review_and_answer(api, rejected, "Reject")
    states = task_states(api, rejected)
    assert states["promote"] == "skipped" and states["recommend"] == "success", states
    final = registry(env)
    champions = [v for v in final if "champion" in v["aliases"]]
    assert [v["version"] for v in champions] == [after[0]["version"]]  # reject left the champion alone
    assert "challenger" in final[0]["aliases"]
