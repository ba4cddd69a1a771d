from __future__ import annotations

import gzip
import json
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.cli.main import main
from recsys.core.errors import ConfigError, ValidationFailed
from recsys.core.schemas import QUARANTINE_REASON, RAW_EVENT_COLUMNS, SOURCE_FILE, SOURCE_LINE
from recsys.data.ingest import ingest_week
from recsys.io.storage import Lake
from recsys.validation.config import ValidationConfig
from recsys.validation.suites import BOT, DUPLICATE, FUTURE, events_suite
from recsys.validation.validate import validate_path, validate_week

WEEK = date(2026, 11, 15)  # a Sunday
EVENT_HEADER = ",".join(RAW_EVENT_COLUMNS)
ITEMS_HEADER = "item_id,title,genres,release_year,added_at"
USERS_HEADER = "user_id,name,email,ip_address,device_id,age,gender,occupation,zip_code,signup_date"
GOOD_ITEMS = [f"{i},Movie {i},Drama,{1990 + i},2020-01-01T00:00:00Z" for i in range(1, 6)]
GOOD_USERS = [
    f"u{i},Name {i},u{i}@example.com,10.0.0.{i},d{i},{20 + i},F,artist,1011{i},2024-01-01"
    for i in range(1, 6)
]


def event(
    n: int,
    user: str = "u1",
    item: object = 1,
    ts: str = "2026-11-16T08:12:33Z",
    event_type: str = "view",
    rating: str = "",
    watch: str = "120",
    device: str = "tv",
) -> str:
    return f"e{n},{user},{item},{ts},{event_type},{rating},{watch},{device},d1,10.0.0.1"


def good_events(count: int, start: int = 1000) -> list[str]:
    """Valid, distinct events spread over users, items and days of the week."""
    out = []
    for k in range(count):
        ts = datetime(2026, 11, 15, tzinfo=UTC) + timedelta(hours=k % 160, seconds=k)
        out.append(
            event(start + k, user=f"u{k % 5 + 1}", item=k % 5 + 1, ts=ts.strftime("%Y-%m-%dT%H:%M:%SZ"))
        )
    return out


def write_raw(lake: Lake, kind: str, lines: list[str], name: str | None = None, week: date = WEEK) -> None:
    folder = lake.partition("raw", week, kind)
    folder.mkdir(parents=True, exist_ok=True)
    data = ("\n".join(lines) + "\n").encode("utf-8")
    name = name or f"{kind}.csv"
    if name.endswith(".gz"):
        data = gzip.compress(data)
    (folder / name).write_bytes(data)


def make_lake(
    tmp_path: Path,
    events: list[str],
    items: list[str] | None = None,
    users: list[str] | None = None,
    event_header: str = EVENT_HEADER,
) -> Lake:
    lake = Lake(tmp_path / "lake")
    write_raw(lake, "events", [event_header, *events])
    write_raw(lake, "items", [ITEMS_HEADER, *(GOOD_ITEMS if items is None else items)])
    write_raw(lake, "users", [USERS_HEADER, *(GOOD_USERS if users is None else users)])
    ingest_week(lake, WEEK)
    return lake


def quarantine(lake: Lake, kind: str = "events") -> pd.DataFrame:
    return pd.read_parquet(lake.data_file("quarantine", kind, WEEK))


def validated(lake: Lake, kind: str = "events") -> pd.DataFrame:
    return pd.read_parquet(lake.data_file("validated", kind, WEEK))


def reason_by_line(lake: Lake, kind: str = "events") -> dict[int, str]:
    q = quarantine(lake, kind)
    return dict(zip(q[SOURCE_LINE].tolist(), q[QUARANTINE_REASON].tolist(), strict=True))


