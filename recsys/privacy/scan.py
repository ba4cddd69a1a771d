"""Leak scanner: after a run, look for personal data of the input in everything the run published.

What is looked for
------------------
The identifiers of the raw input, read from the lake: every ``user_id``, ``email``,
``ip_address``, ``device_id`` and ``name`` of

* the raw events of the training window (the week and the ``prepare.window_weeks - 1`` weeks
  before it, as the prepare stage reads them), and
* every raw users snapshot up to and including the week (they are small; a user who signed up
  long ago is still in the model).

Plus two generic nets, for personal data that is not in this input: anything shaped like an email
address, and any *public* IPv4 address (``ipaddress.is_global``: private, loopback and link-local
addresses are common in infrastructure logs and are only flagged when they are in the input).
Raw files that cannot be parsed line by line are read with the malformed lines skipped.

Where
-----
* the lake, the week's partitions from ``anonymized/`` on: ``anonymized``, ``prepared``,
  ``recommendations``, ``runs`` and ``reports`` (every file, temporary leftovers included).
  ``raw/``, ``staged/``, ``validated/`` and ``quarantine/`` legitimately hold personal data and are
  not scanned. ``reports/`` is scanned because the validation report is published: it is logged
  as an MLflow artifact of the validation run and of the training run;
* MLflow: the runs tagged ``week=<week>`` (deleted ones too) in the experiment
  ``settings.mlflow_experiment`` and its ``_validation`` companion: run name, params, tags, metric
  names and every artifact file; the models logged by those runs (params, tags, artifacts); the
  versions of ``settings.model_name`` tagged ``week=<week>`` (tags, description, artifacts);
* Airflow task logs: every file under the directories given.

How values are matched
----------------------
* Parquet is read by value, never as bytes: every string column (also dictionary-encoded, and the
  strings inside list columns) is compared with the identifier set on its distinct values
  (vectorized ``isin``, case-insensitive); values holding separators are also searched as text.
* Text (JSON, HTML, logs, YAML, anything not binary) is searched by whole tokens: the text is cut
  into maximal runs of letters and digits, and an identifier matches where it equals consecutive
  runs together with the text's own separators. So ``u000123`` is found in ``"u000123"`` and in
  ``user_u000123``, but the id ``1`` is not found in ``10`` and ``u00012`` not in ``u000123``.
* npz files (factor models): string arrays are compared by value; an array named ``users``,
  ``user`` or ``user_ids`` is compared with every raw user id.
* Other binary files (pickles, ...): the known identifiers are searched in their bytes, read as
  latin-1 text; the generic nets are not applied there (random bytes would trip them).
* ``.gz`` files are decompressed first.

Limitations (by design, documented so nobody relies on more)
------------------------------------------------------------
* Purely numeric ids shorter than 6 characters (MovieLens user ids are 1..6040) are NOT searched
  in free text or in ordinary columns: every count, rank, metric and item id would match. They are
  checked only in parquet columns named ``user`` / ``user_id`` and in the ``users`` arrays of npz
  files, which is where a raw id would replace a pseudonym. Identifiers shorter than 3 characters
  are treated the same way.
* Names are searched only in their full "First Last" form (two words or more): a single-word name
  is also a common word or a title.
* An identifier is matched as written (case-insensitively): a reformatted value (an IP written with
  leading zeros, a phone-style device id with other separators) or a hashed one is not found.
* IPv6 addresses are found only when they are in the input (no generic IPv6 net).

Findings never carry the personal value itself, only a masked sample (``a***@example.com``).
"""

from __future__ import annotations

import gzip
import ipaddress
import logging
import re
import tempfile
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from recsys.core.errors import RecsysError
from recsys.core.intervals import week_key, weeks_back
from recsys.core.settings import Settings
from recsys.data.prepare import PrepareConfig
from recsys.io.lakefs import readable
from recsys.io.spark import EngineConfig, choose_engine, get_spark
from recsys.io.storage import Lake
from recsys.io.tracking import CONTENT_SUFFIX, configure
from recsys.privacy.spark_scan import (
    CellKernels,
    ParquetColumn,
    Summary,
    collect_raw_values,
    identifier_frames,
    match_parquet_columns,
)

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

