"""The drift monitor on real data, models and MLflow: stable days never ask for an early retrain,
injected drift asks exactly once (then the cooldown holds), and the early retrain it asks for runs
on the week in progress and is registered with its reason."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import mlflow
import pytest

from recsys.core.runplan import plan_run
from recsys.core.settings import Settings
from recsys.data.synthetic import GeneratorConfig, generate
from recsys.io.storage import Lake
from recsys.io.tracking import configure
from recsys.pipeline.config import PipelineConfig
from recsys.pipeline.context import StageContext
from recsys.pipeline.monitor import check, drift_experiment, drift_history, refresh
from recsys.pipeline.runner import run_all
from recsys.promotion.registry import champion_version
from tests.conftest import untuned_config

CHAMPION_WEEK = date(2026, 11, 1)
WEEK = date(2026, 11, 8)  # the week in progress during the checks
WEEK_START = datetime(2026, 11, 8, tzinfo=UTC)


def day(n: int) -> datetime:
    """Check time: ``n`` days and an hour into the week in progress."""
    return WEEK_START + timedelta(days=n, hours=1)


@pytest.fixture
def world(env, monkeypatch, tmp_path):
    """A lake and registry whose champion was trained on CHAMPION_WEEK; returns a function that lands
    the week in progress up to a time (stable, or drifting from WEEK on)."""
    monkeypatch.setenv("RECSYS_MLFLOW_EXPERIMENT", f"exp_{tmp_path.name}"[:60])
    # the subject is drift and the early retrain, not the tuning grid (tests/training/test_tuning.py):
    # untuned, with the regularisation the grid picks on these sparse weekly logs (as
    # tests/e2e/test_drift_airflow.py), each training fits ALS twice instead of four times
    monkeypatch.setenv("RECSYS_CONFIG", untuned_config(tmp_path, als={"reg_param": 1.0}))
    settings = Settings.from_env()
    lake = Lake(settings.lake_dir)

    def build(drift_kind: str | None = None):
        extra = {"drift_from": WEEK, "drift_kind": drift_kind} if drift_kind else {}
        gen = GeneratorConfig(n_users=600, n_items=250, weeks=2, seed=3, **extra)
        generate(lake, gen, WEEK, through=day(1))
        run_all(StageContext.create(CHAMPION_WEEK, settings))

        def land(until: datetime) -> None:
            generate(lake, gen, WEEK, through=until)

        return land

    return settings, lake, build


def run_check(settings, when: datetime, config: PipelineConfig | None = None, **kwargs):
    config = config or PipelineConfig()
    refreshed = refresh(when, settings, config)
    assert refreshed["status"] == "refreshed", refreshed
    return check(when, settings, config, **kwargs)


def drift_runs(settings):
    configure(settings)
    experiment = mlflow.get_experiment_by_name(drift_experiment(settings))
    return mlflow.search_runs([experiment.experiment_id], order_by=["metrics.checked_at ASC"])


def test_stable_days_never_ask_for_an_early_retrain(world):
    settings, lake, build = world
    land = build()
    decisions = []
    for n in (2, 3, 4, 5, 6):
        land(day(n))
        result = run_check(settings, day(n))
        assert result.report is not None and not result.report.skipped, result.message
        decisions.append(result.decision)
        assert result.retrain_conf() == {}
    assert decisions == ["no_drift"] * 5
    runs = drift_runs(settings)
    assert len(runs) == 5  # one MLflow run per check
    assert (runs["metrics.retrain_triggered"] == 0).all()
    assert runs["metrics.item_popularity_psi"].notna().all() and runs["metrics.quality_now"].notna().all()
    # the recent window grows with the days landed; the reference window is the same span of its week
    assert list(runs["metrics.recent_events"]) == sorted(runs["metrics.recent_events"])
    history = drift_history(settings)
    assert len(history) == 5 and set(history["decision"]) == {"no_drift"}


@pytest.mark.parametrize(
    ("kind", "reason"), [("catalogue", "item popularity"), ("activity", "user activity")]
)
def test_injected_drift_asks_for_exactly_one_early_retrain(world, kind, reason):
    settings, lake, build = world
    land = build(kind)
    results = []
    for n in (2, 3, 4):
        land(day(n))
        results.append(run_check(settings, day(n)))
    assert [r.decision for r in results] == ["retrain", "cooldown", "cooldown"], [r.message for r in results]
    first = results[0]
    conf = first.retrain_conf()
    assert conf["trigger"] == "drift" and conf["week"] == WEEK.isoformat()
    assert conf["through"] == day(2).isoformat()
    assert any(reason in line for line in conf["reasons"]), conf["reasons"]
    assert conf["figures"]["recent_events"] > 0 and conf["drift_check_run_id"] == first.mlflow_run_id
    assert "already asked for at " + day(2).isoformat() in results[1].message
    runs = drift_runs(settings)
    assert list(runs["metrics.retrain_triggered"]) == [1.0, 0.0, 0.0]
    assert list(runs["tags.decision"]) == ["retrain", "cooldown", "cooldown"]
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(first.mlflow_run_id, "drift")}
    assert {"drift/check.json", "drift/history.html"} <= artifacts


def test_early_retrain_trains_on_the_week_in_progress_and_records_why(world):
    settings, lake, build = world
    land = build("catalogue")
    land(day(2))
    result = run_check(settings, day(2))
    assert result.trigger
    client = configure(settings)
    before = champion_version(client, settings.model_name)

    plan = plan_run("operator_triggered", day(2), result.retrain_conf(), now=day(2))
    assert plan.week == WEEK and plan.through == day(2)
    outcome = run_all(StageContext.create(plan.week, settings, plan=plan))
    registered = outcome["register"]
    version = client.get_model_version(settings.model_name, registered.version)
    assert version.tags["trigger"] == "drift" and version.tags["data_through"] == day(2).isoformat()
    assert version.tags["week"] == WEEK.isoformat()
    assert registered.status == "passed" and "champion" in registered.aliases, outcome["gate"]
    assert str(before.version) != registered.version
    run = client.get_run(registered.run_id)
    assert "item popularity" in run.data.tags["trigger_reasons"]
    # validation ran on the partial week with the check time as processing time
    notes = " ".join(outcome["validate"].accounting["events"].get("notes", []))
    assert "week in progress" in notes

    # the champion now knows the week in progress: the next check has nothing newer to compare
    land(day(3))
    later = run_check(settings, day(3))
    assert later.decision == "skipped" and "no interactions newer" in later.message


def test_a_running_retrain_and_alert_only_mode_hold_the_trigger(world):
    settings, lake, build = world
    land = build("activity")
    land(day(2))
    assert run_check(settings, day(2), retrain_running=True).decision == "retrain_running"
    quiet = PipelineConfig.model_validate({"drift": {"trigger_retrain": False}})
    assert check(day(2), settings, quiet).decision == "alert_only"
    assert check(day(2), settings).decision == "retrain"  # neither held a cooldown


def test_short_cooldown_allows_a_second_early_retrain_later(world):
    settings, lake, build = world
    land = build("catalogue")
    config = PipelineConfig.model_validate({"drift": {"cooldown_hours": 30}})
    decisions = []
    for n in (2, 3, 4):
        land(day(n))
        decisions.append(run_check(settings, day(n), config).decision)
    assert decisions == ["retrain", "cooldown", "retrain"]


def test_without_a_champion_or_landed_data_the_check_is_skipped(env, monkeypatch, tmp_path):
    monkeypatch.setenv("RECSYS_MLFLOW_EXPERIMENT", f"exp_{tmp_path.name}"[:60])
    settings = Settings.from_env()
    assert refresh(day(2), settings)["status"] == "skipped"
    result = check(day(2), settings)
    assert result.decision == "skipped" and "no model holds the champion alias" in result.message
    assert len(drift_runs(settings)) == 1  # a skipped check is logged too


def test_refresh_fails_clearly_on_a_bad_batch(world):
    from recsys.core.errors import ValidationFailed

    settings, lake, build = world
    land = build()
    land(day(2))
    events = lake.raw_files("events", WEEK)[0]
    lines = events.read_text(encoding="utf-8").splitlines()
    # half of the rows get an item the catalogue does not have: above the quarantine share
    broken = [lines[0]] + [
        line if i % 2 else ",".join(f if j != 2 else "999999" for j, f in enumerate(line.split(",")))
        for i, line in enumerate(lines[1:])
    ]
    events.write_text("\n".join(broken) + "\n", encoding="utf-8")
    with pytest.raises(ValidationFailed, match="quarantine"):
        refresh(day(2), settings, PipelineConfig())


def test_cli_drift_check_reports_and_refuses_bad_times(env, monkeypatch, tmp_path, capsys):
    from recsys.cli.main import main

    monkeypatch.setenv("RECSYS_MLFLOW_EXPERIMENT", f"exp_{tmp_path.name}"[:60])
    with pytest.raises(SystemExit) as exc:
        main(["drift-check", "--at", "next tuesday"])
    assert exc.value.code == 2 and "not a date-time" in capsys.readouterr().err
    assert main(["drift-check", "--at", "2026-11-10T01:00", "--json"]) == 0
    out = capsys.readouterr().out
    import json

    result = json.loads(out)
    assert result["decision"] == "skipped" and result["checked_at"] == "2026-11-10T01:00:00+00:00"


def test_events_landed_after_the_cutoff_are_set_aside_not_counted_as_bad(world):
    settings, lake, build = world
    land = build()
    land(day(4))  # the files hold events up to day 4; the run's cutoff is day 2
    result = refresh(day(2), settings, PipelineConfig())
    assert result["status"] == "refreshed"
    import json

    accounting = json.loads((lake.partition("reports", WEEK) / "accounting.json").read_text())["events"]
    assert accounting["rows_after_cutoff"] > 0.3 * accounting["rows_read"]  # half the landed days
    assert accounting["rows_read"] == accounting["rows_valid"] + accounting["rows_quarantined"]
    assert accounting["quarantine_share"] < 0.05 and accounting["passed"]
    assert any("after this run's cutoff" in note for note in accounting["notes"])
