"""`airflow backfill create` of weekly_retrain over past weeks, through a real Airflow scheduler.

Synthetic history (weeks 2026-10-11 .. 2026-11-08); the newest week is trained first without Airflow
(``recsys.pipeline.runner.run_all`` in a child process, same lake and MLflow store) and becomes the
`champion` (version 1). Then real Airflow services (`airflow standalone` on loopback, shared with
the other modules that need them, tests/e2e/conftest.py; this module has its own lake, MLflow store
and config on them) backfill the two weeks before it and re-run one of them. The test checks that a
backfill

* gives each week exactly one partition, one evaluation and one model version (tag ``week``), the
  versions in week order;
* never moves `champion` and publishes no recommendations;
* re-run on a finished week (``--reprocess-behavior completed``) reuses that week's MLflow training
  run and model version instead of training and registering a duplicate.

What this relies on in Airflow 3.3.2 (airflow/models/backfill.py, DagRun.get_queued_dag_runs_to_set_running):

* backfill runs of a *paused* Dag stay queued: the scheduler starts no run of a paused Dag, so the
  Dag has to be unpaused. Unpausing a ``catchup=False`` Dag also makes the scheduler create a run for
  the latest interval; ``[scheduler] use_job_schedule = False`` (set on the shared standalone) keeps
  it from doing that here (backfill runs are created by the CLI, not by the scheduler, so they
  still run);
* ``--from-date`` / ``--to-date`` select runs by their data interval *end* (``run_after``); a run's
  logical date is its interval start, which is the week it works on. Weeks A .. B are backfilled
  with ``--from-date A+7 --to-date B+7``;
* a backfill has its own ``max_active_runs`` (10 unless given), the Dag's ``max_active_runs=1`` does
  not limit it: ``--max-active-runs 1`` makes the weeks run one at a time, oldest first.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import textwrap
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.conftest import PROJECT_ROOT
from tests.standalone import BIN, SHARED_MODEL, SharedStandalone

pytestmark = [pytest.mark.slow, pytest.mark.integration]

DAG_ID = "weekly_retrain"
MODEL = SHARED_MODEL  # in this module's own MLflow store
NEWEST = date(2026, 11, 8)  # last synthetic week: the champion's
HISTORY_WEEKS = 5  # 2026-10-11 .. 2026-11-08
BACKFILLED = [date(2026, 10, 25), date(2026, 11, 1)]  # two weeks show the order and the reuse
REPROCESSED = date(2026, 10, 25)
OVERALL_TIMEOUT = 15 * 60
FINAL_STATES = ("success", "failed")


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def interval_end(week: date) -> str:
    """The backfill date that selects the run working on ``week`` (its data interval end)."""
    return (week + timedelta(weeks=1)).isoformat()


class Stack:
    """The running Airflow services, the environment they and their tasks share, and diagnostics."""

    def __init__(self, root: Path, env: dict[str, str], api: httpx.Client, deadline: float):
        # root: the shared standalone's folder (its log, Airflow's task logs)
        self.root, self.env, self.api, self.deadline = root, env, api, deadline
        self.orphans: set[int] = set()  # backfills left behind by a locked create, cancelled

    # ---- Airflow ----------------------------------------------------------------------------

    def runs(self) -> list[dict]:
        body = self.api.get(f"/dags/{DAG_ID}/dagRuns", params={"limit": 100}).json()
        return sorted(body["dag_runs"], key=lambda r: r["logical_date"] or "")

    def backfill_runs(self) -> list[dict]:
        return [r for r in self.runs() if r["run_type"] == "backfill"]

    def task_states(self, run_id: str) -> dict[str, str | None]:
        body = self.api.get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances").json()
        return {t["task_id"]: t["state"] for t in body["task_instances"]}

    def backfills(self) -> list[dict]:
        body = self.api.get("/backfills", params={"dag_id": DAG_ID, "limit": 100}).json()
        return sorted(body["backfills"], key=lambda b: b["id"])

    def airflow(self, *args: str, on_locked=None) -> subprocess.CompletedProcess:
        # The test's metadata DB is SQLite, which allows one writer at a time: a CLI write can meet
        # the running scheduler's and fail with "database is locked" (the transaction is rolled
        # back). Try again then, as an operator would; PostgreSQL (the team stack) has no such limit.
        for attempt in range(4):
            done = subprocess.run(
                [str(BIN / "airflow"), *args],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=180,
            )
            if done.returncode == 0 or "database is locked" not in done.stdout + done.stderr:
                break
            print(
                f"airflow {' '.join(args[:2])}: SQLite database locked, attempt {attempt + 1}; trying again"
            )
            time.sleep(3)
            if on_locked is not None:
                on_locked()
        assert done.returncode == 0, f"airflow {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
        return done

    def backfill(self, first: date, last: date, *extra: str) -> dict:
        """`airflow backfill create` for the weeks ``first`` .. ``last``; returns the new backfill."""
        before = {b["id"] for b in self.backfills()}
        self.airflow(
            "backfill",
            "create",
            "--dag-id",
            DAG_ID,
            "--from-date",
            interval_end(first),
            "--to-date",
            interval_end(last),
            "--max-active-runs",
            "1",
            *extra,
            on_locked=lambda: self.cancel_orphans(before),
        )
        created = [b for b in self.backfills() if b["id"] not in before | self.orphans]
        assert len(created) == 1, self.backfills()
        return created[0]

    def cancel_orphans(self, before: set[int]) -> None:
        """Cancel the backfill a locked `backfill create` left behind, so that it can be retried.

        Airflow 3.3.2 commits the Backfill row before it creates the runs (in a second
        transaction); when that transaction meets "database is locked", the runs are rolled back
        and its clean-up of the row is best effort (itself a write that can meet the same lock).
        The row left behind has no runs and blocks every new backfill of the Dag
        (AlreadyRunningBackfill) until the scheduler ends it two minutes later. An operator
        cancels it, as done here through the REST API.
        """
        for backfill in self.backfills():
            if backfill["id"] in before or backfill["completed_at"]:
                continue
            for _ in range(10):
                response = self.api.put(f"/backfills/{backfill['id']}/cancel")
                if response.status_code in (200, 409):  # 409: already completed meanwhile
                    break
                time.sleep(2)
            assert response.status_code in (200, 409), response.text
            self.orphans.add(backfill["id"])
            print(f"cancelled backfill {backfill['id']}, left behind by a locked create")

    def wait_backfill_done(self, backfill_id: int) -> list[dict]:
        """Wait until the backfill is complete and all its runs are final; returns its runs."""

        def done() -> list[dict] | None:
            backfill = next(b for b in self.backfills() if b["id"] == backfill_id)
            runs = self.backfill_runs()
            if backfill["completed_at"] and all(r["state"] in FINAL_STATES for r in runs):
                return runs
            if any(r["state"] == "failed" for r in runs):
                self.fail("a backfill run failed")
            return None

        return self.wait(done, f"backfill {backfill_id} to complete", interval=5)

    def wait(self, check, what: str, interval: float = 2.0):
        while time.monotonic() < self.deadline:
            try:
                value = check()
            except httpx.HTTPError:
                value = None
            if value:
                return value
            time.sleep(interval)
        self.fail(f"timed out waiting for {what}")

    # ---- diagnostics ------------------------------------------------------------------------

    def diagnostics(self) -> str:
        lines = []
        try:
            for run in self.runs():
                states = self.task_states(run["dag_run_id"])
                lines.append(f"run {run['dag_run_id']} ({run['run_type']}): {run['state']} {states}")
                for task, state in states.items():
                    if state in ("failed", "up_for_retry"):
                        lines.extend(self.log_tail(run["dag_run_id"], task))
            lines.append(f"backfills: {self.backfills()}")
        except Exception as exc:  # noqa: BLE001 - diagnostics must not hide the original failure
            lines.append(f"(could not read runs from the API: {exc!r})")
        standalone = self.root / "standalone.log"
        if standalone.exists():
            tail = standalone.read_text(errors="replace").splitlines()[-40:]
            lines += ["--- airflow standalone (last lines) ---", *tail]
        return "\n".join(lines)

    def log_tail(self, run_id: str, task: str, count: int = 60) -> list[str]:
        folder = self.root / "airflow" / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}" / f"task_id={task}"
        files = sorted(folder.glob("**/*.log"))
        if not files:
            return [f"--- no log file under {folder} ---"]
        tail = files[-1].read_text(errors="replace").splitlines()[-count:]
        return [f"--- {files[-1]} (last {count} lines) ---", *tail]

    def fail(self, message: str):
        pytest.fail(f"{message}\n{self.diagnostics()}", pytrace=False)

    # ---- MLflow and the lake ----------------------------------------------------------------

    @functools.cached_property
    def mlflow(self):
        from mlflow import MlflowClient

        uri = self.env["MLFLOW_TRACKING_URI"]
        return MlflowClient(tracking_uri=uri, registry_uri=uri)

    def versions(self) -> list:
        return sorted(self.mlflow.search_model_versions(f"name = '{MODEL}'"), key=lambda v: int(v.version))

    def aliases(self) -> dict[str, str]:
        return {a: str(v) for a, v in (self.mlflow.get_registered_model(MODEL).aliases or {}).items()}

    def champion(self) -> str:
        return str(self.mlflow.get_model_version_by_alias(MODEL, "champion").version)

    def training_runs(self, week: date) -> list:
        client = self.mlflow
        experiment = client.get_experiment_by_name("weekly_retrain")
        return client.search_runs(
            [experiment.experiment_id], filter_string=f"tags.week = '{week.isoformat()}'"
        )

    def lake(self) -> Path:
        return Path(self.env["RECSYS_LAKE_DIR"])

    def stage(self, week: date, stage: str) -> dict:
        path = self.lake() / "runs" / f"week={week.isoformat()}" / f"{stage}.json"
        assert path.is_file(), f"no {stage} result for week {week}: {path}"
        return json.loads(path.read_text())

    def partitions(self, *layer: str) -> list[str]:
        folder = self.lake().joinpath(*layer)
        return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


SEED_CHAMPION = textwrap.dedent(
    """
    import json, sys
    from datetime import date
    from recsys.pipeline.context import StageContext
    from recsys.pipeline.runner import run_all
    results = run_all(StageContext.create(date.fromisoformat(sys.argv[1])))
    print(json.dumps({"register": results["register"].to_xcom(), "gate": results["gate"].passed}))
    """
)


@pytest.fixture(scope="module")
def stack(shared_standalone: SharedStandalone):
    """Synthetic history, a champion trained without Airflow on the newest week, on the shared Airflow.

    The champion is trained in a child process (its own Spark JVM, gone when it ends).
    """
    from recsys.data.synthetic import GeneratorConfig, generate
    from recsys.io.storage import Lake

    started = time.monotonic()
    # what is tested is how backfills run and register, not the tuning grid (tests elsewhere)
    folder, env = shared_standalone.tenant("backfill", {"tuning": {"enabled": False}})
    generate(
        Lake(Path(env["RECSYS_LAKE_DIR"])),
        GeneratorConfig(n_users=500, n_items=250, weeks=HISTORY_WEEKS, seed=11),
        NEWEST,
    )
    s = Stack(shared_standalone.root, env, shared_standalone.api, deadline=started + OVERALL_TIMEOUT)
    # a script file, not `python -c`: pyspark.sql.connect takes a __main__ without __file__ for
    # its doctest runner and exits 0 on import
    script = folder / "seed_champion.py"
    script.write_text(SEED_CHAMPION)
    seeded = subprocess.run(
        [sys.executable, str(script), NEWEST.isoformat()],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = seeded.stdout.strip().splitlines()
    assert seeded.returncode == 0 and lines, f"seeding the champion failed:\n{seeded.stderr[-5000:]}"
    print(f"\n[{time.monotonic() - started:5.0f}s] champion seeded: {lines[-1][:300]}")
    s.wait(shared_standalone.ready, "the API server, a healthy scheduler and the parsed Dag")
    print(f"[{time.monotonic() - started:5.0f}s] airflow is up on port {shared_standalone.port}")
    return s


def test_backfill_past_weeks_never_moves_champion_and_reuses_runs(stack: Stack):
    t0 = time.monotonic()
    stamp = lambda what: print(f"[test {time.monotonic() - t0:5.0f}s] {what}")  # noqa: E731

    # ---- before: the champion is version 1, trained in-process on the newest week ----------
    before = stack.versions()
    assert [(str(v.version), v.tags.get("week")) for v in before] == [("1", NEWEST.isoformat())], before
    assert stack.champion() == "1", "the seeding run's gate did not pass: no champion to protect"
    assert stack.api.get(f"/dags/{DAG_ID}").json()["is_paused"] is True

    # ---- a backfill of a paused Dag creates its runs, but they do not start ----------------
    first = stack.backfill(BACKFILLED[0], BACKFILLED[-1])
    assert first["max_active_runs"] == 1 and first["reprocess_behavior"] == "none", first
    runs = stack.backfill_runs()
    assert [r["logical_date"][:10] for r in runs] == [w.isoformat() for w in BACKFILLED], runs
    assert [r["data_interval_end"][:10] for r in runs] == [interval_end(w) for w in BACKFILLED]
    time.sleep(10)  # several scheduler loops
    assert {r["state"] for r in stack.backfill_runs()} == {"queued"}, stack.diagnostics()
    stamp("backfill created; its runs stay queued while the Dag is paused")

    response = stack.api.patch(f"/dags/{DAG_ID}", json={"is_paused": False})
    assert response.status_code == 200, response.text
    runs = stack.wait_backfill_done(first["id"])
    stamp("backfill complete")
    assert [r["run_type"] for r in stack.runs()] == ["backfill"] * len(BACKFILLED), (
        "only the backfill's runs exist"
    )
    assert [r["state"] for r in runs] == ["success"] * len(BACKFILLED), stack.diagnostics()
    # one at a time, oldest week first
    for earlier, later in zip(runs, runs[1:], strict=False):
        assert moment(earlier["end_date"]) <= moment(later["start_date"]), (earlier, later)

    # ---- one partition, one evaluation, one model version per week; champion untouched -----
    processed = sorted(w.isoformat() for w in [*BACKFILLED, NEWEST])
    # the seeding run's window stage anonymized every week of the history it trains on (2026-10-11 ..)
    history = [(NEWEST - timedelta(weeks=i)).isoformat() for i in range(HISTORY_WEEKS - 1, -1, -1)]
    assert stack.partitions("anonymized", "events") == [f"week={w}" for w in history]
    assert stack.partitions("prepared") == [f"week={w}" for w in processed]
    versions = stack.versions()
    assert len(versions) == 1 + len(BACKFILLED), [(v.version, v.tags.get("week")) for v in versions]
    by_week = {}
    for week, run in zip(BACKFILLED, runs, strict=True):
        assert (stack.lake() / "anonymized" / "events" / f"week={week}" / "data.parquet").is_file()
        assert (stack.lake() / "prepared" / f"week={week}" / "train.parquet").is_file()
        evaluated = stack.stage(week, "evaluate")
        assert evaluated["candidate"] and str(evaluated["champion_version"]) == "1", evaluated
        tagged = [v for v in versions if v.tags.get("week") == week.isoformat()]
        assert len(tagged) == 1, (week, [(v.version, v.tags) for v in tagged])
        version = tagged[0]
        assert version.tags.get("trigger") == "backfill", version.tags
        trained = stack.stage(week, "train")
        assert trained["reused"] is False and version.run_id == trained["run_id"], (trained, version)
        assert len(stack.training_runs(week)) == 1
        registered = stack.stage(week, "register")
        assert registered["promotion"] == "never" and registered["version"] == str(version.version), (
            registered
        )
        assert stack.stage(week, "recommend")["status"] == "skipped"
        states = stack.task_states(run["dag_run_id"])
        assert states["recommend"] == "skipped" and states["privacy_scan"] == "success", states
        by_week[week] = int(version.version)
    assert [by_week[w] for w in BACKFILLED] == sorted(by_week.values()), by_week  # created in week order
    assert not (stack.lake() / "recommendations" / f"week={BACKFILLED[0]}").exists()
    assert stack.aliases() == {"champion": "1"}, stack.aliases()

    stamp("backfilled weeks checked")

    # ---- re-running a finished week reuses its training run and its model version ----------
    run_before = next(r for r in runs if r["logical_date"][:10] == REPROCESSED.isoformat())
    trained_before = stack.stage(REPROCESSED, "train")
    again = stack.backfill(REPROCESSED, REPROCESSED, "--reprocess-behavior", "completed")
    assert again["reprocess_behavior"] == "completed", again
    rerun = stack.wait_backfill_done(again["id"])
    stamp("re-run of one week complete")
    # the finished run is cleared and queued again (same run id), no second run of the week
    assert [r["dag_run_id"] for r in rerun] == [r["dag_run_id"] for r in runs], rerun
    rerun_run = next(r for r in rerun if r["dag_run_id"] == run_before["dag_run_id"])
    assert rerun_run["state"] == "success", stack.diagnostics()
    assert moment(rerun_run["start_date"]) > moment(run_before["end_date"]), (run_before, rerun_run)
    trained = stack.stage(REPROCESSED, "train")
    assert trained["reused"] is True and trained["run_id"] == trained_before["run_id"], trained
    assert len(stack.training_runs(REPROCESSED)) == 1
    registered = stack.stage(REPROCESSED, "register")
    assert registered["version"] == str(by_week[REPROCESSED]) and registered["promotion"] == "never"
    assert stack.stage(REPROCESSED, "recommend")["status"] == "skipped"
    after = stack.versions()
    assert [(str(v.version), v.tags.get("week")) for v in after] == [
        (str(v.version), v.tags.get("week")) for v in versions
    ], "the re-run registered a new model version"
    assert stack.champion() == "1" and stack.aliases() == {"champion": "1"}
    stamp("checked")