KINDS = ("user_id", "email", "ip", "device_id", "name")
# raw column -> finding kind; the order is the priority when one value is several kinds
RAW_COLUMN_KINDS = {
    "user_id": "user_id",
    "email": "email",
    "ip_address": "ip",
    "device_id": "device_id",
    "name": "name",
}
SCANNED_LAYERS = ("anonymized", "prepared", "recommendations", "runs", "reports")
NOT_SCANNED_LAYERS = ("raw", "staged", "validated", "quarantine")  # legitimately personal
VALIDATION_SUFFIX = "_validation"  # see recsys.pipeline.data_stages.log_validation_run
USER_COLUMNS = frozenset({"user", "user_id", "users", "user_ids"})
SHORT_NUMERIC_MAX_LEN = 5  # purely numeric ids of at most this many characters: not in free text
MIN_TEXT_LEN = 3
RAW_BLOCK_BYTES = 8 << 20  # raw CSV read in blocks of this many bytes (one Arrow batch each)

_WORD = re.compile(r"[^\W_]+")
_HAS_SEPARATOR = r"[\W_]"
EMAIL_RE = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])"
)
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
IPV4_RE = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?!\w|\.\d)")
_BINARY_SNIFF = 8192


class PrivacyLeak(RecsysError):
    """Personal data of the input was found where no personal data may be."""


# ---- masking -----------------------------------------------------------------------------------


def mask(value: str, kind: str) -> str:
    """A masked sample of a personal value: enough to recognise the kind, never the value."""
    value = str(value)
    if kind == "email" and "@" in value:
        local, _, domain = value.rpartition("@")
        return f"{local[:1]}***@{domain}"
    if kind == "ip":
        if "." in value:
            return value.split(".", 1)[0] + ".*.*.*"
        return value.split(":", 1)[0] + ":***"
    keep = min(3, len(value) // 3)
    return value[:keep] + "***"


# ---- identifiers -------------------------------------------------------------------------------


def _is_short_numeric(value: str) -> bool:
    return value.isdigit() and len(value) <= SHORT_NUMERIC_MAX_LEN


def _words(value: str) -> list[str]:
    return _WORD.findall(value)


def _text_form(value: str) -> str:
    """The part of a value text matching can see: from its first to its last letter or digit."""
    runs = list(_WORD.finditer(value))
    return value[runs[0].start() : runs[-1].end()] if runs else ""


@dataclass
class Identifiers:
    """The personal values of the input, lower-cased, each with its kind."""

    cells: dict[str, str] = field(default_factory=dict)  # exact cell values -> kind (all columns)
    user_ids: dict[str, str] = field(default_factory=dict)  # every raw user id (user columns, npz users)
    text: dict[str, str] = field(default_factory=dict)  # searchable in free text -> kind
    counts: dict[str, int] = field(default_factory=dict)
    not_in_text: int = 0  # short numeric / too short / single-word names: cells and user columns only

    @classmethod
    def from_values(cls, values: dict[str, Iterable[str]]) -> Identifiers:
        """``values``: kind -> raw values (any case, surrounding blanks ignored)."""
        ids = cls()
        seen: set[str] = set()
        for kind in KINDS:
            count = 0
            for raw in values.get(kind, ()):
                value = str(raw).strip().lower()
                if not value or value in seen:
                    continue
                seen.add(value)
                count += 1
                if kind == "ip" and _is_unremarkable_ip(value):
                    continue  # 127.0.0.1, 0.0.0.0 in the input: everywhere in logs, not personal
                if kind == "user_id":
                    ids.user_ids[value] = kind
                text = _text_form(value)
                searchable = (
                    len(text) >= MIN_TEXT_LEN
                    and not _is_short_numeric(text)
                    and not (kind == "name" and len(_words(text)) < 2)
                )
                if searchable:
                    ids.cells[value] = kind
                    ids.text[text] = kind
                else:
                    ids.not_in_text += 1
            ids.counts[kind] = count
        return ids

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _is_unremarkable_ip(value: str) -> bool:
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_unspecified


def raw_identifier_sources(lake: Lake, week: date, window_weeks: int = 12) -> list[Path]:
    """The raw files whose identifiers are looked for: the events of the window ending with ``week``
    and every users snapshot up to ``week``."""
    event_weeks = set(weeks_back(week, window_weeks))
    sources: list[Path] = []
    for kind in ("events", "users"):
        for w in lake.raw_weeks(kind):
            if w > week or (kind == "events" and w not in event_weeks):
                continue
            sources.extend(lake.raw_files(kind, w))
    return sources


def collect_identifiers(lake: Lake, week: date, window_weeks: int = 12) -> Identifiers:
    """Identifiers of the raw events of the window ending with ``week`` and of every users snapshot
    up to ``week`` (on this machine; :mod:`recsys.privacy.spark_scan` does the same as Spark jobs).

    Only the distinct values of each identifier column are kept while the files are streamed, so
    memory grows with the number of distinct identifiers, not with the number of events."""
    values: dict[str, set[str]] = {kind: set() for kind in KINDS}
    for path in raw_identifier_sources(lake, week, window_weeks):
        for kind, found in _raw_identifier_values(path).items():
            values[kind].update(found)
    return Identifiers.from_values({kind: sorted(found) for kind, found in values.items()})


def identifier_columns(header: Sequence[str]) -> dict[str, str]:
    """The identifier columns of a raw file's header (names as written, blanks around them allowed)
    -> their finding kind."""
    return {name: RAW_COLUMN_KINDS[name.strip()] for name in header if name.strip() in RAW_COLUMN_KINDS}


def _raw_identifier_values(path: Path) -> dict[str, set[str]]:
    """Distinct values of a raw file's identifier columns, by kind.

    The well-formed records only (as many fields as the header, quoted line breaks allowed; the
    ingest stage stages exactly these), bytes that are not UTF-8 replaced: what Spark's CSV reader
    gives in DROPMALFORMED mode, so both engines collect the same identifiers."""
    columns = identifier_columns(_raw_header(path))
    if not columns:
        return {}
    convert = pacsv.ConvertOptions(
        include_columns=list(columns),
        column_types=dict.fromkeys(columns, pa.binary()),
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )
    parse = pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=lambda row: "skip")
    read = pacsv.ReadOptions(block_size=RAW_BLOCK_BYTES)
    reader = pacsv.open_csv(readable(path), read_options=read, parse_options=parse, convert_options=convert)
    uniques: dict[str, list[pa.Array]] = {name: [] for name in columns}
    for batch in reader:
        for name in columns:
            parts = uniques[name]
            parts.append(pc.unique(batch.column(name)))
            if len(parts) >= 64:  # compact: memory stays with the distinct values
                uniques[name] = [pc.unique(pa.concat_arrays(parts))]
    found: dict[str, set[str]] = {}
    for name, kind in columns.items():
        parts = uniques[name]
        distinct = pc.unique(pa.concat_arrays(parts)).to_pylist() if parts else []
        found.setdefault(kind, set()).update(v.decode("utf-8", errors="replace") for v in distinct if v)
    return found


