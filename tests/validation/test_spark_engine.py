"""The Spark engine of validation gives what the pandas engine gives: same rows, reasons, accounting.

``spark_min_rows`` is set low so that the small fixture's larger kinds go to Spark; the same raw
data validated by the pandas engine is the reference.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from recsys.data.ingest import ingest_week
from recsys.io.storage import Lake
from recsys.validation.config import ValidationConfig
from recsys.validation.suites import BOT, COLUMNS_REJECTED, DUPLICATE, FUTURE
from recsys.validation.validate import ValidationRun, run_validation
from tests.validation.test_validation import (
    EVENT_HEADER,
    GOOD_ITEMS,
    GOOD_USERS,
    ITEMS_HEADER,
    USERS_HEADER,
    event,
    good_events,
    write_raw,
)

WEEK = date(2026, 11, 15)
NOW = datetime(2026, 11, 21, tzinfo=UTC)

EVENTS = [
    event(1, user=""),
    event(2, ts="yesterday"),
    event(3, ts="2026-11-21T12:00:00Z"),  # after NOW
    event(4, event_type="click"),
    event(5, event_type="rating", rating="7", watch=""),
    event(6, item=999),
    event(7, watch="abc"),
    event(8, event_type="rating", rating="4.5", watch=""),
    event(8, event_type="rating", rating="4.5", watch=""),  # the same line again
    event(9, ts="2026-11-16T09:00:00Z"),
    event(10, ts="2026-11-16T09:00:00Z"),  # the same user, item, time and type as event 9
    event(11, item=6),  # item 6 has no title: quarantined in the catalogue
    *[event(100 + n, user="u9", item=n % 5 + 1, ts=f"2026-11-17T10:{n:02d}:00Z") for n in range(12)],
    event(12) + ",extra",  # malformed
    *good_events(40),  # all before NOW
]
ITEMS = [
    *GOOD_ITEMS,
    "1,Again,Drama,1999,",
    "6,,Drama,1999,",
    "7,Bad year,Drama,nineteen,",
    "8,No year,Drama,,",
]
USERS = [*GOOD_USERS, "u1,Again,,,,,,,,"]


def build(root: Path, users_header: str = USERS_HEADER, users: list[str] | None = None) -> Lake:
    lake = Lake(root)
    write_raw(lake, "events", [EVENT_HEADER, *EVENTS])
    write_raw(lake, "items", [ITEMS_HEADER, *ITEMS])
    write_raw(lake, "users", [users_header, *(USERS if users is None else users)])
    ingest_week(lake, WEEK)
    return lake


def comparable_checks(run: ValidationRun, kind: str) -> list[tuple[Any, ...]]:
    keys = ("expectation", "column", "success", "unexpected_count", "rows_quarantined", "observed_value")
    return [tuple(c.get(k) for k in keys) for c in run.accounting()[kind]["checks"]]


def assert_same_accounting(lake_a: Lake, a: ValidationRun, lake_b: Lake, b: ValidationRun, kind: str) -> None:
    left, right = a.accounting()[kind], b.accounting()[kind]
    for key in left:
        if key == "notes":  # they name their lake
            assert [n.replace(str(lake_a.root), "") for n in left[key]] == [
                n.replace(str(lake_b.root), "") for n in right[key]
            ]
        elif key not in ("engine", "checks"):
            assert left[key] == right[key], (kind, key)
    assert comparable_checks(a, kind) == comparable_checks(b, kind)


def test_spark_engine_matches_pandas(tmp_path: Path, spark) -> None:
    config = {"max_events_per_user_per_day": 10, "max_quarantine_share": 0.5}
    reference = build(tmp_path / "pandas")
    expected = run_validation(reference, WEEK, ValidationConfig(**config), history=reference, now=NOW)
    lake = build(tmp_path / "spark")
    # events (64 rows) and items (9) on Spark, users (6) in pandas
    got = run_validation(
        lake, WEEK, ValidationConfig(**config, spark_min_rows=8), history=lake, now=NOW, spark=spark
    )
    assert {k: o.engine for k, o in got.outcomes.items()} == {
        "events": "spark",
        "items": "spark",
        "users": "pandas",
    }
    assert expected.passed and got.passed

    for kind in ("events", "items", "users"):
        for layer in ("validated", "quarantine"):
            want = pd.read_parquet(reference.data_file(layer, kind, WEEK))
            have = pd.read_parquet(lake.data_file(layer, kind, WEEK))
            pd.testing.assert_frame_equal(have, want, obj=f"{layer} {kind}")
        assert_same_accounting(reference, expected, lake, got, kind)

    by_reason = got.accounting()["events"]["by_reason"]
    assert by_reason[BOT] == 12 and by_reason[DUPLICATE] == 2 and by_reason[FUTURE] == 1
    assert by_reason["expect_column_values_to_be_in_set(item_id)"] == 2
    assert got.accounting()["items"]["by_reason"] == {
        DUPLICATE: 1,
        "expect_column_values_to_not_be_null(title)": 1,
        "unparseable(release_year)": 1,
    }
    valid_items = pd.read_parquet(lake.data_file("validated", "items", WEEK))
    assert str(valid_items["release_year"].dtype) == "Int64"
    assert str(valid_items["added_at"].dtype) == "datetime64[ns, UTC]"
    assert got.accounting()["events"]["stats"] == expected.accounting()["events"]["stats"]


@pytest.mark.parametrize("spark_min_rows", [1_000_000, 70])
def test_renamed_column_quarantines_every_row_on_both_engines(tmp_path: Path, spark, spark_min_rows) -> None:
    """A column-set failure: every row of the kind quarantined, the week failed (users: 80 rows,
    the only kind above 70, go to Spark in the second case)."""
    users = [*GOOD_USERS, *(f"u{i},User {i},,,,,,,," for i in range(6, 81))]
    lake = build(tmp_path / "lake", users_header=USERS_HEADER.replace("email", "mail"), users=users)
    run = run_validation(lake, WEEK, ValidationConfig(spark_min_rows=spark_min_rows), now=NOW, spark=spark)
    assert run.outcomes["users"].engine == ("spark" if spark_min_rows == 70 else "pandas")
    assert run.outcomes["events"].engine == "pandas"
    assert not run.passed
    acc = run.accounting()["users"]
    assert acc["by_reason"] == {COLUMNS_REJECTED: 80} and acc["rows_valid"] == 0
    q = pd.read_parquet(lake.data_file("quarantine", "users", WEEK))
    assert q["_source_line"].tolist() == list(range(2, 82))
    assert q["mail"].tolist()[:2] == ["u1@example.com", "u2@example.com"]
    assert (
        "users: expect_table_columns_to_match_set failed: missing ['email'], unexpected ['mail']"
        in run.message()
    )


@pytest.mark.parametrize("with_tags", [True, False])
def test_items_tags_on_spark_match_pandas(tmp_path: Path, spark, with_tags: bool) -> None:
    """The optional tags column: present (canonical form) or absent (empty), the same on both engines."""
    tags = ['"Noir| Heist |noir"', "Pixar", "", "b|A", "x", "", "", "", ""]
    items = [f"{line},{tag}" for line, tag in zip(ITEMS, tags, strict=True)] if with_tags else ITEMS
    header = ITEMS_HEADER + ",tags" if with_tags else ITEMS_HEADER

    def lake_at(root: Path) -> Lake:
        lake = build(root)
        write_raw(lake, "items", [header, *items])
        ingest_week(lake, WEEK)
        return lake

    reference = lake_at(tmp_path / "pandas")
    expected = run_validation(reference, WEEK, ValidationConfig(max_quarantine_share=0.5), now=NOW)
    lake = lake_at(tmp_path / "spark")
    got = run_validation(
        lake, WEEK, ValidationConfig(max_quarantine_share=0.5, spark_min_rows=8), now=NOW, spark=spark
    )
    assert got.outcomes["items"].engine == "spark" and expected.outcomes["items"].engine == "pandas"
    assert expected.passed and got.passed
    for layer in ("validated", "quarantine"):
        want = pd.read_parquet(reference.data_file(layer, "items", WEEK))
        have = pd.read_parquet(lake.data_file(layer, "items", WEEK))
        pd.testing.assert_frame_equal(have, want, obj=f"{layer} items")
    assert_same_accounting(reference, expected, lake, got, "items")
    valid = pd.read_parquet(lake.data_file("validated", "items", WEEK)).set_index("item_id")["tags"]
    if with_tags:
        assert valid[1] == "heist|noir" and valid[2] == "pixar" and valid[4] == "a|b" and valid[3] == ""
        assert "tags" in pd.read_parquet(lake.data_file("quarantine", "items", WEEK)).columns
    else:
        assert valid.eq("").all()
