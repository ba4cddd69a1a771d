"""End to end: the weekly retrain DAG on data at MovieLens-1M shape, through Airflow.

A synthetic world of 6,040 users and 3,706 titles is generated with 12 weekly partitions (the
training window), about a million distinct (user, title) pairs in all. The 11 weeks before the run's
week are ingested, validated and anonymized first (as earlier weekly runs would have done; not
timed); then ``airflow dags test weekly_retrain`` runs the week: ingest, validate and anonymize of
the new week, prepare over the 12-week window, Spark ALS training, evaluation, the gate,
registration and the recommendations, on the embedded defaults (SQLite metadata, local Spark, a
local MLflow store).

Reported: the DAG's wall time (the ``airflow dags test`` process, and the DAG run in Airflow's
metadata), each task's wall time from Airflow's task instances next to the stage's own compute
(``compute_seconds``, timed around the stage function by :func:`recsys.pipeline.runner.run_stage`), and the
orchestration overhead = DAG wall time minus the sum of the stages' compute, as a share of the wall
time. Peak memory is the Airflow process and everything it starts (the Spark JVM).

    .venv/bin/python -m bench.dag [--events-per-user-week 64] [--keep]
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
import time
from datetime import date, datetime, timedelta
from pathlib import Path

from bench.common import ROOT, SHAPES, measure, table, write_section

WORK = ROOT / "var" / "bench-dag"
WINDOW_WEEKS = 12


def environment(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        AIRFLOW_HOME=str(work / "airflow"),
        AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(ROOT / "plugins"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__UNIT_TEST_MODE="False",
        RECSYS_HOME=str(work / "home"),
        RECSYS_PSEUDONYM_KEY=secrets.token_hex(32),
        PYTHONWARNINGS="ignore::DeprecationWarning,ignore::FutureWarning",
    )
    for name in ("RECSYS_LAKE_DIR", "RECSYS_LAKE_URI", "MLFLOW_TRACKING_URI", "RECSYS_CONFIG"):
        env.pop(name, None)  # embedded defaults only
    return env


def prepare_world(work: Path, env: dict[str, str], events_per_user_week: float, end_week: date) -> int:
    """Generate the world and process the weeks before ``end_week``; returns the raw event lines."""
    from recsys.data.synthetic import GeneratorConfig, generate
    from recsys.io.storage import Lake
    from recsys.pipeline.context import StageContext
    from recsys.pipeline.runner import run_stage

    os.environ.update({k: env[k] for k in ("RECSYS_HOME", "RECSYS_PSEUDONYM_KEY")})
    n_users, n_items, _ = SHAPES["ml-1m shape"]
    config = GeneratorConfig(
        n_users=n_users,
        n_items=n_items,
        weeks=WINDOW_WEEKS,
        events_per_user_week=events_per_user_week,
        new_items_per_week=0,
        seed=7,
    )
    lake = Lake(work / "home" / "lake")
    result = generate(lake, config, end_week, progress=lambda line: print(f"  {line}", flush=True))
    for week in result.weeks[:-1]:
        ctx = StageContext.create(week)
        for stage in ("ingest", "validate", "anonymize"):
            run_stage(stage, ctx)
        print(f"  processed week {week} (ingest, validate, anonymize)", flush=True)
    return sum(result.rows_per_week.values())


def task_times(airflow_home: Path, dag_id: str) -> tuple[dict[str, float], float]:
    """Each task's wall seconds, and the run's span (first task start to last task end), from
    Airflow's metadata DB (SQLite here). ``dags test`` stamps the run's own start_date with its
    logical date, so the span is taken from the task instances."""
    with sqlite3.connect(airflow_home / "airflow.db") as db:
        rows = db.execute(
            "select task_id, duration, state, start_date, end_date from task_instance where dag_id = ?",
            (dag_id,),
        ).fetchall()
    tasks = {task: float(duration or 0.0) for task, duration, state, _, _ in rows if state == "success"}
    starts = [_parse(start) for _, _, _, start, _ in rows if start]
    ends = [_parse(end) for _, _, _, _, end in rows if end]
    return tasks, (max(ends) - min(starts)).total_seconds()


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace(" ", "T"))


STAGE_OF_TASK = {
    "ingest": "ingest",
    "validate": "validate",
    "anonymize": "anonymize",
    "prepare": "prepare",
    "train": "train",
    "evaluate": "evaluate",
    "gate": "gate",
    "register": "register",
    "recommend": "recommend",
    "promote": "promote",
    "privacy_scan": "privacy_scan",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events-per-user-week", type=float, default=64.0)
    parser.add_argument("--keep", action="store_true", help=f"keep {WORK} afterwards")
    args = parser.parse_args(argv)

    from recsys.core.intervals import week_start_of
    from recsys.io.storage import Lake
    from recsys.pipeline.results import RESULT_TYPES, PrepareResult

    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    env = environment(WORK)
    airflow = str(Path(sys.executable).with_name("airflow"))
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True)
    week = week_start_of(date.today()) - timedelta(weeks=1)
    print(f"generating {WINDOW_WEEKS} weeks at ml-1m shape, run week {week}", flush=True)
    events = prepare_world(WORK, env, args.events_per_user_week, week)

    day = (week + timedelta(weeks=1)).isoformat()
    log_file = WORK / "dags-test.log"
    print(f"airflow dags test weekly_retrain {day} (log: {log_file})", flush=True)
    with measure() as whole, log_file.open("w") as out:
        started = time.perf_counter()
        proc = subprocess.run(
            [airflow, "dags", "test", "weekly_retrain", day], env=env, stdout=out, stderr=subprocess.STDOUT
        )
        wall = time.perf_counter() - started
    if proc.returncode != 0:
        print(log_file.read_text()[-3000:])
        raise SystemExit(f"the DAG run failed (exit {proc.returncode}); log: {log_file}")
    tasks, run_seconds = task_times(WORK / "airflow", "weekly_retrain")
    lake = Lake(WORK / "home" / "lake")
    rows = []
    compute_total = 0.0
    for task, seconds in sorted(tasks.items(), key=lambda kv: -kv[1]):
        stage = STAGE_OF_TASK.get(task)
        record = lake.read_stage_result(week, stage) if stage else None
        result = RESULT_TYPES[stage].from_record(record) if stage and record else None
        compute = float(result.compute_seconds or 0.0) if result else 0.0
        compute_total += compute
        rows.append([task, seconds, compute if stage else "(no stage)"])
    record = lake.read_stage_result(week, PrepareResult.stage)
    prepared = PrepareResult.from_record(record) if record else None
    train_pairs, holdout_pairs = (prepared.train_pairs, prepared.holdout_pairs) if prepared else (0, 0)
    pairs = train_pairs + holdout_pairs
    overhead = (wall - compute_total) / wall
    overhead_run = (run_seconds - compute_total) / run_seconds
    print(
        f"DAG: {wall:.1f}s process wall ({run_seconds:.1f}s DAG run), stages' compute {compute_total:.1f}s, "
        f"orchestration overhead {overhead:.1%} of the process ({overhead_run:.1%} of the DAG run); "
        f"peak {whole.peak_gib:.2f} GiB; {events:,} raw event lines, {pairs:,} prepared pairs"
    )
    body = (
        f"{events:,} raw event lines over {WINDOW_WEEKS} weekly partitions ({SHAPES['ml-1m shape'][0]:,} users, "
        f"{SHAPES['ml-1m shape'][1]:,} titles); the window prepares to {pairs:,} (user, title) pairs "
        f"(train + holdout: {train_pairs:,} + {holdout_pairs:,}). "
        "The 11 earlier weeks were ingested, validated and anonymized before (as earlier weekly "
        "runs would have); the DAG run does the new week and everything after. Embedded defaults: "
        "SQLite metadata, local Spark, local MLflow store.\n\n"
        + table(
            ["", "seconds"],
            [
                ["`airflow dags test` process (start, parse, run, exit)", wall],
                ["DAG run (first task start to last task end)", run_seconds],
                ["sum of the stages' own compute", compute_total],
                ["orchestration overhead (process wall - compute) / wall", f"{overhead:.1%}"],
                ["orchestration overhead (DAG run - compute) / DAG run", f"{overhead_run:.1%}"],
                ["peak memory, GiB (Airflow + Spark JVM)", whole.peak_gib],
            ],
        )
        + "\n\nPer task (Airflow's task instance duration) and the stage's compute inside it:\n\n"
        + table(["task", "task seconds", "stage compute seconds"], rows)
    )
    path = write_section("dag", "End to end: weekly DAG at ml-1m shape", body)
    print(f"written to {path}")
    if not args.keep:
        shutil.rmtree(WORK, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