# ---- matching ----------------------------------------------------------------------------------


class Matcher:
    """Whole-token search of many identifiers in a text, plus the generic email / IPv4 nets."""

    def __init__(self, identifiers: Identifiers) -> None:
        self.ids = identifiers
        widths: dict[str, set[int]] = {}
        for value in identifiers.text:
            words = _words(value)
            widths.setdefault(words[0], set()).add(len(words))
        # first run of an identifier -> how many runs the identifiers starting with it span
        self._widths = {first: sorted(w) for first, w in widths.items()}

    def find(self, text: str, nets: bool = True) -> Counter[tuple[str, str, str]]:
        """Occurrences in ``text``: (kind, value, matched) -> count; matched = input | pattern."""
        found: Counter[tuple[str, str, str]] = Counter()
        if not text:
            return found
        lowered = text.lower()
        known = self.ids.text
        runs = list(_WORD.finditer(lowered))
        widths = self._widths
        starts = [i for i, m in enumerate(runs) if m.group() in widths]
        for i in starts:
            start = runs[i].start()
            for width in widths[runs[i].group()]:
                if i + width > len(runs):
                    break
                candidate = lowered[start : runs[i + width - 1].end()]
                kind = known.get(candidate)
                if kind is not None:
                    found[(kind, candidate, "input")] += 1
        if nets:
            for m in EMAIL_RE.finditer(lowered):
                value = m.group(0)
                if value not in known:
                    found[("email", value, "pattern")] += 1
            for m in IPV4_RE.finditer(lowered):
                value = m.group(0)
                if value not in known and _is_public_ip(value):
                    found[("ip", value, "pattern")] += 1
        return found


def _is_public_ip(value: str) -> bool:
    try:
        return ipaddress.ip_address(value).is_global
    except ValueError:
        return False


# ---- cell kernels (the same Python on both engines) --------------------------------------------


def normalize_cells(values: pd.Series) -> pd.Series:
    """Distinct cell values -> the form compared with the identifiers (trimmed, lower-cased)."""
    return values.astype(str).str.strip().str.lower()


def separated(lowered: pd.Series) -> pd.Series:
    """Which normalized cell values hold a separator, and are therefore also searched as text."""
    return lowered.str.contains(_HAS_SEPARATOR, regex=True)


