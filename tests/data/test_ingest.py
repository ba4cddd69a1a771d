from __future__ import annotations

import gzip
import hashlib
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from recsys.core.errors import ConfigError, DataNotFoundError, DataReadError
from recsys.core.schemas import QUARANTINE_REASON, RAW_EVENT_COLUMNS, SOURCE_FILE, SOURCE_LINE
from recsys.data import csv_stream
from recsys.data.ingest import RAW_LINE, ingest_quarantine_file, ingest_week, read_csv_file, stage_files
from recsys.io.storage import Lake

WEEK = date(2026, 11, 15)  # a Sunday
PREVIOUS = date(2026, 11, 8)

EVENT_HEADER = ",".join(RAW_EVENT_COLUMNS)
ITEMS = "item_id,title,genres,release_year,added_at\n1,Heat,Action|Crime,1995,2020-01-01T00:00:00Z\n"
USERS = (
    "user_id,name,email,ip_address,device_id,age,gender,occupation,zip_code,signup_date\n"
    "u1,Ann,ann@example.com,10.0.0.1,d1,34,F,engineer,10115,2024-02-03\n"
)


def event(n: int, user: str = "u1", item: int = 1, ts: str = "2026-11-16T08:12:33Z") -> str:
    return f"e{n},{user},{item},{ts},view,,120,tv,d1,10.0.0.1"


def write_raw(lake: Lake, kind: str, week: date, data: str | bytes, name: str | None = None) -> Path:
    name = name or f"{kind}.csv"
    folder = lake.partition("raw", week, kind)
    folder.mkdir(parents=True, exist_ok=True)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if name.endswith(".gz"):
        raw = gzip.compress(raw)
    path = folder / name
    path.write_bytes(raw)
    return path


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    lake = Lake(tmp_path / "lake")
    write_raw(lake, "items", WEEK, ITEMS)
    write_raw(lake, "users", WEEK, USERS)
    return lake


def staged(lake: Lake, kind: str = "events") -> pd.DataFrame:
    return pd.read_parquet(lake.data_file("staged", kind, WEEK))


