"""Landing a user's own flat CSV history (many weeks in one export) into weekly raw partitions."""

from __future__ import annotations

import csv
import gzip
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.cli.main import main
from recsys.core.errors import DataNotFoundError, DataReadError
from recsys.core.intervals import week_bounds, week_start_of
from recsys.core.schemas import RAW_EVENT_COLUMNS, RAW_USER_COLUMNS
from recsys.core.settings import Settings
from recsys.data.csv_history import event_days, land_csv_history, week_of_days
from recsys.data.ingest import ingest_week
from recsys.data.synthetic import config_from, generate
from recsys.io.storage import Lake
from recsys.validation.casting import to_ts

WEEKS = [date(2026, 11, 1), date(2026, 11, 8), date(2026, 11, 15)]
EVENT_HEADER = ",".join(RAW_EVENT_COLUMNS)
ITEMS = "item_id,title,genres,release_year,added_at\n1,Heat,Action|Crime,1995,2020-01-01T00:00:00Z\n"
USERS = ",".join(RAW_USER_COLUMNS) + "\nu1,Ann,ann@example.com,10.0.0.1,d1,34,F,engineer,10115,2024-02-03\n"


@dataclass
class Export:
    """A flat export made from a synthetic lake's three weeks, and what the generator wrote per week."""

    events: Path
    items: Path
    users: Path
    weekly: dict[date, bytes]  # the generator's own raw events file of each week
    rows: int  # data rows in the export


def make_export(folder: Path, dirty_fraction: float) -> Export:
    source = Lake(folder / "source-lake")
    config = config_from({"weeks": 3, "n_users": 120, "n_items": 80, "dirty_fraction": dirty_fraction})
    result = generate(source, config, WEEKS[-1])
    assert result.weeks == WEEKS
    weekly = {w: (source.partition("raw", w, "events") / "events.csv").read_bytes() for w in WEEKS}
    body = [text.split(b"\n", 1)[1] for text in weekly.values()]
    events = folder / "export" / "events.csv"
    events.parent.mkdir(parents=True)
    events.write_bytes(EVENT_HEADER.encode() + b"\n" + b"".join(body))
    items, users = events.parent / "items.csv", events.parent / "users.csv"
    items.write_bytes((source.partition("raw", WEEKS[-1], "items") / "items.csv").read_bytes())
    users.write_bytes((source.partition("raw", WEEKS[-1], "users") / "users.csv").read_bytes())
    return Export(events, items, users, weekly, sum(result.rows_per_week.values()))


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Export:
    """Three clean weeks (no injected bad rows: every row lies in the week it was generated for)."""
    return make_export(tmp_path_factory.mktemp("clean"), dirty_fraction=0.0)


@pytest.fixture(scope="module")
def dirty_export(tmp_path_factory: pytest.TempPathFactory) -> Export:
    """Three weeks with the generator's bad rows (ratings out of range, timestamps outside the week...)."""
    return make_export(tmp_path_factory.mktemp("dirty"), dirty_fraction=0.05)


@pytest.fixture
def lake(env: dict[str, str]) -> Lake:
    return Lake(Settings.from_env().lake_dir)


def data_rows(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.reader(handle))[1:]


def lake_files(lake: Lake) -> dict[str, bytes]:
    """Every file under the lake's raw/, hidden ones included, by relative path."""
    root = lake.root / "raw"
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---- landing ----------------------------------------------------------------------------------


def test_three_week_export_lands_in_three_partitions(lake: Lake, export: Export) -> None:
    messages: list[str] = []
    weeks = land_csv_history(lake, export.events, export.items, export.users, progress=messages.append)
    assert weeks == WEEKS
    assert lake.raw_weeks("events") == WEEKS
    landed = 0
    for week in WEEKS:
        path = lake.partition("raw", week, "events") / "events.csv"
        assert lake.raw_files("events", week) == [path]
        # same rows, same bytes, same order as the generator wrote into that week
        assert path.read_bytes() == export.weekly[week]
        start, end = week_bounds(week)
        for row in data_rows(path):
            assert start <= datetime.fromisoformat(row[3]) < end
        landed += len(data_rows(path))
    assert landed == export.rows == len(data_rows(export.events))
    # the snapshots: once, in the oldest week, as given
    assert lake.raw_weeks("items") == [WEEKS[0]] and lake.raw_weeks("users") == [WEEKS[0]]
    assert (lake.partition("raw", WEEKS[0], "items") / "items.csv").read_bytes() == export.items.read_bytes()
    assert (lake.partition("raw", WEEKS[0], "users") / "users.csv").read_bytes() == export.users.read_bytes()
    assert not [name for name in lake_files(lake) if name.startswith(".")]  # no staging left
    assert messages[-1].startswith("users: ") and any("week 2026-11-15" in m for m in messages)


