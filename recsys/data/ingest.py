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

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.core.errors import ConfigError, DataNotFoundError
from recsys.core.intervals import week_start_of
from recsys.core.schemas import KINDS, QUARANTINE_REASON, RAW_COLUMNS, SOURCE_FILE, SOURCE_LINE
from recsys.data.csv_stream import CsvStream, read_header
from recsys.io.storage import Lake, local_scratch, move_file

log = logging.getLogger(__name__)

# Column of the ingest quarantine holding the raw text of a malformed record.
RAW_LINE = "_raw_line"
INGEST_QUARANTINE_COLUMNS = (SOURCE_FILE, SOURCE_LINE, QUARANTINE_REASON, RAW_LINE)
SNAPSHOT_KINDS = ("items", "users")
STAGE_CHUNK_ROWS = 100_000  # records per parquet row group while staging

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


# ---- reading one file into memory -------------------------------------------------------------


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
    # everything goes to temporary files first (beside the lake's files on a local lake, on this
    # machine for an object store): nothing is replaced unless all kinds read
    with local_scratch(lake, f"ingest-{week.isoformat()}") as scratch:
        targets: dict[Path, Path] = {}
        for kind, (snapshot_week, paths) in found.items():
            staged_file = lake.data_file("staged", kind, week)
            malformed_file = ingest_quarantine_file(lake, kind, week)
            tmp_staged, tmp_malformed = (
                scratch / f"{kind}.staged.parquet",
                scratch / f"{kind}.malformed.parquet",
            )
            targets[tmp_staged], targets[tmp_malformed] = staged_file, malformed_file
            staged[kind] = stage_files(kind, paths, tmp_staged, tmp_malformed, snapshot_week=snapshot_week)
        for tmp, final in targets.items():
            move_file(tmp, final)

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