def text_candidates(text: str, widths: Sequence[int]) -> Iterator[tuple[str, str]]:
    """What :meth:`Matcher.find` looks up in ``text``, without the identifier set (for a join).

    ``("span", s)`` for every run of ``w`` consecutive words (``w`` in ``widths``, ascending) with
    the text's own separators: a hit when ``s`` is an identifier's text form; ``("email", s)`` /
    ``("ip", s)`` for what the generic nets catch (public IPv4 only): a hit when ``s`` is *not*
    an input identifier."""
    lowered = text.lower()
    runs = list(_WORD.finditer(lowered))
    for i, run in enumerate(runs):
        for width in widths:
            if i + width > len(runs):
                break
            yield "span", lowered[run.start() : runs[i + width - 1].end()]
    for m in EMAIL_RE.finditer(lowered):
        yield "email", m.group(0)
    for m in IPV4_RE.finditer(lowered):
        if _is_public_ip(m.group(0)):
            yield "ip", m.group(0)


CELL_KERNELS = CellKernels(normalize=normalize_cells, separated=separated, candidates=text_candidates)


# ---- report ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    location: str
    kind: str  # email | ip | device_id | user_id | name
    sample: str  # masked: never the personal value itself
    count: int  # occurrences (cells, tokens) at this location
    distinct: int = 1  # distinct personal values
    matched: str = "input"  # input: a value of the raw input; pattern: caught by the generic net

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class LeakReport:
    week: str
    files_scanned: int = 0
    findings: list[Finding] = field(default_factory=list)
    unscanned: list[dict[str, str]] = field(default_factory=list)  # location, reason
    checked: Counter[str] = field(default_factory=Counter)  # what was looked at, by source
    identifiers: dict[str, int] = field(default_factory=dict)  # input identifiers by kind
    not_in_text: int = 0  # identifiers checked in cells / user columns only (see the limitations)

    @property
    def clean(self) -> bool:
        """No finding and nothing that could not be read (fail closed)."""
        return not self.findings and not self.unscanned

    def to_dict(self) -> dict[str, Any]:
        return {
            "week": self.week,
            "clean": self.clean,
            "files_scanned": self.files_scanned,
            "findings": [f.to_dict() for f in self.findings],
            "unscanned": list(self.unscanned),
            "checked": dict(self.checked),
            "identifiers": dict(self.identifiers),
            "identifiers_not_in_text": self.not_in_text,
        }

    def summary(self) -> str:
        if self.clean:
            return (
                f"week {self.week}: clean ({self.files_scanned} files, "
                f"{sum(self.identifiers.values())} input identifiers)"
            )
        parts = [f"{f.location} ({f.kind} x{f.count}, e.g. {f.sample})" for f in self.findings[:10]]
        parts += [f"{u['location']} (unreadable: {u['reason']})" for u in self.unscanned[:5]]
        more = len(self.findings) + len(self.unscanned) - len(parts)
        return (
            f"week {self.week}: personal data found in {len(self.findings)} place(s)"
            + (f", {len(self.unscanned)} unreadable" if self.unscanned else "")
            + ": "
            + "; ".join(parts)
            + (f"; and {more} more" if more > 0 else "")
        )


def require_clean(report: LeakReport) -> LeakReport:
    """Raise :class:`PrivacyLeak` (one line: locations and kinds) unless the report is clean."""
    if not report.clean:
        raise PrivacyLeak(report.summary())
    return report


class _Collector:
    def __init__(self, report: LeakReport, matcher: Matcher) -> None:
        self.report = report
        self.matcher = matcher

    def add(self, location: str, hits: Counter[tuple[str, str, str]]) -> None:
        by_kind: dict[tuple[str, str], list[tuple[str, int]]] = {}
        for (kind, value, matched), count in hits.items():
            by_kind.setdefault((kind, matched), []).append((value, count))
        for (kind, matched), values in sorted(by_kind.items()):
            values.sort(key=lambda vc: (-vc[1], vc[0]))
            self.report.findings.append(
                Finding(
                    location=location,
                    kind=kind,
                    sample=mask(values[0][0], kind),
                    count=sum(c for _, c in values),
                    distinct=len(values),
                    matched=matched,
                )
            )

    def add_summaries(self, location: str, summaries: Sequence[Summary]) -> None:
        """What :func:`~recsys.privacy.spark_scan.match_parquet_columns` found at ``location``,
        reported as :meth:`add` reports the same hits."""
        for item in sorted(summaries, key=lambda x: (x.kind, x.matched)):
            self.report.findings.append(
                Finding(
                    location=location,
                    kind=item.kind,
                    sample=mask(item.top_value, item.kind),
                    count=item.count,
                    distinct=item.distinct,
                    matched=item.matched,
                )
            )

    def text(self, location: str, text: str, nets: bool = True) -> None:
        self.add(location, self.matcher.find(text, nets=nets))

    def unreadable(self, location: str, exc: BaseException) -> None:
        reason = f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]
        self.report.unscanned.append({"location": location, "reason": reason})


