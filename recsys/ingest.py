"""Ingest: copy a week's raw CSV drops into the staged layer, as text, with their source lines.

For each kind (events, items, users) ingest reads every ``*.csv`` / ``*.csv.gz`` file of the week
under ``raw/<kind>/week=YYYY-MM-DD/`` and writes

* ``staged/<kind>/week=.../data.parquet``: one row per well-formed CSV record, every column as text
  (whatever header the file has: checking it against the contract is validation's job) plus
  ``_source_file`` (file name) and ``_source_line`` (1-based physical line where the record starts);
* ``quarantine/<kind>/week=.../ingest.parquet``: records with the wrong number of fields, with the
  raw text of the record and a ``_reason`` such as ``malformed_line: expected 10 fields, got 11``.
  It is always written (possibly empty) so validation can account for every line.

Events must exist for the week. Items and users are snapshots: when the week has none, the latest
earlier week's snapshot is used and the result says which (``snapshot_week``).

A file that cannot be read as comma-separated UTF-8 text (wrong encoding, corrupt or truncated gzip,
binary content, other delimiter, empty, no header row) raises :class:`DataReadError` naming the file
and, where it applies, the line. Nothing is written for the week unless every kind could be read.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import hashlib
import io
import logging
import zlib
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from recsys.errors import ConfigError, DataNotFoundError, DataReadError
from recsys.intervals import week_start_of
from recsys.schemas import KINDS, QUARANTINE_REASON, RAW_COLUMNS, SOURCE_FILE, SOURCE_LINE
from recsys.storage import Lake, write_parquet

log = logging.getLogger(__name__)

# Column of the ingest quarantine holding the raw text of a malformed record.
RAW_LINE = "_raw_line"
INGEST_QUARANTINE_COLUMNS = (SOURCE_FILE, SOURCE_LINE, QUARANTINE_REASON, RAW_LINE)
SNAPSHOT_KINDS = ("items", "users")

_GZIP_MAGIC = b"\x1f\x8b"
_OTHER_DELIMITERS = {";": "semicolon", "\t": "tab", "|": "pipe"}


def ingest_quarantine_file(lake: Lake, kind: str, week: date) -> Path:
    """Where ingest puts the malformed records of ``kind`` for ``week``."""
    return lake.partition("quarantine", week, kind) / "ingest.parquet"


@dataclass
class ParsedFile:
    """One raw file, split into well-formed records and malformed ones."""

    name: str
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    row_lines: list[int] = field(default_factory=list)
    malformed: list[tuple[int, str, str]] = field(default_factory=list)  # (line, reason, raw text)
    blank_lines: int = 0
    sha256: str = ""
    size_bytes: int = 0

    def staged_frame(self) -> pd.DataFrame:
        df = pd.DataFrame(self.rows, columns=self.header, dtype=object)
        df[SOURCE_FILE] = self.name
        df[SOURCE_LINE] = pd.Series(self.row_lines, dtype="int64")
        return df

    def malformed_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                SOURCE_FILE: pd.Series([self.name] * len(self.malformed), dtype=object),
                SOURCE_LINE: pd.Series([m[0] for m in self.malformed], dtype="int64"),
                QUARANTINE_REASON: pd.Series([m[1] for m in self.malformed], dtype=object),
                RAW_LINE: pd.Series([m[2] for m in self.malformed], dtype=object),
            }
        )


def _position(data: bytes, offset: int) -> tuple[int, int]:
    """1-based (line, column) of byte ``offset`` in ``data``."""
    line = data.count(b"\n", 0, offset) + 1
    column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    return line, column


def _decompress(name: str, raw: bytes) -> bytes:
    if name.endswith(".gz"):
        try:
            return gzip.decompress(raw)
        except EOFError:
            raise DataReadError(
                f"{name}: gzip data is truncated (the file ends before the end of the compressed "
                "stream); copy or export the file again"
            ) from None
        except (gzip.BadGzipFile, zlib.error, OSError) as exc:
            raise DataReadError(
                f"{name}: not a valid gzip file ({exc}); copy or export the file again"
            ) from None
    if raw.startswith(_GZIP_MAGIC):
        raise DataReadError(f"{name}: the file is gzip-compressed but named .csv; rename it to {name}.gz")
    return raw


def _decode(name: str, data: bytes) -> str:
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise DataReadError(f"{name} line 1: the file is UTF-16 encoded; re-export the file as UTF-8")
    nul = data.find(b"\x00")
    if nul >= 0:
        line, column = _position(data, nul)
        raise DataReadError(
            f"{name} line {line}: contains a NUL byte (column {column}); this looks like a binary or "
            "corrupt file, not CSV text"
        )
    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[start:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = start + exc.start
        line, column = _position(data, offset)
        raise DataReadError(
            f"{name} line {line}: not valid UTF-8 (byte 0x{data[offset]:02x} at column {column}); "
            "re-export the file as UTF-8"
        ) from None


class _LineSource:
    """Feeds physical lines to ``csv.reader`` and remembers which lines the last record used."""

    def __init__(self, text: str) -> None:
        # newline="" keeps line endings untranslated, as the csv module expects; \r, \n and \r\n
        # all end a physical line.
        self._lines = io.StringIO(text, newline="")
        self.lineno = 0
        self.buffer: list[str] = []

    def __iter__(self) -> _LineSource:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self.lineno += 1
        self.buffer.append(line)
        return line

    def take(self) -> tuple[int, str]:
        """First physical line number and raw text of the record just read; resets the buffer."""
        first = self.lineno - len(self.buffer) + 1
        text = "".join(self.buffer).rstrip("\r\n")
        self.buffer = []
        return first, text


def _is_blank(row: list[str]) -> bool:
    return not row or (len(row) == 1 and not row[0].strip())


def _check_header(name: str, line: int, header: list[str], expected: tuple[str, ...]) -> list[str]:
    names = [h.strip() for h in header]
    if len(names) == 1 and len(expected) > 1:
        for delimiter, label in _OTHER_DELIMITERS.items():
            if delimiter in names[0]:
                raise DataReadError(
                    f"{name} line {line}: the header is a single column containing {label}s "
                    f"({names[0][:80]!r}); the file looks {label}-separated, but comma-separated CSV "
                    "is expected"
                )
    if expected and not set(names) & set(expected):
        raise DataReadError(
            f"{name} line {line}: no header row found (the first line {','.join(header)[:80]!r} has "
            f"none of the expected column names {', '.join(expected)}); add the header row"
        )
    names = [h or f"unnamed_{i + 1}" for i, h in enumerate(names)]
    seen: set[str] = set()
    for h in names:
        if h in seen:
            raise DataReadError(f"{name} line {line}: column {h!r} appears more than once in the header")
        seen.add(h)
    return names


def read_csv_file(path: Path, expected_columns: tuple[str, ...] = ()) -> ParsedFile:
    """Read one raw CSV (or gzipped CSV) file into text records.

    ``expected_columns`` (the contract) is only used to recognise a missing header row; the header
    found is kept as it is.
    """
    name = path.name
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataReadError(f"{name}: cannot read file ({exc.strerror or exc})") from None
    digest = hashlib.sha256(raw).hexdigest()
    data = _decompress(name, raw)
    text = _decode(name, data)
    if not text.strip():
        raise DataReadError(f"{name}: the file is empty (expected a header row and data lines)")

    source = _LineSource(text)
    reader = csv.reader(source)
    parsed: ParsedFile | None = None
    try:
        for row in reader:
            first_line, raw_text = source.take()
            if _is_blank(row):
                if parsed is not None:
                    parsed.blank_lines += source.lineno - first_line + 1
                continue
            if parsed is None:
                header = _check_header(name, first_line, row, expected_columns)
                parsed = ParsedFile(name=name, header=header, sha256=digest, size_bytes=len(raw))
                continue
            if len(row) != len(parsed.header):
                reason = f"malformed_line: expected {len(parsed.header)} fields, got {len(row)}"
                parsed.malformed.append((first_line, reason, raw_text))
            else:
                parsed.rows.append(row)
                parsed.row_lines.append(first_line)
    except csv.Error as exc:
        raise DataReadError(
            f"{name} line {source.lineno}: cannot parse CSV ({exc}); check for an unclosed quote"
        ) from None
    if parsed is None:  # only blank lines
        raise DataReadError(f"{name}: the file is empty (expected a header row and data lines)")
    return parsed


@dataclass
class _KindInput:
    kind: str
    snapshot_week: date
    files: list[ParsedFile]

    def staged(self) -> pd.DataFrame:
        frames = [f.staged_frame() for f in self.files]
        if len(frames) == 1:
            df = frames[0]
        else:
            df = pd.concat(frames, ignore_index=True, sort=False)
            # files with different headers: fill the gaps with None (text nulls), not NaN
            df = df.astype({c: object for c in df.columns if c != SOURCE_LINE})
            df = df.where(df.notna(), None)
        columns = [c for c in df.columns if c not in (SOURCE_FILE, SOURCE_LINE)]
        return df[[*columns, SOURCE_FILE, SOURCE_LINE]].reset_index(drop=True)

    def malformed(self) -> pd.DataFrame:
        frames = [f.malformed_frame() for f in self.files]
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]

    def summary(self) -> dict[str, Any]:
        combined = hashlib.sha256()
        for f in self.files:
            combined.update(bytes.fromhex(f.sha256))
        staged = sum(len(f.rows) for f in self.files)
        malformed = sum(len(f.malformed) for f in self.files)
        return {
            "files": [f.name for f in self.files],
            "snapshot_week": self.snapshot_week.isoformat(),
            "rows_read": staged + malformed,
            "rows_staged": staged,
            "rows_malformed": malformed,
            "blank_lines": sum(f.blank_lines for f in self.files),
            "bytes": sum(f.size_bytes for f in self.files),
            # one file: the file's own SHA-256 (as sha256sum prints it); several: SHA-256 over
            # the files' digests in name order
            "sha256": self.files[0].sha256 if len(self.files) == 1 else combined.hexdigest(),
        }


def _find_files(lake: Lake, kind: str, week: date) -> tuple[date, list[Path]]:
    files = lake.raw_files(kind, week)
    if files:
        return week, files
    folder = lake.partition("raw", week, kind)
    if kind in SNAPSHOT_KINDS:
        earlier = [w for w in lake.raw_weeks(kind) if w < week]
        if earlier:
            return earlier[-1], lake.raw_files(kind, earlier[-1])
        raise DataNotFoundError(
            f"no {kind} snapshot for week {week.isoformat()} or any earlier week: looked in {folder} "
            f"and earlier weeks of {folder.parent} for *.csv / *.csv.gz"
        )
    raise DataNotFoundError(
        f"no raw {kind} files for week {week.isoformat()}: looked in {folder} for *.csv / *.csv.gz"
    )


def ingest_week(lake: Lake, week: date) -> dict[str, Any]:
    """Stage the raw events, items and users of ``week``; returns a JSON-able summary.

    Result: ``{"week": "YYYY-MM-DD", "kinds": {kind: {"files", "snapshot_week", "rows_read",
    "rows_staged", "rows_malformed", "blank_lines", "bytes", "sha256"}}}`` with
    ``rows_read == rows_staged + rows_malformed``.
    """
    if week != week_start_of(week):
        raise ConfigError(f"{week.isoformat()} is not a week start (weeks start on Sunday UTC)")
    inputs: dict[str, _KindInput] = {}
    for kind in KINDS:  # read everything first: nothing is written unless all kinds are readable
        snapshot_week, paths = _find_files(lake, kind, week)
        parsed = [read_csv_file(p, RAW_COLUMNS[kind]) for p in paths]
        inputs[kind] = _KindInput(kind=kind, snapshot_week=snapshot_week, files=parsed)
        if snapshot_week != week:
            log.info("%s: no snapshot for week %s, using week %s", kind, week, snapshot_week)

    result: dict[str, Any] = {"week": week.isoformat(), "kinds": {}}
    for kind, item in inputs.items():
        summary = item.summary()
        assert summary["rows_read"] == summary["rows_staged"] + summary["rows_malformed"]
        write_parquet(item.staged(), lake.data_file("staged", kind, week))
        write_parquet(item.malformed(), ingest_quarantine_file(lake, kind, week))
        result["kinds"][kind] = summary
        log.info(
            "ingest %s %s: %d rows staged, %d malformed, from %s",
            kind,
            week,
            summary["rows_staged"],
            summary["rows_malformed"],
            ", ".join(summary["files"]),
        )
    return result
