"""End to end: the weekly retrain DAG through Airflow, at several data sizes.

A synthetic world is generated with 12 weekly partitions (the training window) at one of the
shapes below (users and titles as in the MovieLens release of that size, the events per user-week
set so the window prepares to about that many distinct (user, title) pairs). The 11 weeks before the
run's week are ingested, validated and anonymized first, and the week before is prepared and trained
(as earlier weekly runs would have done; not timed), so the run's week refits that week's search of
hyper-parameters and blend, as three weeks in four do (``--search``: it searches again); then ``airflow dags test weekly_retrain`` runs the week: ingest, validate and anonymize
of the new week, prepare over the 12-week window, Spark ALS training, evaluation, the gate,
registration, the recommendations and the privacy scan, on the embedded defaults (SQLite metadata,
local Spark, a local MLflow store, the ``auto`` engine unless ``--engine`` says otherwise).

Reported per shape: the DAG's wall time (the ``airflow dags test`` process, and the DAG run in
Airflow's metadata), each task's wall time from Airflow's task instances next to the stage's own
compute (``compute_seconds``, timed around the stage function by
:func:`recsys.pipeline.runner.run_stage`), the peak resident memory of the Airflow process and
everything it starts (the Spark JVM) over the whole run and within each task's span, and the
orchestration overhead. Each shape's figures are kept in ``docs/benchmarks-dag.json``, so shapes
can be measured one at a time; the section in docs/benchmarks.md is rebuilt from all of them, with
a scaling table and a log-log plot (docs/benchmarks-dag.png).

    .venv/bin/python -m bench.dag [--shape 1m|3m|10m|25m] [--engine auto|pandas|spark] [--keep] [--reuse-world]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from bench.common import REPORT, ROOT, machine, measure, table, write_section

WORK = ROOT / "var" / "bench-dag"
WINDOW_WEEKS = 12
RESULTS = REPORT.parent / "benchmarks-dag.json"
PLOT = REPORT.parent / "benchmarks-dag.png"


@dataclass(frozen=True)
class Shape:
    users: int
    titles: int
    events_per_user_week: float
    #: distinct (user, title) pairs the shape is named for
    pairs: int


#: name -> shape; users and titles as in the MovieLens releases of that size
SHAPES = {
    "1m": Shape(6_040, 3_706, 64.0, 1_000_209),
    "3m": Shape(21_000, 6_500, 48.0, 3_000_000),
    "10m": Shape(69_878, 10_677, 46.0, 10_000_054),
    "25m": Shape(162_541, 59_047, 48.0, 25_000_095),
}


def environment(work: Path, config_file: Path | None = None, key: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        AIRFLOW_HOME=str(work / "airflow"),
        AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(ROOT / "plugins"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__UNIT_TEST_MODE="False",
        RECSYS_HOME=str(work / "home"),
        RECSYS_PSEUDONYM_KEY=key or secrets.token_hex(32),
        PYTHONWARNINGS="ignore::DeprecationWarning,ignore::FutureWarning",
    )
    for name in ("RECSYS_LAKE_DIR", "RECSYS_LAKE_URI", "MLFLOW_TRACKING_URI", "RECSYS_CONFIG"):
        env.pop(name, None)  # embedded defaults only
    if config_file is not None:
        env["RECSYS_CONFIG"] = str(config_file)
    return env


def prepare_world(work: Path, env: dict[str, str], shape: Shape, end_week: date) -> int:
    """Generate the world and process the weeks before ``end_week``; returns the raw event lines."""
    from recsys.data.synthetic import GeneratorConfig, generate
    from recsys.io.storage import Lake
    from recsys.pipeline.context import StageContext
    from recsys.pipeline.runner import run_stage

    os.environ.update({k: env[k] for k in ("RECSYS_HOME", "RECSYS_PSEUDONYM_KEY")})
    if "RECSYS_CONFIG" in env:
        os.environ["RECSYS_CONFIG"] = env["RECSYS_CONFIG"]
    config = GeneratorConfig(
        n_users=shape.users,
        n_items=shape.titles,
        weeks=WINDOW_WEEKS,
        events_per_user_week=shape.events_per_user_week,
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
    # the week before is trained as its own weekly run would have trained it: its search (tuning grid,
    # hybrid blend) is what the run's week refits, as three weeks in four do (tuning.every_weeks). In a
    # process of its own, as a task would be: a Spark JVM left in this one would sit beside the DAG run
    before = result.weeks[-2].isoformat()
    for stage in ("prepare", "content", "train"):
        subprocess.run(
            [sys.executable, "-m", "recsys.cli.main", "stage", stage, "--date", before], env=env, check=True
        )
    print(f"  trained week {before} (prepare, content, train: the search the next week refits)", flush=True)
    return sum(result.rows_per_week.values())


# ---- measuring -----------------------------------------------------------------------------------


def task_spans(airflow_home: Path, dag_id: str) -> tuple[dict[str, tuple[float, datetime, datetime]], float]:
    """task -> (Airflow's duration, start, end) of each successful task instance, and the run's span
    (first task start to last task end, skipped tasks included), from the metadata DB (SQLite
    here). ``dags test`` stamps the run's own start_date with its logical date, so the span is taken
    from the task instances."""
    with sqlite3.connect(airflow_home / "airflow.db") as db:
        rows = db.execute(
            "select task_id, duration, state, start_date, end_date from task_instance where dag_id = ?",
            (dag_id,),
        ).fetchall()
    tasks = {
        task: (float(duration or 0.0), _parse(start), _parse(end))
        for task, duration, state, start, end in rows
        if state == "success" and start and end
    }
    starts = [_parse(start) for _, _, _, start, _ in rows if start]
    ends = [_parse(end) for _, _, _, _, end in rows if end]
    span = (max(ends) - min(starts)).total_seconds() if starts and ends else 0.0
    return tasks, span


def _parse(value: str) -> datetime:
    stamp = datetime.fromisoformat(value.replace(" ", "T"))
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


STAGES = {
    "ingest",
    "validate",
    "anonymize",
    "prepare",
    "train",
    "evaluate",
    "gate",
    "register",
    "recommend",
    "promote",
    "privacy_scan",
}


def run_shape(
    name: str, engine: str, keep: bool, reuse_world: bool = False, search: bool = False
) -> dict[str, object]:
    """Generate the world at ``name``'s shape (or, with ``reuse_world``, take the one kept by an earlier
    run of this shape and week), run the DAG's week through Airflow, and return the figures (also kept
    in RESULTS). The week refits the search of the week before unless ``search`` (every_weeks 1)."""
    from recsys.core.intervals import week_start_of
    from recsys.io.storage import Lake
    from recsys.pipeline.results import RESULT_TYPES, PrepareResult, TrainResult

    shape = SHAPES[name]
    week = week_start_of(date.today()) - timedelta(weeks=1)
    world = WORK / f"world-{name}"
    recipe = {
        "shape": asdict(shape),
        "week": week.isoformat(),
        "window_weeks": WINDOW_WEEKS,
        "week_before_trained": True,
    }
    cached = reuse_world and _world_matches(world, recipe)
    for path in WORK.glob("*") if WORK.exists() else ():
        if path == world and cached or path.name.startswith("world-") and path != world:
            continue  # the worlds kept for other shapes stay too
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    WORK.mkdir(parents=True, exist_ok=True)
    config_file = None
    overrides: dict[str, object] = {} if engine == "auto" else {"engine": {"engine": engine}}
    if search:  # the week searches although the week before did: a searching week's cost
        overrides["tuning"] = {"every_weeks": 1}
    if overrides:
        config_file = WORK / "config.json"
        config_file.write_text(json.dumps(overrides))
    if cached:
        key, events = _world_meta(world)
        env = environment(WORK, config_file, key)
        print(f"the {name} world of week {week} from {world} (--reuse-world)", flush=True)
        _copy_world(world / "home", WORK / "home")
    else:
        env = environment(WORK, config_file)
        print(
            f"generating {WINDOW_WEEKS} weeks at {name} shape ({shape.users:,} users x {shape.titles:,} "
            f"titles, {shape.events_per_user_week:g} events per active user-week), run week {week}",
            flush=True,
        )
        started = time.perf_counter()
        events = prepare_world(WORK, env, shape, week)
        print(f"  the world and its 11 earlier weeks took {time.perf_counter() - started:.0f} s", flush=True)
        if reuse_world:  # kept for the next run at this shape, as it is before the DAG run
            _copy_world(WORK / "home", world / "home")
            meta = {**recipe, "key": env["RECSYS_PSEUDONYM_KEY"], "events": events}
            (world / "world.json").touch(mode=0o600)  # it holds the world's pseudonym key
            (world / "world.json").write_text(json.dumps(meta), encoding="utf-8")
    airflow = str(Path(sys.executable).with_name("airflow"))
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True)

    day = (week + timedelta(weeks=1)).isoformat()
    log_file = WORK / "dags-test.log"
    print(f"airflow dags test weekly_retrain {day} (log: {log_file})", flush=True)
    with measure(0.2, keep_samples=True) as trace, log_file.open("w") as out:
        started = time.perf_counter()
        proc = subprocess.run(
            [airflow, "dags", "test", "weekly_retrain", day], env=env, stdout=out, stderr=subprocess.STDOUT
        )
        wall = time.perf_counter() - started
    if proc.returncode != 0:
        print(log_file.read_text()[-3000:])
        raise SystemExit(f"the DAG run failed (exit {proc.returncode}); log: {log_file}")
    spans, run_seconds = task_spans(WORK / "airflow", "weekly_retrain")
    lake = Lake(WORK / "home" / "lake")
    tasks: dict[str, dict[str, float | None]] = {}
    for task, (seconds, start, end) in spans.items():
        compute = None
        if task in STAGES:
            record = lake.read_stage_result(week, task)
            result = RESULT_TYPES[task].from_record(record) if record else None
            compute = float(result.compute_seconds or 0.0) if result else None
        tasks[task] = {"seconds": seconds, "compute": compute, "peak_gib": trace.peak_between(start, end)}
    record = lake.read_stage_result(week, TrainResult.stage)
    trained = TrainResult.from_record(record) if record else None
    searched = bool(trained and trained.tuning and "reused_from" not in trained.tuning)
    record = lake.read_stage_result(week, PrepareResult.stage)
    prepared = PrepareResult.from_record(record) if record else None
    train_pairs, holdout_pairs = (prepared.train_pairs, prepared.holdout_pairs) if prepared else (0, 0)
    figures: dict[str, object] = {
        "shape": name,
        "engine": engine,
        "search": search,
        "searched": searched,
        "users": shape.users,
        "titles": shape.titles,
        "events_per_user_week": shape.events_per_user_week,
        "raw_events": events,
        "pairs": train_pairs + holdout_pairs,
        "train_pairs": train_pairs,
        "holdout_pairs": holdout_pairs,
        "wall_seconds": wall,
        "run_seconds": run_seconds,
        "compute_seconds": sum(t["compute"] or 0.0 for t in tasks.values()),
        "peak_gib": trace.peak_gib,
        "tasks": tasks,
        "machine": machine(),
    }
    print(
        f"{name}: DAG {wall:.1f}s process wall ({run_seconds:.1f}s DAG run), peak {trace.peak_gib:.2f} GiB; "
        f"{events:,} raw event lines, {figures['pairs']:,} prepared pairs",
        flush=True,
    )
    if not keep:  # tolerant: a process the run started may still be removing its own files
        for path in WORK.glob("*"):
            if not path.name.startswith("world-") or path == world and not reuse_world:
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    return figures


def _world_matches(world: Path, recipe: dict[str, object]) -> bool:
    try:
        meta = json.loads((world / "world.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return all(meta.get(k) == v for k, v in recipe.items()) and (world / "home").is_dir()


def _world_meta(world: Path) -> tuple[str, int]:
    meta = json.loads((world / "world.json").read_text(encoding="utf-8"))
    return str(meta["key"]), int(meta["events"])


def _copy_world(source: Path, target: Path) -> None:
    """A copy of a world's home that shares the lake's data files by hard link (the lake writes new
    files and renames them into place, never rewrites one) and copies everything else (the SQLite
    stores, and the small files a run might rewrite: records, leases), all but Spark's scratch."""
    lake = source / "lake"

    def link_or_copy(src: str, dst: str) -> object:
        if Path(src).is_relative_to(lake) and Path(src).suffix in {".parquet", ".csv", ".gz"}:
            try:
                os.link(src, dst)
                return dst
            except OSError:
                pass
        return shutil.copy2(src, dst)

    shutil.rmtree(target, ignore_errors=True)
    # Spark's scratch is left out: a JVM that outlived its task may still be removing its files
    shutil.copytree(source, target, copy_function=link_or_copy, ignore=shutil.ignore_patterns("spark-tmp"))