# ---- files -------------------------------------------------------------------------------------


def scan_file(path: Path, location: str, out: _Collector) -> None:
    """Scan one file by its type (parquet by value, npz arrays, text, other binary)."""
    out.report.files_scanned += 1
    name = path.name.lower()
    try:
        if name.endswith(".parquet"):
            _scan_parquet(path, location, out)
        elif name.endswith(".npz"):
            _scan_npz(path, location, out)
        else:
            data = path.read_bytes()
            if name.endswith(".gz"):
                data = gzip.decompress(data)
                name = name.removesuffix(".gz")
            if name.endswith(".parquet") or name.endswith(".npz"):
                with tempfile.TemporaryDirectory() as tmp:
                    inner = Path(tmp) / name
                    inner.write_bytes(data)
                    out.report.files_scanned -= 1
                    scan_file(inner, location, out)
                return
            _scan_bytes(data, location, out)
    except Exception as exc:  # noqa: BLE001 - an unreadable file is reported, never skipped silently
        out.unreadable(location, exc)


def _scan_bytes(data: bytes, location: str, out: _Collector) -> None:
    if b"\x00" in data[:_BINARY_SNIFF]:
        out.text(location, data.decode("latin-1"), nets=False)
    else:
        out.text(location, data.decode("utf-8", errors="replace"))


def _string_values(array: Any) -> Any:
    """The strings of a pyarrow column: dictionaries decoded, lists and structs flattened."""
    t = array.type
    if pa.types.is_dictionary(t):
        return _string_values(pc.cast(array, t.value_type))
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _string_values(pc.list_flatten(array))
    if pa.types.is_struct(t):
        parts = [_string_values(pc.struct_field(array, i)) for i in range(t.num_fields)]
        parts = [p for p in parts if p is not None]
        return pa.chunked_array([c for p in parts for c in p.chunks], type=pa.string()) if parts else None
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return array if t == pa.string() else pc.cast(array, pa.string())
    return None


def bears_strings(arrow_type: pa.DataType, user_column: bool = False) -> bool:
    """Whether :func:`_string_values` finds strings in a column of this type (or, in a user column,
    integer / decimal ids): the columns worth reading."""
    t = arrow_type
    if pa.types.is_dictionary(t):
        return bears_strings(t.value_type)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return bears_strings(t.value_type)
    if pa.types.is_struct(t):
        return any(bears_strings(t.field(i).type) for i in range(t.num_fields))
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return True
    return user_column and (pa.types.is_integer(t) or pa.types.is_decimal(t))


def parquet_string_columns(path: Path) -> list[pa.Field]:
    """The fields of a Parquet file that hold strings (its footer only: no data is read)."""
    schema = pq.ParquetFile(readable(path)).schema_arrow
    return [f for f in schema if bears_strings(f.type, f.name.lower() in USER_COLUMNS)]


def _scan_parquet(path: Path, location: str, out: _Collector) -> None:
    wanted = parquet_string_columns(path)
    table = pq.ParquetFile(readable(path)).read(columns=[f.name for f in wanted])
    for name in table.column_names:
        column = table.column(name)
        user_column = name.lower() in USER_COLUMNS
        strings = _string_values(column)
        if (
            strings is None
            and user_column
            and (pa.types.is_integer(column.type) or pa.types.is_decimal(column.type))
        ):
            strings = pc.cast(column, pa.string())
        if strings is None:
            continue
        if isinstance(strings, pa.ChunkedArray):
            strings = strings.combine_chunks() if strings.num_chunks else pa.array([], pa.string())
        counts = pc.value_counts(strings.drop_null())
        values = pd.Series(counts.field("values").to_pylist(), dtype=object)
        freq = pd.Series(counts.field("counts").to_pylist(), dtype="int64")
        out.report.checked["parquet_columns"] += 1
        out.add(f"{location}[{name}]", _match_cells(values, freq, out.matcher, user_column))