def test_bad_rows_land_under_the_right_reason(tmp_path: Path) -> None:
    bad = [
        event(1, user=""),  # line 2
        event(2, ts="yesterday"),  # 3
        event(3, ts="2026-11-22T00:00:00Z"),  # 4: week end is exclusive
        event(4, ts="2026-11-14T23:59:59Z"),  # 5
        event(5, event_type="click"),  # 6
        event(6, device="fridge"),  # 7
        event(7, event_type="rating", rating="7", watch=""),  # 8
        event(8, event_type="rating", rating="", watch=""),  # 9
        event(9, watch="-5"),  # 10
        event(10, item=999),  # 11: not in the catalogue
        event(11, watch="abc"),  # 12
        event(12, item="x"),  # 13
        event(13, user="", event_type="click"),  # 14: two reasons
        event(14, ts="1763280000"),  # 15: Unix seconds in 2025: out of week
        "e20,u2,2,1794787200,rating,4.5,,web,d2,10.0.0.2",  # 16: Unix seconds 2026-11-16T00:00Z
    ]
    lake = make_lake(tmp_path, [*bad, *good_events(100)])
    result = validate_week(lake, WEEK)

    reasons = reason_by_line(lake)
    assert reasons == {
        2: "expect_column_values_to_not_be_null(user_id)",
        3: "expect_column_values_to_not_be_null(ts)",
        4: "expect_column_values_to_be_between(ts)",
        5: "expect_column_values_to_be_between(ts)",
        6: "expect_column_values_to_be_in_set(event_type)",
        7: "expect_column_values_to_be_in_set(device_type)",
        8: "expect_column_values_to_be_between(rating)",
        9: "expect_column_values_to_not_be_null(rating)",
        10: "expect_column_values_to_be_between(watch_seconds)",
        11: "expect_column_values_to_be_in_set(item_id)",
        12: "unparseable(watch_seconds)",
        13: "expect_column_values_to_not_be_null(item_id)",
        14: "expect_column_values_to_not_be_null(user_id); expect_column_values_to_be_in_set(event_type)",
        15: "expect_column_values_to_be_between(ts)",
    }
    acc = result["accounting"]["events"]
    assert acc["rows_read"] == 115
    assert acc["rows_valid"] == 101
    assert acc["rows_quarantined"] == 14
    assert acc["rows_read"] == acc["rows_valid"] + acc["rows_quarantined"]
    assert acc["by_reason"]["expect_column_values_to_be_between(ts)"] == 3
    assert acc["by_reason"]["expect_column_values_to_not_be_null(user_id)"] == 2
    assert result["passed"] is True

    # quarantined rows keep their original text
    q = quarantine(lake).set_index(SOURCE_LINE)
    assert q.loc[3, "timestamp"] == "yesterday"
    assert q.loc[13, "item_id"] == "x"
    assert (q[SOURCE_FILE] == "events.csv").all()

    v = validated(lake)
    assert len(v) == 101
    assert str(v["item_id"].dtype) == "int64"
    assert str(v["ts"].dtype) == "datetime64[ns, UTC]"
    assert str(v["rating"].dtype) == "float64" and str(v["watch_seconds"].dtype) == "float64"
    unix = v.loc[v["event_id"] == "e20"].iloc[0]
    assert unix["ts"] == pd.Timestamp("2026-11-16T00:00:00Z")
    assert unix["rating"] == 4.5 and np.isnan(unix["watch_seconds"])
    assert set(v.columns) >= {"event_id", "user_id", "device_id", "ip_address", SOURCE_FILE, SOURCE_LINE}
    assert "timestamp" not in v.columns


def test_duplicates_keep_the_first(tmp_path: Path) -> None:
    rows = [
        event(1, ts="2026-11-16T10:00:00Z"),  # line 2: kept
        event(1, ts="2026-11-16T11:00:00Z"),  # 3: same event_id
        event(2, ts="2026-11-16T10:00:00Z"),  # 4: same user/item/ts/type as line 2
        event(1, ts="2026-11-16T10:00:00Z"),  # 5: exact duplicate line
        event(3, ts="bad"),  # 6: invalid first copy of e3 ...
        event(3, ts="2026-11-17T10:00:00Z"),  # 7: ... so this valid copy is kept
    ]
    lake = make_lake(tmp_path, [*rows, *good_events(30)])
    result = validate_week(lake, WEEK)
    assert reason_by_line(lake) == {
        3: DUPLICATE,
        4: DUPLICATE,
        5: DUPLICATE,
        6: "expect_column_values_to_not_be_null(ts)",
    }
    kept = validated(lake).set_index(SOURCE_LINE)
    assert {2, 7} <= set(kept.index)
    assert result["accounting"]["events"]["by_reason"][DUPLICATE] == 3


def test_bot_rule_quarantines_the_whole_user_day(tmp_path: Path) -> None:
    bot = [event(n, user="u9", item=n % 5 + 1, ts=f"2026-11-17T10:{n:02d}:00Z") for n in range(1, 7)]
    busy_but_ok = [
        event(n, user="u8", item=n % 5 + 1, ts=f"2026-11-17T10:{n:02d}:00Z") for n in range(11, 16)
    ]
    other_day = [event(21, user="u9", ts="2026-11-18T10:00:00Z")]
    lake = make_lake(tmp_path, [*bot, *busy_but_ok, *other_day, *good_events(40)])
    result = validate_week(lake, WEEK, ValidationConfig(max_events_per_user_per_day=5))
    q = quarantine(lake)
    assert sorted(q["event_id"]) == [f"e{n}" for n in range(1, 7)]
    assert set(q[QUARANTINE_REASON]) == {BOT}
    assert "e21" in set(validated(lake)["event_id"])
    check = next(
        c
        for c in result["accounting"]["events"]["checks"]
        if c["expectation"] == "max_events_per_user_per_day"
    )
    assert check["success"] is False and check["rows_quarantined"] == 6


