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

Every write goes to a temporary name in the same directory and is then renamed into place, so a
reader never sees half a file and a retry of the same week replaces, never appends.

A stage whose output for a week is more than one file commits them together
(:func:`commit_partition`): the files are written into a hidden sibling directory with a
``_commit.json`` marker naming the stage and the *attempt* (one execution of a stage), which then
replaces the partition in one rename. The stage's result record (``runs/week=.../<stage>.json``),
written last, names the same attempt: :func:`read_parquet` refuses a partition whose marker names an
attempt the stage never finished (a run killed after writing some of its partitions), with one line
that says which stage to re-run. A partition without a marker was written before partition commits.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from recsys.core.chaos import checkpoint
from recsys.core.errors import DataNotFoundError, DataReadError
from recsys.core.intervals import week_key

COMMIT_MARKER = "_commit.json"
#: the key of a stage's result record (and of a partition's marker) naming the attempt that wrote it
ATTEMPT = "attempt"
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
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

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
    def _weeks(base: Path) -> Iterator[date]:
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
    """Write ``df`` to ``path`` atomically (temp file + rename); ``schema``: a ``pyarrow.Schema`` to
    write instead of the one pyarrow infers (e.g. typed columns of an empty frame)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(path)
    try:
        df.to_parquet(tmp, index=False, **({"schema": schema} if schema is not None else {}))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    checkpoint(f"write:{path.name}")
    return path


def write_text(text: str, path: Path) -> Path:
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


def replace_dir(src: Path, dest: Path) -> None:
    """Move a fully written directory ``src`` into place at ``dest``, replacing what was there."""
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


def check_committed(folder: Path) -> None:
    """Refuse a partition that a stage wrote in an attempt it never finished (see the module doc)."""
    try:
        marker = json.loads((folder / COMMIT_MARKER).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return  # written before partition commits, or not a committed layer
    except (OSError, ValueError) as exc:
        raise DataReadError(
            f"partition {folder}: unreadable {COMMIT_MARKER} ({exc}); re-run the week"
        ) from None
    stage, attempt, rel = marker.get("stage"), marker.get(ATTEMPT), marker.get("partition", "")
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
        return pd.read_parquet(path, columns=columns)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid / ArrowIOError derive from these
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        # pyarrow names an in-memory buffer, not the file: the message names the file instead
        first = re.sub(r"^Could not open Parquet input source '<Buffer>': ", "", first)
        raise DataReadError(
            f"cannot read {path}: {first[:200]} (a corrupt or truncated Parquet file: re-run the stage that "
            "writes it for this week)"
        ) from None