def _match_cells(
    values: pd.Series, freq: pd.Series, matcher: Matcher, user_column: bool
) -> Counter[tuple[str, str, str]]:
    """Distinct cell values (with their frequencies) against the identifiers: exact, then as text."""
    hits: Counter[tuple[str, str, str]] = Counter()
    if values.empty:
        return hits
    lowered = values.astype(str).str.strip().str.lower()
    exact = matcher.ids.user_ids if user_column else {}
    table = {**matcher.ids.cells, **exact}
    is_hit = lowered.isin(table.keys())
    for value, count in zip(lowered[is_hit], freq[is_hit], strict=True):
        hits[(table[value], value, "input")] += int(count)
    rest = ~is_hit & lowered.str.contains(_HAS_SEPARATOR, regex=True)
    for value, count in zip(lowered[rest], freq[rest], strict=True):
        for key, n in matcher.find(value).items():
            hits[key] += n * int(count)
    return hits


def _scan_npz(path: Path, location: str, out: _Collector) -> None:
    with zipfile.ZipFile(path) as archive:
        names = [n.removesuffix(".npy") for n in archive.namelist()]
    with np.load(readable(path), allow_pickle=False) as arrays:
        for name in names:
            array = arrays[name]
            user_array = name.lower() in USER_COLUMNS
            if array.dtype.kind in "US" or (user_array and array.dtype.kind in "iu"):
                flat = array.ravel().astype(str)
                uniques, counts = np.unique(flat, return_counts=True)
                out.report.checked["npz_arrays"] += 1
                hits = _match_cells(
                    pd.Series(uniques, dtype=object), pd.Series(counts), out.matcher, user_array
                )
                out.add(f"{location}[{name}]", hits)


# ---- sources -----------------------------------------------------------------------------------


def _walk(folder: Path) -> Iterator[Path]:
    if folder.is_dir():
        yield from sorted(p for p in folder.rglob("*") if p.is_file())


def _lake_files(lake: Lake, week: date) -> list[Path]:
    key = week_key(week)
    files: list[Path] = []
    for layer in SCANNED_LAYERS:
        base = lake.root / layer
        if not base.is_dir():
            continue
        for partition in sorted(p for p in base.rglob(key) if p.is_dir()):
            files.extend(_walk(partition))
    return files


def _lake_location(lake: Lake, path: Path) -> str:
    return f"lake:{path.relative_to(lake.root).as_posix()}"


def _scan_lake(lake: Lake, week: date, out: _Collector) -> None:
    for path in _lake_files(lake, week):
        out.report.checked["lake_files"] += 1
        scan_file(path, _lake_location(lake, path), out)


def _scan_lake_spark(spark: SparkSession, lake: Lake, week: date, out: _Collector) -> None:
    """:func:`_scan_lake` with the Parquet files' cells matched by Spark jobs; the same findings, in
    the same order (other files are small and scanned here)."""
    files = _lake_files(lake, week)
    columns: dict[Path, list[ParquetColumn]] = {}
    footers: dict[Path, Exception] = {}
    for path in files:
        if not path.name.lower().endswith(".parquet"):
            continue
        location = _lake_location(lake, path)
        try:
            fields = parquet_string_columns(path)
        except Exception as exc:  # noqa: BLE001 - an unreadable file is reported, never skipped silently
            footers[path] = exc
            continue
        columns[path] = [
            ParquetColumn(f"{location}[{f.name}]", path, f.name, f.type, f.name.lower() in USER_COLUMNS)
            for f in fields
        ]
    summaries, failed = _match_on_spark(spark, columns, out.matcher.ids)
    for path in files:
        out.report.checked["lake_files"] += 1
        location = _lake_location(lake, path)
        if path not in columns and path not in footers:
            scan_file(path, location, out)
            continue
        out.report.files_scanned += 1
        if path in footers or path in failed:
            out.unreadable(location, footers.get(path) or failed[path])
            continue
        for column in columns[path]:
            out.report.checked["parquet_columns"] += 1
            out.add_summaries(column.location, summaries.get(column.location, []))


def _match_on_spark(
    spark: SparkSession, columns: dict[Path, list[ParquetColumn]], ids: Identifiers
) -> tuple[dict[str, list[Summary]], dict[Path, Exception]]:
    """All files' columns in one Spark job; if it fails, file by file to name the unreadable ones."""
    identifiers, texts = identifier_frames(ids.cells, ids.user_ids, ids.text)
    widths = sorted({len(_words(text)) for text in ids.text})

    def run(cols: list[ParquetColumn]) -> dict[str, list[Summary]]:
        return match_parquet_columns(spark, cols, identifiers, texts, widths, CELL_KERNELS)

    every = [c for cols in columns.values() for c in cols]
    try:
        return run(every), {}
    except Exception as exc:  # noqa: BLE001 - narrowed down below
        if len(columns) <= 1:
            return {}, dict.fromkeys(columns, exc)
        log.warning(
            "leak scan: a Spark job over %d Parquet files failed; retrying file by file", len(columns)
        )
    summaries: dict[str, list[Summary]] = {}
    failed: dict[Path, Exception] = {}
    for path, cols in columns.items():
        try:
            summaries.update(run(cols))
        except Exception as exc:  # noqa: BLE001 - reported as unreadable
            failed[path] = exc
    return summaries, failed