def test_landed_weeks_pass_ingest(lake: Lake, export: Export) -> None:
    weeks = land_csv_history(lake, export.events, export.items, export.users)
    total = 0
    for week in weeks:
        result = ingest_week(lake, week)["kinds"]
        landed = len(data_rows(lake.partition("raw", week, "events") / "events.csv"))
        assert result["events"]["rows_read"] == result["events"]["rows_staged"] == landed
        assert result["events"]["rows_malformed"] == 0
        assert result["items"]["snapshot_week"] == result["users"]["snapshot_week"] == WEEKS[0].isoformat()
        assert result["items"]["rows_read"] == len(data_rows(export.items))
        total += landed
    assert total == export.rows


def test_dirty_rows_land_as_they_are_in_the_week_of_their_timestamp(lake: Lake, dirty_export: Export) -> None:
    weeks = land_csv_history(lake, dirty_export.events, dirty_export.items, dirty_export.users)
    # rows generated outside their week move to the week of their timestamp (possibly a new one)
    assert set(WEEKS) <= set(weeks) and weeks == sorted(weeks)
    read = data_rows(dirty_export.events)
    landed: list[list[str]] = []
    for week in weeks:
        start, end = week_bounds(week)
        rows = data_rows(lake.partition("raw", week, "events") / "events.csv")
        assert all(start <= datetime.fromisoformat(r[3]) < end for r in rows)
        assert ingest_week(lake, week)["kinds"]["events"]["rows_read"] == len(rows)
        landed += rows
    assert sorted(map(tuple, landed)) == sorted(map(tuple, read))  # nothing lost, nothing added
    ratings = {r[5] for r in landed}
    assert ratings & {"7.0", "-1.0", "5.5", "0.0", "10"}  # out of range: landed, for validate to judge
    assert any(r[1] == "" for r in landed)  # missing user ids too


def test_relanding_is_idempotent_and_replaces_partitions(lake: Lake, export: Export) -> None:
    # what an earlier drop left: a second events file in a landed week, a later catalogue snapshot
    stray = lake.partition("raw", WEEKS[1], "events") / "old-drop.csv"
    stray.parent.mkdir(parents=True)
    stray.write_text(EVENT_HEADER + "\nx1,u1,1,2026-11-09T10:00:00Z,view,,10,tv,d1,10.0.0.1\n")
    later_items = lake.partition("raw", WEEKS[2], "items") / "items.csv"
    later_items.parent.mkdir(parents=True)
    later_items.write_text(ITEMS)
    outside = lake.partition("raw", date(2026, 11, 22), "items") / "items.csv"  # after the history
    outside.parent.mkdir(parents=True)
    outside.write_text(ITEMS)

    land_csv_history(lake, export.events, export.items, export.users)
    first = lake_files(lake)
    assert not stray.exists() and not later_items.exists() and outside.exists()
    assert lake.raw_weeks("items") == [WEEKS[0], date(2026, 11, 22)]
    land_csv_history(lake, export.events, export.items, export.users)
    assert lake_files(lake) == first


def test_folder_of_files_gzip_and_small_chunks_give_the_same_partitions(
    tmp_path: Path, lake: Lake, export: Export
) -> None:
    lines = export.events.read_text(encoding="utf-8").splitlines(keepends=True)
    header, body = lines[0], lines[1:]
    folder = tmp_path / "daily"
    folder.mkdir()
    half = len(body) // 2
    (folder / "part-1.csv").write_text(header + "".join(body[:half]), encoding="utf-8")
    (folder / "part-2.csv.gz").write_bytes(gzip.compress((header + "".join(body[half:])).encode()))
    (folder / "_notes.csv").write_text("not,an,export\n")  # ignored, like ingest ignores it
    messages: list[str] = []
    weeks = land_csv_history(
        lake, folder, export.items, export.users, progress=messages.append, chunk_rows=97
    )
    assert weeks == WEEKS
    for week in WEEKS:
        assert (lake.partition("raw", week, "events") / "events.csv").read_bytes() == export.weekly[week]
    assert sum("rows read" in m for m in messages) >= len(body) // 97


