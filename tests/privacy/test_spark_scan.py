"""The leak scan on Spark: one week scanned both ways gives the same report, leaks planted in Parquet
columns of every shape are found by both, and the raw identifiers are collected alike (malformed
lines included)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.data.raw import raw_file
from recsys.data.synthetic import GeneratorConfig, generate
from recsys.io.spark import EngineConfig
from recsys.io.storage import Lake, write_json, write_parquet, write_text
from recsys.privacy import scan_for_leaks
from recsys.privacy.scan import (
    collect_identifiers,
    collect_identifiers_spark,
    text_candidates,
    window_rows,
)
from tests.privacy.test_scan import OLD_USER, USERS, WEEK, build_lake

PANDAS = EngineConfig(engine="pandas")
SPARK = EngineConfig(engine="spark")


def both_ways(settings) -> tuple[dict, dict]:
    pandas_report = scan_for_leaks(settings, WEEK, mlflow=False, engine=PANDAS).to_dict()
    spark_report = scan_for_leaks(settings, WEEK, mlflow=False, engine=SPARK).to_dict()
    return pandas_report, spark_report


def plant_leaks(lake: Lake) -> None:
    jane, omar, li = USERS.to_dict("records")
    recs_path = lake.partition("recommendations", WEEK) / "recommendations.parquet"
    recs = pd.read_parquet(recs_path)
    recs.loc[1, "user"] = omar["user_id"]  # a raw user id where a pseudonym belongs
    recs["note"] = [f"for {jane['email'].upper()} today", "", "x", "", "", "ask 8.8.4.4"]
    write_parquet(recs, recs_path)
    table = pa.table(
        {
            "client": pa.array([jane["ip_address"], "10.0.0.1", jane["ip_address"]]).dictionary_encode(),
            "tags": pa.array([["a", li["name"]], None, ["b"]], pa.list_(pa.string())),
            "meta": pa.array(
                [{"who": OLD_USER["email"], "n": 1}, {"who": None, "n": 2}, None],
                pa.struct([("who", pa.string()), ("n", pa.int64())]),
            ),
            "user_id": pa.array([196, 7, 3], pa.int64()),
            "score": pa.array([0.1, 0.2, 0.3]),
        }
    )
    pq.write_table(table, lake.partition("prepared", WEEK) / "extra.parquet")
    write_json(lake.stage_result_file(WEEK, "train"), {"example_device": omar["device_id"]})


def test_a_clean_week_is_clean_both_ways(settings, spark):
    build_lake(settings.lake_dir)
    pandas_report, spark_report = both_ways(settings)
    assert pandas_report["clean"], pandas_report["findings"]
    assert spark_report == pandas_report


def test_planted_leaks_are_found_alike_both_ways(settings, spark):
    lake = build_lake(settings.lake_dir)
    plant_leaks(lake)
    pandas_report, spark_report = both_ways(settings)
    found = {
        (f["location"].rsplit("/", 1)[-1], f["kind"], f["matched"], f["count"])
        for f in pandas_report["findings"]
    }
    assert found == {
        ("recommendations.parquet[user]", "user_id", "input", 1),
        ("recommendations.parquet[note]", "email", "input", 1),
        ("recommendations.parquet[note]", "ip", "pattern", 1),
        ("extra.parquet[client]", "ip", "input", 2),
        ("extra.parquet[tags]", "name", "input", 1),
        ("extra.parquet[meta]", "email", "input", 1),
        ("train.json", "device_id", "input", 1),
    }
    assert spark_report == pandas_report
    assert spark_report["checked"]["parquet_columns"] == pandas_report["checked"]["parquet_columns"] > 0


def test_a_corrupt_parquet_file_is_unreadable_both_ways(settings, spark):
    lake = build_lake(settings.lake_dir)
    (lake.partition("prepared", WEEK) / "broken.parquet").write_bytes(b"PAR1 not really")
    pandas_report, spark_report = both_ways(settings)
    assert [u["location"] for u in pandas_report["unscanned"]] == [
        f"lake:prepared/week={WEEK}/broken.parquet"
    ]
    assert spark_report == pandas_report


RAW_WITH_BAD_LINES = (
    "user_id, email ,ip_address,note\n"
    "U1,a1@example.com,81.2.69.1,ok\n"
    "u2,a2@example.com,81.2.69.2\n"  # too few fields: not a well-formed record
    "u3,a3@example.com,81.2.69.3,x,extra\n"  # too many fields
    '"u\n4",a4@example.com,81.2.69.4,"quoted, with ""quotes"""\n'
    "\n"
    "  u5 ,,81.2.69.5,\n"
)


def test_raw_identifiers_are_collected_alike_malformed_lines_included(settings, spark, tmp_path):
    lake = Lake(tmp_path / "lake")
    write_text(RAW_WITH_BAD_LINES, raw_file(lake, "events", WEEK))
    write_text("", lake.partition("raw", WEEK, "users") / "empty.csv")
    local = collect_identifiers(lake, WEEK, 2)
    on_spark = collect_identifiers_spark(spark, lake, WEEK, 2)
    assert sorted(local.cells) == sorted(on_spark.cells)
    assert local == on_spark
    assert local.counts == {"user_id": 3, "email": 2, "ip": 3, "device_id": 0, "name": 0}
    assert "u2" not in local.user_ids and "u5" in local.user_ids and "u\n4" in local.user_ids


def test_generated_weeks_give_the_same_identifiers(spark, tmp_path):
    lake = Lake(tmp_path / "lake")
    config = GeneratorConfig(
        n_users=60, n_items=40, weeks=2, events_per_user_week=6, dirty_fraction=0.05, seed=3
    )
    result = generate(lake, config, WEEK)
    local = collect_identifiers(lake, result.weeks[-1], 2)
    assert local.counts["user_id"] > 0 and local.counts["email"] > 0
    assert collect_identifiers_spark(spark, lake, result.weeks[-1], 2) == local


def test_text_candidates_cover_every_span_of_the_widths_and_the_nets():
    found = list(text_candidates("Mail Jane.Doe@Example.com from 8.8.8.8 or 10.0.0.1", [1, 2]))
    spans = [c for s, c in found if s == "span"]
    assert spans[:3] == ["mail", "mail jane", "jane"]
    assert "jane.doe" in spans and "1" in spans and "0.1" in spans
    assert ("email", "jane.doe@example.com") in found
    assert ("ip", "8.8.8.8") in found and ("ip", "10.0.0.1") not in found


def test_window_rows_sums_the_anonymized_events_of_the_window(tmp_path):
    lake = Lake(tmp_path / "lake")
    previous = date.fromordinal(WEEK.toordinal() - 7)
    old = date.fromordinal(WEEK.toordinal() - 14)
    for week, n in ((WEEK, 3), (previous, 2), (old, 5)):
        write_parquet(pd.DataFrame({"user": ["p"] * n}), lake.data_file("anonymized", "events", week))
    assert window_rows(lake, WEEK, 2) == 5
    assert window_rows(lake, WEEK, 3) == 10
    assert window_rows(Lake(Path(tmp_path / "none")), WEEK, 3) == 0
