"""Typing the staged text: the typers of each kind, and the Arrow schemas of typed, validated and
quarantined rows.

A value that does not parse becomes null (:func:`to_float`, :func:`to_int`, :func:`to_ts`); for
optional columns, where null is allowed, the typers also say which rows held an unparseable value.
The same typers serve both engines (the Spark engine types its batch in chunks with them).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recsys.core.schemas import (
    QUARANTINE_REASON,
    RAW_COLUMNS,
    RAW_USER_COLUMNS,
    SOURCE_FILE,
    SOURCE_LINE,
    canonical_tags,
)
from recsys.data.ingest import RAW_LINE

EVENT_OUTPUT_COLUMNS = (
    "event_id",
    "user_id",
    "item_id",
    "ts",
    "event_type",
    "rating",
    "watch_seconds",
    "device_type",
    "device_id",
    "ip_address",
    SOURCE_FILE,
    SOURCE_LINE,
)
ITEM_OUTPUT_COLUMNS = (
    "item_id",
    "title",
    "genres",
    "release_year",
    "added_at",
    "tags",  # optional in the raw files: "" for every item of a file without it
    SOURCE_FILE,
    SOURCE_LINE,
)
USER_OUTPUT_COLUMNS = (*RAW_USER_COLUMNS, SOURCE_FILE, SOURCE_LINE)
OUTPUT_COLUMNS = {"events": EVENT_OUTPUT_COLUMNS, "items": ITEM_OUTPUT_COLUMNS, "users": USER_OUTPUT_COLUMNS}

# pandas datetime64[ns] covers about +-292 years around 1970: larger Unix seconds are not timestamps
_MAX_UNIX_SECONDS = 9.2e9


@functools.cache
def _space() -> str:
    """What Python's ``str.strip()`` removes (``str.isspace``): Unicode White_Space and the ASCII
    separators. Worked out on first use (a scan of every code point: about a second, kept out of
    every import)."""
    return "".join(chr(c) for c in range(0x110000) if chr(c).isspace())


def to_text(s: pd.Series) -> pd.Series:
    """Stripped text (as ``str.strip``); empty -> None.

    Arrow finds the values to trim (Python, a string at a time, took a quarter of a large week's
    validation); only those are replaced, the others stay the very same string objects (no copy of a
    column of clean text). A column holding other objects is converted by pandas."""
    values = s.to_numpy(dtype=object)
    try:
        text = pa.array(values, type=pa.string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        t = s.astype("string").str.strip()
        t = t.mask(t == "")
        return t.astype(object).where(t.notna(), None)
    trimmed = pc.utf8_trim(text, characters=_space())
    length = pc.binary_length(trimmed)
    changed = pc.fill_null(pc.not_equal(length, pc.binary_length(text)), False).to_numpy(zero_copy_only=False)
    empty = pc.fill_null(pc.equal(length, 0), True).to_numpy(zero_copy_only=False)  # null counts as empty
    out = values.copy()
    replace = np.flatnonzero(changed & ~empty)
    if len(replace):
        out[replace] = trimmed.take(pa.array(replace)).to_numpy(zero_copy_only=False)
    out[empty] = None
    return pd.Series(out, index=s.index, dtype=object)


def to_float(text: pd.Series) -> pd.Series:
    num = pd.to_numeric(text, errors="coerce").astype("float64")
    return num.where(np.isfinite(num))


def to_int(text: pd.Series) -> pd.Series:
    num = to_float(text)
    integral = num.notna() & (num % 1 == 0) & (num.abs() < 2**53)
    return num.where(integral).astype("Int64")


def to_ts(text: pd.Series) -> pd.Series:
    """ISO-8601 (``Z`` or offset; naive = UTC) or Unix seconds -> datetime64[ns, UTC]; else NaT."""
    out = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns, UTC]")
    as_string = text.astype("string")
    numeric = as_string.str.fullmatch(r"[+-]?\d+(?:\.\d+)?").fillna(False).astype(bool)
    if numeric.any():
        secs = pd.to_numeric(text[numeric], errors="coerce")
        secs = secs.where(secs.abs() < _MAX_UNIX_SECONDS)
        out[numeric] = pd.to_datetime(secs, unit="s", utc=True)
    iso = text.notna() & ~numeric
    if iso.any():
        out[iso] = pd.to_datetime(text[iso], format="ISO8601", utc=True, errors="coerce")
    return out


def _unparseable(text: pd.Series, parsed: pd.Series) -> np.ndarray:
    return (text.notna() & parsed.isna()).to_numpy(dtype=bool)


def _type_events(staged: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    t = pd.DataFrame(index=staged.index)
    for c in ("event_id", "user_id"):
        t[c] = to_text(staged[c])
    t["item_id"] = to_int(to_text(staged["item_id"]))
    t["ts"] = to_ts(to_text(staged["timestamp"]))
    t["event_type"] = to_text(staged["event_type"])
    rating_text, watch_text = to_text(staged["rating"]), to_text(staged["watch_seconds"])
    t["rating"] = to_float(rating_text)
    t["watch_seconds"] = to_float(watch_text)
    for c in ("device_type", "device_id", "ip_address"):
        t[c] = to_text(staged[c])
    t[SOURCE_FILE] = staged[SOURCE_FILE]
    t[SOURCE_LINE] = staged[SOURCE_LINE]
    unparseable = {
        "unparseable(rating)": _unparseable(rating_text, t["rating"]),
        "unparseable(watch_seconds)": _unparseable(watch_text, t["watch_seconds"]),
    }
    return t, unparseable


def _tags(staged: pd.DataFrame) -> pd.Series:
    """The optional ``tags`` column in its canonical form (distinct lower-cased tags, sorted,
    ``|``-joined); ``""`` where the batch (or a file of it) has no tags column or no tags."""
    if "tags" not in staged.columns:
        return pd.Series("", index=staged.index, dtype=object)
    return staged["tags"].astype(object).map(canonical_tags)


def _type_items(staged: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    t = pd.DataFrame(index=staged.index)
    t["item_id"] = to_int(to_text(staged["item_id"]))
    t["title"] = to_text(staged["title"])
    t["genres"] = to_text(staged["genres"])
    year_text, added_text = to_text(staged["release_year"]), to_text(staged["added_at"])
    t["release_year"] = to_int(year_text)
    t["added_at"] = to_ts(added_text)
    t["tags"] = _tags(staged)
    t[SOURCE_FILE] = staged[SOURCE_FILE]
    t[SOURCE_LINE] = staged[SOURCE_LINE]
    unparseable = {
        "unparseable(release_year)": _unparseable(year_text, t["release_year"]),
        "unparseable(added_at)": _unparseable(added_text, t["added_at"]),
    }
    return t, unparseable


def _type_users(staged: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    t = pd.DataFrame(index=staged.index)
    for c in RAW_USER_COLUMNS:
        t[c] = to_text(staged[c])
    age_text = t["age"]
    t["age"] = to_int(age_text)
    t[SOURCE_FILE] = staged[SOURCE_FILE]
    t[SOURCE_LINE] = staged[SOURCE_LINE]
    return t, {"unparseable(age)": _unparseable(age_text, t["age"])}


TYPERS: dict[str, Callable[[pd.DataFrame], tuple[pd.DataFrame, dict[str, np.ndarray]]]] = {
    "events": _type_events,
    "items": _type_items,
    "users": _type_users,
}


def empty_staged(kind: str) -> pd.DataFrame:
    columns = {c: pd.Series([], dtype=object) for c in RAW_COLUMNS[kind]}
    return pd.DataFrame(
        {**columns, SOURCE_FILE: pd.Series([], dtype=object), SOURCE_LINE: pd.Series([], dtype="int64")}
    )


def _arrow_type(dtype: Any, ts_unit: str) -> pa.DataType:
    if isinstance(dtype, pd.DatetimeTZDtype):
        return pa.timestamp(ts_unit, tz="UTC")
    if str(dtype) in ("Int64", "int64"):
        return pa.int64()
    if str(dtype) == "float64":
        return pa.float64()
    return pa.string()


@functools.cache
def typed_schema(kind: str, ts_unit: str = "ns") -> pa.Schema:
    """Arrow schema of the typed columns of ``kind`` (as the typer makes them), lineage included."""
    typed, _ = TYPERS[kind](empty_staged(kind))
    return pa.schema([(c, _arrow_type(typed[c].dtype, ts_unit)) for c in typed.columns])


@functools.cache
def output_schema(kind: str) -> pa.Schema:
    """Arrow schema (with pandas metadata, so ``Int64`` columns read back as ``Int64``) of validated rows."""
    typed, _ = TYPERS[kind](empty_staged(kind))
    valid = output_frame(kind, typed)
    schema = pa.Schema.from_pandas(valid, preserve_index=False)
    for i, name in enumerate(valid.columns):
        schema = schema.set(i, pa.field(name, _arrow_type(valid[name].dtype, "ns")))
    return schema


def quarantine_schema(text_columns: Iterable[str]) -> pa.Schema:
    """Arrow schema of a quarantine partition: the columns as staged, lineage, reason, raw line."""
    fields = [(c, pa.string()) for c in text_columns]
    fields += [(SOURCE_FILE, pa.string()), (SOURCE_LINE, pa.int64()), (QUARANTINE_REASON, pa.string())]
    return pa.schema([*fields, (RAW_LINE, pa.string())])


def output_frame(kind: str, typed: pd.DataFrame) -> pd.DataFrame:
    valid = typed[list(OUTPUT_COLUMNS[kind])].reset_index(drop=True)
    if kind in ("events", "items"):
        valid["item_id"] = valid["item_id"].astype("int64")
    return valid


def write_frame(df: pd.DataFrame, path: Path, schema: pa.Schema) -> Path:
    """Write ``df`` to ``path`` with ``schema`` (the same file layout whichever engine made it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(df, schema=schema, preserve_index=False)
    pq.write_table(table, path)
    return path