def test_rows_keep_their_bytes(tmp_path: Path, lake: Lake) -> None:
    """Quoted fields, a field spanning lines, CRLF line ends, an offset and Unix seconds."""
    events = tmp_path / "events.csv"
    rows = [
        'e1,u1,1,2026-11-16T08:12:33Z,view,,120,tv,"dev,1",10.0.0.1',
        'e2,u2,2,2026-11-15T01:00:00+02:00,rating,4.5,,web,"multi\r\nline",10.0.0.2',  # 2026-11-14 UTC
        "e3,u1,1,1763300000,browse,,,mobile,d3,10.0.0.3",  # Unix seconds: 2025-11-16
    ]
    events.write_bytes((EVENT_HEADER + "\r\n" + "\r\n".join(rows)).encode())  # no final line end
    items = tmp_path / "items.csv"
    items.write_text(ITEMS)
    weeks = land_csv_history(lake, events, items)
    assert weeks == [date(2025, 11, 16), date(2026, 11, 8), date(2026, 11, 15)]
    landed = {w: (lake.partition("raw", w, "events") / "events.csv").read_bytes() for w in weeks}
    assert landed[date(2026, 11, 15)] == f"{EVENT_HEADER}\n{rows[0]}\n".encode()
    assert landed[date(2026, 11, 8)] == f"{EVENT_HEADER}\n{rows[1]}\n".encode()
    assert landed[date(2025, 11, 16)] == f"{EVENT_HEADER}\n{rows[2]}\n".encode()


# ---- users without a profiles file --------------------------------------------------------------


def test_without_users_the_events_user_ids_become_the_snapshot(lake: Lake, export: Export) -> None:
    land_csv_history(lake, export.events, export.items)
    users = pd.read_csv(
        lake.partition("raw", WEEKS[0], "users") / "users.csv", dtype=str, keep_default_na=False
    )
    assert tuple(users.columns) == RAW_USER_COLUMNS
    events = pd.read_csv(export.events, dtype=str, keep_default_na=False)
    assert users["user_id"].tolist() == sorted(events["user_id"].unique())
    first = pd.to_datetime(events["timestamp"], utc=True).groupby(events["user_id"]).min().dt.date
    assert users.set_index("user_id")["signup_date"].to_dict() == {u: d.isoformat() for u, d in first.items()}
    assert users.drop(columns=["user_id", "signup_date"]).eq("").all().all()
    assert ingest_week(lake, WEEKS[2])["kinds"]["users"]["rows_read"] == len(users)


def test_without_users_the_lake_profiles_are_kept(lake: Lake, export: Export) -> None:
    earlier = lake.partition("raw", date(2026, 10, 25), "users") / "users.csv"
    earlier.parent.mkdir(parents=True)
    earlier.write_text(USERS)
    messages: list[str] = []
    land_csv_history(lake, export.events, export.items, progress=messages.append)
    assert lake.raw_weeks("users") == [date(2026, 10, 25)] and earlier.read_text() == USERS
    assert any("week 2026-10-25 is kept" in m for m in messages)


# ---- timestamps: the validate stage's reading -------------------------------------------------


def test_timestamps_are_read_as_the_validate_stage_reads_them() -> None:
    texts = [
        "2026-11-16T08:12:33Z",
        " 2026-11-16T08:12:33Z ",
        "2026-11-15T01:00:00+02:00",
        "2026-11-14T23:59:59.999Z",
        "2026-11-16",
        "2026-11-16 08:12:33",
        "1763300000",
        "1763300000.5",
        "-86400",
        "0",
        "",
        "  ",
        "yesterday",
        "2026-13-01T00:00:00Z",
        "99999999999",
        "1e9",
    ]
    days, parsed = event_days(texts)
    stamps = to_ts(pd.Series([t.strip() or None for t in texts], dtype=object))
    assert parsed.tolist() == stamps.notna().tolist()
    for day, ok, stamp in zip(days, parsed, stamps, strict=True):
        if ok:
            assert date(1970, 1, 1) + timedelta(days=int(day)) == stamp.date()
    weeks = week_of_days(np.arange(-30, 30))
    for day, week in zip(range(-30, 30), weeks, strict=True):
        expected = week_start_of(datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=day))
        assert date(1970, 1, 1) + timedelta(days=int(week)) == expected


# ---- bad input: one clear message, nothing landed ------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def event_line(n: int, ts: str = "2026-11-16T08:12:33Z") -> str:
    return f"e{n},u1,1,{ts},view,,120,tv,d1,10.0.0.1"


GOOD_EVENTS = EVENT_HEADER + "\n" + "\n".join(event_line(n) for n in range(3)) + "\n"