def test_renamed_column_fails_the_batch_and_names_it(tmp_path: Path) -> None:
    header = EVENT_HEADER.replace("rating", "stars")
    lake = make_lake(tmp_path, good_events(10), event_header=header)
    lake.data_file("validated", "events", WEEK).parent.mkdir(parents=True)
    lake.data_file("validated", "events", WEEK).write_bytes(b"stale")
    with pytest.raises(ValidationFailed) as info:
        validate_week(lake, WEEK)
    message = str(info.value)
    assert (
        "events: expect_table_columns_to_match_set failed: missing ['rating'], unexpected ['stars']"
        in message
    )
    # the report exists for the failed batch; no validated data for it
    report = lake.partition("reports", WEEK)
    assert "expect_table_columns_to_match_set" in (report / "validation.html").read_text(encoding="utf-8")
    accounting = json.loads((report / "accounting.json").read_text(encoding="utf-8"))
    assert accounting["events"]["passed"] is False
    assert accounting["events"]["rows_read"] == accounting["events"]["rows_quarantined"] == 10
    assert not lake.data_file("validated", "events", WEEK).exists()


def test_header_only_events_fail_the_row_count(tmp_path: Path) -> None:
    lake = make_lake(tmp_path, [])
    with pytest.raises(
        ValidationFailed, match=r"events: expect_table_row_count_to_be_between failed: 0 rows"
    ):
        validate_week(lake, WEEK)


def test_quarantine_share_over_threshold(tmp_path: Path) -> None:
    bad = [event(n, item=999) for n in range(1, 4)]
    lake = make_lake(tmp_path, [*bad, *good_events(7)])
    with pytest.raises(ValidationFailed) as info:
        validate_week(lake, WEEK, ValidationConfig(max_quarantine_share=0.2))
    assert "events: max_quarantine_share failed: 30.0% quarantined (3 of 10 rows)" in str(info.value)
    assert "expect_column_values_to_be_in_set(item_id) (3)" in str(info.value)
    assert len(quarantine(lake)) == 3  # written before raising
    # the same batch passes with a looser threshold
    result = validate_week(lake, WEEK, ValidationConfig(max_quarantine_share=0.5))
    assert result["accounting"]["events"]["rows_valid"] == 7


def test_malformed_lines_are_counted_and_merged(tmp_path: Path) -> None:
    lines = [event(1) + ",extra", *good_events(10), "e2,u1"]
    lake = make_lake(tmp_path, lines)
    result = validate_week(lake, WEEK)
    acc = result["accounting"]["events"]
    assert (acc["rows_read"], acc["rows_malformed"], acc["rows_valid"], acc["rows_quarantined"]) == (
        12,
        2,
        10,
        2,
    )
    assert reason_by_line(lake) == {
        2: "malformed_line: expected 10 fields, got 11",
        13: "malformed_line: expected 10 fields, got 2",
    }
    q = quarantine(lake).set_index(SOURCE_LINE)
    assert q.loc[13, "_raw_line"] == "e2,u1"


def test_items_and_users_rules(tmp_path: Path) -> None:
    items = [
        *GOOD_ITEMS,  # lines 2-6
        "1,Duplicate,Drama,1999,",  # 7
        "6,,Drama,1999,",  # 8: no title
        "7,Too old,Drama,1800,",  # 9
        "8,Bad year,Drama,nineteen,",  # 10
        "9,No year,Drama,,",  # 11: fine
    ]
    users = [*GOOD_USERS, "u1,Again,,,,,,,,", ",Nobody,,,,,,,,", "u7,Old,,,,abc,,,,"]
    events = [event(1, item=6), event(2, item=9), *good_events(20)]
    lake = make_lake(tmp_path, events, items=items, users=users)
    result = validate_week(lake, WEEK, ValidationConfig(max_quarantine_share=0.5))
    assert reason_by_line(lake, "items") == {
        7: DUPLICATE,
        8: "expect_column_values_to_not_be_null(title)",
        9: "expect_column_values_to_be_between(release_year)",
        10: "unparseable(release_year)",
    }
    assert sorted(validated(lake, "items")["item_id"]) == [1, 2, 3, 4, 5, 9]
    assert validated(lake, "items")["release_year"].dtype == "Int64"
    # events of a quarantined item are unknown items; of a valid one, fine
    assert reason_by_line(lake) == {2: "expect_column_values_to_be_in_set(item_id)"}
    assert reason_by_line(lake, "users") == {
        7: DUPLICATE,
        8: "expect_column_values_to_not_be_null(user_id)",
        9: "unparseable(age)",
    }
    users_v = validated(lake, "users")
    assert users_v["age"].dtype == "Int64" and users_v["user_id"].tolist() == [f"u{i}" for i in range(1, 6)]
    for kind in ("events", "items", "users"):
        acc = result["accounting"][kind]
        assert acc["rows_read"] == acc["rows_valid"] + acc["rows_quarantined"]


