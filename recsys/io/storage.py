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
"""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from recsys.core.errors import DataNotFoundError
from recsys.core.intervals import week_key


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

    def stage_result_file(self, week: date, stage: str) -> Path:
        return self.partition("runs", week) / f"{stage}.json"

    def write_stage_result(self, week: date, stage: str, result: dict[str, Any]) -> Path:
        return write_json(self.stage_result_file(week, stage), result)

    def read_stage_result(self, week: date, stage: str) -> dict[str, Any] | None:
        path = self.stage_result_file(week, stage)
        if not path.exists():
            return None
        return json.loads(path.read_text(encoding="utf-8"))


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


def read_parquet(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise DataNotFoundError(f"missing input: {path} (has the stage that writes it run for this week?)")
    return pd.read_parquet(path)
