"""A user's own interaction history (flat CSV exports spanning many weeks) -> weekly raw partitions.

Inputs: UTF-8 CSV with a header row, comma separated, optionally gzip-compressed (``.csv.gz``):

* events: one file, or a folder of ``*.csv`` / ``*.csv.gz`` files (read in name order; all with the
  same header), in the raw events layout: the columns of ``RAW_EVENT_COLUMNS`` in any order, no
  others. ``timestamp`` is ISO-8601 (``Z`` or an offset; none means UTC) or Unix seconds, read the
  way the validate stage reads it.
* items: the catalogue, in the raw items layout (``RAW_ITEM_COLUMNS``, optional ``tags``).
* users (optional): the user profiles, in the raw users layout (``RAW_USER_COLUMNS``).

What lands (weeks start Sunday 00:00 UTC):

* ``raw/events/week=W/events.csv`` for every week ``W`` holding an event timestamp: the header, then
  the week's records as they are in the input (same bytes, file order; each record ends with
  ``\\n``). Other data files of that partition are removed: a landed week is replaced, never
  appended to.
* ``raw/items/week=O/items.csv`` and ``raw/users/week=O/users.csv`` for the oldest landed week
  ``O``: the catalogue and profiles as given, once. Ingest uses the latest snapshot at or before a
  week, so every landed week sees them; snapshots of the same kind in the weeks after ``O`` up to
  the newest landed week are removed, so none of them hides the ones given. Without users, a users
  snapshot the lake already has at or before ``O`` is kept; with none, ``users.csv`` lists each user
  id of the events with empty profile fields and ``signup_date`` the day of the user's first event
  (as for ml-latest-small, which has no profiles).

Every record read is landed, or nothing is: a record whose timestamp does not parse, or whose
number of fields differs from the header's (its timestamp cannot be located), makes the landing
fail with :class:`DataReadError` naming the first such line and how many there are. Other bad values
(a rating out of range, an unknown item) are landed as they are: the validate stage quarantines
them with a reason. A missing input is :class:`DataNotFoundError`; an empty file, a header that is
not the kind's layout (a missing or an unexpected column, named with the file) or a file that
cannot be read as CSV text is :class:`DataReadError`.

The files are read with the ingest stage's reader (:class:`recsys.data.csv_stream.CsvStream`: the same
records, line numbers and read errors as ingest), streamed ``chunk_rows`` records at a time into
per-week files in a hidden staging folder of the lake (``raw/.land-csv-*``; on this machine for a lake
in an object store); only when every input
has been read are they moved into place, one rename (one upload in an object store) per file.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.core.errors import ConfigError, DataNotFoundError, DataReadError
from recsys.core.schemas import KINDS, OPTIONAL_COLUMNS, RAW_COLUMNS, RAW_USER_COLUMNS
from recsys.data.csv_stream import CsvStream, Record
from recsys.data.raw import RAW_FILE_NAMES, csv_rows, raw_file, write_csv
from recsys.io.storage import Lake, is_data_file, move_file

CHUNK_ROWS = 100_000  # event records parsed and written at a time
SNAPSHOT_KINDS = ("items", "users")

_UNIX_SECONDS = r"[+-]?\d+(?:\.\d+)?"
# pandas datetime64[ns] covers about +-292 years around 1970 (as in the validate stage)
_MAX_UNIX_SECONDS = 9.2e9
_EPOCH = date(1970, 1, 1)
_SUNDAY = 3  # 1970-01-04, day 3 of the Unix epoch, was a Sunday
_PROGRESS_WEEKS = 20  # per-week progress lines at most


def _input_file(path: Path, what: str) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise DataNotFoundError(f"{path} does not exist: expected the {what} CSV file (.csv or .csv.gz)")
    if not path.is_file():
        raise DataNotFoundError(f"{path} is not a file: expected the {what} CSV file (.csv or .csv.gz)")
    return path


def event_files(path: Path) -> list[Path]:
    """The events file, or the ``*.csv`` / ``*.csv.gz`` files of an events folder in name order."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataNotFoundError(
            f"{path} does not exist: expected the events CSV file (.csv or .csv.gz) or a folder of them"
        )
    if path.is_file():
        return [path]
    files = sorted(p for p in path.iterdir() if p.is_file() and is_data_file(p.name))
    if not files:
        raise DataNotFoundError(f"{path} holds no *.csv or *.csv.gz files: expected the events export")
    return files