# ---- the report ----------------------------------------------------------------------------------


def load_results(path: Path = RESULTS) -> dict[str, dict[str, object]]:
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SystemExit(f"{path} is not valid JSON ({exc}); remove it to start the figures afresh") from exc


def save_results(results: dict[str, dict[str, object]], path: Path = RESULTS) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)


def ordered(results: dict[str, dict[str, object]]) -> list[dict[str, object]]:
    return sorted(results.values(), key=lambda r: float(r["pairs"]))


def growth_exponent(pairs: list[float], seconds: list[float]) -> float | None:
    """The slope of log(seconds) against log(pairs), least squares: 1 is linear in the data."""
    import numpy as np

    points = [(p, s) for p, s in zip(pairs, seconds, strict=True) if p > 0 and s > 0]
    if len(points) < 2:
        return None
    x = np.log([p for p, _ in points])
    y = np.log([s for _, s in points])
    return float(np.polyfit(x, y, 1)[0])


def scaling_rows(runs: list[dict[str, object]]) -> list[list[object]]:
    base = runs[0]
    rows = []
    for run in runs:
        wall = float(run["wall_seconds"])
        rows.append(
            [
                label(run),
                f"{run['users']:,} x {run['titles']:,}",
                int(run["raw_events"]),
                int(run["pairs"]),
                wall,
                float(run["run_seconds"]),
                f"{(wall - float(run['compute_seconds'])) / wall:.1%}",
                float(run["peak_gib"]),
                f"{float(run['pairs']) / float(base['pairs']):.1f}x / {wall / float(base['wall_seconds']):.1f}x",
            ]
        )
    return rows