def collect_identifiers_spark(
    spark: SparkSession, lake: Lake, week: date, window_weeks: int = 12
) -> Identifiers:
    """:func:`collect_identifiers` as a Spark job: the raw files are read by Spark, and only their
    distinct identifier values come to this machine."""
    files = []
    for path in raw_identifier_sources(lake, week, window_weeks):
        header = _raw_header(path)
        if header:
            files.append((path, header))
    values = collect_raw_values(spark, files, identifier_columns)
    return Identifiers.from_values({kind: sorted(found) for kind, found in values.items()})


def _raw_header(path: Path) -> list[str]:
    parse = pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=lambda row: "skip")
    try:
        return pacsv.open_csv(readable(path), parse_options=parse).schema.names
    except pa.ArrowInvalid as exc:
        if "Empty CSV file" in str(exc):
            return []
        raise


def window_rows(lake: Lake, week: date, window_weeks: int) -> int:
    """Interactions of the window ending with ``week`` (from the anonymized events' Parquet footers):
    the size the engine is chosen by."""
    rows = 0
    for w in weeks_back(week, window_weeks):
        path = lake.data_file("anonymized", "events", w)
        if path.is_file():
            try:
                rows += pq.ParquetFile(readable(path)).metadata.num_rows
            except Exception:  # noqa: BLE001, S112 - an unreadable file is the scan's to report, not the sizing's
                continue
    return rows


def _scan_downloaded(folder: Path, prefix: str, out: _Collector) -> None:
    for path in _walk(folder):
        out.report.checked["mlflow_artifact_files"] += 1
        scan_file(path, f"{prefix}/{path.relative_to(folder).as_posix()}", out)


def _download(out: _Collector, location: str, **kwargs: Any) -> Path | None:
    import mlflow.artifacts  # deferred: mlflow is heavy, loaded only when MLflow is scanned

    try:
        return Path(mlflow.artifacts.download_artifacts(**kwargs))
    except Exception as exc:  # noqa: BLE001 - reported as unreadable
        out.unreadable(location, exc)
        return None


def _scan_mlflow(settings: Settings, week: date, out: _Collector) -> None:
    from mlflow.entities import ViewType  # deferred: mlflow is heavy, loaded only when MLflow is scanned

    client = configure(settings)
    # the content runs hold the catalogue's text (titles, user-written tags): scanned too
    names = [settings.mlflow_experiment + suffix for suffix in ("", VALIDATION_SUFFIX, CONTENT_SUFFIX)]
    experiment_ids = [e.experiment_id for n in names if (e := client.get_experiment_by_name(n)) is not None]
    day = week.isoformat()
    scanned_models: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="recsys-leak-scan-") as tmp:
        root = Path(tmp)
        runs = (
            _all_pages(
                lambda token: client.search_runs(
                    experiment_ids,
                    filter_string=f"tags.week = '{day}'",
                    run_view_type=ViewType.ALL,
                    page_token=token,
                )
            )
            if experiment_ids
            else []
        )
        for run in runs:
            run_id = run.info.run_id
            where = f"mlflow:run/{run_id}"
            out.report.checked["mlflow_runs"] += 1
            out.text(f"{where}/run_name", run.info.run_name or "")
            _scan_mapping(out, f"{where}/params", run.data.params)
            _scan_mapping(out, f"{where}/tags", run.data.tags)
            for metric in run.data.metrics:
                out.text(f"{where}/metrics/{metric}", metric)
            local = _download(out, f"{where}/artifacts", run_id=run_id, dst_path=str(root / run_id))
            if local is not None:
                _scan_downloaded(local, f"{where}/artifacts", out)
            models = _all_pages(
                lambda token, run_id=run_id: client.search_logged_models(
                    experiment_ids, filter_string=f"source_run_id = '{run_id}'", page_token=token
                )
            )
            for model in models:
                _scan_logged_model(out, model, root, scanned_models)
        versions = [
            v
            for v in _all_pages(
                lambda token: client.search_model_versions(
                    f"name = '{settings.model_name}'", page_token=token
                )
            )
            if (v.tags or {}).get("week") == day
        ]
        for version in versions:
            where = f"mlflow:model/{version.name}/{version.version}"
            out.report.checked["model_versions"] += 1
            _scan_mapping(out, f"{where}/tags", version.tags or {})
            out.text(f"{where}/description", version.description or "")
            model_id = getattr(version, "model_id", None)
            if model_id and model_id in scanned_models:
                continue
            local = _download(
                out,
                f"{where}/artifacts",
                artifact_uri=f"models:/{version.name}/{version.version}",
                dst_path=str(root / f"version-{version.name}-{version.version}"),
            )
            if local is not None:
                _scan_downloaded(local, f"{where}/artifacts", out)
            if model_id:
                scanned_models.add(model_id)


