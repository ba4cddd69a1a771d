"""Ingest: copy a week's raw CSV drops into the staged layer, as text, with their source lines.

For each kind (events, items, users) ingest reads every ``*.csv`` / ``*.csv.gz`` file of the week
under ``raw/<kind>/week=YYYY-MM-DD/`` and writes

* ``staged/<kind>/week=.../data.parquet``: one row per well-formed CSV record, every column as text
  (whatever header the file has: checking it against the contract is validation's job) plus
  ``_source_file`` (file name) and ``_source_line`` (1-based physical line where the record starts);
  files with different headers are staged under the union of their columns (missing = null);
* ``quarantine/<kind>/week=.../ingest.parquet``: records with the wrong number of fields, with the
  raw text of the record and a ``_reason`` such as ``malformed_line: expected 10 fields, got 11``.
  It is always written (possibly empty) so validation can account for every line.

Files are streamed (decompressed, decoded and parsed block by block, written to parquet in chunks of
``STAGE_CHUNK_ROWS`` records), so a week larger than memory can be staged.

Events must exist for the week. Items and users are snapshots: when the week has none, the latest
earlier week's snapshot is used and the result says which (``snapshot_week``).

A file that cannot be read as comma-separated UTF-8 text raises :class:`DataReadError` naming the
file and, where it applies, the line: wrong encoding (UTF-16, a byte that is not UTF-8), corrupt or
truncated gzip, binary content (NUL bytes), another delimiter, an empty file, no header row, a
duplicated header column, a quoted field that never closes, or a plain file cut in the middle of its
last record (a malformed last record with no line end). Nothing is written for the week unless
every kind could be read.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import logging
import os
import uuid
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.core.errors import ConfigError, DataNotFoundError, DataReadError
from recsys.core.intervals import week_start_of
from recsys.core.schemas import KINDS, QUARANTINE_REASON, RAW_COLUMNS, SOURCE_FILE, SOURCE_LINE
from recsys.io.storage import Lake

log = logging.getLogger(__name__)

# Column of the ingest quarantine holding the raw text of a malformed record.
RAW_LINE = "_raw_line"
INGEST_QUARANTINE_COLUMNS = (SOURCE_FILE, SOURCE_LINE, QUARANTINE_REASON, RAW_LINE)
SNAPSHOT_KINDS = ("items", "users")
STAGE_CHUNK_ROWS = 100_000  # records per parquet row group while staging

_BLOCK_BYTES = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_OTHER_DELIMITERS = {";": "semicolon", "\t": "tab", "|": "pipe"}
MALFORMED_SCHEMA = pa.schema(
    [
        (SOURCE_FILE, pa.string()),
        (SOURCE_LINE, pa.int64()),
        (QUARANTINE_REASON, pa.string()),
        (RAW_LINE, pa.string()),
    ]
)


def ingest_quarantine_file(lake: Lake, kind: str, week: date) -> Path:
    """Where ingest puts the malformed records of ``kind`` for ``week``."""
    return lake.partition("quarantine", week, kind) / "ingest.parquet"


def staged_schema(columns: Iterable[str]) -> pa.Schema:
    """Arrow schema of a staged partition: the text columns, then the lineage columns."""
    return pa.schema(
        [(c, pa.string()) for c in columns] + [(SOURCE_FILE, pa.string()), (SOURCE_LINE, pa.int64())]
    )


# ---- reading one file as a stream -----------------------------------------------------------


class _Bytes:
    """The decompressed bytes of a raw file, block by block; hashes and measures the file as it goes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = path.name
        self.sha256 = ""
        self.size_bytes = 0

    def _file_blocks(self) -> Iterator[bytes]:
        digest = hashlib.sha256()
        try:
            handle = self.path.open("rb")
        except OSError as exc:
            raise DataReadError(f"{self.name}: cannot read file ({exc.strerror or exc})") from None
        with handle:
            while True:
                try:
                    block = handle.read(_BLOCK_BYTES)
                except OSError as exc:
                    raise DataReadError(f"{self.name}: cannot read file ({exc.strerror or exc})") from None
                if not block:
                    break
                digest.update(block)
                self.size_bytes += len(block)
                yield block
        self.sha256 = digest.hexdigest()

    def blocks(self) -> Iterator[bytes]:
        if self.name.endswith(".gz"):
            yield from _with_head(self._gunzip(self._file_blocks()))
            return
        first = True
        for block in _with_head(self._file_blocks()):
            if first and block.startswith(_GZIP_MAGIC):
                raise DataReadError(
                    f"{self.name}: the file is gzip-compressed but named .csv; rename it to {self.name}.gz"
                )
            first = False
            yield block

    def _gunzip(self, blocks: Iterator[bytes]) -> Iterator[bytes]:
        decompressor = zlib.decompressobj(wbits=31)
        in_member = False  # compressed input was fed to a member that has not ended yet
        for block in blocks:
            data = block
            while data:
                in_member = True
                try:
                    out = decompressor.decompress(data)
                except zlib.error as exc:
                    raise DataReadError(
                        f"{self.name}: not a valid gzip file ({exc}); copy or export the file again"
                    ) from None
                if out:
                    yield out
                if decompressor.eof:  # end of a member: what follows may be another member
                    in_member = False
                    data = decompressor.unused_data
                    decompressor = zlib.decompressobj(wbits=31)
                else:
                    data = b""
        if in_member:
            raise DataReadError(
                f"{self.name}: gzip data is truncated (the file ends before the end of the compressed "
                "stream); copy or export the file again"
            )


