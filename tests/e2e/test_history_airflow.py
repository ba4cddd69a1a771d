"""Bring your own history, through Airflow: MovieLens ml-100k (1997-98) landed in the lake, then the
README's `make history` runs two of its weeks oldest first, each one `airflow dags test weekly_retrain`.

The first run starts on a lake where only raw data exists: its window stage brings the 11 earlier weeks
of the window up to `anonymized` before training. One of them, 1998-01-18, fails validation for real (a
third of its ratings come from users rating hundreds of titles in a day: the bot-like-activity rule), so
it is left out, and the run says so: "window: 11 of 12 weeks ...; 1 week left out". A date before the
history fails in one line and `make run` exits non-zero.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from tests.conftest import PROJECT_ROOT, airflow_subprocess_env, shared_data_dir
from tests.standalone import LANE, run_tracked

BIN = Path(sys.executable).parent
FIRST = "1998-04-05"  # `make history FROM=1998-04-05 UNTIL=1998-04-20` runs weeks 1998-04-05 and -12
WEEKS = ["1998-04-05", "1998-04-12"]
WINDOW = "window: 11 of 12 weeks (1998-01-25 .. 1998-04-05); 1 week left out, failed to process (1998-01-18)"


def make(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return run_tracked(
        ["make", "--no-print-directory", "-C", str(PROJECT_ROOT), *args], env=env, timeout=1500
    )


def build_history(root: Path) -> dict:
    """`make land` of ml-100k, then `make history` of its weeks 1998-04-05 and -12, under ``root``.

    Run in the background beside the shared standalone's modules when they run in the same session
    (tests.standalone.LANE, tests/e2e/conftest.py), else by the fixture."""
    env = airflow_subprocess_env(root)
    env.pop("RECSYS_PSEUDONYM_KEY")  # `make` creates the local key file, as for a new user
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    landed = make(env, "land", f"DATA={shared_data_dir() / 'movielens' / 'ml-100k'}")
    assert landed.returncode == 0, landed.stdout + landed.stderr
    assert "landed 32 weekly partitions (1997-09-14 .. 1998-04-19)" in landed.stdout
    result = make(env, "history", f"FROM={FIRST}", "UNTIL=1998-04-20")
    assert result.returncode == 0, "\n".join((result.stdout + result.stderr).splitlines()[-60:])
    return {"root": root, "env": env, "out": result.stdout, "lake": root / "home" / "lake"}


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory):
    return LANE.result("history", lambda: build_history(tmp_path_factory.mktemp("history")))


@pytest.mark.slow
@pytest.mark.integration
def test_every_week_ran_through_airflow_oldest_first(history):
    out = history["out"]
    for i, week_end in enumerate(("1998-04-12", "1998-04-19"), 1):
        assert f"==> [{i}/2] airflow dags test weekly_retrain {week_end}" in out
        log = (history["root"] / "home" / "logs" / f"dags-test-{week_end}.log").read_text()
        assert "DagRun Finished" in log and "state=success" in log
    lines = [line for line in out.splitlines() if line.startswith("week 1998-")]
    assert [line.split(":")[0] for line in lines] == [f"week {w}" for w in WEEKS]


@pytest.mark.slow
@pytest.mark.integration
def test_the_first_run_filled_its_window_from_raw_data(history):
    lake = history["lake"]
    window = json.loads((lake / "runs" / f"week={FIRST}" / "window.json").read_text())
    assert len(window["processed"]) == 10
    assert list(window["failed"]) == ["1998-01-18"]  # left out, with the validation's reason
    assert window["failed"]["1998-01-18"].startswith("validate: events: max_quarantine_share failed")
    for week in window["processed"]:  # each earlier week recorded like a normal run
        accounting = json.loads((lake / "reports" / f"week={week}" / "accounting.json").read_text())
        events = accounting["events"]
        assert events["rows_read"] == events["rows_valid"] + events["rows_quarantined"] > 0
        assert (lake / "runs" / f"week={week}" / "anonymize.json").is_file()
    prepared = json.loads((lake / "runs" / f"week={FIRST}" / "prepare.json").read_text())
    assert prepared["window"] == WINDOW
    assert "week 1998-04-05: window: 11 of 12 weeks (1998-01-25 .. 1998-04-05)" in history["out"]


@pytest.mark.slow
@pytest.mark.integration
def test_one_version_per_week_and_champion_moves_as_the_gate_allows(history):
    from recsys.promotion.registry import registry_state

    uri = f"sqlite:///{history['root'] / 'home' / 'mlflow' / 'mlflow.db'}"  # no global MLflow state
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    versions = list(reversed(registry_state(client, "recsys_als")))
    assert [v["week"] for v in versions] == WEEKS, versions
    assert [v["version"] for v in versions] == ["1", "2"]
    passed = [v for v in versions if v["status"] == "passed"]
    assert passed, "a model on 12 weeks of ml-100k must beat popularity"
    champions = [v for v in versions if "champion" in v["aliases"]]
    assert len(champions) == 1 and champions[0]["version"] == passed[-1]["version"]
    run = client.get_run(versions[0]["run_id"])
    assert run.data.tags["window"] == WINDOW
    assert run.data.params["window_first"] == "1998-01-25" and run.data.params["window_size"] == "12"
    # the one Airflow end-to-end run that trains with the tuning grid (the synthetic ones train untuned)
    assert run.data.params["tuned"] == "True" and "tuning_skipped" not in run.data.tags

    def artifact(path: str) -> str:
        return Path(client.download_artifacts(run.info.run_id, path, str(history["root"]))).read_text()

    assert "11 of 12 weeks (1998-01-25 .. 1998-04-05); 1 week left out" in artifact(
        "report/model_report.html"
    )
    decision = json.loads(artifact("gate/decision.json"))
    assert decision["checks"]["window_weeks"] is True
    assert decision["metrics"]["users_evaluated"] >= 100


@pytest.mark.slow
@pytest.mark.integration
def test_a_date_before_the_history_fails_in_one_line(history):
    result = make(history["env"], "run", "RUN_WEEKS=1", "UNTIL=1997-05-01")
    assert result.returncode != 0
    errors = [line for line in result.stdout.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stdout[-3000:]
    assert "week 1997-04-20 cannot be run: no raw events in" in errors[0]
    assert "the lake's raw events cover 32 weeks, 1997-09-14 .. 1998-04-19" in errors[0]
