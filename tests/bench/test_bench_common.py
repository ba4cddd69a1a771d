"""The benchmark helpers: generated shapes, list agreement, and the report sections."""

from __future__ import annotations

import bench.common as common
from bench.recommend import agreement


def test_generated_pairs_have_the_asked_shape_and_distinct_pairs():
    pairs = common.generated_pairs(600, 300, 20_000, seed=1)
    assert len(pairs) == 20_000
    assert not pairs.duplicated(["user", "item_id"]).any()
    assert pairs["user"].nunique() <= 600 and pairs["item_id"].between(0, 299).all()
    assert pairs["rating"].between(0.5, 5.0).all() and (pairs["strength"] == pairs["rating"] / 2.5).all()
    again = common.generated_pairs(600, 300, 20_000, seed=1)
    assert pairs.equals(again)  # same seed, same data


def test_agreement_counts_sets_order_and_ties():
    import numpy as np
    import pandas as pd

    from recsys.models.factors import FactorModel, seen_matrix

    users = np.array(["a", "b", "c"])
    items = np.arange(1, 12, dtype=np.int64)
    # one factor: item i scores i for every user, except items 9 and 10 which tie at 9.0
    item_factors = items.astype(np.float32).reshape(-1, 1)
    item_factors[9] = 9.0
    empty = pd.DataFrame({"user": pd.Series(dtype=str), "item_id": pd.Series(dtype=np.int64)})
    model = FactorModel(
        users, items, np.ones((3, 1), np.float32), item_factors, seen_matrix(empty, users, items), items
    )
    spark = {"a": [1, 2, 3], "b": [4, 5, 6], "c": [7, 8, 9]}
    ours = {"a": [1, 2, 3], "b": [5, 4, 6], "c": [7, 8, 10]}  # c: 10 ties with 9
    assert agreement(spark, ours, model) == (2 / 3, 1 / 3, 1.0)
    ours["c"] = [7, 8, 11]  # 11 scores higher than 9: a real difference
    assert agreement(spark, ours, model)[2] == 2 / 3


def test_sections_are_replaced_in_place(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "REPORT", tmp_path / "docs" / "benchmarks.md")
    common.write_section("one", "First", "alpha")
    common.write_section("two", "Second", "beta")
    common.write_section("one", "First", "gamma")
    text = common.REPORT.read_text()
    assert "gamma" in text and "alpha" not in text and "beta" in text
    assert text.index("First") < text.index("Second") and text.count("<!-- bench:one -->") == 1
    assert "Machine:" in text and "cores" in text


def test_dag_bench_reads_task_times_and_the_run_span(tmp_path):
    import sqlite3

    from bench.dag import task_spans

    with sqlite3.connect(tmp_path / "airflow.db") as db:
        db.execute(
            "create table task_instance (dag_id text, task_id text, duration real, state text, "
            "start_date text, end_date text)"
        )
        db.executemany(
            "insert into task_instance values (?, ?, ?, ?, ?, ?)",
            [
                (
                    "weekly_retrain",
                    "ingest",
                    2.5,
                    "success",
                    "2026-11-24 01:00:00.000000",
                    "2026-11-24 01:00:02.500000",
                ),
                (
                    "weekly_retrain",
                    "train",
                    10.0,
                    "success",
                    "2026-11-24 01:00:03.000000",
                    "2026-11-24 01:00:13.000000",
                ),
                (
                    "weekly_retrain",
                    "review",
                    None,
                    "skipped",
                    "2026-11-24 01:00:14.000000",
                    "2026-11-24 01:00:14.000000",
                ),
                (
                    "other_dag",
                    "train",
                    99.0,
                    "success",
                    "2026-11-24 00:00:00.000000",
                    "2026-11-24 02:00:00.000000",
                ),
            ],
        )
    tasks, span = task_spans(tmp_path, "weekly_retrain")
    assert {task: seconds for task, (seconds, _, _) in tasks.items()} == {"ingest": 2.5, "train": 10.0}
    assert (
        tasks["train"][2] - tasks["train"][1]
    ).total_seconds() == 10.0  # skipped tasks and other DAGs left out
    assert span == 14.0


def test_scaling_plot_is_written(tmp_path, monkeypatch):
    import bench.scaling as scaling

    monkeypatch.setattr(scaling, "PLOT", tmp_path / "scaling.png")
    rows = [
        ["100k", 100_000, "1 x 1", 2.0, 5.0, 0.01, 0.8, 1.0],
        ["1m", 1_000_000, "1 x 1", 8.0, 12.0, 0.05, 1.0, 2.0],
    ]
    scaling.plot(rows)
    assert scaling.PLOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_median_run_reports_the_median_call_and_the_last_result():
    import time

    import pytest

    calls = iter([0.0, 0.2, 0.05])

    def run() -> float:
        pause = next(calls)
        time.sleep(pause)
        return pause

    result, measured = common.median_run(run, repeats=3)
    assert result == 0.05  # the last call's result
    assert 0.04 <= measured.seconds < 0.19  # the median (0.05 s), not the mean or the total
    assert measured.peak_rss_bytes > 0
    with pytest.raises(ValueError, match="repeats"):
        common.median_run(run, repeats=0)