def test_stages_every_column_as_text_with_source_lines(lake: Lake) -> None:
    text = "\n".join(
        [
            EVENT_HEADER,
            event(1),
            # a quoted field with a comma and a newline: one record over two physical lines
            'e2,"u,2",1,2026-11-16T09:00:00Z,rating,4.5,,"mo\nbile",d2,10.0.0.2',
            event(3),
        ]
    )
    path = write_raw(lake, "events", WEEK, text + "\n")
    result = ingest_week(lake, WEEK)

    df = staged(lake)
    assert list(df.columns) == [*RAW_EVENT_COLUMNS, SOURCE_FILE, SOURCE_LINE]
    assert df[SOURCE_LINE].tolist() == [2, 3, 5]  # the record after the quoted newline starts on line 5
    assert df[SOURCE_FILE].unique().tolist() == ["events.csv"]
    assert df.loc[1, "user_id"] == "u,2"
    assert df.loc[1, "device_type"] == "mo\nbile"
    assert df.loc[0, "item_id"] == "1" and df.loc[0, "rating"] == ""
    assert all(df[c].map(type).eq(str).all() for c in RAW_EVENT_COLUMNS)

    events = result["kinds"]["events"]
    assert result["week"] == "2026-11-15"
    assert events["files"] == ["events.csv"]
    assert events["snapshot_week"] == "2026-11-15"
    assert (events["rows_read"], events["rows_staged"], events["rows_malformed"]) == (3, 3, 0)
    assert events["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert result["kinds"]["items"]["rows_staged"] == 1
    assert result["kinds"]["users"]["rows_staged"] == 1
    assert ingest_quarantine_file(lake, "events", WEEK).exists()  # always written, here empty


def test_malformed_lines_are_quarantined_with_their_line_numbers(lake: Lake) -> None:
    text = "\n".join(
        [
            EVENT_HEADER,
            event(1),
            event(2) + ",extra",
            "",  # blank line: skipped, not a data line
            "e3,u1,1",
            'e4,u1,1,"2026-11-16T08:00:00Z\n",view,,1,tv,d1',  # 9 fields over two lines
            event(5),
        ]
    )
    write_raw(lake, "events", WEEK, text + "\n")
    result = ingest_week(lake, WEEK)["kinds"]["events"]

    assert (result["rows_read"], result["rows_staged"], result["rows_malformed"]) == (5, 2, 3)
    assert result["blank_lines"] == 1
    assert staged(lake)[SOURCE_LINE].tolist() == [2, 8]
    bad = pd.read_parquet(ingest_quarantine_file(lake, "events", WEEK))
    assert bad[SOURCE_LINE].tolist() == [3, 5, 6]
    assert bad[QUARANTINE_REASON].tolist() == [
        "malformed_line: expected 10 fields, got 11",
        "malformed_line: expected 10 fields, got 3",
        "malformed_line: expected 10 fields, got 9",
    ]
    assert bad[RAW_LINE].tolist()[0] == event(2) + ",extra"
    assert bad[RAW_LINE].tolist()[2].startswith('e4,u1,1,"2026-11-16T08:00:00Z\n"')
    assert set(bad[SOURCE_FILE]) == {"events.csv"}


def test_gzip_input_and_several_files(lake: Lake) -> None:
    write_raw(lake, "events", WEEK, f"{EVENT_HEADER}\n{event(1)}\n{event(2)}\n", name="a.csv.gz")
    write_raw(lake, "events", WEEK, f"{EVENT_HEADER}\r\n{event(3)}\r\n", name="b.csv")
    result = ingest_week(lake, WEEK)["kinds"]["events"]
    assert result["files"] == ["a.csv.gz", "b.csv"]
    assert result["rows_staged"] == 3
    df = staged(lake)
    assert list(zip(df[SOURCE_FILE], df[SOURCE_LINE], strict=True)) == [
        ("a.csv.gz", 2),
        ("a.csv.gz", 3),
        ("b.csv", 2),
    ]
    assert df["event_id"].tolist() == ["e1", "e2", "e3"]
    assert df["ip_address"].tolist() == ["10.0.0.1"] * 3  # no stray \r


def test_header_is_staged_as_found(lake: Lake) -> None:
    # schema checks are validation's job: a renamed column is staged under its new name
    header = EVENT_HEADER.replace("rating", "stars")
    write_raw(lake, "events", WEEK, f"{header}\n{event(1)}\n")
    ingest_week(lake, WEEK)
    assert "stars" in staged(lake).columns and "rating" not in staged(lake).columns


def test_header_only_file_stages_zero_rows(lake: Lake) -> None:
    write_raw(lake, "events", WEEK, EVENT_HEADER + "\n")
    assert ingest_week(lake, WEEK)["kinds"]["events"]["rows_read"] == 0
    assert list(staged(lake).columns) == [*RAW_EVENT_COLUMNS, SOURCE_FILE, SOURCE_LINE]


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
def test_empty_file_is_a_clear_error(lake: Lake, content: bytes) -> None:
    write_raw(lake, "events", WEEK, content)
    with pytest.raises(DataReadError, match=r"events\.csv: the file is empty"):
        ingest_week(lake, WEEK)


def test_file_without_header_row(lake: Lake) -> None:
    write_raw(lake, "events", WEEK, f"{event(1)}\n{event(2)}\n")
    with pytest.raises(DataReadError, match=r"events\.csv line 1: no header row"):
        ingest_week(lake, WEEK)


def test_non_utf8_names_file_line_and_byte(lake: Lake) -> None:
    data = f"{EVENT_HEADER}\n{event(1)}\n".encode() + b"e2,Ren\xe9,1,2026-11-16T08:12:33Z,view,,1,tv,d,ip\n"
    write_raw(lake, "events", WEEK, data)
    with pytest.raises(DataReadError) as info:
        ingest_week(lake, WEEK)
    assert str(info.value) == (
        "events.csv line 3: not valid UTF-8 (byte 0xe9 at column 7); re-export the file as UTF-8"
    )


def test_utf8_bom_is_accepted(lake: Lake) -> None:
    write_raw(lake, "events", WEEK, b"\xef\xbb\xbf" + f"{EVENT_HEADER}\n{event(1)}\n".encode())
    ingest_week(lake, WEEK)
    assert staged(lake).columns[0] == "event_id"


def test_truncated_gzip(lake: Lake) -> None:
    good = gzip.compress(f"{EVENT_HEADER}\n".encode() + (event(1) + "\n").encode() * 200)
    folder = lake.partition("raw", WEEK, "events")
    folder.mkdir(parents=True)
    (folder / "events.csv.gz").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataReadError, match=r"events\.csv\.gz: gzip data is truncated"):
        ingest_week(lake, WEEK)


