"""The drift_monitor DAG through Airflow itself (`airflow dags test`): stable days trigger nothing,
injected drift triggers exactly one weekly_retrain run (with the reason and the figures in its
conf), a check while that run is queued triggers no second one, and the early retrain runs through
Airflow on the week in progress."""

from __future__ import annotations

import json
import sqlite3
from datetime import date, datetime
from pathlib import Path

import pytest

from tests.conftest import airflow_subprocess_env, install_airflow_db, untuned_config
from tests.e2e.test_e2e_airflow import BIN, dags_test, run

pytestmark = [pytest.mark.slow, pytest.mark.integration]

# what `recsys generate --weeks 3 --users 600 --items 250 --seed 3 --drift-from 2026-11-08
# --drift-kind catalogue --through T` lands (its CLI is tested elsewhere; in-process here saves a
# Python start-up per landing)
GENERATE = {"weeks": 3, "n_users": 600, "n_items": 250, "seed": 3}
DRIFT = {"drift_from": date(2026, 11, 8), "drift_kind": "catalogue"}
# the champion is trained on week 2026-10-25; week 2026-11-01 is stable, 2026-11-08 drifts. One stable
# check through Airflow (tests/pipeline/test_monitor.py checks every day of a stable week)
STABLE_CHECKS = ["2026-11-03T01:00:00+00:00"]
DRIFT_CHECKS = ["2026-11-10T01:00:00+00:00", "2026-11-11T01:00:00+00:00"]


def land(env: dict[str, str], through: str) -> None:
    """The synthetic world's weeks up to ``through`` (the week in progress landed up to that moment)."""
    from recsys.core.intervals import week_start_of
    from recsys.core.settings import Settings
    from recsys.data.synthetic import config_from, generate
    from recsys.io.storage import Lake

    moment = datetime.fromisoformat(through)
    lake = Lake.from_settings(Settings.from_env(env))
    generate(lake, config_from({**GENERATE, **DRIFT}), week_start_of(moment), through=moment)


def monitor(env: dict[str, str], when: str) -> str:
    return dags_test(env, "drift_monitor", when)


def retrain_runs(env: dict[str, str]) -> list[dict]:
    """The weekly_retrain runs in Airflow's metadata DB (read from its SQLite file: no Airflow start-up)."""
    db = Path(env["AIRFLOW_HOME"]) / "airflow.db"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        rows = connection.execute(
            "select run_id, state, conf from dag_run where dag_id = 'weekly_retrain' order by id"
        ).fetchall()
    return [{"run_id": r, "state": s, "conf": json.loads(c) if c else {}} for r, s, c in rows]


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory: pytest.TempPathFactory, migrated_airflow_db: Path) -> dict[str, str]:
    root = tmp_path_factory.mktemp("drift-airflow")
    # what is tested is drift and the early retrain, not the tuning grid (test_history_airflow tunes
    # through Airflow): untuned, with the regularisation the grid picks on these sparse weekly logs
    # (1.0; the default 0.1 suits MovieLens), each training fits ALS twice instead of four times
    config = untuned_config(root, als={"reg_param": 1.0})
    env = airflow_subprocess_env(root, RECSYS_MODEL_NAME="drift_als", RECSYS_CONFIG=config)
    install_airflow_db(migrated_airflow_db, env)
    land(env, STABLE_CHECKS[0])
    run([str(BIN / "recsys"), "pipeline", "--date", "2026-11-02"], env)  # champion on week 2026-10-25
    return env


def test_stable_days_then_drift_trigger_exactly_one_early_retrain(airflow_env):
    env = airflow_env
    for when in STABLE_CHECKS:
        land(env, when)
        output = monitor(env, when)
        assert "no_drift" in output
        assert retrain_runs(env) == [], "a stable day triggered a retrain"

    land(env, DRIFT_CHECKS[0])
    output = monitor(env, DRIFT_CHECKS[0])
    assert "Dag Run triggered successfully" in output
    runs = retrain_runs(env)
    assert len(runs) == 1, runs
    triggered = runs[0]
    assert triggered["run_id"] == "drift__20261110T010000" and triggered["state"] == "queued"
    conf = triggered["conf"]
    assert conf["trigger"] == "drift" and conf["week"] == "2026-11-08"
    assert conf["through"] == DRIFT_CHECKS[0]
    assert any("item popularity" in reason for reason in conf["reasons"]), conf["reasons"]
    assert conf["figures"]["item_popularity_psi"] > 0.25

    # the next day's check still sees drift, but the early retrain is queued: no second one
    land(env, DRIFT_CHECKS[1])
    output = monitor(env, DRIFT_CHECKS[1])
    assert "retrain_running" in output
    assert len(retrain_runs(env)) == 1

    # the early retrain itself, through Airflow, with the conf the monitor gave it
    output = dags_test(env, "weekly_retrain", "2026-11-10", "-c", json.dumps(conf))
    assert "week 2026-11-08 (in progress, data through 2026-11-10T01:00:00+00:00), drift run" in output
    newest = json.loads(run([str(BIN / "recsys"), "registry", "--json"], env).stdout)[0]
    assert newest["trigger"] == "drift" and newest["week"] == "2026-11-08", newest
    assert "champion" in newest["aliases"] and newest["status"] == "passed"