def _with_head(blocks: Iterator[bytes], size: int = 4) -> Iterator[bytes]:
    """The same bytes, with a first block of at least ``size`` bytes (for magic numbers and BOMs)."""
    head = b""
    for block in blocks:
        head += block
        if len(head) >= size:
            break
    if head:
        yield head
    yield from blocks


class _Text:
    """Decodes blocks of bytes as UTF-8, reporting the line and column of a bad byte."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._offset = 0  # bytes before the current block
        self._newlines = 0  # b"\n" before the current block
        self._last_newline = -1  # offset of the last b"\n" before the current block
        self.seen_text = False

    def _position(self, block: bytes, rel: int) -> tuple[int, int]:
        """1-based (line, column) of byte ``rel`` of ``block`` (negative: in the previous block)."""
        if rel <= 0:
            return self._newlines + 1, self._offset + rel - self._last_newline
        last = block.rfind(b"\n", 0, rel)
        last_abs = self._offset + last if last >= 0 else self._last_newline
        return self._newlines + block.count(b"\n", 0, rel) + 1, self._offset + rel - last_abs

    def decode(self, blocks: Iterator[bytes]) -> Iterator[str]:
        first = True
        for block in blocks:
            skip = 0
            if first:
                if block.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
                    raise DataReadError(
                        f"{self.name} line 1: the file is UTF-16 encoded; re-export the file as UTF-8"
                    )
                skip = len(codecs.BOM_UTF8) if block.startswith(codecs.BOM_UTF8) else 0
                first = False
            nul = block.find(b"\x00")
            if nul >= 0:
                line, column = self._position(block, nul)
                raise DataReadError(
                    f"{self.name} line {line}: contains a NUL byte (column {column}); this looks like a "
                    "binary or corrupt file, not CSV text"
                )
            text = self._decode(block, skip, final=False)
            self._advance(block)
            if text:
                yield text
        text = self._decode(b"", 0, final=True)
        if text:
            yield text

    def _decode(self, block: bytes, skip: int, final: bool) -> str:
        pending = len(self._decoder.getstate()[0])  # bytes of an unfinished character, from before
        try:
            text = self._decoder.decode(block[skip:] if skip else block, final)
        except UnicodeDecodeError as exc:
            rel = exc.start - pending + skip
            line, column = self._position(block, rel)
            raise DataReadError(
                f"{self.name} line {line}: not valid UTF-8 (byte 0x{exc.object[exc.start]:02x} at column "
                f"{column}); re-export the file as UTF-8"
            ) from None
        if not self.seen_text and text.strip():
            self.seen_text = True
        return text

    def _advance(self, block: bytes) -> None:
        self._newlines += block.count(b"\n")
        last = block.rfind(b"\n")
        if last >= 0:
            self._last_newline = self._offset + last
        self._offset += len(block)


def _physical_lines(texts: Iterator[str]) -> Iterator[str]:
    """Physical lines with their line ends (``\\r\\n``, ``\\r`` or ``\\n``), across block boundaries."""
    carry = ""
    for piece in texts:
        text = carry + piece
        hold = text.endswith("\r")  # the next block may start with the "\n" of a "\r\n"
        lines = io.StringIO(text[:-1] if hold else text, newline="").readlines()
        carry = lines.pop() if lines and not lines[-1].endswith(("\n", "\r")) else ""
        if hold:
            carry += "\r"
        yield from lines
    if carry:
        yield carry


class _LineSource:
    """Feeds physical lines to ``csv.reader`` and remembers which lines the last record used."""

    def __init__(self, lines: Iterator[str]) -> None:
        self._lines = lines
        self.lineno = 0
        self.buffer: list[str] = []

    def __iter__(self) -> _LineSource:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self.lineno += 1
        self.buffer.append(line)
        return line

    def take(self) -> tuple[int, int, str, bool]:
        """First physical line, number of lines, raw text and whether it ended with a line end, of
        the record just read."""
        first, count = self.lineno - len(self.buffer) + 1, len(self.buffer)
        raw = "".join(self.buffer)
        self.buffer = []
        text = raw.rstrip("\r\n")
        return first, count, text, len(text) != len(raw)


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


@dataclass
class Record:
    line: int  # first physical line of the record
    lines: int  # physical lines it spans
    fields: list[str]
    raw: str  # the record's text as read, without its final line end
    ended: bool  # the record's last line had a line end


class CsvStream:
    """One raw CSV (or gzipped CSV) file, read as a stream: :meth:`header`, then :meth:`records`.

    ``expected_columns`` (the contract) is only used to recognise a missing header row and another
    delimiter; the header found is kept as it is. Blank lines are counted, not returned.
    """

    def __init__(self, path: Path, expected_columns: tuple[str, ...] = ()) -> None:
        self.path = path
        self.name = path.name
        self.expected = tuple(expected_columns)
        self.blank_lines = 0
        self._bytes = _Bytes(path)
        self._text = _Text(self.name)
        self._blocks = self._bytes.blocks()
        self._source = _LineSource(_physical_lines(self._text.decode(self._blocks)))
        self._reader = csv.reader(self._source)
        self._header: list[str] | None = None
        self.header_line = 0

    @property
    def sha256(self) -> str:
        return self._bytes.sha256

    @property
    def size_bytes(self) -> int:
        return self._bytes.size_bytes

    def _next(self) -> Record | None:
        try:
            row = next(self._reader)
        except StopIteration:
            return None
        except csv.Error as exc:
            first = self._source.lineno - len(self._source.buffer) + 1
            raise DataReadError(
                f"{self.name} line {first}: cannot parse CSV ({exc}); check for an unclosed quote"
            ) from None
        line, count, raw, ended = self._source.take()
        return Record(line, count, row, raw, ended)

    def _next_filled(self) -> Record | None:
        """The next non-blank record (blank lines are counted)."""
        while True:
            record = self._next()
            if record is None or not _is_blank(record.fields):
                return record
            if self._header is not None:
                self.blank_lines += record.lines

    def header(self) -> list[str]:
        if self._header is None:
            record = self._next_filled()
            if record is None:
                raise DataReadError(f"{self.name}: the file is empty (expected a header row and data lines)")
            self._header = _check_header(self.name, record.line, record.fields, self.expected)
            self.header_line = record.line
        return self._header

    def records(self) -> Iterator[Record]:
        """Every non-blank record after the header, well-formed or not.

        Raises DataReadError when the file ends inside a quoted field, or in the middle of a record
        of the wrong length with no line end (a truncated file).
        """
        width = len(self.header())
        current = self._next_filled()
        while current is not None:
            following = self._next_filled()
            if following is None:
                self._check_last(current, width)
            yield current
            current = following

    def _check_last(self, record: Record, width: int) -> None:
        if record.raw.count('"') % 2 == 1:
            try:  # does the record end inside a quoted field?
                list(csv.reader(io.StringIO(record.raw + "\n", newline=""), strict=True))
            except csv.Error as exc:
                if "unexpected end of data" in str(exc):
                    raise DataReadError(
                        f"{self.name} line {record.line}: a quoted field opened on this line is never "
                        "closed (the file ends inside it); check for an unclosed quote or a truncated file"
                    ) from None
        if len(record.fields) != width and not record.ended:
            raise DataReadError(
                f"{self.name} line {record.line}: the file ends in the middle of a record (expected "
                f"{width} fields, got {len(record.fields)}, and no line end); the file looks truncated: "
                "copy or export it again"
            )

    def close(self) -> None:
        self._blocks.close()


def read_header(path: Path, expected_columns: tuple[str, ...] = ()) -> list[str]:
    """The header of a raw file (reads only its first lines)."""
    stream = CsvStream(path, expected_columns)
    try:
        return stream.header()
    finally:
        stream.close()


def malformed_reason(expected: int, got: int) -> str:
    return f"malformed_line: expected {expected} fields, got {got}"


@dataclass
class ParsedFile:
    """One raw file read into memory, split into well-formed records and malformed ones."""

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


def read_csv_file(path: Path, expected_columns: tuple[str, ...] = ()) -> ParsedFile:
    """Read one raw CSV (or gzipped CSV) file into memory (small files; staging streams instead)."""
    stream = CsvStream(path, expected_columns)
    parsed = ParsedFile(name=stream.name, header=stream.header())
    width = len(parsed.header)
    for record in stream.records():
        if len(record.fields) == width:
            parsed.rows.append(record.fields)
            parsed.row_lines.append(record.line)
        else:
            parsed.malformed.append((record.line, malformed_reason(width, len(record.fields)), record.raw))
    parsed.blank_lines = stream.blank_lines
    parsed.sha256, parsed.size_bytes = stream.sha256, stream.size_bytes
    return parsed


# ---- staging: files -> parquet ----------------------------------------------------------------


class _ParquetRows:
    """Collects rows (tuples in schema order) and writes them to a parquet file in row groups."""

    def __init__(self, path: Path, schema: pa.Schema, chunk_rows: int) -> None:
        self.path = path
        self.schema = schema
        self.chunk_rows = chunk_rows
        self.rows: list[tuple[Any, ...]] = []
        self.count = 0
        self._writer = pq.ParquetWriter(path, schema)

    def add(self, row: tuple[Any, ...]) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.chunk_rows:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        columns = list(zip(*self.rows, strict=True))
        arrays = [pa.array(col, type=f.type) for col, f in zip(columns, self.schema, strict=True)]
        self._writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=self.schema))
        self.count += len(self.rows)
        self.rows = []

    def close(self) -> None:
        self.flush()
        self._writer.close()

    def abort(self) -> None:
        try:
            self._writer.close()
        finally:
            self.path.unlink(missing_ok=True)


@dataclass
class FileSummary:
    name: str
    header: list[str]
    rows_staged: int = 0
    rows_malformed: int = 0
    blank_lines: int = 0
    sha256: str = ""
    size_bytes: int = 0


@dataclass
class StagedKind:
    """What staging one kind wrote: ``staged_file`` (well-formed records) and ``malformed_file``."""

    kind: str
    snapshot_week: date | None
    columns: list[str]
    files: list[FileSummary]
    staged_file: Path
    malformed_file: Path

    def summary(self) -> dict[str, Any]:
        combined = hashlib.sha256()
        for f in self.files:
            combined.update(bytes.fromhex(f.sha256))
        staged = sum(f.rows_staged for f in self.files)
        malformed = sum(f.rows_malformed for f in self.files)
        return {
            "files": [f.name for f in self.files],
            "snapshot_week": self.snapshot_week.isoformat() if self.snapshot_week else None,
            "rows_read": staged + malformed,
            "rows_staged": staged,
            "rows_malformed": malformed,
            "blank_lines": sum(f.blank_lines for f in self.files),
            "bytes": sum(f.size_bytes for f in self.files),
            # one file: the file's own SHA-256 (as sha256sum prints it); several: SHA-256 over
            # the files' digests in name order
            "sha256": self.files[0].sha256 if len(self.files) == 1 else combined.hexdigest(),
        }


def stage_files(
    kind: str,
    paths: list[Path],
    staged_file: Path,
    malformed_file: Path,
    *,
    snapshot_week: date | None = None,
    chunk_rows: int = STAGE_CHUNK_ROWS,
) -> StagedKind:
    """Stream ``paths`` (raw files of ``kind``) into ``staged_file`` and ``malformed_file`` (parquet).

    Files with different headers are staged under the union of their columns, in order of first
    appearance. On a read error nothing is left at either path.
    """
    if not paths:
        raise DataNotFoundError(f"no {kind} files to stage")
    expected = RAW_COLUMNS.get(kind, ())
    headers = [read_header(p, expected) for p in paths]  # fail fast, before writing anything
    columns: list[str] = []
    for header in headers:
        columns.extend(c for c in header if c not in columns)
    for path in (staged_file, malformed_file):
        path.parent.mkdir(parents=True, exist_ok=True)
    staged = _ParquetRows(staged_file, staged_schema(columns), chunk_rows)
    malformed = _ParquetRows(malformed_file, MALFORMED_SCHEMA, chunk_rows)
    files: list[FileSummary] = []
    try:
        for path in paths:
            files.append(_stage_one(CsvStream(path, expected), columns, staged, malformed))
        staged.close()
        malformed.close()
    except BaseException:
        staged.abort()
        malformed.abort()
        raise
    return StagedKind(kind, snapshot_week, columns, files, staged_file, malformed_file)


def _stage_one(
    stream: CsvStream, columns: list[str], staged: _ParquetRows, malformed: _ParquetRows
) -> FileSummary:
    header = stream.header()
    width = len(header)
    summary = FileSummary(name=stream.name, header=header)
    position = {c: i for i, c in enumerate(header)}
    same = header == columns
    picks = [position.get(c) for c in columns]
    name = stream.name
    for record in stream.records():
        fields = record.fields
        if len(fields) != width:
            malformed.add((name, record.line, malformed_reason(width, len(fields)), record.raw))
            summary.rows_malformed += 1
            continue
        if same:
            staged.add((*fields, name, record.line))
        else:
            staged.add((*(fields[i] if i is not None else None for i in picks), name, record.line))
        summary.rows_staged += 1
    summary.blank_lines = stream.blank_lines
    summary.sha256, summary.size_bytes = stream.sha256, stream.size_bytes
    return summary


# ---- the stage -------------------------------------------------------------------------------


def find_raw_files(lake: Lake, kind: str, week: date) -> tuple[date, list[Path]]:
    """The raw files of ``kind`` for ``week``: for snapshots, the latest week at or before it that has some."""
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
        f"no raw {kind} files for week {week.isoformat()} in {folder} (*.csv / *.csv.gz): "
        + lake_history(lake, kind)
    )


def lake_history(lake: Lake, kind: str = "events") -> str:
    """Which weeks the lake's raw ``kind`` covers, as the end of an error message."""
    weeks = lake.raw_weeks(kind)
    if not weeks:
        return (
            f"the lake at {lake.root} has no raw {kind} at all (land data with `recsys generate`, "
            "`recsys load-movielens` or `recsys land-csv`)"
        )
    if len(weeks) == 1:
        return f"the lake's raw {kind} cover 1 week, {weeks[0].isoformat()}"
    return (
        f"the lake's raw {kind} cover {len(weeks)} weeks, {weeks[0].isoformat()} .. {weeks[-1].isoformat()}"
    )