def test_not_gzip_named_gz(lake: Lake) -> None:
    folder = lake.partition("raw", WEEK, "events")
    folder.mkdir(parents=True)
    (folder / "events.csv.gz").write_bytes(f"{EVENT_HEADER}\n".encode())
    with pytest.raises(DataReadError, match=r"events\.csv\.gz: not a valid gzip file"):
        ingest_week(lake, WEEK)


def test_gzip_named_csv(lake: Lake) -> None:
    write_raw(lake, "events", WEEK, gzip.compress(f"{EVENT_HEADER}\n".encode()))
    with pytest.raises(DataReadError, match=r"gzip-compressed but named \.csv"):
        ingest_week(lake, WEEK)


def test_binary_file(lake: Lake) -> None:
    write_raw(lake, "events", WEEK, f"{EVENT_HEADER}\n".encode() + b"PK\x03\x04\x00\x00binary")
    with pytest.raises(DataReadError, match=r"events\.csv line 2: contains a NUL byte .*binary"):
        ingest_week(lake, WEEK)


@pytest.mark.parametrize(("delimiter", "label"), [(";", "semicolon"), ("\t", "tab")])
def test_other_delimiter(lake: Lake, delimiter: str, label: str) -> None:
    text = EVENT_HEADER.replace(",", delimiter) + "\n" + event(1).replace(",", delimiter) + "\n"
    write_raw(lake, "events", WEEK, text)
    with pytest.raises(DataReadError, match=rf"events\.csv line 1: .*{label}-separated"):
        ingest_week(lake, WEEK)


def test_duplicate_header_column(lake: Lake) -> None:
    write_raw(lake, "events", WEEK, EVENT_HEADER + ",user_id\n")
    with pytest.raises(DataReadError, match=r"column 'user_id' appears more than once"):
        ingest_week(lake, WEEK)


def test_missing_events_names_the_folder(lake: Lake) -> None:
    with pytest.raises(DataNotFoundError) as info:
        ingest_week(lake, WEEK)
    assert str(lake.partition("raw", WEEK, "events")) in str(info.value)