def _located(exc: DataReadError, path: Path) -> DataReadError:
    """The reader's error with the file's full path in place of its name."""
    message = str(exc)
    if message.startswith(path.name):
        message = f"{path}{message[len(path.name) :]}"
    return DataReadError(message)


def _layout(kind: str) -> str:
    optional = "".join(f" [{c}]" for c in OPTIONAL_COLUMNS[kind])
    return f"{','.join(RAW_COLUMNS[kind])}{optional}"


def check_header(path: Path, kind: str, header: list[str], line: int = 1) -> None:
    """Refuse a header that is not ``kind``'s raw layout (its columns in any order, no others)."""
    required = RAW_COLUMNS[kind]
    allowed = set(required) | set(OPTIONAL_COLUMNS[kind])
    names = set(header)
    missing = [c for c in required if c not in names]
    extra = [c for c in header if c not in allowed]
    if not missing and not extra:
        return
    for other in KINDS:
        other_allowed = set(RAW_COLUMNS[other]) | set(OPTIONAL_COLUMNS[other])
        if other != kind and set(RAW_COLUMNS[other]) <= names <= other_allowed:
            raise DataReadError(
                f"{path} line {line}: the header is the {other} layout, not {kind} "
                f"({','.join(header)[:120]!r}); give it as the {other} file"
            )
    problems = []
    if missing:
        problems.append(f"missing required column{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    if extra:
        problems.append(f"unexpected column{'s' if len(extra) > 1 else ''} {', '.join(extra)}")
    raise DataReadError(
        f"{path} line {line}: {'; '.join(problems)}; the {kind} layout is {_layout(kind)} (any order)"
    )


def _open(path: Path, kind: str) -> tuple[CsvStream, list[str]]:
    stream = CsvStream(path, RAW_COLUMNS[kind])
    try:
        header = stream.header()
    except DataReadError as exc:
        stream.close()
        raise _located(exc, path) from None
    try:
        check_header(path, kind, header, stream.header_line)
    except DataReadError:
        stream.close()
        raise
    return stream, header


def _records(stream: CsvStream, path: Path) -> Iterator[Record]:
    try:
        yield from stream.records()
    except DataReadError as exc:
        raise _located(exc, path) from None
    finally:
        stream.close()


def event_days(timestamps: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The UTC day (days since 1970-01-01) of each timestamp text, and whether it parsed: ISO-8601
    (``Z`` or an offset; none means UTC) or Unix seconds, surrounding spaces ignored, as the validate
    stage reads a timestamp. Unparsed texts get day 0."""
    text = pd.Series(timestamps, dtype="string[pyarrow]").str.strip()  # vectorized string kernels
    seconds = np.full(len(text), np.nan)
    numeric = text.str.fullmatch(_UNIX_SECONDS).to_numpy(dtype=bool, na_value=False)
    if numeric.any():
        values = pd.to_numeric(text[numeric].astype(object), errors="coerce").to_numpy(dtype=float)
        seconds[numeric] = np.where(np.abs(values) < _MAX_UNIX_SECONDS, values, np.nan)
    iso = ~numeric & text.ne("").to_numpy(dtype=bool, na_value=False)
    if iso.any():
        parsed = pd.to_datetime(text[iso].astype(object), format="ISO8601", utc=True, errors="coerce")
        seconds[iso] = ((parsed - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)).to_numpy(
            dtype=float, na_value=np.nan
        )
    ok = np.isfinite(seconds)
    return np.floor(np.where(ok, seconds, 0.0) / 86400).astype(np.int64), ok


def week_of_days(days: np.ndarray) -> np.ndarray:
    """The Sunday starting the week of each day, as a day number (weeks start Sunday 00:00 UTC)."""
    return days - (days - _SUNDAY) % 7


def _day(number: int) -> date:
    return _EPOCH + timedelta(days=int(number))


class _Problems:
    """Records that cannot be given a week: counted, the first one kept for the message."""

    def __init__(self, path: Path, width: int) -> None:
        self.path = path
        self.width = width
        self.bad_timestamps = 0
        self.malformed = 0
        self.first: tuple[int, str] | None = None  # (line, what is wrong)

    def __bool__(self) -> bool:
        return bool(self.bad_timestamps or self.malformed)

    def timestamp(self, line: int, value: str) -> None:
        self.bad_timestamps += 1
        if self.first is None or line < self.first[0]:
            self.first = (line, f"timestamp {value[:40]!r} is neither ISO-8601 nor Unix seconds")

    def fields(self, line: int, count: int) -> None:
        self.malformed += 1
        if self.first is None or line < self.first[0]:
            self.first = (line, f"{count} fields where the header has {self.width}")

    def error(self) -> DataReadError:
        assert self.first is not None
        counts = []
        if self.bad_timestamps:
            n = self.bad_timestamps
            counts.append(f"{n} row{'s' if n > 1 else ''} with a timestamp that does not parse")
        if self.malformed:
            n = self.malformed
            counts.append(f"{n} line{'s' if n > 1 else ''} with the wrong number of fields")
        line, what = self.first
        return DataReadError(
            f"{self.path}: {' and '.join(counts)} (first at line {line}: {what}); such a row has no week, "
            "so nothing was landed: fix or remove those rows"
        )


class _WeekFiles:
    """The event lines of each week, appended chunk by chunk to a file of the staging folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.header = ""
        self.rows: dict[int, int] = {}  # week (day number of its Sunday) -> records

    def file(self, week: int) -> Path:
        return self.folder / f"events-{week}.csv"

    def add(self, week: int, lines: list[str]) -> None:
        new = week not in self.rows
        with self.file(week).open("a", encoding="utf-8", newline="") as handle:
            if new:
                handle.write(self.header + "\n")
            handle.write("\n".join(lines) + "\n")
        self.rows[week] = self.rows.get(week, 0) + len(lines)


class _FirstSeen:
    """Each user id's first event day, for profiles derived from the events."""

    def __init__(self) -> None:
        self.days: dict[str, int] = {}

    def add(self, users: list[str], days: np.ndarray) -> None:
        frame = pd.DataFrame({"user": pd.Series(users, dtype=object).str.strip(), "day": days})
        frame = frame[frame["user"].ne("")]
        for user, day in frame.groupby("user", sort=False)["day"].min().items():
            known = self.days.get(str(user))
            if known is None or day < known:
                self.days[str(user)] = int(day)

    def frame(self) -> pd.DataFrame:
        ids = sorted(self.days)
        data = {name: [""] * len(ids) for name in RAW_USER_COLUMNS}
        data["user_id"] = ids
        data["signup_date"] = [_day(self.days[u]).isoformat() for u in ids]
        return pd.DataFrame(data, columns=list(RAW_USER_COLUMNS))


class _Chunk:
    """Up to ``chunk_rows`` well-formed event records, as plain text columns (no record objects:
    millions of those would keep the garbage collector busy)."""

    def __init__(self) -> None:
        self.raws: list[str] = []
        self.lines: list[int] = []
        self.stamps: list[str] = []
        self.users: list[str] = []
        self.records = 0  # well-formed or not

    def __len__(self) -> int:
        return self.records


def _read_event_file(
    path: Path,
    stream: CsvStream,
    header: list[str],
    weeks: _WeekFiles,
    first_seen: _FirstSeen | None,
    chunk_rows: int,
    progress: Callable[[str], None] | None,
) -> int:
    """Stream one event file into the per-week files; returns the records read."""
    width = len(header)
    ts_at, user_at = header.index("timestamp"), header.index("user_id")
    problems = _Problems(path, width)
    read = 0

    def land(chunk: _Chunk) -> None:
        if not chunk.stamps:
            return
        days, parsed = event_days(chunk.stamps)
        for position in np.flatnonzero(~parsed):
            problems.timestamp(chunk.lines[position], chunk.stamps[position])
        if problems:  # after the first problem, only count: nothing will be landed
            return
        week_of = week_of_days(days)
        order = np.argsort(week_of, kind="stable")
        values, starts = np.unique(week_of[order], return_index=True)
        ends = np.append(starts[1:], len(order))
        for week, start, end in zip(values, starts, ends, strict=True):
            weeks.add(int(week), [chunk.raws[i] for i in order[start:end]])
        if first_seen is not None:
            first_seen.add(chunk.users, days)

    chunk = _Chunk()
    for record in _records(stream, path):
        chunk.records += 1
        fields = record.fields
        if len(fields) != width:
            problems.fields(record.line, len(fields))
        else:
            chunk.raws.append(record.raw)
            chunk.lines.append(record.line)
            chunk.stamps.append(fields[ts_at])
            chunk.users.append(fields[user_at])
        if chunk.records >= chunk_rows:
            land(chunk)
            read += len(chunk)
            chunk = _Chunk()
            if progress is not None:
                progress(f"{path.name}: {read:,} rows read, {len(weeks.rows)} weeks so far")
    land(chunk)
    read += len(chunk)
    if problems:
        raise problems.error()
    return read


def _read_events(
    files: list[Path],
    weeks: _WeekFiles,
    first_seen: _FirstSeen | None,
    chunk_rows: int,
    progress: Callable[[str], None] | None,
) -> int:
    """Stream the event files (all with the same header) into per-week files; returns the records read."""
    first: tuple[Path, list[str]] | None = None
    total = 0
    for path in files:
        stream, header = _open(path, "events")
        if first is None:
            first = (path, header)
            weeks.header = csv_rows(pd.DataFrame(columns=header))[0]
        elif header != first[1]:
            stream.close()
            raise DataReadError(
                f"{path} line {stream.header_line}: the header ({','.join(header)}) differs from that of "
                f"{first[0]} ({','.join(first[1])}); give files with the same columns in the same order"
            )
        total += _read_event_file(path, stream, header, weeks, first_seen, chunk_rows, progress)
    if total == 0:
        where = f"{files[0]}: the file has" if len(files) == 1 else f"{files[0].parent}: the files have"
        raise DataReadError(f"{where} a header but no event rows")
    return total


def _copy_snapshot(path: Path, kind: str, dest: Path) -> int:
    """Check and copy a catalogue or profiles file (records as they are) to ``dest``; returns its rows."""
    stream, header = _open(path, kind)
    rows = 0
    with dest.open("w", encoding="utf-8", newline="") as handle:
        handle.write(csv_rows(pd.DataFrame(columns=header))[0] + "\n")
        for record in _records(stream, path):
            handle.write(record.raw + "\n")
            rows += 1
    if rows == 0:
        raise DataReadError(f"{path}: the file has a header but no {kind} rows")
    return rows


def _replace_partition_file(lake: Lake, kind: str, week: date, staged: Path) -> Path:
    """Move ``staged`` into place as ``kind``'s file of ``week``; remove the partition's other data files."""
    dest = move_file(staged, raw_file(lake, kind, week))
    for other in lake.raw_files(kind, week):
        if other != dest:
            other.unlink()
    return dest


def _remove_snapshots(lake: Lake, kind: str, after: date, through: date) -> int:
    """Remove ``kind``'s raw snapshots of the weeks after ``after`` up to ``through``; returns files removed."""
    removed = 0
    for week in lake.raw_weeks(kind):
        if after < week <= through:
            for file in lake.raw_files(kind, week):
                file.unlink()
                removed += 1
    return removed


def land_csv_history(
    lake: Lake,
    events: Path,
    items: Path,
    users: Path | None = None,
    progress: Callable[[str], None] | None = None,
    *,
    chunk_rows: int = CHUNK_ROWS,
) -> list[date]:
    """Split an events export by the week of each row's timestamp into raw weekly partitions, with
    the catalogue (and profiles) as the snapshot of the oldest week (see the module doc).

    Nothing is written unless every input could be read and every event row has a week. Landing the
    same files again gives the same files. Returns the weeks landed, oldest first.
    """
    if chunk_rows < 1:
        raise ConfigError(f"chunk_rows must be at least 1, got {chunk_rows}")
    files = event_files(Path(events))
    snapshots = {"items": _input_file(Path(items), "items")}
    if users is not None:
        snapshots["users"] = _input_file(Path(users), "users")

    raw_root = lake.root / "raw"
    new_raw_root = not raw_root.exists()
    if isinstance(raw_root, Path):
        staging = raw_root / f".land-csv-{uuid.uuid4().hex[:12]}"  # hidden: no reader sees it
        staging.mkdir(parents=True)
    else:  # an object store: the files are put together on this machine, then uploaded one by one
        staging = Path(tempfile.mkdtemp(prefix="recsys-land-csv-"))
    try:
        staged: dict[str, Path] = {}
        counts: dict[str, int] = {}
        for kind, path in snapshots.items():  # small, and checked before the long read
            staged[kind] = staging / RAW_FILE_NAMES[kind]
            counts[kind] = _copy_snapshot(path, kind, staged[kind])
        week_files = _WeekFiles(staging)
        first_seen = _FirstSeen() if users is None else None
        total = _read_events(files, week_files, first_seen, chunk_rows, progress)
        landed = sorted(week_files.rows)
        weeks = [_day(w) for w in landed]
        oldest, newest = weeks[0], weeks[-1]
        if progress is not None:
            progress(
                f"read {total:,} event rows from {len(files)} file{'s' if len(files) > 1 else ''}: "
                f"{len(weeks)} weeks, {oldest.isoformat()} .. {newest.isoformat()}"
            )
        if first_seen is not None:
            kept = [w for w in lake.raw_weeks("users") if w <= oldest]
            if kept:
                if progress is not None:
                    progress(f"users: no profiles given; the lake's snapshot of week {kept[-1]} is kept")
            else:
                staged["users"] = write_csv(first_seen.frame(), staging / RAW_FILE_NAMES["users"])
                counts["users"] = len(first_seen.days)

        step = max(1, len(landed) // _PROGRESS_WEEKS)
        for n, (number, week) in enumerate(zip(landed, weeks, strict=True)):
            _replace_partition_file(lake, "events", week, week_files.file(number))
            if progress is not None and (n % step == 0 or n == len(landed) - 1):
                progress(f"[{n + 1}/{len(landed)}] week {week.isoformat()}: {week_files.rows[number]} events")
        for kind in SNAPSHOT_KINDS:
            if kind not in staged:
                continue
            _replace_partition_file(lake, kind, oldest, staged[kind])
            removed = _remove_snapshots(lake, kind, oldest, newest)
            if progress is not None:
                source = snapshots[kind] if kind in snapshots else "the events' user ids"
                progress(
                    f"{kind}: {counts[kind]} rows from {source} as the snapshot of week {oldest.isoformat()}"
                    + (f" ({removed} later snapshot files in the landed weeks removed)" if removed else "")
                )
        return weeks
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if new_raw_root:
            with contextlib.suppress(OSError):  # nothing landed: leave no empty raw/ behind
                raw_root.rmdir()


__all__ = ["CHUNK_ROWS", "check_header", "event_days", "event_files", "land_csv_history", "week_of_days"]