def test_reports_are_written_and_escaped(tmp_path: Path) -> None:
    lake = make_lake(tmp_path, [event(1, event_type="<script>alert(1)</script>"), *good_events(20)])
    result = validate_week(lake, WEEK)
    html_text = Path(result["report_html"]).read_text(encoding="utf-8")
    assert html_text.startswith("<!DOCTYPE html>")
    assert "<script>" not in html_text
    assert "&lt;script&gt;" in html_text
    assert "expect_column_values_to_be_in_set" in html_text
    accounting = json.loads(Path(result["report_json"]).read_text(encoding="utf-8"))
    assert set(accounting) == {"events", "items", "users"}
    assert json.loads(json.dumps(result))["accounting"] == accounting  # the result is JSON-able
    assert accounting["events"]["by_reason"] == {"expect_column_values_to_be_in_set(event_type)": 1}


def test_gzip_end_to_end(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    write_raw(lake, "events", [EVENT_HEADER, *good_events(25)], name="events.csv.gz")
    write_raw(lake, "items", [ITEMS_HEADER, *GOOD_ITEMS], name="items.csv.gz")
    write_raw(lake, "users", [USERS_HEADER, *GOOD_USERS])
    ingest_week(lake, WEEK)
    result = validate_week(lake, WEEK)
    assert result["accounting"]["events"]["rows_valid"] == 25


def test_events_suite_is_gx_suite() -> None:
    start = datetime(2026, 11, 15, tzinfo=UTC)
    suite = events_suite(start, start + timedelta(days=7), [1, 2, 3])
    types = {e.expectation_type for e in suite.expectations}
    assert {"expect_column_values_to_not_be_null", "expect_column_values_to_be_in_set"} <= types


def test_fifty_thousand_events_are_fast(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    n = 50_000
    start = 1_794_700_800  # 2026-11-15T00:00:00Z
    secs = rng.integers(start, start + 7 * 86400, n)
    ts = pd.to_datetime(secs, unit="s", utc=True).strftime("%Y-%m-%dT%H:%M:%SZ")
    users = rng.integers(1, 2000, n)
    items = rng.integers(1, 6, n)
    lines = [f"e{k},u{users[k]},{items[k]},{ts[k]},view,,{k % 300},web,d,ip" for k in range(n)]
    lake = make_lake(tmp_path, lines)
    begin = time.perf_counter()
    result = validate_week(lake, WEEK)
    elapsed = time.perf_counter() - begin
    acc = result["accounting"]["events"]
    assert acc["rows_read"] == n == acc["rows_valid"] + acc["rows_quarantined"]
    assert elapsed < 30, f"validation of {n} events took {elapsed:.1f}s"


def test_files_with_different_headers_fail_the_column_check(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    write_raw(lake, "events", [EVENT_HEADER, *good_events(5)], name="a.csv")
    write_raw(
        lake,
        "events",
        [EVENT_HEADER + ",session", *(e + ",s1" for e in good_events(5, start=1))],
        name="b.csv",
    )
    write_raw(lake, "items", [ITEMS_HEADER, *GOOD_ITEMS])
    write_raw(lake, "users", [USERS_HEADER, *GOOD_USERS])
    ingest_week(lake, WEEK)
    staged = pd.read_parquet(lake.data_file("staged", "events", WEEK))
    assert staged["session"].tolist() == [None] * 5 + ["s1"] * 5
    with pytest.raises(
        ValidationFailed, match=r"events: expect_table_columns_to_match_set failed: unexpected \['session'\]"
    ):
        validate_week(lake, WEEK)


# ---- history: the recent weeks a batch is compared with ------------------------------------------


def week_events(week: date, count: int, users: int = 5) -> list[str]:
    """``count`` valid events of ``users`` users spread over ``week``."""
    out = []
    for k in range(count):
        ts = datetime.combine(week, datetime.min.time(), tzinfo=UTC) + timedelta(hours=k % 160, seconds=k)
        out.append(event(k, user=f"u{k % users + 1}", item=k % 5 + 1, ts=ts.strftime("%Y-%m-%dT%H:%M:%SZ")))
    return out


def validate_weeks(lake: Lake, weeks: dict[date, list[str]], config: ValidationConfig | None = None) -> None:
    for week, lines in weeks.items():
        write_raw(lake, "events", [EVENT_HEADER, *lines], week=week)
        write_raw(lake, "items", [ITEMS_HEADER, *GOOD_ITEMS], week=week)
        write_raw(lake, "users", [USERS_HEADER, *GOOD_USERS], week=week)
        ingest_week(lake, week)
        validate_week(lake, week, config)


def test_history_checks_are_skipped_with_a_reason_without_history(tmp_path: Path) -> None:
    lake = make_lake(tmp_path, good_events(40))
    result = validate_week(lake, WEEK)
    events = result["accounting"]["events"]
    assert any(
        "history checks not run: 0 earlier weeks with a passed validation" in n for n in events["notes"]
    )
    skipped = {c["expectation"] for c in events["checks"] if c.get("skipped")}
    assert skipped == {"expect_column_mean_to_be_between", "expect_column_unique_value_count_to_be_between"}
    assert events["stats"] == {"rows_staged": 40, "rating_share": 0.0, "distinct_users": 5}
    html_text = Path(result["report_html"]).read_text(encoding="utf-8")
    assert "not checked" in html_text


def test_volume_far_outside_the_recent_weeks_fails_the_batch(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    earlier = [date(2026, 10, 18), date(2026, 10, 25), date(2026, 11, 1)]
    validate_weeks(lake, {w: week_events(w, n) for w, n in zip(earlier, (100, 120, 110), strict=True)})
    spike = date(2026, 11, 8)
    with pytest.raises(ValidationFailed) as info:
        validate_weeks(lake, {spike: week_events(spike, 600)})
    assert "events: expect_table_row_count_to_be_between failed: 600 rows, expected 22 .. 550" in str(
        info.value
    )
    assert not lake.data_file("validated", "events", spike).exists()

    # the failed week is no reference: the next week is compared with the three that passed
    validate_weeks(lake, {WEEK: week_events(WEEK, 150)})
    acc = json.loads((lake.partition("reports", WEEK) / "accounting.json").read_text(encoding="utf-8"))
    volume = next(
        c for c in acc["events"]["checks"] if c["expectation"] == "expect_table_row_count_to_be_between"
    )
    assert volume["success"] and volume["observed"] == "150 rows"
    assert "within 5x of the median 110 of 3 earlier weeks (2026-10-18 .. 2026-11-01)" in volume["rule"]
    assert acc["events"]["stats"] == {"rows_staged": 150, "rating_share": 0.0, "distinct_users": 5}


def write_history(lake: Lake, rows: int, rating_share: float, distinct_users: int, weeks: int = 3) -> None:
    """Accounting of ``weeks`` earlier passed weeks, as validation writes it (events stats given)."""
    for back in range(1, weeks + 1):
        events = {
            "passed": True,
            "rows_staged": rows,
            "stats": {"rows_staged": rows, "rating_share": rating_share, "distinct_users": distinct_users},
        }
        snapshot = {"passed": True, "rows_staged": 5, "stats": {"rows_staged": 5}}
        accounting = {"events": events, "items": snapshot, "users": snapshot}
        folder = lake.partition("reports", WEEK - timedelta(weeks=back))
        folder.mkdir(parents=True)
        (folder / "accounting.json").write_text(json.dumps(accounting), encoding="utf-8")


def test_configured_share_bounds_and_history_switched_off(tmp_path: Path) -> None:
    lake = make_lake(tmp_path, good_events(20))
    write_history(lake, rows=1000, rating_share=0.0, distinct_users=5)
    with pytest.raises(
        ValidationFailed,
        match=r"expect_table_row_count_to_be_between failed: 20 rows, expected 200 \.\. 5000",
    ):
        validate_week(lake, WEEK)
    # configured bounds of the rating share apply with or without history
    with pytest.raises(
        ValidationFailed,
        match=r"expect_column_mean_to_be_between failed: share 0\.0000, expected 0\.1 \.\. 0\.9 "
        r"\(share of rating events: 0\.1 \.\. 0\.9 \(configured\)\)",
    ):
        validate_week(
            lake, WEEK, ValidationConfig(history_weeks=0, rating_share_min=0.1, rating_share_max=0.9)
        )
    result = validate_week(lake, WEEK, ValidationConfig(history_weeks=0))
    assert (
        "history checks not run: history checks are off (history_weeks = 0)"
        in result["accounting"]["events"]["notes"]
    )


def test_config_refuses_inverted_share_bounds() -> None:
    with pytest.raises(ValueError, match="rating_share_min 0.8 is above rating_share_max 0.2"):
        ValidationConfig(rating_share_min=0.8, rating_share_max=0.2)


def test_future_rows_depend_on_the_processing_time(tmp_path: Path) -> None:
    lake = make_lake(tmp_path, [event(1, ts="2026-11-20T10:00:00Z"), *good_events(30)])
    # processing during the week: the event of the 20th has not happened yet. Rows after the cutoff
    # (most good events are later than the 16th, too) are set aside, not counted as bad rows.
    during = validate_week(lake, WEEK, now=datetime(2026, 11, 16, tzinfo=UTC))["accounting"]["events"]
    q = quarantine(lake)
    assert q.set_index(SOURCE_LINE).loc[2, QUARANTINE_REASON] == FUTURE
    assert during["rows_after_cutoff"] == len(q) == during["rows_quarantined"] > 1
    assert during["quarantine_share"] == 0.0 and during["rows_read"] == 31
    # after the week, and with a naive `now` taken as UTC: nothing is in the future
    result = validate_week(lake, WEEK, now=datetime(2026, 11, 23, 6, 0))
    assert result["accounting"]["events"]["rows_quarantined"] == 0


# ---- `recsys validate PATH` ------------------------------------------------------------------------


def test_validate_a_single_file_outside_the_lake(tmp_path: Path) -> None:
    path = tmp_path / "drop" / "events-monday.csv"
    path.parent.mkdir()
    path.write_text("\n".join([EVENT_HEADER, event(1, event_type="click"), *good_events(20)]) + "\n")
    result = validate_path(path, week=date(2026, 11, 18))  # any day of the week
    assert (result.kind, result.week) == ("events", WEEK)  # kind from the header
    assert result.out_dir == tmp_path / "drop" / "validation-events-monday"
    assert result.passed
    acc = result.run.accounting()
    assert set(acc) == {"events"}
    assert acc["events"]["by_reason"] == {"expect_column_values_to_be_in_set(event_type)": 1}
    assert any(
        "referential integrity (item_id in the catalogue) not checked" in n for n in acc["events"]["notes"]
    )
    q = pd.read_parquet(result.quarantine_file())
    assert q[SOURCE_LINE].tolist() == [2] and q[SOURCE_FILE].tolist() == ["events-monday.csv"]
    assert not (result.out_dir / "staged").exists()
    assert (result.out_dir / "reports" / "week=2026-11-15" / "validation.html").exists()


def test_validate_needs_the_week_of_events(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text("\n".join([EVENT_HEADER, *good_events(3)]) + "\n")
    with pytest.raises(ConfigError, match="pass --week YYYY-MM-DD"):
        validate_path(path)
    odd = tmp_path / "odd.csv"
    odd.write_text("a,b\n1,2\n")
    with pytest.raises(ConfigError, match="pass --kind"):
        validate_path(odd, week=WEEK)


def test_validate_a_lake_partition_like_the_dag(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    earlier = [date(2026, 11, 1), date(2026, 11, 8)]
    validate_weeks(lake, {w: week_events(w, 100) for w in earlier})
    write_raw(lake, "events", [EVENT_HEADER, event(1, item=999), *week_events(WEEK, 99)])
    write_raw(lake, "items", [ITEMS_HEADER, *GOOD_ITEMS])
    partition = lake.partition("raw", WEEK, "events")
    result = validate_path(partition, out=tmp_path / "out")
    assert (result.kind, result.week) == ("events", WEEK)
    assert result.run.accounting()["events"]["by_reason"] == {"expect_column_values_to_be_in_set(item_id)": 1}
    assert "items" in result.run.accounting()  # the lake's catalogue of the week was validated too
    volume = next(
        c
        for c in result.run.accounting()["events"]["checks"]
        if c["expectation"] == "expect_table_row_count_to_be_between"
    )
    assert "of 2 earlier weeks" in volume["rule"]  # the lake's history
    assert (
        result.quarantine_file()
        == tmp_path / "out" / "quarantine" / "events" / "week=2026-11-15" / "data.parquet"
    )
    # the same verdict as the pipeline on the same data
    ingest_week(lake, WEEK)
    assert (
        validate_week(lake, WEEK)["accounting"]["events"]["by_reason"]
        == result.run.accounting()["events"]["by_reason"]
    )


def test_cli_validate_prints_accounting_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "events.csv.gz"
    path.write_bytes(
        gzip.compress(("\n".join([EVENT_HEADER, event(1, item=7), *good_events(20)]) + "\n").encode())
    )
    items = tmp_path / "catalogue.csv"
    items.write_text("\n".join([ITEMS_HEADER, *GOOD_ITEMS]) + "\n")
    assert main(["validate", str(path), "--week", "2026-11-15", "--items", str(items)]) == 0
    out = capsys.readouterr().out
    assert "events  read        21  valid        20  quarantined       1" in out
    assert "1  expect_column_values_to_be_in_set(item_id)" in out
    assert (
        f"quarantine: {tmp_path / 'validation-events' / 'quarantine' / 'events' / 'week=2026-11-15' / 'data.parquet'}"
        in out
    )
    assert "passed: the batch may go on" in out


def test_cli_validate_exits_2_with_one_line_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "events.csv"
    path.write_text("\n".join([EVENT_HEADER.replace("rating", "stars"), *good_events(5)]) + "\n")
    assert main(["validate", str(path), "--kind", "events", "--week", "2026-11-15"]) == 2
    captured = capsys.readouterr()
    assert "events  read         5  valid         0  quarantined       5" in captured.out
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        "error: events: expect_table_columns_to_match_set failed: missing ['rating'], unexpected ['stars']"
    )
    # unreadable input: one line naming the file and the line, no traceback
    path.write_bytes(f"{EVENT_HEADER}\n".encode() + b"e1,Ren\xe9,1\n")
    assert main(["validate", str(path), "--week", "2026-11-15"]) == 2
    err = capsys.readouterr().err
    assert (
        err.strip()
        == "error: events.csv line 2: not valid UTF-8 (byte 0xe9 at column 7); re-export the file as UTF-8"
    )


def test_reports_never_quote_personal_data(tmp_path: Path) -> None:
    secret = "u_secret_4711"
    events = [
        event(1, user=secret, ts="2026-11-16T10:00:00Z"),
        event(2, user=secret, ts="2026-11-16T10:00:00Z"),  # duplicate of (user, item, ts, type)
        *good_events(30),
    ]
    users = [
        *GOOD_USERS,
        f"{secret},Jane Roe,jane@example.com,10.9.8.7,dev-42,30,F,artist,10115,2024-01-01",
    ] * 2
    lake = make_lake(tmp_path, events, users=users)
    with pytest.raises(ValidationFailed) as info:  # half the users are duplicates
        validate_week(lake, WEEK)
    published = [
        str(info.value),
        (lake.partition("reports", WEEK) / "accounting.json").read_text(encoding="utf-8"),
        (lake.partition("reports", WEEK) / "validation.html").read_text(encoding="utf-8"),
    ]
    for text in published:
        for value in (secret, "jane@example.com", "10.9.8.7", "dev-42", "Jane Roe"):
            assert value not in text
    assert "values not shown: personal data" in published[1]


def test_validate_refuses_to_write_into_a_lake(tmp_path: Path) -> None:
    lake = make_lake(tmp_path, good_events(5))
    before = sorted(p for p in lake.root.rglob("*"))
    with pytest.raises(ConfigError, match="holds a lake"):
        validate_path(lake.partition("raw", WEEK, "events"), out=lake.root)
    assert sorted(p for p in lake.root.rglob("*")) == before


# ---- the items' optional tags column ------------------------------------------------------------

TAGGED_ITEMS = [
    f"{line},{tags}"
    for line, tags in zip(
        GOOD_ITEMS, ['"Heist| Los Angeles |heist"', "Pixar|pixar|", "", "noir", "B|a"], strict=True
    )
]
CANONICAL_TAGS = ["heist|los angeles", "pixar", "", "noir", "a|b"]


def tagged_lake(root: Path, item_files: dict[str, list[str]]) -> Lake:
    lake = Lake(root)
    write_raw(lake, "events", [EVENT_HEADER, *good_events(20)])
    for name, lines in item_files.items():
        write_raw(lake, "items", lines, name=name)
    write_raw(lake, "users", [USERS_HEADER, *GOOD_USERS])
    ingest_week(lake, WEEK)
    return lake


def items_table_rule(result: dict) -> str:
    (check,) = [
        c
        for c in result["accounting"]["items"]["checks"]
        if c["expectation"] == "expect_table_columns_to_match_set"
    ]
    assert check["success"]
    return check["rule"]


def test_items_with_and_without_tags_validate(tmp_path: Path) -> None:
    plain = tagged_lake(tmp_path / "plain", {"items.csv": [ITEMS_HEADER, *GOOD_ITEMS]})
    tagged = tagged_lake(tmp_path / "tagged", {"items.csv": [ITEMS_HEADER + ",tags", *TAGGED_ITEMS]})
    plain_result, tagged_result = validate_week(plain, WEEK), validate_week(tagged, WEEK)
    for result in (plain_result, tagged_result):
        acc = result["accounting"]["items"]
        assert (acc["rows_valid"], acc["rows_quarantined"]) == (5, 0), acc["by_reason"]
    assert items_table_rule(plain_result).endswith("added_at (optional: tags)")
    assert items_table_rule(tagged_result).endswith("added_at, tags")

    plain_items, tagged_items = validated(plain, "items"), validated(tagged, "items")
    # every validated catalogue has the column: canonical tags, "" where the file has none
    assert tagged_items["tags"].tolist() == CANONICAL_TAGS
    assert plain_items["tags"].tolist() == [""] * 5
    assert list(plain_items.columns) == list(tagged_items.columns)
    pd.testing.assert_frame_equal(
        plain_items.drop(columns=["tags", SOURCE_FILE]), tagged_items.drop(columns=["tags", SOURCE_FILE])
    )


def test_items_files_with_and_without_tags_validate_together(tmp_path: Path) -> None:
    lake = tagged_lake(
        tmp_path / "lake",
        {
            "a.csv": [ITEMS_HEADER + ",tags", *TAGGED_ITEMS[:3]],
            "b.csv": [ITEMS_HEADER, *GOOD_ITEMS[3:]],
        },
    )
    result = validate_week(lake, WEEK)
    assert result["accounting"]["items"]["rows_valid"] == 5
    assert validated(lake, "items")["tags"].tolist() == [*CANONICAL_TAGS[:3], "", ""]


@pytest.mark.parametrize("header", [ITEMS_HEADER + ",labels", ITEMS_HEADER + ",tags,labels"])
def test_an_unknown_items_column_still_fails_the_column_check(tmp_path: Path, header: str) -> None:
    extra = header.count(",") - ITEMS_HEADER.count(",")
    lake = tagged_lake(tmp_path / "lake", {"items.csv": [header, *(i + ",x" * extra for i in GOOD_ITEMS)]})
    with pytest.raises(
        ValidationFailed, match=r"items: expect_table_columns_to_match_set failed: unexpected \['labels'\]"
    ):
        validate_week(lake, WEEK)


def test_validate_an_items_file_with_tags_outside_the_lake(tmp_path: Path) -> None:
    path = tmp_path / "drop" / "catalogue.csv"
    path.parent.mkdir()
    path.write_text("\n".join([ITEMS_HEADER + ",tags", *TAGGED_ITEMS]) + "\n")
    result = validate_path(path, week=WEEK)
    assert result.kind == "items" and result.passed
    valid = pd.read_parquet(Lake(result.out_dir).data_file("validated", "items", WEEK))
    assert valid["tags"].tolist() == CANONICAL_TAGS


def test_text_is_stripped_as_python_strips_it() -> None:
    """``to_text`` trims by Arrow: the same characters ``str.strip`` removes (Unicode spaces, the ASCII
    separators \\x1c-\\x1f, \\x85), not zero-width ones; empty and missing become None; index kept."""
    from recsys.validation.casting import to_text

    values = [
        " a ",
        "\x1c b\x1f",
        "\u3000x\u2003",
        "",
        "  ",
        None,
        np.nan,
        "é ",
        "\x85y\xa0",
        "a\u200bb",
        "\u200b",
    ]
    series = pd.Series(values, index=range(100, 100 + len(values)), dtype=object)
    out = to_text(series)
    assert out.index.equals(series.index) and out.dtype == object
    expected = [None if v is None or v != v or not v.strip() else v.strip() for v in values]
    assert out.tolist() == expected
    assert expected[1] == "b" and expected[9] == "a\u200bb" and expected[10] == "\u200b"
    # a column of other objects (not text) still reads as its text
    assert to_text(pd.Series([1, " 2", None], dtype=object)).tolist() == ["1", "2", None]