def _temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")


def ingest_week(lake: Lake, week: date) -> dict[str, Any]:
    """Stage the raw events, items and users of ``week``; returns a JSON-able summary.

    Result: ``{"week": "YYYY-MM-DD", "kinds": {kind: {"files", "snapshot_week", "rows_read",
    "rows_staged", "rows_malformed", "blank_lines", "bytes", "sha256"}}}`` with
    ``rows_read == rows_staged + rows_malformed``.
    """
    if week != week_start_of(week):
        raise ConfigError(f"{week.isoformat()} is not a week start (weeks start on Sunday UTC)")
    found = {kind: find_raw_files(lake, kind, week) for kind in KINDS}
    for kind, (snapshot_week, _) in found.items():
        if snapshot_week != week:
            log.info("%s: no snapshot for week %s, using week %s", kind, week, snapshot_week)
    staged: dict[str, StagedKind] = {}
    targets: dict[Path, Path] = {}
    try:
        for kind, (snapshot_week, paths) in found.items():
            # everything goes to temporary files first: nothing is replaced unless all kinds read
            staged_file = lake.data_file("staged", kind, week)
            malformed_file = ingest_quarantine_file(lake, kind, week)
            tmp_staged, tmp_malformed = _temp_path(staged_file), _temp_path(malformed_file)
            targets[tmp_staged], targets[tmp_malformed] = staged_file, malformed_file
            staged[kind] = stage_files(kind, paths, tmp_staged, tmp_malformed, snapshot_week=snapshot_week)
        for tmp, final in targets.items():
            os.replace(tmp, final)
    finally:
        for tmp in targets:
            tmp.unlink(missing_ok=True)

    result: dict[str, Any] = {"week": week.isoformat(), "kinds": {}}
    for kind, item in staged.items():
        summary = item.summary()
        assert summary["rows_read"] == summary["rows_staged"] + summary["rows_malformed"]
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
