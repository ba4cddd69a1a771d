"""Shared fixtures: isolated settings per test, one real SparkSession and one real MLflow store per session."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# A pytest-xdist worker's __main__ (execnet's) has neither __spec__ nor __file__, which pyspark's
# Spark Connect check (imported by great_expectations) takes for a doctest run and exits the
# process; name the worker's main module so the check passes, as it does under plain pytest.
_main = sys.modules["__main__"]
if getattr(_main, "__spec__", None) is None and not hasattr(_main, "__file__"):
    _main.__file__ = "<pytest-xdist worker>"

# Airflow reads its home at first import: give the test session its own, never the user's.
AIRFLOW_TEST_HOME = Path(tempfile.mkdtemp(prefix="recsys-airflow-home-"))
os.environ["AIRFLOW_HOME"] = str(AIRFLOW_TEST_HOME)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(PROJECT_ROOT / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(PROJECT_ROOT / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
# Every Spark driver a test starts (here or in a subprocess) reads the suite's spark-defaults.conf
SPARK_TEST_CONF = PROJECT_ROOT / "tests" / "spark-conf"
os.environ["SPARK_CONF_DIR"] = str(SPARK_TEST_CONF)
TEST_KEY = "test-key-0123456789abcdef0123456789abcdef"

#: the modules that share one `airflow standalone` (tests/e2e/conftest.py checks the list is whole)
STANDALONE_MODULES = (
    "tests/e2e/test_backfill_airflow.py",
    "tests/e2e/test_review_rest.py",
    "tests/e2e/test_ui_browser.py",
)
STANDALONE_GROUP = "airflow-standalone"


def work_unit(nodeid: str) -> str:
    """The xdist work unit of a test: its module, or the shared standalone's group of modules."""
    module = nodeid.split("::", 1)[0]
    return STANDALONE_GROUP if module in STANDALONE_MODULES else module


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """``make test`` runs two pytest-xdist workers: a module's tests go to one worker together, so
    its module-scoped fixtures are set up once, and the modules sharing the Airflow standalone go to
    one worker together, so it starts once (``--dist loadscope`` by these units; xdist's own
    ``loadgroup`` marks do not reach pytest 9's node ids)."""
    from xdist.scheduler import LoadScopeScheduling  # deferred: only a run with -n loads xdist

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return ModuleScheduling(config, log)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    """On an xdist worker: the end-to-end modules (minutes each) come first, the shared
    standalone's first of all, so that the scheduler hands them out first and no long module
    starts last while the other worker idles."""
    if not hasattr(config, "workerinput"):
        return

    def weight(item: pytest.Item) -> int:
        if work_unit(item.nodeid) == STANDALONE_GROUP:
            return 0
        return 1 if item.nodeid.startswith("tests/e2e/") else 2

    items.sort(key=weight)  # stable: the collection order within each weight


def airflow_subprocess_env(root: Path, **extra: str) -> dict[str, str]:
    """Environment for the Airflow and ``recsys`` subprocesses of one test: its own AIRFLOW_HOME and
    RECSYS_HOME under ``root``, the project's DAGs, the test key, local Spark, no task retries, and
    nothing inherited from the caller's Airflow / MLflow / recsys settings. ``extra`` adds or overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RECSYS", "MLFLOW"))}
    env.update(
        {
            "AIRFLOW_HOME": str(root / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "RECSYS_HOME": str(root / "home"),
            "RECSYS_SPARK_MASTER": "local[2]",
            "RECSYS_PSEUDONYM_KEY": TEST_KEY,
            "RECSYS_TASK_RETRIES": "0",  # a failure fails the test now, not after retry delays
            "PYTHONWARNINGS": "ignore",
        }
    )
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def migrated_airflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An Airflow metadata DB (SQLite) made by `airflow db migrate`, once per session: the modules that
    run `airflow dags test` each start from a copy of it (:func:`install_airflow_db`) instead of
    migrating their own (about 10 s each on CI)."""
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("airflow-db")
    env = airflow_subprocess_env(root)
    airflow = Path(sys.executable).parent / "airflow"
    done = subprocess.run(
        [str(airflow), "db", "migrate"], env=env, capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0:
        pytest.fail(f"airflow db migrate exited {done.returncode}:\n{(done.stdout + done.stderr)[-3000:]}")
    return Path(env["AIRFLOW_HOME"]) / "airflow.db"


def install_airflow_db(template: Path, env: dict[str, str]) -> None:
    """Copy the migrated metadata DB ``template`` into ``env``'s (new) AIRFLOW_HOME."""
    import shutil

    home = Path(env["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    assert not (home / "airflow.db").exists(), f"{home} already has a metadata DB"
    for suffix in ("", "-wal"):  # the write-ahead log too, should `db migrate` have left one
        if template.with_name(template.name + suffix).exists():
            shutil.copyfile(template.with_name(template.name + suffix), home / f"airflow.db{suffix}")


def untuned_config(root: Path, **overrides: object) -> str:
    """A ``RECSYS_CONFIG`` file under ``root`` with tuning off (plus ``overrides``), for end-to-end tests
    whose subject is not the tuning grid (test_tuning tests it; test_history_airflow runs it through
    Airflow, on real data, and checks the run was tuned): each training fits ALS twice instead of four
    times."""
    import json

    path = root / "untuned_config.json"
    path.write_text(json.dumps({"tuning": {"enabled": False}, **overrides}), encoding="utf-8")
    return str(path)


def shared_data_dir() -> Path:
    """MovieLens data: RECSYS_DATA_DIR, else ../shared/data beside the checkout."""
    configured = os.environ.get("RECSYS_DATA_DIR")
    path = Path(configured) if configured else PROJECT_ROOT.parent / "shared" / "data"
    if not (path / "movielens").is_dir():
        pytest.fail(f"MovieLens data not found at {path}/movielens: set RECSYS_DATA_DIR to ../shared/data")
    return path


@pytest.fixture(scope="session")
def session_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("recsys-home")


@pytest.fixture
def env(tmp_path: Path, session_home: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment for one test: its own lake, a session-wide MLflow store (model names keep tests apart)."""
    values = {
        "RECSYS_HOME": str(tmp_path / "home"),
        "RECSYS_LAKE_DIR": str(tmp_path / "lake"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{session_home / 'mlflow.db'}",
        "RECSYS_MLFLOW_ARTIFACT_ROOT": str(session_home / "artifacts"),
        "RECSYS_SPARK_MASTER": "local[2]",
        "RECSYS_PSEUDONYM_KEY": TEST_KEY,
        "RECSYS_MODEL_NAME": f"test_{tmp_path.name}".replace("-", "_")[:60],
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("RECSYS_CONFIG", raising=False)
    return values


@pytest.fixture
def settings(env: dict[str, str]):
    from recsys.core.settings import Settings

    return Settings.from_env()


@pytest.fixture(scope="session")
def spark(session_home: Path):
    from recsys.core.settings import Settings
    from recsys.io.spark import get_spark

    settings = Settings.from_env({"RECSYS_HOME": str(session_home), "RECSYS_SPARK_MASTER": "local[2]"})
    session = get_spark(settings, app_name="recsys-tests")
    yield session
    session.stop()