def _scan_logged_model(out: _Collector, model: Any, root: Path, seen: set[str]) -> None:
    if model.model_id in seen:
        return
    seen.add(model.model_id)
    where = f"mlflow:logged-model/{model.model_id}"
    out.report.checked["logged_models"] += 1
    _scan_mapping(out, f"{where}/params", model.params or {})
    _scan_mapping(out, f"{where}/tags", model.tags or {})
    local = _download(
        out, f"{where}/artifacts", artifact_uri=model.artifact_location, dst_path=str(root / model.model_id)
    )
    if local is not None:
        _scan_downloaded(local, f"{where}/artifacts", out)


def _scan_mapping(out: _Collector, where: str, mapping: dict[str, Any]) -> None:
    for key, value in sorted(mapping.items()):
        out.report.checked["mlflow_fields"] += 1
        out.text(f"{where}/{key}", f"{key}\n{value}")


def _all_pages(search: Any) -> list[Any]:
    items: list[Any] = []
    token = None
    while True:
        page = search(token)
        items.extend(page)
        token = getattr(page, "token", None)
        if not token:
            return items


def _scan_logs(dirs: Sequence[Path], out: _Collector) -> None:
    for folder in dirs:
        folder = Path(folder)
        if not folder.exists():
            out.unreadable(f"airflow-log:{folder}", FileNotFoundError("log directory does not exist"))
            continue
        files = [folder] if folder.is_file() else list(_walk(folder))
        for path in files:
            out.report.checked["airflow_log_files"] += 1
            scan_file(path, f"airflow-log:{path}", out)


# ---- entry point -------------------------------------------------------------------------------


def scan_for_leaks(
    settings: Settings,
    week: date,
    airflow_log_dirs: Sequence[Path] = (),
    *,
    window_weeks: int | None = None,
    mlflow: bool = True,
    engine: EngineConfig | None = None,
) -> LeakReport:
    """Scan everything the run of ``week`` published for personal data of its input.

    ``window_weeks``: raw event weeks whose identifiers are collected: the prepare stage's training
    window, which callers holding the pipeline config pass (``config.prepare.window_weeks``); the
    default is :class:`PrepareConfig`'s. ``mlflow=False`` skips MLflow (lake and logs only).
    ``engine``: where the heavy parts run (collecting the raw identifiers, matching the lake's
    Parquet cells), chosen by :func:`~recsys.io.spark.choose_engine` from the window's interactions
    and the Spark master; callers holding the pipeline config pass ``config.engine`` (default: auto).
    Both engines give the same report.
    Returns a :class:`LeakReport`; :func:`require_clean` turns findings into an error.
    """
    lake = Lake.from_settings(settings)
    if window_weeks is None:
        window_weeks = PrepareConfig().window_weeks
    chosen = choose_engine(
        engine or EngineConfig(), window_rows(lake, week, window_weeks), settings.spark_master
    )
    spark = get_spark(settings) if chosen == "spark" else None
    log.info("leak scan for week %s on %s", week, chosen)
    if spark is not None:
        identifiers = collect_identifiers_spark(spark, lake, week, window_weeks)
    else:
        identifiers = collect_identifiers(lake, week, window_weeks)
    report = LeakReport(
        week=week.isoformat(), identifiers=dict(identifiers.counts), not_in_text=identifiers.not_in_text
    )
    if identifiers.total == 0:
        log.warning("leak scan for week %s: no raw input found under %s", week, lake.root / "raw")
    out = _Collector(report, Matcher(identifiers))
    if spark is not None:
        _scan_lake_spark(spark, lake, week, out)
    else:
        _scan_lake(lake, week, out)
    if mlflow:
        _scan_mlflow(settings, week, out)
    _scan_logs([Path(p) for p in airflow_log_dirs], out)
    log.info("leak scan: %s", report.summary())
    return report
