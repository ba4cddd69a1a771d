"""The Airflow UI's MLflow links and the model-history page (recsys.reporting.ui_pages, plugins/recsys_plugin.py).

URL building and link choice on plain task results; the page's data read from a real MLflow store
(versions registered with the registry's own code, a drift check logged by the monitor's own code);
the page's FastAPI app through TestClient; the plugin loaded by Airflow's plugin manager.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from datetime import UTC, date, datetime

import mlflow
import pytest
from fastapi.testclient import TestClient

from recsys.core.settings import Settings
from recsys.promotion.gates import GateDecision
from recsys.promotion.registry import register_candidate
from recsys.reporting import mlflow_links as links
from recsys.reporting import model_history
from recsys.reporting import ui_pages as ui
from tests.conftest import PROJECT_ROOT

BASE = "http://mlflow.example:5000"
RUN = "0123456789abcdef0123456789abcdef"
TRAIN_RUN = "fedcba9876543210fedcba9876543210"


# ---- URLs ----------------------------------------------------------------------------------------
def test_mlflow_ui_url_formats():
    assert links.run_url(BASE, RUN) == f"{BASE}/#/runs/{RUN}"
    assert links.run_url(BASE + "/", RUN, "7") == f"{BASE}/#/experiments/7/runs/{RUN}"
    assert (
        links.run_url(BASE, RUN, "7", "report/model_report.html")
        == f"{BASE}/#/experiments/7/runs/{RUN}/artifacts/report/model_report.html"
    )
    assert links.model_version_url(BASE, "recsys_als", 3) == f"{BASE}/#/models/recsys_als/versions/3"
    assert links.model_version_url(BASE + "/#/", "a b/c", "1") == f"{BASE}/#/models/a%20b%2Fc/versions/1"
    assert links.model_url(BASE, "recsys_als") == f"{BASE}/#/models/recsys_als"
    assert links.experiment_url("http://h/mlflow/", "12") == "http://h/mlflow/#/experiments/12"


def test_mlflow_public_url_setting():
    sqlite = Settings.from_env({"RECSYS_HOME": "/tmp/x"})
    assert sqlite.mlflow_public_url == "http://127.0.0.1:5000"  # where `make ui` serves MLflow
    server = Settings.from_env({"MLFLOW_TRACKING_URI": "http://mlflow:5000/"})
    assert server.mlflow_public_url == "http://mlflow:5000"
    login = Settings.from_env({"MLFLOW_TRACKING_URI": "https://ops:s3cret@mlflow.example.org/"})
    assert login.mlflow_public_url == "https://mlflow.example.org"  # links never carry a login
    public = Settings.from_env(
        {"MLFLOW_TRACKING_URI": "http://mlflow:5000", "RECSYS_MLFLOW_PUBLIC_URL": "https://ml.example.org/"}
    )
    assert public.mlflow_public_url == "https://ml.example.org"


# ---- which task gets which link ------------------------------------------------------------------
WEEKLY_RUN = {
    "validate": {"stage": "validate", "mlflow_run_id": RUN, "accounting": {}},
    "train": {"stage": "train", "run_id": TRAIN_RUN, "model_uri": "models:/m-1"},
    "evaluate": {"k": 10, "candidate": {}, "champion": {"ndcg@10": 0.1}, "champion_version": "1"},
    "gate": {"passed": True, "reasons": ["PASS: x"]},
    "register": {"name": "recsys_als", "version": "4", "run_id": TRAIN_RUN, "aliases": ["champion"]},
    "promote": {"version": "4", "changed": True, "aliases": ["champion"]},
    "recommend": {"status": "written", "model_version": "4"},
    "review_needed": "no_review",
}


def reader(results: dict):
    return lambda task_id: results.get(task_id)


@pytest.mark.parametrize(
    ("task_id", "run_link", "version_link"),
    [
        ("validate", f"{BASE}/#/runs/{RUN}", ""),
        ("train", f"{BASE}/#/runs/{TRAIN_RUN}", ""),
        ("evaluate", f"{BASE}/#/runs/{TRAIN_RUN}", ""),  # the train run; champion is metrics, not a version
        ("gate", f"{BASE}/#/runs/{TRAIN_RUN}", ""),
        ("register", f"{BASE}/#/runs/{TRAIN_RUN}", f"{BASE}/#/models/recsys_als/versions/4"),
        ("promote", "", f"{BASE}/#/models/recsys_als/versions/4"),
        ("recommend", "", f"{BASE}/#/models/recsys_als/versions/4"),
        ("review_needed", "", ""),  # a branch: a plain string result
        ("ingest", "", ""),  # no XCom at all
    ],
)
def test_links_of_the_weekly_tasks(task_id, run_link, version_link):
    read = reader(WEEKLY_RUN)
    assert links.task_run_link(BASE, task_id, read) == run_link
    assert links.task_model_version_link(BASE, task_id, read, "configured_name") == version_link


def test_links_of_the_drift_check_and_the_rollback():
    check = {"decision": "no_drift", "mlflow_run_id": RUN, "champion_version": "2", "conf": {}}
    assert links.task_run_link(BASE, "check", reader({"check": check})) == f"{BASE}/#/runs/{RUN}"
    assert links.task_model_version_link(BASE, "check", reader({"check": check}), "m") == ""
    rollback = {"changed": True, "champion": "1", "from": "2", "by": "ops"}
    got = links.task_model_version_link(BASE, "rollback", reader({"rollback": rollback}), "recsys_als")
    assert got == f"{BASE}/#/models/recsys_als/versions/1"  # no register result: the configured name


def test_results_that_name_nothing_give_no_link():
    assert links.run_id_of({"run_id": "not a run id; <script>"}) is None
    assert links.run_id_of(["run_id"]) is None
    assert links.model_version_of({"version": "v2"}) is None
    assert links.model_version_of({"version": True}) is None
    assert links.model_version_of({"version": 5, "name": "m"}) == ("m", "5")


# ---- the page's data and HTML from a real MLflow store -------------------------------------------
PASSED = GateDecision(
    passed=True,
    reasons=["PASS: ndcg@10 0.2100 >= floor 0.0200", "PASS: beats baseline"],
    checks={"a": True},
    metrics={},
)
REJECTED = GateDecision(
    passed=False,
    reasons=["PASS: ndcg@10 0.0900 >= floor 0.0200", "FAIL: 9% worse than the champion <b>v2</b>"],
    checks={"a": False},
    metrics={},
)


@pytest.fixture
def isolated(env, monkeypatch, tmp_path) -> Settings:
    """Settings with their own experiments (the drift experiment too) in the session's MLflow store."""
    monkeypatch.setenv("RECSYS_MLFLOW_EXPERIMENT", f"exp_{tmp_path.name}"[:60])
    monkeypatch.setenv("RECSYS_MLFLOW_PUBLIC_URL", BASE)
    return Settings.from_env()