def test_items_snapshot_falls_back_to_latest_earlier_week(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    write_raw(lake, "events", WEEK, f"{EVENT_HEADER}\n{event(1)}\n")
    write_raw(lake, "items", date(2026, 11, 1), ITEMS + "2,Old,Drama,1990,\n")
    write_raw(lake, "items", PREVIOUS, ITEMS)
    write_raw(lake, "items", date(2026, 11, 22), "item_id,title\n9,Future\n")  # later: never used
    write_raw(lake, "users", WEEK, USERS)
    result = ingest_week(lake, WEEK)
    assert result["kinds"]["items"]["snapshot_week"] == "2026-11-08"
    assert result["kinds"]["users"]["snapshot_week"] == "2026-11-15"
    assert staged(lake, "items")["item_id"].tolist() == ["1"]


def test_no_snapshot_at_all(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    write_raw(lake, "events", WEEK, f"{EVENT_HEADER}\n{event(1)}\n")
    write_raw(lake, "items", WEEK, ITEMS)
    write_raw(lake, "users", date(2026, 11, 22), USERS)  # only a later week
    with pytest.raises(DataNotFoundError, match=r"no users snapshot for week 2026-11-15"):
        ingest_week(lake, WEEK)


def test_nothing_is_written_when_a_kind_is_unreadable(lake: Lake) -> None:
    write_raw(lake, "events", WEEK, f"{EVENT_HEADER}\n{event(1)}\n")
    write_raw(lake, "users", WEEK, b"user_id,name\nu1,\xff\n")
    with pytest.raises(DataReadError, match=r"users\.csv line 2"):
        ingest_week(lake, WEEK)
    assert not lake.data_file("staged", "events", WEEK).exists()


def test_rerun_replaces_the_partition(lake: Lake) -> None:
    path = write_raw(lake, "events", WEEK, f"{EVENT_HEADER}\n{event(1)}\n{event(2)}\n")
    ingest_week(lake, WEEK)
    path.write_text(f"{EVENT_HEADER}\n{event(3)}\n", encoding="utf-8")
    ingest_week(lake, WEEK)
    assert staged(lake)["event_id"].tolist() == ["e3"]


def test_week_must_be_a_sunday(lake: Lake) -> None:
    with pytest.raises(ConfigError, match="not a week start"):
        ingest_week(lake, date(2026, 11, 16))


def test_read_csv_file_crlf_and_quotes(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(b'a,b\r\n1,"two\r\nlines"\r\n3,"say ""hi"""\r\n')
    parsed = read_csv_file(path, ("a", "b"))
    assert parsed.rows == [["1", "two\r\nlines"], ["3", 'say "hi"']]
    assert parsed.row_lines == [2, 4]


# ---- streaming: the same records and error positions whatever the block and chunk sizes ----------

TRICKY = (
    "\ufeff"
    + EVENT_HEADER
    + "\r\n"
    + event(1)
    + "\r\n"
    + 'e2,"Zoë ""Z"" Ångström",1,2026-11-16T09:00:00Z,rating,4.5,,"mo\r\nbile",d2,10.0.0.2\r\n'
    + "\r\n"  # a blank line
    + event(3).replace("u1", "用户")
    + "\r"  # old Mac line end
    + event(4)
    + "\n"
    + "e5,u1,1\n"  # malformed
    + event(6)  # no final line end
)


@pytest.mark.parametrize("block", [1, 2, 3, 5, 7, 64, 1 << 20])
def test_block_boundaries_do_not_change_the_records(monkeypatch, tmp_path: Path, block: int) -> None:
    path = tmp_path / "events.csv"
    path.write_bytes(TRICKY.encode("utf-8"))
    monkeypatch.setattr(csv_stream, "_BLOCK_BYTES", block)
    parsed = read_csv_file(path, RAW_EVENT_COLUMNS)
    assert parsed.header == list(RAW_EVENT_COLUMNS)
    assert parsed.row_lines == [2, 3, 6, 7, 9]
    assert parsed.rows[1][1] == 'Zoë "Z" Ångström' and parsed.rows[1][7] == "mo\r\nbile"
    assert parsed.rows[2][1] == "用户"
    assert parsed.rows[4][0] == "e6"
    assert parsed.malformed == [(8, "malformed_line: expected 10 fields, got 3", "e5,u1,1")]
    assert parsed.blank_lines == 1
    assert parsed.sha256 == hashlib.sha256(TRICKY.encode("utf-8")).hexdigest()


@pytest.mark.parametrize("block", [1, 3, 4, 1 << 20])
def test_bad_byte_position_whatever_the_block_size(monkeypatch, tmp_path: Path, block: int) -> None:
    path = tmp_path / "events.csv"
    # a 3-byte character cut short by a comma, on line 3 after two multi-byte characters
    path.write_bytes(f"{EVENT_HEADER}\n{event(1)}\n".encode() + "e2,Zoë€".encode() + b"\xe2\x82,1\n")
    monkeypatch.setattr(csv_stream, "_BLOCK_BYTES", block)
    with pytest.raises(DataReadError) as info:
        read_csv_file(path, RAW_EVENT_COLUMNS)
    assert str(info.value) == (
        "events.csv line 3: not valid UTF-8 (byte 0xe2 at column 11); re-export the file as UTF-8"
    )


def test_staging_in_chunks_equals_staging_at_once(tmp_path: Path) -> None:
    lines = [EVENT_HEADER, *(event(n) for n in range(1, 26)), "bad,line", *(event(n) for n in range(30, 40))]
    path = tmp_path / "events.csv.gz"
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    whole = stage_files("events", [path], tmp_path / "a.parquet", tmp_path / "a_bad.parquet")
    chunked = stage_files("events", [path], tmp_path / "b.parquet", tmp_path / "b_bad.parquet", chunk_rows=4)
    assert whole.summary() == chunked.summary()
    assert pq.ParquetFile(tmp_path / "b.parquet").num_row_groups == 9  # 35 rows in groups of 4
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "a.parquet"), pd.read_parquet(tmp_path / "b.parquet")
    )
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "a_bad.parquet"), pd.read_parquet(tmp_path / "b_bad.parquet")
    )
    assert chunked.summary()["rows_read"] == 36


def test_concatenated_gzip_members(lake: Lake) -> None:
    folder = lake.partition("raw", WEEK, "events")
    folder.mkdir(parents=True)
    data = gzip.compress(f"{EVENT_HEADER}\n{event(1)}\n".encode()) + gzip.compress(f"{event(2)}\n".encode())
    (folder / "events.csv.gz").write_bytes(data)
    assert ingest_week(lake, WEEK)["kinds"]["events"]["rows_staged"] == 2