@pytest.mark.parametrize(
    ("events", "items", "error", "message"),
    [
        (None, ITEMS, DataNotFoundError, "no-such-events.csv does not exist: expected the events CSV file"),
        (
            GOOD_EVENTS,
            None,
            DataNotFoundError,
            "no-such-items.csv does not exist: expected the items CSV file",
        ),
        ("", ITEMS, DataReadError, "events.csv: the file is empty"),
        (EVENT_HEADER + "\n", ITEMS, DataReadError, "events.csv: the file has a header but no event rows"),
        (
            GOOD_EVENTS.replace(",timestamp,", ",time,"),
            ITEMS,
            DataReadError,
            "events.csv line 1: missing required column timestamp; unexpected column time; the events "
            "layout is event_id,user_id,item_id,timestamp,",
        ),
        (
            GOOD_EVENTS.replace(",ip_address", ",ip_address,country"),
            ITEMS,
            DataReadError,
            "events.csv line 1: unexpected column country;",
        ),
        (ITEMS, ITEMS, DataReadError, "events.csv line 1: the header is the items layout, not events"),
        (
            GOOD_EVENTS.replace(",", ";"),
            ITEMS,
            DataReadError,
            "events.csv line 1: the header is a single column containing semicolons",
        ),
        (
            GOOD_EVENTS + event_line(3, "yesterday") + "\n" + event_line(4) + "\n" + event_line(5, "") + "\n",
            ITEMS,
            DataReadError,
            "events.csv: 2 rows with a timestamp that does not parse (first at line 5: timestamp 'yesterday' "
            "is neither ISO-8601 nor Unix seconds); such a row has no week, so nothing was landed",
        ),
        (
            GOOD_EVENTS + event_line(3) + ",extra\n",
            ITEMS,
            DataReadError,
            "events.csv: 1 line with the wrong number of fields (first at line 5: 11 fields where the "
            "header has 10)",
        ),
        (
            GOOD_EVENTS,
            ITEMS.replace("genres,", ""),
            DataReadError,
            "items.csv line 1: missing required column genres; the items layout is "
            "item_id,title,genres,release_year,added_at [tags] (any order)",
        ),
        (
            GOOD_EVENTS,
            ITEMS.splitlines()[0] + "\n",
            DataReadError,
            "items.csv: the file has a header but no items rows",
        ),
    ],
)
def test_bad_input_is_one_clear_error_and_lands_nothing(
    tmp_path: Path, lake: Lake, events: str | None, items: str | None, error: type, message: str
) -> None:
    folder = tmp_path / "in"
    events_path = (
        write(folder / "events.csv", events) if events is not None else folder / "no-such-events.csv"
    )
    items_path = write(folder / "items.csv", items) if items is not None else folder / "no-such-items.csv"
    with pytest.raises(error) as caught:
        land_csv_history(lake, events_path, items_path)
    text = str(caught.value)
    assert message in text, text
    assert str(folder) in text  # the full path of the file at fault
    assert "\n" not in text
    assert lake_files(lake) == {} and not (lake.root / "raw").exists()


def test_bad_users_file_and_empty_folder(tmp_path: Path, lake: Lake) -> None:
    events = write(tmp_path / "events.csv", GOOD_EVENTS)
    items = write(tmp_path / "items.csv", ITEMS)
    users = write(tmp_path / "users.csv", USERS.replace("email,", "mail,"))
    with pytest.raises(DataReadError, match=r"users\.csv line 1: missing required column email; unexpected"):
        land_csv_history(lake, events, items, users)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFoundError, match=r"empty holds no \*\.csv or \*\.csv\.gz files"):
        land_csv_history(lake, tmp_path / "empty", items)
    assert lake_files(lake) == {}


def test_a_refused_history_leaves_the_lake_as_it_was(tmp_path: Path, lake: Lake, export: Export) -> None:
    land_csv_history(lake, export.events, export.items, export.users)
    before = lake_files(lake)
    bad = tmp_path / "bad.csv"
    text = export.events.read_text(encoding="utf-8")
    bad.write_text(text + event_line(1, "2026-11-31T00:00:00Z") + "\n", encoding="utf-8")
    with pytest.raises(DataReadError, match=r"1 row with a timestamp that does not parse \(first at line"):
        land_csv_history(lake, bad, export.items, export.users)
    assert lake_files(lake) == before


# ---- the command --------------------------------------------------------------------------------


def test_cli_lands_and_reports(lake: Lake, export: Export, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["land-csv", "--events", str(export.events), "--items", str(export.items)]
    assert main([*argv, "--users", str(export.users)]) == 0
    out = capsys.readouterr()
    assert out.out == (f"landed 3 weekly partitions (2026-11-01 .. 2026-11-15) into {lake.root / 'raw'}\n")
    assert "read " in out.err
    assert lake.raw_weeks("events") == WEEKS


def test_cli_missing_file_is_one_line_error(
    tmp_path: Path, lake: Lake, export: Export, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.csv"
    assert main(["land-csv", "--events", str(missing), "--items", str(export.items)]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == f"error: {missing} does not exist: expected the events CSV file (.csv or .csv.gz) or a folder of them\n"
    )
    assert lake_files(lake) == {}


def test_cli_help_names_the_layout(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["land-csv", "--help"])
    assert exit_info.value.code == 0
    assert "--events FILE_OR_DIR" in capsys.readouterr().out