def register_week(settings: Settings, week: str, decision: GateDecision, ndcg: float, **kwargs) -> str:
    """A training run and its version, tagged the way the register stage tags them."""
    from recsys.io.tracking import configure

    client = configure(settings)
    with mlflow.start_run(run_name=f"weekly-{week}") as run:
        mlflow.set_tags({"week": week, "trigger": kwargs.get("trigger", "scheduled")})
    source = f"file:///tmp/recsys-ui-test/{run.info.run_id}"
    # the version exists before registration (a logged model is not needed here); register_candidate
    # recognises its run and applies the tags, the gate decision and the promotion like in a real run
    if not _exists(client, settings.model_name):
        client.create_registered_model(settings.model_name)
    client.create_model_version(settings.model_name, source=source, run_id=run.info.run_id)
    tags = {
        "week": week,
        "trigger": kwargs.get("trigger", "scheduled"),
        "ndcg_at_10": f"{ndcg:.6f}",
        "precision_at_10": "0.050000",
        "recall_at_10": "n/a",
        "baseline_ndcg_at_10": "0.100000",
    }
    registration = register_candidate(
        client,
        settings.model_name,
        run.info.run_id,
        source,
        decision,
        tags,
        promotion=kwargs.get("promotion", "auto"),
        challenger_on_reject=kwargs.get("challenger_on_reject", False),
    )
    return registration.version