def test_truncated_plain_file_names_the_cut_line(lake: Lake) -> None:
    write_raw(lake, "events", WEEK, f"{EVENT_HEADER}\n{event(1)}\n{event(2)[:20]}")
    with pytest.raises(DataReadError) as info:
        ingest_week(lake, WEEK)
    assert str(info.value).startswith(
        "events.csv line 3: the file ends in the middle of a record (expected 10 fields, got 4, and no line end)"
    )
    # a last record with no line end but all its fields is fine
    write_raw(lake, "events", WEEK, f"{EVENT_HEADER}\n{event(1)}\n{event(2)}")
    assert ingest_week(lake, WEEK)["kinds"]["events"]["rows_staged"] == 2


def test_unclosed_quote(lake: Lake) -> None:
    write_raw(lake, "events", WEEK, f'{EVENT_HEADER}\n{event(1)}\ne2,"u1,1\n{event(3)}\n{event(4)}\n')
    with pytest.raises(
        DataReadError, match=r"^events\.csv line 3: a quoted field opened on this line is never closed"
    ):
        ingest_week(lake, WEEK)
    # a stray quote inside an unquoted field is text, not an opening quote
    write_raw(
        lake, "events", WEEK, f'{EVENT_HEADER}\n{event(1)}\ne2,u"1,1,2026-11-16T08:00:00Z,view,,1,tv,d,ip'
    )
    assert not lake.data_file("staged", "events", WEEK).exists()  # the failed run wrote nothing
    ingest_week(lake, WEEK)
    assert staged(lake)["user_id"].tolist() == ["u1", 'u"1']


def test_a_failed_ingest_leaves_no_temporary_files(lake: Lake) -> None:
    write_raw(lake, "events", WEEK, f"{EVENT_HEADER}\n{event(1)}\n")
    write_raw(lake, "users", WEEK, b"user_id,name\nu1,\xff\n")
    with pytest.raises(DataReadError):
        ingest_week(lake, WEEK)
    leftovers = [p for p in (lake.root / "staged").rglob("*")] + [
        p for p in (lake.root / "quarantine").rglob("*.tmp-*")
    ]
    assert not [p for p in leftovers if p.is_file()]


# ---- the items' optional tags column ---------------------------------------------------------

ITEMS_WITH_TAGS = (
    "item_id,title,genres,release_year,added_at,tags\n"
    '1,Heat,Action|Crime,1995,2020-01-01T00:00:00Z,"heist|los angeles, 1995"\n'
    "2,Up,Animation,2009,2020-01-01T00:00:00Z,\n"
)


def test_items_with_and_without_tags_are_staged_as_found(lake: Lake) -> None:
    write_raw(lake, "events", WEEK, f"{EVENT_HEADER}\n{event(1)}\n")
    ingest_week(lake, WEEK)
    assert "tags" not in staged(lake, "items").columns  # as today: nothing is added at ingest

    write_raw(lake, "items", WEEK, ITEMS_WITH_TAGS)
    result = ingest_week(lake, WEEK)["kinds"]["items"]
    assert (result["rows_staged"], result["rows_malformed"]) == (2, 0)
    items = staged(lake, "items")
    assert list(items.columns) == ["item_id", "title", "genres", "release_year", "added_at", "tags"] + [
        SOURCE_FILE,
        SOURCE_LINE,
    ]
    assert items["tags"].tolist() == ["heist|los angeles, 1995", ""]


def test_items_files_with_and_without_tags_stage_under_the_union(lake: Lake) -> None:
    write_raw(lake, "events", WEEK, f"{EVENT_HEADER}\n{event(1)}\n")
    write_raw(lake, "items", WEEK, ITEMS_WITH_TAGS, name="b.csv")  # next to items.csv, without tags
    ingest_week(lake, WEEK)
    items = staged(lake, "items")
    assert list(items.columns)[:6] == ["item_id", "title", "genres", "release_year", "added_at", "tags"]
    by_file = items.set_index([SOURCE_FILE, "item_id"])["tags"]
    assert by_file[("items.csv", "1")] is None  # the file has no tags column: missing
    assert by_file[("b.csv", "1")] == "heist|los angeles, 1995"
