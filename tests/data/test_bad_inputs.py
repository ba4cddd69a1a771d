"""A catalogue of bad inputs, each a small file built here, each with the outcome it must get.

Three kinds of outcome:

* ``Quarantined``: the batch goes on; the named rows (by kind and source line) are in the
  quarantine with exactly these reasons, no other row is, and every row is accounted for;
* ``Failed``: validation raises ValidationFailed whose message names the expectation and the
  observed value (the DAG task fails, nothing is trained on the batch);
* ``Unreadable``: ingest raises DataReadError naming the file and the line.

Plus a clean real week of MovieLens ml-100k that must pass with zero quarantined rows.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from recsys.core.errors import DataReadError, ValidationFailed
from recsys.core.schemas import QUARANTINE_REASON, RAW_EVENT_COLUMNS, SOURCE_LINE
from recsys.data.ingest import ingest_week
from recsys.data.movielens import land_movielens
from recsys.io.storage import Lake
from recsys.validation.config import ValidationConfig
from recsys.validation.suites import BOT, DUPLICATE, FUTURE
from recsys.validation.validate import validate_week
from tests.conftest import shared_data_dir
from tests.validation.test_validation import (
    EVENT_HEADER,
    GOOD_ITEMS,
    GOOD_USERS,
    ITEMS_HEADER,
    USERS_HEADER,
    event,
    write_history,
)

WEEK = date(2026, 11, 15)
NOW = datetime(2026, 11, 18, 12, 0, tzinfo=UTC)  # processing time: in the middle of the week
CONFIG = ValidationConfig(max_events_per_user_per_day=20)
BASE_EVENTS = 150  # clean events after the case's own lines: 5 users, items 1..5, <= 20 a user-day

NOT_NULL = "expect_column_values_to_not_be_null({})"
BETWEEN = "expect_column_values_to_be_between({})"
IN_SET = "expect_column_values_to_be_in_set({})"


@dataclass
class Quarantined:
    reasons: dict[tuple[str, int], str]  # (kind, source line) -> reason


@dataclass
class Failed:
    message: str  # regular expression the ValidationFailed message must match


@dataclass
class Unreadable:
    message: str  # regular expression the DataReadError message must match


@dataclass
class Case:
    events: list[str] = field(default_factory=list)  # lines before the clean base events
    header: str = EVENT_HEADER
    base: bool = True  # append the clean base events
    items: list[str] | None = None  # None: the good catalogue
    users: list[str] | None = None
    items_header: str = ITEMS_HEADER
    raw: Callable[[Path], None] | None = None  # writes the events file itself
    history: dict[str, int | float] | None = None  # stats of three earlier passed weeks
    config: ValidationConfig = CONFIG


def drop_column(line: str, index: int) -> str:
    parts = line.split(",")
    return ",".join(parts[:index] + parts[index + 1 :])


def text(lines: list[str]) -> str:
    return "\n".join(lines) + "\n"


def base_lines(n: int = BASE_EVENTS) -> list[str]:
    """Valid, distinct events of 5 users on items 1..5, before NOW, at most 10 a user-day."""
    out = []
    for k in range(n):
        moment = datetime(2026, 11, 15, tzinfo=UTC) + timedelta(hours=k % 72, seconds=k)
        out.append(
            event(1000 + k, user=f"u{k % 5 + 1}", item=k % 5 + 1, ts=moment.strftime("%Y-%m-%dT%H:%M:%SZ"))
        )
    return out


def write_latin1(path: Path) -> None:
    lines = [EVENT_HEADER, event(1), *base_lines(5)]
    lines.insert(3, "e2,René,1,2026-11-16T08:00:00Z,view,,10,tv,d1,10.0.0.1")
    path.write_bytes(text(lines).encode("latin-1"))


def write_truncated(path: Path) -> None:
    data = text([EVENT_HEADER, *base_lines(20)]).encode()
    cut = data.rfind(b"\n", 0, len(data) - 1) + 25  # 25 bytes into the last line
    path.write_bytes(data[:cut])


def write_truncated_gzip(path: Path) -> None:
    data = gzip.compress(text([EVENT_HEADER, *base_lines(200)]).encode())
    path.with_name("events.csv.gz").write_bytes(data[: len(data) // 2])


BOT_LINES = [event(500 + n, user="u9", item=n % 5 + 1, ts=f"2026-11-17T10:{n:02d}:00Z") for n in range(25)]

CASES: dict[str, tuple[Case, Quarantined | Failed | Unreadable]] = {
    # ---- rows set aside; the batch goes on ---------------------------------------------------
    "null ids": (
        Case(events=[event(1, user=""), "  ,u1,1,2026-11-16T08:00:00Z,view,,10,tv,d1,ip", event(3, item="")]),
        Quarantined(
            {
                ("events", 2): NOT_NULL.format("user_id"),
                ("events", 3): NOT_NULL.format("event_id"),
                ("events", 4): NOT_NULL.format("item_id"),
            }
        ),
    ),
    "wrong types": (
        Case(
            events=[
                event(1, item="abc"),
                event(2, watch="ten"),
                event(3, event_type="rating", rating="five", watch=""),
                event(4, ts="yesterday"),
                event(5, item="1.5"),
            ]
        ),
        Quarantined(
            {
                ("events", 2): NOT_NULL.format("item_id"),
                ("events", 3): "unparseable(watch_seconds)",
                ("events", 4): "unparseable(rating); " + NOT_NULL.format("rating"),
                ("events", 5): NOT_NULL.format("ts"),
                ("events", 6): NOT_NULL.format("item_id"),
            }
        ),
    ),
    "rating out of range": (
        Case(
            events=[
                event(1, event_type="rating", rating="7", watch=""),
                event(2, event_type="rating", rating="0", watch=""),
                event(3, event_type="rating", rating="", watch=""),
            ]
        ),
        Quarantined(
            {
                ("events", 2): BETWEEN.format("rating"),
                ("events", 3): BETWEEN.format("rating"),
                ("events", 4): NOT_NULL.format("rating"),
            }
        ),
    ),
    "future timestamps": (
        # inside the week but after the processing time; then also after the week's end
        Case(events=[event(1, ts="2026-11-20T09:00:00Z"), event(2, ts="2026-11-25T09:00:00Z")]),
        Quarantined(
            {("events", 2): FUTURE, ("events", 3): BETWEEN.format("ts") + "; " + FUTURE},
        ),
    ),
    "timestamps outside the week": (
        Case(events=[event(1, ts="2026-11-14T23:59:59Z"), event(2, ts="1263280000")]),
        Quarantined({("events", 2): BETWEEN.format("ts"), ("events", 3): BETWEEN.format("ts")}),
    ),
    "duplicates": (
        Case(
            events=[
                event(1, ts="2026-11-16T10:00:00Z"),
                event(1, ts="2026-11-16T10:00:00Z"),  # the same line again
                event(1, ts="2026-11-16T11:00:00Z"),  # the same event id
                event(2, ts="2026-11-16T10:00:00Z"),  # the same user, item, time and type
            ]
        ),
        Quarantined({("events", 3): DUPLICATE, ("events", 4): DUPLICATE, ("events", 5): DUPLICATE}),
    ),
    "unknown items": (
        Case(events=[event(1, item=999), event(2, item=6)], items=[*GOOD_ITEMS, "6,,Drama,1999,"]),
        Quarantined(
            {
                ("events", 2): IN_SET.format("item_id"),
                ("events", 3): IN_SET.format("item_id"),  # item 6 is itself quarantined
                ("items", 7): NOT_NULL.format("title"),
            }
        ),
    ),
    "bot user": (
        Case(events=BOT_LINES),
        Quarantined({("events", line): BOT for line in range(2, 2 + len(BOT_LINES))}),
    ),
    "unknown event type and device": (
        Case(events=[event(1, event_type="click"), event(2, device="fridge"), event(3, watch="-5")]),
        Quarantined(
            {
                ("events", 2): IN_SET.format("event_type"),
                ("events", 3): IN_SET.format("device_type"),
                ("events", 4): BETWEEN.format("watch_seconds"),
            }
        ),
    ),
    "malformed lines": (
        Case(events=[event(1) + ",extra", "e2,u1,1", 'e3,u1,1,"2026-11-16T08:00:00Z\n",view,,1,tv,d1']),
        Quarantined(
            {
                ("events", 2): "malformed_line: expected 10 fields, got 11",
                ("events", 3): "malformed_line: expected 10 fields, got 3",
                ("events", 4): "malformed_line: expected 10 fields, got 9",
            }
        ),
    ),
    "bad catalogue and profile rows": (
        Case(
            items=[*GOOD_ITEMS, "1,Again,Drama,1999,", "7,Old,Drama,1700,"],
            users=[*GOOD_USERS, ",Nobody,,,,,,,,", "u2,Again,,,,,,,,", "u8,Young,,,,ten,,,,"],
            config=ValidationConfig(max_events_per_user_per_day=20, max_quarantine_share=0.5),
        ),
        Quarantined(
            {
                ("items", 7): DUPLICATE,
                ("items", 8): BETWEEN.format("release_year"),
                ("users", 7): NOT_NULL.format("user_id"),
                ("users", 8): DUPLICATE,
                ("users", 9): "unparseable(age)",
            }
        ),
    ),
    # ---- batch-level failures: the task fails, the DAG stops before training -----------------
    "missing column": (
        Case(
            header=drop_column(EVENT_HEADER, 7), events=[drop_column(e, 7) for e in base_lines()], base=False
        ),
        Failed(r"events: expect_table_columns_to_match_set failed: missing \['device_type'\]"),
    ),
    "renamed column": (
        Case(header=EVENT_HEADER.replace("user_id", "userId")),
        Failed(
            r"events: expect_table_columns_to_match_set failed: missing \['user_id'\], unexpected \['userId'\]"
        ),
    ),
    "renamed catalogue column": (
        Case(items_header=ITEMS_HEADER.replace("title", "name")),
        Failed(
            r"items: expect_table_columns_to_match_set failed: missing \['title'\], unexpected \['name'\]"
        ),
    ),
    "empty batch (header only)": (
        Case(base=False),
        Failed(r"events: expect_table_row_count_to_be_between failed: 0 rows, expected 1 \.\. \+inf"),
    ),
    "quarantined share above the threshold": (
        Case(events=[event(n, item=999) for n in range(1, 61)]),
        Failed(
            r"events: max_quarantine_share failed: 28\.6% quarantined \(60 of 210 rows\) exceeds 20\.0%; "
            r"top reasons: expect_column_values_to_be_in_set\(item_id\) \(60\)"
        ),
    ),
    "volume far below the recent range": (
        # half the week has passed at NOW: the lower bound (median / 5) scales to half of it
        Case(history={"rows": 3000}),
        Failed(
            r"events: expect_table_row_count_to_be_between failed: 150 rows, expected 300 \.\. 15000 "
            r"\(rows >= 1; history: .*within 5x of the median 3000 of 3 earlier weeks.*"
            r"lower bound x 0\.50: week in progress"
        ),
    ),
    "volume far above the recent range": (
        Case(history={"rows": 20}),
        Failed(r"events: expect_table_row_count_to_be_between failed: 150 rows, expected 2 \.\. 100"),
    ),
    "share of ratings far from the recent share": (
        Case(history={"rating_share": 0.9}),
        Failed(
            r"events: expect_column_mean_to_be_between failed: share 0\.0000, expected 0\.65 \.\. 1 "
            r"\(share of rating events: .*median 0\.900"
        ),
    ),
    "distinct users far below the recent number": (
        Case(history={"distinct_users": 100}),
        Failed(
            r"events: expect_column_unique_value_count_to_be_between failed: 5 distinct values, expected 10 \.\. 500"
        ),
    ),
    # ---- unreadable input: a clear error naming the file and the line ------------------------
    "empty file": (
        Case(raw=lambda p: p.write_bytes(b"")),
        Unreadable(r"^events\.csv: the file is empty \(expected a header row and data lines\)$"),
    ),
    "truncated file": (
        Case(raw=write_truncated),
        Unreadable(
            r"^events\.csv line 21: the file ends in the middle of a record \(expected 10 fields, got 4"
        ),
    ),
    "truncated gzip file": (
        Case(raw=write_truncated_gzip),
        Unreadable(r"^events\.csv\.gz: gzip data is truncated"),
    ),
    "wrong delimiter": (
        Case(raw=lambda p: p.write_text(text([EVENT_HEADER.replace(",", ";"), event(1).replace(",", ";")]))),
        Unreadable(
            r"^events\.csv line 1: .*the file looks semicolon-separated, but comma-separated CSV is expected"
        ),
    ),
    "latin-1 where UTF-8 is expected": (
        Case(raw=write_latin1),
        Unreadable(
            r"^events\.csv line 4: not valid UTF-8 \(byte 0xe9 at column 7\); re-export the file as UTF-8$"
        ),
    ),
    "UTF-16 file": (
        Case(raw=lambda p: p.write_bytes(text([EVENT_HEADER, event(1)]).encode("utf-16"))),
        Unreadable(r"^events\.csv line 1: the file is UTF-16 encoded"),
    ),
    "binary file": (
        Case(raw=lambda p: p.write_bytes(text([EVENT_HEADER, event(1)]).encode() + b"\x00\x01\x02")),
        Unreadable(r"^events\.csv line 3: contains a NUL byte \(column 1\)"),
    ),
    "no header row": (
        Case(raw=lambda p: p.write_text(text(base_lines(3)))),
        Unreadable(r"^events\.csv line 1: no header row found"),
    ),
    "unclosed quote": (
        Case(
            raw=lambda p: p.write_text(
                text([EVENT_HEADER, event(1), 'e2,"u1,1,2026-11-16T08:00:00Z', event(3)])
            )
        ),
        Unreadable(r"^events\.csv line 3: a quoted field opened on this line is never closed"),
    ),
}


def write(lake: Lake, kind: str, name: str, data: str) -> Path:
    folder = lake.partition("raw", WEEK, kind)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(data, encoding="utf-8")
    return path


def build(tmp_path: Path, case: Case) -> Lake:
    lake = Lake(tmp_path / "lake")
    events_path = lake.partition("raw", WEEK, "events") / "events.csv"
    if case.raw is not None:
        events_path.parent.mkdir(parents=True)
        case.raw(events_path)
    else:
        write(
            lake,
            "events",
            "events.csv",
            text([case.header, *case.events, *(base_lines() if case.base else [])]),
        )
    write(
        lake,
        "items",
        "items.csv",
        text([case.items_header, *(GOOD_ITEMS if case.items is None else case.items)]),
    )
    write(
        lake, "users", "users.csv", text([USERS_HEADER, *(GOOD_USERS if case.users is None else case.users)])
    )
    if case.history:
        write_history(lake, **{"rows": BASE_EVENTS, "rating_share": 0.0, "distinct_users": 5, **case.history})
    return lake


def quarantine_reasons(lake: Lake) -> dict[tuple[str, int], str]:
    found = {}
    for kind in ("events", "items", "users"):
        q = pd.read_parquet(lake.data_file("quarantine", kind, WEEK))
        found.update(
            {(kind, int(line)): r for line, r in zip(q[SOURCE_LINE], q[QUARANTINE_REASON], strict=True)}
        )
    return found


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name: str, tmp_path: Path) -> None:
    case, outcome = CASES[name]
    lake = build(tmp_path, case)
    if isinstance(outcome, Unreadable):
        with pytest.raises(DataReadError) as info:
            ingest_week(lake, WEEK)
        message = str(info.value)
        assert re.search(outcome.message, message), message
        assert "\n" not in message and "Traceback" not in message
        assert not lake.data_file("staged", "events", WEEK).exists()
        return
    ingest_week(lake, WEEK)
    if isinstance(outcome, Failed):
        with pytest.raises(ValidationFailed) as info:
            validate_week(lake, WEEK, case.config, now=NOW)
        message = str(info.value)
        assert re.search(outcome.message, message), message
        assert "\n" not in message
        assert f"report: {lake.partition('reports', WEEK) / 'validation.html'}" in message
        # stopped before training: no validated partition for the week, the accounting still adds up
        for kind in ("events", "items", "users"):
            assert not lake.data_file("validated", kind, WEEK).exists()
        accounting = json.loads((lake.partition("reports", WEEK) / "accounting.json").read_text("utf-8"))
        for acc in accounting.values():
            assert acc["rows_read"] == acc["rows_valid"] + acc["rows_quarantined"]
        return
    result = validate_week(lake, WEEK, case.config, now=NOW)
    assert result["passed"] is True
    assert quarantine_reasons(lake) == outcome.reasons
    for kind, acc in result["accounting"].items():
        assert acc["rows_read"] == acc["rows_valid"] + acc["rows_quarantined"]
        assert acc["rows_quarantined"] == sum(1 for k, _ in outcome.reasons if k == kind)
        assert len(pd.read_parquet(lake.data_file("validated", kind, WEEK))) == acc["rows_valid"]


def test_the_catalogue_covers_the_issue() -> None:
    required = {
        "missing column",
        "renamed column",
        "wrong types",
        "null ids",
        "rating out of range",
        "future timestamps",
        "duplicates",
        "unknown items",
        "bot user",
        "empty file",
        "truncated file",
        "wrong delimiter",
        "latin-1 where UTF-8 is expected",
    }
    assert required <= set(CASES)


def test_a_clean_movielens_week_passes_with_nothing_quarantined(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    weeks = land_movielens(lake, shared_data_dir() / "movielens" / "ml-100k")
    week = date(1997, 11, 16)  # 7,361 ratings by 104 users
    assert week in weeks
    ingest_week(lake, week)
    result = validate_week(lake, week)
    for kind, acc in result["accounting"].items():
        assert acc["rows_quarantined"] == 0, (kind, acc["by_reason"])
        assert acc["rows_valid"] == acc["rows_read"] > 0
    assert result["accounting"]["events"]["rows_valid"] == 7361
    assert result["accounting"]["events"]["stats"] == {
        "rows_staged": 7361,
        "rating_share": 1.0,
        "distinct_users": 104,
    }
    assert set(RAW_EVENT_COLUMNS) - {"timestamp"} <= set(
        pd.read_parquet(lake.data_file("validated", "events", week)).columns
    )