def _exists(client, name: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        return False
    return True


def log_drift_check(settings: Settings) -> str:
    from recsys.evaluation.drift import DriftConfig, DriftReport
    from recsys.pipeline.monitor import CheckResult, log_check

    report = DriftReport(
        metrics={
            "recent_events": 4200.0,
            "reference_events": 4100.0,
            "item_popularity_psi": 0.41,
            "user_activity_psi": 0.05,
            "item_js_excess": 0.01,
            "quality_drop": float("nan"),
        },
        checks={"item_popularity": True, "user_activity": False, "item_js": False},
        reasons=["item popularity PSI 0.410 > 0.25"],
        not_run={"quality": "quality_now missing"},
    )
    result = CheckResult(
        checked_at=datetime(2026, 11, 12, 6, 0, tzinfo=UTC),
        decision="retrain",
        message="drift: item popularity PSI 0.410 > 0.25",
        report=report,
        champion_version="2",
        reference_week=date(2026, 11, 1),
        recent_week=date(2026, 11, 8),
    )
    log_check(result, settings, DriftConfig())
    assert result.mlflow_run_id
    return result.mlflow_run_id


@pytest.fixture
def registry(isolated):
    """v1 passed (champion then), v2 passed (champion), v3 rejected (challenger for inspection), and a
    drift check."""
    v1 = register_week(isolated, "2026-10-25", PASSED, 0.2)
    v2 = register_week(isolated, "2026-11-01", PASSED, 0.21)
    v3 = register_week(isolated, "2026-11-08", REJECTED, 0.09, trigger="drift", challenger_on_reject=True)
    check_run = log_drift_check(isolated)
    return isolated, (v1, v2, v3), check_run


def test_model_history_from_mlflow(registry):
    settings, (v1, v2, v3), check_run = registry
    history = model_history.load_model_history(settings)
    assert history.error is None and history.model_exists
    assert [v.version for v in history.versions] == [v3, v2, v1]  # newest first
    assert history.champion is not None and history.champion.version == v2
    assert history.challenger is not None and history.challenger.version == v3
    newest = history.versions[0]
    assert (newest.week, newest.trigger, newest.status) == ("2026-11-08", "drift", "rejected")
    assert newest.reasons[-1].startswith("FAIL: 9% worse")
    assert newest.metrics == {"ndcg@10": 0.09, "precision@10": 0.05, "recall@10": None}
    assert newest.baseline["ndcg@10"] == 0.1
    assert history.versions[1].notes == [f"replaced champion v{v1}"]
    assert all(v.experiment_id == history.experiment_id for v in history.versions)
    check = history.last_check
    assert check is not None and check.run_id == check_run and check.decision == "retrain"
    stats = {s.metric: s for s in check.stats}
    assert stats["item_popularity_psi"].drifted is True and stats["item_popularity_psi"].threshold == 0.25
    assert stats["user_activity_psi"].drifted is False and stats["user_activity_psi"].verdict == "ok"
    assert stats["recent_events"].value == 4200 and stats["recent_events"].verdict == "ok"  # >= min_events
    assert "quality_drop" not in stats  # not computed (NaN is not logged), the check did not run
    assert json.loads(json.dumps(history.to_dict()))["champion"] == v2


def test_model_history_page(registry):
    settings, (v1, v2, v3), check_run = registry
    history = model_history.load_model_history(settings)
    page = ui.render_model_history(history)
    name = settings.model_name
    exp = history.experiment_id
    champion_run = history.champion.run_id
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page
    assert f'href="{BASE}/#/models/{name}/versions/{v2}"' in page
    assert f'href="{BASE}/#/experiments/{exp}/runs/{champion_run}"' in page
    assert f'href="{BASE}/#/experiments/{exp}/runs/{champion_run}/artifacts/report/model_report.html"' in page
    assert f'href="{BASE}/#/experiments/{history.drift_experiment_id}/runs/{check_run}"' in page
    assert 'id="champion"' in page and 'id="challenger"' in page
    assert "REJECTED" in page and "PASSED" in page and "2026-11-08" in page and "drift" in page
    assert "&lt;b&gt;v2&lt;/b&gt;" in page  # reasons are escaped
    assert "item popularity PSI" in page and "0.4100" in page and "retrain" in page
    assert "0.2100" in page  # champion's ndcg@10


def test_page_without_any_model_or_drift_check(isolated):
    history = model_history.load_model_history(isolated)
    assert history.error is None and not history.model_exists and history.versions == []
    page = ui.render_model_history(history)
    assert f"No version of {isolated.model_name} is registered yet" in page
    assert "No drift check yet" in page


def test_page_when_mlflow_is_unreachable(monkeypatch, tmp_path):
    missing = tmp_path / "nowhere" / "mlflow.db"
    settings = Settings.from_env(
        {"RECSYS_HOME": str(tmp_path), "MLFLOW_TRACKING_URI": f"sqlite:///{missing}"}
    )
    history = model_history.load_model_history(settings)
    assert history.error and "no MLflow store" in history.error
    assert not missing.exists(), "a read-only page must not create an MLflow store"

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    down = Settings.from_env(
        {"RECSYS_HOME": str(tmp_path), "MLFLOW_TRACKING_URI": f"http://ops:s3cret@127.0.0.1:{port}"}
    )
    history = model_history.load_model_history(down)
    assert history.error and f"cannot read MLflow at http://***@127.0.0.1:{port}" in history.error
    page = ui.render_model_history(history)
    assert 'id="mlflow-error"' in page and "MLflow is not reachable" in page
    assert "s3cret" not in page, "credentials in the tracking URI must not reach the page"


# ---- the plugin ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def plugin_module():
    """plugins/recsys_plugin.py as Airflow's plugin manager loads it."""
    from airflow import plugins_manager

    plugins, errors = plugins_manager._get_plugins()
    assert errors == {}, errors
    assert any(p.name == "recsys" for p in plugins)
    return sys.modules["recsys_plugin"]


def test_plugin_registers_links_app_and_view(plugin_module):
    from airflow import plugins_manager

    info = next(p for p in plugins_manager.get_plugin_info() if p["name"] == "recsys")
    assert info["global_operator_extra_links"] == [
        "<recsys_plugin.MlflowRunLink object>",
        "<recsys_plugin.ModelVersionLink object>",
    ]
    assert [link.name for link in plugins_manager.get_global_operator_extra_links()] == [
        "MLflow run",
        "Model version",
    ]
    assert [(a["url_prefix"], a["name"]) for a in info["fastapi_apps"]] == [
        ("/recsys", "recsys model history")
    ]
    assert info["external_views"] == [
        {"name": "Model history", "href": "recsys/model-history", "destination": "nav", "category": "browse"}
    ]


def test_plugin_links_read_the_task_result_and_never_raise(plugin_module, isolated, monkeypatch):
    from airflow.models.taskinstancekey import TaskInstanceKey

    key = TaskInstanceKey(dag_id="weekly_retrain", task_id="gate", run_id="manual__1", try_number=1)
    monkeypatch.setattr(plugin_module, "_result_reader", lambda ti_key: reader(WEEKLY_RUN))
    assert plugin_module.MlflowRunLink().get_link(None, ti_key=key) == f"{BASE}/#/runs/{TRAIN_RUN}"
    register = key._replace(task_id="register")
    assert (
        plugin_module.ModelVersionLink().get_link(None, ti_key=register)
        == f"{BASE}/#/models/recsys_als/versions/4"
    )

    def broken(ti_key):
        def read(task_id):
            raise RuntimeError("metadata DB is down")

        return read

    monkeypatch.setattr(plugin_module, "_result_reader", broken)
    assert plugin_module.MlflowRunLink().get_link(None, ti_key=key) == ""
    assert plugin_module.ModelVersionLink().get_link(None, ti_key=register) == ""


def test_plugin_app_serves_the_page_and_its_json(plugin_module, registry):
    settings, (v1, v2, v3), _ = registry
    client = TestClient(plugin_module.create_app(require_login=False))
    page = client.get("/model-history")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert f"{settings.model_name}: model history" in page.text
    assert f"/#/models/{settings.model_name}/versions/{v3}" in page.text
    data = client.get("/api/model-history").json()
    assert data["champion"] == v2 and data["challenger"] == v3
    assert [v["version"] for v in data["versions"]] == [v3, v2, v1]
    assert data["checks"][0]["decision"] == "retrain"
    redirect = client.get("/", follow_redirects=False)
    assert redirect.status_code in (302, 307) and redirect.headers["location"].endswith("model-history")


def test_plugin_app_asks_for_an_airflow_login(plugin_module, isolated):
    client = TestClient(plugin_module.create_app())
    page = client.get("/model-history")
    assert page.status_code == 401 and "Log in to Airflow first" in page.text
    assert client.get("/api/model-history").status_code == 401


def test_plugin_import_is_light():
    """Every Airflow process loads plugins: loading this one must not import MLflow, pandas or Spark."""
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('recsys_plugin', r'{PROJECT_ROOT / 'plugins' / 'recsys_plugin.py'}')\n"
        "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
        "heavy = [m for m in ('mlflow', 'pandas', 'pyspark', 'great_expectations', 'airflow.api_fastapi.core_api.security') "
        "if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr


def test_model_history_notes_the_ab_test_of_a_version(registry):
    from recsys.io.tracking import configure

    settings, (v1, _, _), _ = registry
    client = configure(settings)
    client.set_model_version_tag(settings.model_name, v1, "ab_test", "kept champion: exp-1: KEEP")
    try:
        history = model_history.load_model_history(settings)
        row = next(v for v in history.versions if v.version == v1)
        assert "A/B test: kept champion: exp-1: KEEP" in row.notes
    finally:
        client.delete_model_version_tag(settings.model_name, v1, "ab_test")
