"""bench/dag.py's report: the growth exponent, the scaling and per-task tables, the targets' verdicts,
the plot, and the figures kept per shape."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

import bench.dag as dag
from bench.common import Measure, measure


def run(shape: str, pairs: int, wall: float, peak: float, engine: str = "auto") -> dict[str, object]:
    return {
        "shape": shape,
        "engine": engine,
        "users": 10,
        "titles": 5,
        "raw_events": pairs * 3,
        "pairs": pairs,
        "wall_seconds": wall,
        "run_seconds": wall - 5,
        "compute_seconds": wall - 10,
        "peak_gib": peak,
        "tasks": {
            "train": {"seconds": wall / 2, "compute": wall / 2 - 1, "peak_gib": peak},
            "gate": {"seconds": 1.0, "compute": 0.5, "peak_gib": 1.0},
        },
        "machine": "test machine",
    }


def test_growth_exponent_reads_the_log_log_slope():
    assert dag.growth_exponent([1e6, 1e7], [10.0, 100.0]) == pytest.approx(1.0)
    assert dag.growth_exponent([1e6, 1e7, 1e8], [10.0, 1000.0, 100000.0]) == pytest.approx(2.0)
    assert dag.growth_exponent([1e6, 1e7], [5.0, 5.0]) == pytest.approx(0.0)
    assert dag.growth_exponent([1e6], [10.0]) is None  # one size says nothing about growth
    assert dag.growth_exponent([1e6, 1e7], [10.0, 0.0]) is None  # a task missing at one size


def test_targets_judge_the_ten_million_shape_against_the_first():
    one, ten = run("1m", 1_000_000, 100.0, 4.0), run("10m", 10_000_000, 900.0, 9.0)
    verdicts = dag.targets([one, ten])
    assert "900 s, **not met**" in verdicts  # over 10 minutes
    assert "9.0 GiB, met" in verdicts
    assert "9.0x for 10.0x the pairs, met" in verdicts
    faster = dag.targets([one, run("10m", 10_000_000, 500.0, 13.0)])
    assert "500 s, met" in faster and "13.0 GiB, **not met**" in faster
    assert "open" in dag.targets([one])
    # a run on a forced engine is not the shape's verdict
    assert "open" in dag.targets([one, run("10m", 10_000_000, 500.0, 1.0, engine="spark")])
    # nor is a searching week's (--search): the verdict is a refitting week's, the searching one is named
    refitting = {**run("10m", 10_000_000, 500.0, 9.0), "search": False, "searched": False}
    searching = {**run("10m", 10_000_000, 800.0, 9.0), "search": True, "searched": True}
    both = dag.targets([one, searching, refitting])
    assert "500 s, met (10m (auto, refitting week))" in both
    assert "the searching week, one in tuning.every_weeks: 800 s" in both
    assert "open" in dag.targets([one, searching])


def test_tables_put_the_heaviest_task_first_with_its_growth():
    runs = dag.ordered({"10m": run("10m", 10_000_000, 1000.0, 9.0), "1m": run("1m", 1_000_000, 100.0, 4.0)})
    assert [r["shape"] for r in runs] == ["1m", "10m"]
    rows = dag.task_rows(runs)
    assert [r[0] for r in rows] == ["train", "gate", "**whole DAG (process)**"]
    assert rows[0][1:] == ["50.0 s, 4.0 GiB", "500.0 s, 9.0 GiB", "1.00"]
    assert rows[1][-1] == "0.00"
    scaling = dag.scaling_rows(runs)
    assert scaling[1][-1] == "10.0x / 10.0x" and scaling[0][6] == "10.0%"


def test_memory_samples_give_the_peak_within_a_span():
    start = datetime(2026, 1, 1, tzinfo=UTC)
    trace = Measure(
        samples=[
            (start + timedelta(seconds=s), rss) for s, rss in [(0, 1), (1, 2**30), (2, 3 * 2**30), (3, 2)]
        ]
    )
    assert trace.peak_between(start, start + timedelta(seconds=1.5)) == pytest.approx(1.0)
    assert trace.peak_between(start + timedelta(seconds=10), start + timedelta(seconds=11)) == 0.0


def test_figures_round_trip_and_a_corrupt_file_says_so(tmp_path):
    path = tmp_path / "figures.json"
    assert dag.load_results(path) == {}
    dag.save_results({"1m": run("1m", 1_000_000, 100.0, 4.0)}, path)
    assert dag.load_results(path)["1m"]["wall_seconds"] == 100.0
    path.write_text("{not json")
    with pytest.raises(SystemExit, match="not valid JSON"):
        dag.load_results(path)


def test_plot_is_written(tmp_path):
    path = tmp_path / "dag.png"
    dag.plot([run("1m", 1_000_000, 100.0, 4.0), run("3m", 3_000_000, 280.0, 6.0)], path)
    assert path.stat().st_size > 1000


def test_measure_keeps_timed_samples_only_when_asked():
    with measure(0.01, keep_samples=True) as kept:
        sum(range(200_000))
    with measure(0.01) as peak_only:
        sum(range(200_000))
    assert kept.samples and all(at.tzinfo is not None and rss > 0 for at, rss in kept.samples)
    assert kept.peak_rss_bytes >= max(rss for _, rss in kept.samples)
    assert not peak_only.samples and peak_only.peak_rss_bytes > 0


def test_a_kept_world_is_reused_only_for_its_recipe_and_its_copy_shares_only_data_files(tmp_path):
    world = tmp_path / "world-1m"
    lake = world / "home" / "lake" / "anonymized" / "events" / "week=2026-11-01"
    lake.mkdir(parents=True)
    (lake / "data.parquet").write_bytes(b"PAR1 rows")
    (lake / "_COMMITTED").write_text("{}")
    (world / "home" / "mlflow.db").write_bytes(b"sqlite")
    recipe = {"shape": {"users": 10}, "week": "2026-11-29", "window_weeks": 12}
    assert not dag._world_matches(world, recipe)  # no world.json: never reused
    (world / "world.json").write_text(dag.json.dumps({**recipe, "key": "k" * 64, "events": 123}))
    assert dag._world_matches(world, recipe)
    assert not dag._world_matches(world, {**recipe, "week": "2026-12-06"})  # another week is another world
    assert not dag._world_matches(world, {**recipe, "shape": {"users": 11}})
    assert dag._world_meta(world) == ("k" * 64, 123)

    copy = tmp_path / "run" / "home"
    dag._copy_world(world / "home", copy)
    copied = copy / "lake" / "anonymized" / "events" / "week=2026-11-01"
    assert (copied / "data.parquet").stat().st_ino == (lake / "data.parquet").stat().st_ino  # linked
    assert (copied / "_COMMITTED").stat().st_ino != (lake / "_COMMITTED").stat().st_ino  # copied
    assert (copy / "mlflow.db").stat().st_ino != (world / "home" / "mlflow.db").stat().st_ino
    (copy / "mlflow.db").write_bytes(b"changed by the run")
    assert (world / "home" / "mlflow.db").read_bytes() == b"sqlite"  # the kept world is untouched


def test_the_growth_leaves_a_searching_week_out():
    runs = [run("1m", 1_000_000, 100.0, 4.0), run("10m", 10_000_000, 1000.0, 9.0)]
    searching = {**run("10m", 10_000_000, 5000.0, 9.0), "search": True}
    rows = dag.task_rows([*runs, searching])
    assert rows[-1][0] == "**whole DAG (process)**" and rows[-1][-1] == "1.00"
    assert rows[-1][3] == "5,000 s, 9.0 GiB"  # still shown, beside the others