def label(run: dict[str, object]) -> str:
    """A run's name in the tables: its shape, engine and whether its week searched (tuning grid and
    blend: one week in ``tuning.every_weeks``) or refitted the search of the week before."""
    week = "searching week" if run.get("searched", True) else "refitting week"
    return f"{run['shape']} ({run['engine']}, {week})"


def task_rows(runs: list[dict[str, object]]) -> list[list[object]]:
    names = sorted(
        {task for run in runs for task in run["tasks"]},
        key=lambda task: -max(float(run["tasks"].get(task, {}).get("seconds", 0.0)) for run in runs),
    )
    # the growth is read over the runs of one kind of week: a searching week (--search) does more work
    alike = [run for run in runs if not run.get("search")]
    pairs = [float(run["pairs"]) for run in alike]
    rows = []
    for task in names:
        cells: list[object] = [task]
        for run in runs:
            figures = run["tasks"].get(task)
            cells.append(f"{figures['seconds']:,.1f} s, {figures['peak_gib']:.1f} GiB" if figures else "")
        slope = growth_exponent(
            pairs, [float(run["tasks"].get(task, {}).get("seconds", 0.0)) for run in alike]
        )
        cells.append("" if slope is None else f"{slope:.2f}")
        rows.append(cells)
    slope = growth_exponent(pairs, [float(run["wall_seconds"]) for run in alike])
    rows.append(
        ["**whole DAG (process)**"]
        + [f"{float(run['wall_seconds']):,.0f} s, {float(run['peak_gib']):.1f} GiB" for run in runs]
        + ["" if slope is None else f"{slope:.2f}"]
    )
    return rows


