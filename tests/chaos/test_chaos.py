"""Chaos: real ``recsys`` processes killed with SIGKILL at named points (recsys.core.chaos), started
twice at once, fed a corrupt file and a stricter gate, on one small week. Whatever happens, the lake
holds whole partitions or none, a reader refuses what a dead run left, a re-run heals it to the same
outputs, and the registry gets one version per week with its evidence unchanged.

One module fixture runs the week through ``recsys pipeline`` twice at once (the concurrency case);
each test then works on its own copy of that home (lake, MLflow store)."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from tests.conftest import PROJECT_ROOT, airflow_subprocess_env, untuned_config
from tests.standalone import BIN

pytestmark = pytest.mark.slow

DAY = "2026-11-16"  # its last complete week starts on Sunday 2026-11-08
WEEK = date(2026, 11, 8)
MODEL = "chaos_als"


@dataclass
class Home:
    root: Path
    env: dict[str, str]

    @property
    def lake(self) -> Path:
        return self.root / "home" / "lake"

    @property
    def tracking_uri(self) -> str:
        return self.env["MLFLOW_TRACKING_URI"]

    def client(self) -> MlflowClient:
        mlflow.set_tracking_uri(self.tracking_uri)
        return MlflowClient(self.tracking_uri, self.tracking_uri)

    def recsys(self, *args: str, kill_at: str | None = None, **extra: str) -> subprocess.CompletedProcess:
        env = {**self.env, **extra}
        if kill_at:
            env["RECSYS_CHAOS_KILL_AT"] = kill_at
        return subprocess.run(
            [str(BIN / "recsys"), *args],
            env=env,
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )

    def partition(self, *parts: str) -> Path:
        return self.lake.joinpath(*parts, f"week={WEEK.isoformat()}")


def _env(root: Path) -> dict[str, str]:
    return airflow_subprocess_env(
        root,
        RECSYS_CONFIG=untuned_config(root),
        RECSYS_MODEL_NAME=MODEL,
        MLFLOW_TRACKING_URI=f"sqlite:///{root / 'home' / 'mlflow' / 'mlflow.db'}",
        RECSYS_MLFLOW_ARTIFACT_ROOT=str(root / "home" / "mlflow" / "artifacts"),
    )


def digest(folder: Path) -> dict[str, str]:
    """Content digest of every data file of a partition (the commit marker aside: it names the attempt)."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file() and not p.name.startswith("_")
    }


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Home:
    """The week run twice at once by ``recsys pipeline``: one run works, the other is refused at once."""
    root = tmp_path_factory.mktemp("chaos-base")
    home = Home(root, _env(root))
    # the week alone: no earlier week for the window stage to bring up first (tests/pipeline/test_window.py)
    generated = home.recsys("generate", "--until", DAY, "--weeks", "1", "--users", "300", "--items", "150")
    assert generated.returncode == 0, generated.stderr[-3000:]
    started = time.monotonic()
    runs = [
        subprocess.Popen(
            [str(BIN / "recsys"), "pipeline", "--date", DAY],
            env=home.env,
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    ended: dict[int, float] = {}
    while len(ended) < len(runs) and time.monotonic() - started < 900:
        for i, proc in enumerate(runs):
            if i not in ended and proc.poll() is not None:
                ended[i] = time.monotonic() - started
        time.sleep(0.2)
    finished = []
    for i, proc in enumerate(runs):
        out, err = proc.communicate(timeout=60)
        finished.append((proc.returncode, out, err, ended.get(i, float("inf"))))
    home.concurrent = finished  # type: ignore[attr-defined]
    return home


@pytest.fixture
def home(base: Home, tmp_path: Path) -> Home:
    """A copy of the base home for one test (the MLflow store's artifact paths still point at the base)."""
    shutil.copytree(base.root / "home", tmp_path / "home", symlinks=True)
    shutil.copy(base.root / "untuned_config.json", tmp_path / "untuned_config.json")
    env = {
        **base.env,
        "RECSYS_HOME": str(tmp_path / "home"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'home' / 'mlflow' / 'mlflow.db'}",
        "RECSYS_CONFIG": str(tmp_path / "untuned_config.json"),
    }
    return Home(tmp_path, env)


def test_two_runs_of_a_week_at_once_make_one_version_and_move_champion_once(base: Home) -> None:
    (ok,) = [r for r in base.concurrent if r[0] == 0]  # type: ignore[attr-defined]
    (refused,) = [r for r in base.concurrent if r[0] != 0]  # type: ignore[attr-defined]
    assert refused[0] == 2
    errors = [line for line in refused[2].splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in refused[2]
    assert f"week {WEEK.isoformat()} of weekly_retrain is being worked on by recsys pipeline" in errors[0]
    assert "wait for it to finish" in errors[0]
    assert refused[3] < ok[3]  # refused while the other run was still working
    client = base.client()
    versions = client.search_model_versions(f"name = '{MODEL}'")
    assert [str(v.version) for v in versions] == ["1"]
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "1"
    experiment = client.get_experiment_by_name("weekly_retrain")
    trained = client.search_runs([experiment.experiment_id], filter_string="tags.train_digest != ''")
    assert len(trained) == 1 and trained[0].info.status == "FINISHED"
    assert not list((base.lake / "_leases").rglob("week=*.json"))  # the week was given back


def test_killed_between_the_files_of_recommend_the_partition_stays_whole(home: Home) -> None:
    folder = home.partition("recommendations")
    before = digest(folder)
    assert set(before) == {"recommendations.parquet", "rows.parquet"}
    killed = home.recsys("stage", "recommend", "--date", DAY, kill_at="write:recommendations.parquet")
    assert killed.returncode == -signal.SIGKILL
    assert digest(folder) == before  # the old partition, whole: not one new file in it
    leftovers = list(folder.parent.glob(".week=*tmp-*"))
    assert leftovers, "the killed run's half-written partition should be left hidden"
    assert list((home.lake / "_leases").rglob("week=*.json")), "the dead run's lease is still there"

    again = home.recsys("stage", "recommend", "--date", DAY)
    assert again.returncode == 0, again.stderr[-3000:]
    assert digest(folder) == before  # the same lists again
    assert not list(folder.parent.glob(".week=*tmp-*"))  # the re-run took over and cleaned up
    record = json.loads((home.lake / "runs" / f"week={WEEK}" / "recommend.json").read_text())
    assert record["model_version"] == "1" and record["status"] == "written"


@pytest.mark.parametrize(
    ("stage", "kill_at", "partitions", "refused", "reader"),
    [
        # after one of validate's partitions is committed, before the others and the record
        ("validate", "commit:validated/events/week={week}", [("validated", "events")], ("validated", "events"), "anonymize"),
        # after anonymize's events partition is committed, before the users, the items and the record
        ("anonymize", "commit:anonymized/events/week={week}", [("anonymized", k) for k in ("events", "users", "items")], ("anonymized", "events"), "prepare"),
        # after all of anonymize's partitions are committed, before its record (the commit point)
        ("anonymize", "record:anonymize", [("anonymized", k) for k in ("events", "users", "items")], ("anonymized", "events"), "prepare"),
        # after both of prepare's files are committed, before its record
        ("prepare", "record:prepare", [("prepared",)], ("prepared",), "evaluate"),
    ],
    ids=["validate-between-partitions", "anonymize-between-partitions", "anonymize-before-record", "prepare-before-record"],
)  # fmt: skip
def test_killed_inside_a_multi_partition_stage_the_next_stage_refuses_then_a_rerun_heals(
    home: Home,
    stage: str,
    kill_at: str,
    partitions: list[tuple[str, ...]],
    refused: tuple[str, ...],
    reader: str,
) -> None:
    before = {p: digest(home.partition(*p)) for p in partitions}
    killed = home.recsys("stage", stage, "--date", DAY, kill_at=kill_at.format(week=WEEK))
    assert killed.returncode == -signal.SIGKILL

    error = one_line_error(home.recsys("stage", reader, "--date", DAY))
    assert f"partition {home.partition(*refused)} is not committed" in error
    assert f"re-run stage '{stage}'" in error

    rerun = home.recsys("stage", stage, "--date", DAY)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert {p: digest(home.partition(*p)) for p in partitions} == before  # the same files again
    healed = home.recsys("stage", reader, "--date", DAY)
    assert healed.returncode == 0, healed.stderr[-3000:]


def test_a_killed_training_run_is_marked_failed_and_the_rerun_trains_once(home: Home) -> None:
    config = Path(home.env["RECSYS_CONFIG"])
    config.write_text(json.dumps({"tuning": {"enabled": False}, "als": {"reg_param": 0.2}}))
    killed = home.recsys("stage", "train", "--date", DAY, kill_at="train:running")
    assert killed.returncode == -signal.SIGKILL
    client = home.client()
    experiment = client.get_experiment_by_name("weekly_retrain")
    (left,) = client.search_runs([experiment.experiment_id], filter_string="attributes.status = 'RUNNING'")

    again = home.recsys("stage", "train", "--date", DAY)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout[again.stdout.index("{") :])["reused"] is False
    failed = client.get_run(left.info.run_id)
    assert failed.info.status == "FAILED"
    assert "left RUNNING by a run that did not finish" in failed.data.tags["recsys.failure"]
    assert "is gone" in failed.data.tags["recsys.failure"]
    trained = client.search_runs([experiment.experiment_id], filter_string="tags.train_digest != ''")
    assert sorted(r.info.status for r in trained) == ["FAILED", "FINISHED", "FINISHED"]
    # and a third run reuses the finished one: still one finished run per config
    third = home.recsys("stage", "train", "--date", DAY)
    assert json.loads(third.stdout[third.stdout.index("{") :])["reused"] is True


def test_a_stricter_gate_on_the_champions_week_never_rewrites_its_evidence(home: Home) -> None:
    Path(home.env["RECSYS_CONFIG"]).write_text(
        json.dumps({"tuning": {"enabled": False}, "gate": {"min_primary": 0.99}})
    )
    for stage in ("train", "evaluate", "gate", "register"):
        done = home.recsys("stage", stage, "--date", DAY)
        assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout[done.stdout.index("{") :])["status"] == "rejected"
    client = home.client()
    version = client.get_model_version(MODEL, "1")
    assert version.tags["validation_status"] == "passed"  # the evidence it was promoted on
    assert json.loads(version.tags["reevaluation"])["status"] == "rejected"
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "1"
    train_run = client.get_run(version.run_id)
    assert train_run.data.tags["validation_status"] == "passed"
    experiment = client.get_experiment_by_name("weekly_retrain")
    (again,) = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.reevaluation_of = '{version.run_id}'"
    )
    assert again.data.tags["validation_status"] == "rejected"
    rollback = home.recsys("rollback", "--to", "1", "--reason", "chaos test")
    assert rollback.returncode == 0, rollback.stderr[-3000:]


def test_a_corrupt_parquet_file_is_one_line_naming_it(home: Home) -> None:
    items = home.partition("anonymized", "items") / "data.parquet"
    items.write_bytes(items.read_bytes()[: len(items.read_bytes()) // 2])  # truncated
    error = one_line_error(home.recsys("stage", "content", "--date", DAY))
    assert f"cannot read {items}" in error and "re-run the stage" in error
