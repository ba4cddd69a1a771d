"""The lake: where each layer's partitions live, and atomic writes into it.

Layout under ``Settings.lake_dir`` (``week=YYYY-MM-DD`` is the Sunday that starts the week)::

    raw/<kind>/week=.../*.csv             upstream drops (events, items, users)
    staged/<kind>/week=.../data.parquet   ingest: every readable row, as text, with its source line
    validated/<kind>/week=.../data.parquet
    quarantine/<kind>/week=.../data.parquet   rows set aside, with ``_reason``
    anonymized/<kind>/week=.../data.parquet   no personal data from here on
    prepared/week=.../{train,holdout}.parquet
    models/week=.../content/              the week's content model (catalogue features; no user data)
    recommendations/week=.../{recommendations,rows}.parquet   top picks with reasons; page rows
    reports/week=.../...                  validation report, accounting
    runs/week=.../<stage>.json            each stage's result, for summaries and re-runs

The root is a local folder or an object store prefix (``RECSYS_LAKE_URI=s3://bucket/prefix``,
:mod:`recsys.io.lakefs`), read and written in place. On a local folder every write goes to a
temporary name in the same directory and is then renamed into place; in an object store one object is
one ``PutObject``, which readers see whole or not at all. Either way a reader never sees half a file
and a retry of the same week replaces, never appends.

A stage whose output for a week is more than one file commits them together
(:func:`commit_partition`): the files are written into a hidden sibling directory with a
``_commit.json`` marker naming the stage and the *attempt* (one execution of a stage), which then
replaces the partition in one rename. The stage's result record (``runs/week=.../<stage>.json``),
written last, names the same attempt: :func:`read_parquet` refuses a partition whose marker names an
attempt the stage never finished (a run killed after writing some of its partitions), with one line
that says which stage to re-run. A partition without a marker was written before partition commits.

An object store has no rename: there the files are written under the hidden temporary prefix, copied
into the partition (server-side copies) and the marker is written last, listing each file's size.
Readers *require* the marker in the committed partitions (:data:`COMMITTED_PARTITIONS`) and refuse a
partition whose files do not match it (a file missing, of another size, or newer than the marker: a
commit killed while copying), so a killed writer leaves nothing a reader would take, and a re-run of
the stage heals the partition.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from recsys.core.chaos import checkpoint
from recsys.core.errors import DataNotFoundError, DataReadError
from recsys.core.intervals import week_key
from recsys.io.lakefs import LakeLocation, ObjectPath, lake_location, readable

COMMIT_MARKER = "_commit.json"
#: the key of a stage's result record (and of a partition's marker) naming the attempt that wrote it
ATTEMPT = "attempt"
#: partitions committed as a whole (:meth:`Lake.commit`), as (layer, kind) with ``None`` for a layer
#: without kinds and ``*`` for every kind: in an object store a reader refuses one without a marker
COMMITTED_PARTITIONS = frozenset(
    {
        ("validated", "*"),
        ("anonymized", "events"),
        ("anonymized", "items"),
        ("anonymized", "users"),
        ("anonymized", "exposures"),
        ("prepared", None),
        ("recommendations", None),
    }
)
_attempt: ContextVar[str | None] = ContextVar("recsys_attempt", default=None)


def current_attempt() -> str | None:
    """The attempt this code runs in, set per stage by :func:`attempt_scope` (what
    :func:`recsys.pipeline.runner.run_stage` does); None outside one: a library call (``validate_week``
    on its own, a stage function called directly) commits its partitions without a marker, which
    readers take as they are."""
    return _attempt.get()


@contextmanager
def attempt_scope(attempt: str | None = None) -> Iterator[str]:
    """Run a block as one attempt: what it commits and records carries the same new id."""
    token = _attempt.set(attempt or uuid.uuid4().hex)
    try:
        yield _attempt.get() or ""
    finally:
        _attempt.reset(token)


class Lake:
    def __init__(self, root: LakeLocation | str) -> None:
        self.root: LakeLocation = root if isinstance(root, ObjectPath) else lake_location(root)

    @classmethod
    def from_settings(cls, settings: Any) -> Lake:
        """The lake of :class:`~recsys.core.settings.Settings`: ``lake_uri`` when set, else ``lake_dir``."""
        return cls(settings.lake_uri or settings.lake_dir)

    @property
    def in_object_store(self) -> bool:
        return isinstance(self.root, ObjectPath)

    def partition(self, layer: str, week: date, kind: str | None = None) -> Path:
        parts = [layer] + ([kind] if kind else []) + [week_key(week)]
        return self.root.joinpath(*parts)

    def data_file(self, layer: str, kind: str, week: date) -> Path:
        return self.partition(layer, week, kind) / "data.parquet"

    def raw_files(self, kind: str, week: date) -> list[Path]:
        folder = self.partition("raw", week, kind)
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if p.is_file() and is_data_file(p.name))

    def raw_weeks(self, kind: str = "events") -> list[date]:
        """Weeks that have raw files of ``kind``, oldest first."""
        return sorted(w for w in self._weeks(self.root / "raw" / kind) if self.raw_files(kind, w))

    def weeks(self, layer: str, kind: str | None = None) -> list[date]:
        base = self.root / layer / kind if kind else self.root / layer
        return sorted(self._weeks(base))

    @staticmethod
    def _weeks(base: LakeLocation) -> Iterator[date]:
        if not base.is_dir():
            return
        for child in base.iterdir():
            if child.is_dir() and child.name.startswith("week="):
                try:
                    yield date.fromisoformat(child.name.removeprefix("week="))
                except ValueError:
                    continue

    @contextmanager
    def commit(
        self, layer: str, week: date, kind: str | None = None, *, stage: str, record_week: date | None = None
    ) -> Iterator[Path]:
        """Write a partition's files into the directory this yields; they replace the partition together
        when the block ends without an error (:func:`commit_partition`). ``record_week``: the week whose
        record of ``stage`` commits it, when not ``week`` (recommend writes the next week's exposures)."""
        record = self.stage_result_file(record_week or week, stage).relative_to(self.root).as_posix()
        with commit_partition(self.root, self.partition(layer, week, kind), stage, record) as folder:
            yield folder

    def stage_result_file(self, week: date, stage: str) -> Path:
        return self.partition("runs", week) / f"{stage}.json"

    def write_stage_result(self, week: date, stage: str, result: dict[str, Any]) -> Path:
        return write_json(self.stage_result_file(week, stage), result)

    def read_stage_result(self, week: date, stage: str) -> dict[str, Any] | None:
        """The stage's result as it recorded it (without the attempt that committed it)."""
        path = self.stage_result_file(week, stage)
        if not path.exists():
            return None
        record = json.loads(path.read_text(encoding="utf-8"))
        record.pop(ATTEMPT, None)
        return record


def is_data_file(name: str) -> bool:
    """A raw data file's name: ``*.csv`` / ``*.csv.gz``, not hidden (``.``) nor set aside (``_``)."""
    return not name.startswith((".", "_")) and name.endswith((".csv", ".csv.gz"))


def _temp_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")


def write_parquet(df: pd.DataFrame, path: Path, schema: Any = None) -> Path:
    """Write ``df`` to ``path`` atomically (temp file + rename; one upload in an object store);
    ``schema``: a ``pyarrow.Schema`` to write instead of the one pyarrow infers (e.g. typed columns of
    an empty frame)."""
    extra = {"schema": schema} if schema is not None else {}
    if isinstance(path, ObjectPath):
        df.to_parquet(path.key, index=False, filesystem=path.fs, **extra)
        checkpoint(f"write:{path.name}")
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(path)
    try:
        df.to_parquet(tmp, index=False, **extra)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    checkpoint(f"write:{path.name}")
    return path


def write_text(text: str, path: Path) -> Path:
    if isinstance(path, ObjectPath):
        path.write_text(text)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def json_safe(value: Any) -> Any:
    """Strict-JSON copy (NaN and infinities become None, numpy scalars plain Python): for XCom and files."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and not isinstance(value, str):  # numpy scalars
        return json_safe(value.item())
    return value


def write_json(path: Path, obj: Any) -> Path:
    return write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", path)


def move_file(src: Path, dest: LakeLocation) -> LakeLocation:
    """Move a fully written local file into the lake at ``dest``, replacing what was there: a rename
    on a local lake (``src`` in the same filesystem), one upload into an object store."""
    if isinstance(dest, ObjectPath):
        try:
            _upload(src, dest)
        finally:
            Path(src).unlink(missing_ok=True)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dest)
    return dest


@contextmanager
def local_scratch(lake: Lake, name: str) -> Iterator[Path]:
    """A local working folder for files on their way into ``lake``: a hidden folder in a local lake (so
    :func:`move_file` is a rename), a temporary folder of this machine for an object store. Removed
    when the block ends."""
    if isinstance(lake.root, ObjectPath):
        folder = Path(tempfile.mkdtemp(prefix=f"recsys-{name}-"))
    else:
        folder = lake.root / f".{name}-{uuid.uuid4().hex[:8]}"
        folder.mkdir(parents=True)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def fetch(src: LakeLocation, dest: Path) -> Path:
    """A local copy of one lake file or folder at ``dest`` (``src`` itself on a local lake), for a
    reader of local files only (Great Expectations' engines, numpy and scipy model files)."""
    if not isinstance(src, ObjectPath):
        return src
    (dest if src.is_dir() else dest.parent).mkdir(parents=True, exist_ok=True)
    pafs.copy_files(
        src.key, str(dest), source_filesystem=src.fs, destination_filesystem=pafs.LocalFileSystem()
    )
    return dest


def _upload(src: Path, dest: ObjectPath) -> None:
    """Copy a local file or folder to ``dest`` in the object store (each file one upload)."""
    pafs.copy_files(
        str(src), dest.key, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=dest.fs
    )


def parquet_rows(path: LakeLocation) -> int:
    """Rows of a Parquet file of the lake from its footer (no data read); 0 when it is missing."""
    if not path.exists():
        return 0
    return pq.ParquetFile(readable(path)).metadata.num_rows


def parquet_columns(path: LakeLocation) -> list[str]:
    """The column names of a Parquet file of the lake (from its footer, without reading the data)."""
    return list(pq.read_schema(readable(path)).names)


def remove_tree(path: LakeLocation) -> None:
    """Remove a folder (or prefix) and everything under it; nothing if it is not there."""
    if isinstance(path, ObjectPath):
        path.rmtree()
    else:
        shutil.rmtree(path, ignore_errors=True)


def _copy_objects(src: ObjectPath, dest: ObjectPath) -> list[str]:
    """Server-side copies of every object under ``src`` to the same names under ``dest``; objects of
    ``dest`` that ``src`` does not have are deleted. Returns the names copied."""
    names = [f.relative_to(src).as_posix() for f in src.walk_files()]
    for name in names:
        src.fs.copy_file((src / name).key, (dest / name).key)
    for old in list(dest.walk_files()):
        if old.relative_to(dest).as_posix() not in names:
            old.unlink(missing_ok=True)
    return names


def replace_dir(src: Path, dest: Path) -> None:
    """Move a fully written directory ``src`` into place at ``dest``, replacing what was there (in an
    object store: uploaded to a hidden prefix first, then copied into place)."""
    if isinstance(dest, ObjectPath):
        staging = src
        if not isinstance(src, ObjectPath):
            staging = dest.with_name(f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}")
            _upload(src, staging)
            shutil.rmtree(src, ignore_errors=True)
        try:
            _copy_objects(staging, dest)
        finally:
            staging.rmtree()
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if dest.exists():
        old = _temp_sibling(dest)
        os.replace(dest, old)
    os.replace(src, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def commit_partition(root: Path, folder: Path, stage: str, record: str) -> Iterator[Path]:
    """Yield a hidden sibling of ``folder`` to write into; on success, mark it with ``_commit.json``
    (stage, attempt, files) and move it into place in one rename. On an error (or a kill) the
    partition keeps what it held and the sibling is removed (or left hidden, for the next run of the
    week to clean)."""
    if isinstance(folder, ObjectPath):
        with _commit_objects(root, folder, stage, record) as tmp:
            yield tmp
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        yield tmp
        if current_attempt() is None:  # not in a stage's attempt: whole, but vouched for by no record
            replace_dir(tmp, folder)
            return
        marker = {
            "stage": stage,
            ATTEMPT: current_attempt(),
            "partition": folder.relative_to(root).as_posix(),
            "record": record,
            "files": sorted(p.name for p in tmp.iterdir()),
            "committed_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        write_json(tmp / COMMIT_MARKER, marker)
        replace_dir(tmp, folder)
        checkpoint(f"commit:{marker['partition']}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def _commit_objects(root: ObjectPath, folder: ObjectPath, stage: str, record: str) -> Iterator[ObjectPath]:
    """:func:`commit_partition` in an object store: write under a hidden temporary prefix, copy into
    the partition, write the marker (the commit) last, remove the temporary prefix."""
    tmp = folder.with_name(f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        names = _copy_objects(tmp, folder)
        copied = folder.file_stats()  # one listing for every copied file's size
        marker = {
            "stage": stage,
            ATTEMPT: current_attempt(),
            "partition": folder.relative_to(root).as_posix(),
            "record": record,
            "files": sorted(names),
            "sizes": {name: copied[name].st_size for name in names},
            "committed_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        checkpoint(f"copy:{marker['partition']}")
        write_json(folder / COMMIT_MARKER, marker)
        checkpoint(f"commit:{marker['partition']}")
    finally:
        tmp.rmtree()


def _is_committed_layer(folder: LakeLocation) -> bool:
    parts = folder.parts
    if len(parts) >= 2 and (parts[-2], None) in COMMITTED_PARTITIONS:
        return True
    if len(parts) >= 3:
        return (parts[-3], "*") in COMMITTED_PARTITIONS or (parts[-3], parts[-2]) in COMMITTED_PARTITIONS
    return False


def _check_objects(folder: ObjectPath, marker: dict[str, Any]) -> None:
    """Refuse an object-store partition whose files are not the ones its marker committed."""
    stats = folder.file_stats()  # one listing: every object's size and time
    committed = stats.pop(COMMIT_MARKER, None)
    marker_time = committed.st_mtime if committed else (folder / COMMIT_MARKER).stat().st_mtime
    sizes: dict[str, int] = marker.get("sizes", {})
    listed = set(sizes)
    for name, stat in sorted(stats.items()):
        if name not in listed or stat.st_size != sizes[name] or stat.st_mtime > marker_time:
            raise DataReadError(
                f"partition {folder} is not committed: {name} is not the file its {COMMIT_MARKER} committed "
                f"(a commit of stage '{marker.get('stage')}' was stopped while copying); re-run stage "
                f"'{marker.get('stage')}' for the week of {marker.get('record', '?')}"
            )
        listed.discard(name)
    if listed:
        raise DataReadError(
            f"partition {folder} is not committed: {', '.join(sorted(listed))} missing; re-run stage "
            f"'{marker.get('stage')}' for the week of {marker.get('record', '?')}"
        )


def recommit_file(path: LakeLocation) -> None:
    """After an in-place rewrite of one file of a committed partition (an erasure, a re-key): in an
    object store its marker is written again with the file's new size, so readers go on taking it."""
    if not isinstance(path, ObjectPath):
        return
    marker_file = path.parent / COMMIT_MARKER
    try:
        marker = json.loads(marker_file.read_text())
    except FileNotFoundError:
        return
    marker.setdefault("sizes", {})[path.name] = path.stat().st_size
    write_json(marker_file, marker)


def check_committed(folder: Path) -> None:
    """Refuse a partition that a stage wrote in an attempt it never finished (see the module doc)."""
    try:
        marker = json.loads((folder / COMMIT_MARKER).read_text(encoding="utf-8"))
    except FileNotFoundError:
        if isinstance(folder, ObjectPath) and _is_committed_layer(folder):
            raise DataReadError(
                f"partition {folder} is not committed (no {COMMIT_MARKER}: a run was stopped while writing "
                "it); re-run the stage that writes it for this week"
            ) from None
        return  # written before partition commits, or not a committed layer
    except (OSError, ValueError) as exc:
        raise DataReadError(
            f"partition {folder}: unreadable {COMMIT_MARKER} ({exc}); re-run the week"
        ) from None
    if isinstance(folder, ObjectPath):
        _check_objects(folder, marker)
    stage, attempt, rel = marker.get("stage"), marker.get(ATTEMPT), marker.get("partition", "")
    if attempt is None:  # committed outside a stage's attempt: whole, vouched for by no record
        return
    root = folder
    for _ in rel.split("/"):
        root = root.parent
    record_file = root / marker.get("record", "")
    try:
        recorded = json.loads(record_file.read_text(encoding="utf-8")).get(ATTEMPT)
    except (OSError, ValueError):  # missing or unreadable: the stage did not finish its record
        recorded = None
    if recorded != attempt:
        raise DataReadError(
            f"partition {folder} is not committed: stage '{stage}' wrote it in a run that did not finish "
            f"(attempt {attempt}; the stage's record {'is missing' if recorded is None else 'names another'}); "
            f"re-run stage '{stage}' for the week of {marker.get('record', '?')}"
        )


def read_parquet(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a Parquet file of the lake: a missing file, a partition left uncommitted by a killed run
    and a corrupt file each fail with one line naming the path."""
    if not path.exists():
        raise DataNotFoundError(f"missing input: {path} (has the stage that writes it run for this week?)")
    check_committed(path.parent)
    try:
        if isinstance(path, ObjectPath):
            return pd.read_parquet(path.key, columns=columns, filesystem=path.fs)
        return pd.read_parquet(path, columns=columns)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid / ArrowIOError derive from these
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        # pyarrow names an in-memory buffer, not the file: the message names the file instead
        first = re.sub(r"^Could not open Parquet input source '<Buffer>': ", "", first)
        raise DataReadError(
            f"cannot read {path}: {first[:200]} (a corrupt or truncated Parquet file: re-run the stage that "
            "writes it for this week)"
        ) from None