def plot(runs: list[dict[str, object]], path: Path = PLOT, top: int = 5) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = [float(run["pairs"]) for run in runs]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    ax.plot(pairs, [float(run["wall_seconds"]) for run in runs], "o-", linewidth=2.5, label="whole DAG")
    first = float(runs[0]["wall_seconds"])
    ax.plot(
        pairs, [first * p / pairs[0] for p in pairs], "k:", label="linear in the data (from the first size)"
    )
    heaviest = sorted(
        {task for run in runs for task in run["tasks"]},
        key=lambda task: -float(runs[-1]["tasks"].get(task, {}).get("seconds", 0.0)),
    )[:top]
    for task in heaviest:
        ax.plot(
            pairs,
            [float(run["tasks"].get(task, {}).get("seconds", float("nan"))) for run in runs],
            "s--",
            label=task,
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("prepared (user, title) pairs in the 12-week window")
    ax.set_ylabel("seconds (wall)")
    ax.set_title("Weekly retrain DAG through Airflow by data size (2 cores)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def targets(runs: list[dict[str, object]]) -> str:
    # the weekly figure is a refitting week's (three weeks in four); runs from before the search
    # cadence (no "searched" figure) searched every week
    auto = [run for run in runs if run["engine"] == "auto" and not run.get("search")]
    by_shape = {run["shape"]: run for run in auto}
    lines = []
    ten = by_shape.get("10m")
    if ten is None:
        return "The 10M-pair shape has not been measured yet, so the targets below are open.\n"
    wall, peak = float(ten["wall_seconds"]), float(ten["peak_gib"])
    lines.append(
        f"* 10m shape under 10 minutes: {wall:,.0f} s, {'met' if wall < 600 else '**not met**'} ({label(ten)})"
    )
    searching = next(
        (r for r in runs if r["shape"] == "10m" and r.get("search") and r["engine"] == "auto"), None
    )
    if searching is not None:
        lines.append(
            f"  (the searching week, one in tuning.every_weeks: {float(searching['wall_seconds']):,.0f} s)"
        )
    lines.append(f"* 10m shape peak under 12 GiB: {peak:.1f} GiB, {'met' if peak < 12 else '**not met**'}")
    one = by_shape.get("1m")
    if one is not None:
        growth = wall / float(one["wall_seconds"])
        data = float(ten["pairs"]) / float(one["pairs"])
        lines.append(
            f"* cost from 1m to 10m no faster than the data (at most 11x): {growth:.1f}x for {data:.1f}x the pairs, "
            f"{'met' if growth <= 11 else '**not met**'}"
        )
    return "\n".join(lines) + "\n"


def report(results: dict[str, dict[str, object]]) -> Path:
    runs = ordered(results)
    plot(runs)
    body = (
        f"Each size is a synthetic world of {WINDOW_WEEKS} weekly partitions (users and titles as in the "
        "MovieLens release of that size); the 11 earlier weeks were ingested, validated and anonymized "
        "before, and `airflow dags test weekly_retrain` runs the new week and everything after on the "
        "embedded defaults (SQLite metadata, local Spark, local MLflow store; the engine in brackets). "
        "A *refitting week* refits the search (tuning grid, hybrid blend) of the week before, which the "
        "world trained beforehand, as three weeks in four do (`tuning.every_weeks`); a *searching week* "
        "searches again (`--search`; every week before the cadence, so in rows measured before "
        "2026-12-08). "
        "Peak memory is the Airflow process and everything it starts (the Spark JVM), over the run and "
        "within each task's span. Each size was measured by `python -m bench.dag --shape NAME` at the "
        "time its row names (docs/benchmarks-dag.json keeps them); figures from a busy machine are not "
        "comparable.\n\n"
        + targets(runs)
        + "\n"
        + table(
            [
                "shape (engine)",
                "users x titles",
                "raw event lines",
                "prepared pairs",
                "DAG process s",
                "DAG run s",
                "orchestration overhead",
                "peak GiB",
                "data / cost vs first",
            ],
            scaling_rows(runs),
        )
        + "\n\nPer task: Airflow's task duration and the peak memory within it; the last column is the growth "
        "exponent b of time ~ pairs^b over the sizes, searching weeks left out (1 = linear in the data).\n\n"
        + table(["task", *[str(run["shape"]) for run in runs], "growth b"], task_rows(runs))
        + "\n\nWhen each size was measured:\n\n"
        + "\n".join(f"* {run['shape']}: {run['machine']}" for run in runs)
        + f"\n\n![DAG by size]({PLOT.name})"
    )
    return write_section("dag", "End to end: the weekly DAG by data size", body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", choices=list(SHAPES), default="1m")
    parser.add_argument("--engine", choices=["auto", "pandas", "spark"], default="auto")
    parser.add_argument(
        "--events-per-user-week", type=float, help="override the shape's mean events per active user-week"
    )
    parser.add_argument("--report-only", action="store_true", help=f"rebuild the section from {RESULTS.name}")
    parser.add_argument("--keep", action="store_true", help=f"keep {WORK} afterwards")
    parser.add_argument(
        "--reuse-world",
        action="store_true",
        help=f"keep the generated, pre-processed world under {WORK}/world-SHAPE and start from it when it is "
        "there (same shape and week): a second engine at 10m saves the half hour of preparing it",
    )
    parser.add_argument(
        "--search",
        action="store_true",
        help="the week searches its hyper-parameters and blend (tuning.every_weeks 1), as one week in four "
        "does; by default it refits the search of the week before, as the other three do",
    )
    args = parser.parse_args(argv)
    results = load_results()
    if not args.report_only:
        if args.events_per_user_week is not None:
            shape = SHAPES[args.shape]
            SHAPES[args.shape] = Shape(shape.users, shape.titles, args.events_per_user_week, shape.pairs)
        figures = run_shape(args.shape, args.engine, args.keep, args.reuse_world, args.search)
        key = args.shape if args.engine == "auto" else f"{args.shape} {args.engine}"
        results[key + (" search" if args.search else "")] = figures
        save_results(results)
    if not results:
        raise SystemExit(f"no figures in {RESULTS}: run a shape first (--shape 1m)")
    path = report(results)
    print(f"written to {path} and {PLOT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
