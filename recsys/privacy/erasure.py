"""Erasure (the "right to be forgotten"): remove one user's rows from every layer of the lake.

``erase_user(settings, user_id, key, requested_by, reason)`` goes through every week partition:

=============================================== ===================== ===================================
layer                                           files                 a row is the user's when
=============================================== ===================== ===================================
``raw/events``, ``raw/users``, ``raw/feedback`` ``*.csv``, ``*.csv.gz`` its ``user_id`` field is the id
``staged``, ``validated``, ``quarantine``       ``*.parquet``         its ``user_id`` is the id
(events, users, feedback)
``anonymized`` (events, users, feedback,        ``*.parquet``         its ``user`` is the pseudonym
exposures)
``prepared`` (train, holdout)                   ``*.parquet``         its ``user`` is the pseudonym
``recommendations``                             ``*.parquet``         its ``user`` is the pseudonym
=============================================== ===================== ===================================

Ids are compared with surrounding blanks ignored (validation strips them before pseudonymizing).
A malformed CSV record (not as many fields as the header), and a quarantined malformed line
(``_raw_line``), is the user's when any of its fields is the id: its columns cannot be trusted.

* CSV files are rewritten from their own text, record by record: the header and every other record
  stay exactly as they were (quoting, line ends, encoding, a BOM); only the user's records go.
  Parquet files are filtered with pyarrow and keep their schema. A file holding none of the user's
  rows is not touched. Every rewrite is atomic (temporary name, then rename).
* The whole erasure holds ``erasures/.lock``, so two erasures cannot interleave their rewrites of
  the same file. It is idempotent: if it stops midway, running it again finishes the job.
* Each call appends one record to ``erasures/log.jsonl`` (the whole file is written to a temporary
  name and renamed): the pseudonym (never the raw id), a fingerprint of the key (``key_id``, not
  the key), the time, who asked and why, the rows removed per layer and kind, the files rewritten.
  ``reason`` and ``requested_by`` are stored with the user's id, and the email, name, IP address
  and device id found in the removed rows, replaced by ``[redacted]``; in ``reason`` any email
  address or IPv4 address is redacted too. A second erasure of the same user removes nothing and is
  recorded again (``previously_erased``); an unknown user is recorded with zero counts and
  ``found = False``.

What it does not change (by design; the README's Privacy section says the same):

* Models already trained (MLflow run artifacts, registered versions) hold the user's factor row (a hybrid also its training pairs),
  keyed by the pseudonym. They are not rewritten. The next weekly retrain reads ``prepared/``,
  which no longer has the user (all anonymized weeks of the window were filtered), so the next model
  does not contain them; once it is champion, the pseudonym is unknown to the served model and gets
  the popular items (``source = "popularity"``), like any new user.
* ``runs/`` and ``reports/`` keep their counts; the validation report (and its MLflow copies) may
  quote sample values such as a duplicated user id: the leak scanner (``recsys.privacy.scan``) finds
  those.
* The Airflow metadata database keeps the ``user_erasure`` run's conf, which holds the raw id (see
  ``dags/erasure.py``).

``erased_pseudonyms(lake)`` returns the pseudonyms of every recorded erasure: the anonymize stage
can drop rows of erased users if they reappear upstream (a re-sent raw file, a backfill from the
source system). A pseudonym is only meaningful under the key that made it: pass the key to keep the
records made with it (a key rotation makes the older records unusable as a filter).
"""

from __future__ import annotations

import codecs
import csv
import fcntl
import gzip
import io
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recsys.core.errors import ConfigError, DataReadError
from recsys.core.settings import Settings
from recsys.io.lakefs import ObjectPath
from recsys.io.lease import WeekLease, lease_store
from recsys.io.storage import Lake, recommit_file, write_text
from recsys.privacy.anonymize import pseudonymize
from recsys.privacy.keyring import check_pseudonym_key, key_fingerprint

log = logging.getLogger(__name__)

ERASURE_DIR = "erasures"
ERASURE_LOG = f"{ERASURE_DIR}/log.jsonl"
LOCK_FILE = f"{ERASURE_DIR}/.lock"
#: in an object store the erasures hold a lease instead of a file lock (named by this date, as leases are)
ERASURE_LEASE_WEEK = date(1970, 1, 4)
#: seconds an erasure waits for another one to finish
ERASURE_LOCK_WAIT = 600.0
RAW_KINDS = ("events", "users", "feedback")  # items hold no user; feedback: the A/B test's log
ANONYMIZED_KINDS = (*RAW_KINDS, "exposures")  # exposures: what the A/B test showed each pseudonym
TEXT_LAYERS = ("staged", "validated", "quarantine")  # rows as read: the raw id, as text
PSEUDONYM_LAYERS = ("anonymized", "prepared", "recommendations")
RAW_LINE_COLUMN = "_raw_line"  # recsys.data.ingest.RAW_LINE: the text of a malformed record
REDACTED = "[redacted]"
# labels every record carries (with 0 when nothing was removed), for stable reading
_DEFAULT_LABELS = {
    "anonymized": ANONYMIZED_KINDS,
    "prepared": ("train", "holdout"),
    "recommendations": ("recommendations",),
}
_SUBJECT_FIELDS = ("email", "name", "ip_address", "device_id")
_EMAIL_RE = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_IPV4_RE = re.compile(r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?![\d])")


def key_id(key: bytes) -> str:
    """A fingerprint of the pseudonym key: tells records made with different keys apart, reveals nothing.

    The one the lake's key record and the key rotation log hold (:func:`recsys.privacy.keyring.key_fingerprint`).
    """
    return key_fingerprint(key)


@dataclass
class ErasureRecord:
    pseudonym: str
    key_id: str
    erased_at: str
    requested_by: str
    reason: str
    removed: dict[str, dict[str, int]] = field(default_factory=dict)  # layer -> kind/file -> rows
    files_rewritten: int = 0
    previously_erased: bool = False

    @property
    def total_removed(self) -> int:
        return sum(n for kinds in self.removed.values() for n in kinds.values())

    @property
    def found(self) -> bool:
        return self.total_removed > 0

    @property
    def message(self) -> str:
        if self.found:
            per_layer = ", ".join(f"{layer} {sum(k.values())}" for layer, k in self.removed.items() if k)
            return (
                f"erased pseudonym {self.pseudonym}: {self.total_removed} rows removed "
                f"({per_layer}) in {self.files_rewritten} files"
            )
        already = " (it was erased before)" if self.previously_erased else ""
        return f"pseudonym {self.pseudonym}: the user was not found anywhere{already}; nothing removed (recorded)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "pseudonym": self.pseudonym,
            "key_id": self.key_id,
            "erased_at": self.erased_at,
            "requested_by": self.requested_by,
            "reason": self.reason,
            "found": self.found,
            "previously_erased": self.previously_erased,
            "total_removed": self.total_removed,
            "files_rewritten": self.files_rewritten,
            "removed": {layer: dict(kinds) for layer, kinds in self.removed.items()},
        }


# ---- entry points ------------------------------------------------------------------------------


def erase_user(
    settings: Settings,
    user_id: str,
    key: bytes,
    requested_by: str = "cli",
    reason: str = "",
) -> ErasureRecord:
    """Remove ``user_id``'s rows from every layer of the lake and record the erasure by pseudonym.

    Never logs nor records the raw id. Returns the :class:`ErasureRecord` that was appended to
    ``erasures/log.jsonl``; ``record.found`` is False (and a warning logged) when the user had no
    row anywhere.
    """
    return _erase_user(settings, user_id, key, requested_by, reason)


def _erase_user(
    settings: Settings, user_id: str, key: bytes, requested_by: str, reason: str
) -> ErasureRecord:
    uid = str(user_id).strip() if user_id is not None else ""
    if not uid:
        raise ConfigError("user_id is empty: give the raw id of the user to erase")
    pseudonym = pseudonymize([uid], key)[0]
    assert pseudonym is not None
    lake = Lake.from_settings(settings)
    # under another key the user's pseudonymized rows would not be found, and silently stay
    check_pseudonym_key(lake.root, key)
    with _locked(lake.root / LOCK_FILE):
        previously = pseudonym in erased_pseudonyms(lake)
        eraser = _Eraser(lake, uid, pseudonym)
        eraser.run()
        subject = {uid, *eraser.subject_values}
        record = ErasureRecord(
            pseudonym=pseudonym,
            key_id=key_id(key),
            erased_at=datetime.now(UTC).isoformat(timespec="seconds"),
            requested_by=_redact(requested_by, subject, generic=False),
            reason=_redact(reason, subject, generic=True),
            removed=eraser.removed,
            files_rewritten=eraser.files_rewritten,
            previously_erased=previously,
        )
        _append_record(lake, record)
    if record.found:
        log.info("%s", record.message)
    else:
        log.warning("%s", record.message)
    return record


def read_erasure_log(lake: Lake | Path) -> list[dict[str, Any]]:
    """Every erasure record, oldest first (empty when nothing was ever erased)."""
    root = lake.root if isinstance(lake, Lake) else Lake(lake).root
    path = root / ERASURE_LOG
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DataReadError(f"{path}:{number}: not a JSON erasure record ({exc.msg})") from None
    return records


def erased_pseudonyms(lake: Lake | Path, key: bytes | None = None) -> frozenset[str]:
    """Pseudonyms of every erased user (of the records made with ``key``, when it is given).

    For stages that must drop erased users' rows if they reappear upstream: the anonymize stage
    filters its output with ``~df["user"].isin(erased_pseudonyms(lake, key))``.
    """
    wanted = key_id(key) if key is not None else None
    return frozenset(
        r["pseudonym"]
        for r in read_erasure_log(lake)
        if r.get("pseudonym") and (wanted is None or r.get("key_id") == wanted)
    )


# ---- the work ----------------------------------------------------------------------------------


class _Eraser:
    def __init__(self, lake: Lake, user_id: str, pseudonym: str) -> None:
        self.lake = lake
        self.user_id = user_id
        self.pseudonym = pseudonym
        self.removed: dict[str, dict[str, int]] = {}
        self.files_rewritten = 0
        self.subject_values: set[str] = set()  # the user's email, name, IP, device id (for redaction)

    def count(self, layer: str, kind: str, rows: int) -> None:
        kinds = self.removed.setdefault(layer, {})
        kinds[kind] = kinds.get(kind, 0) + rows
        if rows:
            self.files_rewritten += 1

    def run(self) -> None:
        for kind in RAW_KINDS:
            self.removed.setdefault("raw", {}).setdefault(kind, 0)
            for week in self.lake.weeks("raw", kind):
                for path in self.lake.raw_files(kind, week):
                    self.count("raw", kind, self._erase_csv(path))
        for layer in TEXT_LAYERS:
            for kind in RAW_KINDS:
                for path in self._parquet_files(layer, kind):
                    label = kind if path.stem == "data" else f"{kind}/{path.stem}"
                    self.count(layer, label, _erase_parquet(path, self._text_rows))
                self.removed.setdefault(layer, {}).setdefault(kind, 0)
        for layer in PSEUDONYM_LAYERS:
            self.removed.setdefault(layer, dict.fromkeys(_DEFAULT_LABELS[layer], 0))
            kinds = ANONYMIZED_KINDS if layer == "anonymized" else (None,)
            for kind in kinds:
                for path in self._parquet_files(layer, kind):
                    label = kind or path.stem
                    self.count(layer, label, _erase_parquet(path, self._pseudonym_rows))

    def _parquet_files(self, layer: str, kind: str | None) -> Iterator[Path]:
        for week in self.lake.weeks(layer, kind):
            folder = self.lake.partition(layer, week, kind)
            yield from sorted(
                p for p in folder.glob("*.parquet") if p.is_file() and not p.name.startswith((".", "_"))
            )

    # -- matching --

    def _pseudonym_rows(self, table: Any) -> Any:
        if "user" not in table.column_names:
            return None
        column = table.column("user")
        if not pa.types.is_string(column.type):
            column = pc.cast(column, pa.string())
        return pc.fill_null(pc.equal(column, self.pseudonym), False)

    def _text_rows(self, table: Any) -> Any:
        mask = None
        if "user_id" in table.column_names:
            column = table.column("user_id")
            if not pa.types.is_string(column.type):
                column = pc.cast(column, pa.string())
            mask = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(column), self.user_id), False)
        if RAW_LINE_COLUMN in table.column_names:
            lines = table.column(RAW_LINE_COLUMN).to_pylist()
            raw = pa.array([line is not None and self._any_field(str(line)) for line in lines], pa.bool_())
            mask = raw if mask is None else pc.or_(mask, raw)
        return mask

    def _any_field(self, record: str) -> bool:
        return any(f.strip() == self.user_id for f in _fields(record))

    # -- raw CSV --

    def _erase_csv(self, path: Path) -> int:
        data = path.read_bytes()
        compressed = path.name.endswith(".gz")
        if compressed:
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError) as exc:
                raise DataReadError(f"{path}: cannot decompress ({exc}); erase it by hand") from None
        bom = data.startswith(codecs.BOM_UTF8)
        body = data[len(codecs.BOM_UTF8) :] if bom else data
        try:
            text, encoding = body.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, encoding = body.decode("latin-1"), "latin-1"  # lossless round trip of any bytes
        kept, removed = self._filter_records(text)
        if not removed:
            return 0
        out = (codecs.BOM_UTF8 if bom else b"") + kept.encode(encoding)
        if compressed:
            out = gzip.compress(out, mtime=0)
        _atomic_write_bytes(path, out)
        return removed

    def _filter_records(self, text: str) -> tuple[str, int]:
        records = _split_records(text)
        if not records:
            return text, 0
        header = [h.strip() for h in _fields(records[0])]
        column = header.index("user_id") if "user_id" in header else None
        subject_columns = {name: header.index(name) for name in _SUBJECT_FIELDS if name in header}
        kept, removed = [records[0]], 0
        for record in records[1:]:
            fields = _fields(record)
            if column is not None and len(fields) == len(header):
                mine = fields[column].strip() == self.user_id
            else:
                mine = any(f.strip() == self.user_id for f in fields)
            if not mine:
                kept.append(record)
                continue
            removed += 1
            if len(fields) == len(header):
                for index in subject_columns.values():
                    value = fields[index].strip()
                    if len(value) >= 3:
                        self.subject_values.add(value)
        return "".join(kept), removed


def _split_records(text: str) -> list[str]:
    """CSV records with their line ends, exactly as in ``text`` (quoted line breaks stay inside)."""
    pieces = text.split("\n")
    records: list[str] = []
    buffer: list[str] = []
    quotes = 0
    for i, piece in enumerate(pieces):
        line = piece + "\n" if i < len(pieces) - 1 else piece
        if not line:
            continue
        buffer.append(line)
        quotes += line.count('"')
        if quotes % 2 == 0:
            records.append("".join(buffer))
            buffer, quotes = [], 0
    if buffer:
        records.append("".join(buffer))
    return records


def _fields(record: str) -> list[str]:
    try:
        return next(csv.reader(io.StringIO(record, newline="")), [])
    except csv.Error:
        return record.rstrip("\r\n").split(",")


def _erase_parquet(path: Path, rows_of_user: Callable[[Any], Any]) -> int:
    try:
        table = pq.ParquetFile(path.open("rb") if isinstance(path, ObjectPath) else path).read()
    except (pa.ArrowException, OSError) as exc:
        raise DataReadError(
            f"{path}: cannot be read as parquet ({str(exc).splitlines()[0]}); the erasure stopped there: "
            "repair or remove the file and run it again (erasure is idempotent)"
        ) from None
    mask = rows_of_user(table)
    if mask is None:
        return 0
    removed = int(pc.sum(mask).as_py() or 0)
    if not removed:
        return 0
    kept = table.filter(pc.invert(mask))
    if isinstance(path, ObjectPath):  # one upload replaces the object; its partition's marker follows
        pq.write_table(kept, path.key, filesystem=path.fs)
        recommit_file(path)
        return removed
    tmp = _temp_sibling(path)
    try:
        pq.write_table(kept, tmp)
        shutil.copymode(path, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return removed


def _temp_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    if isinstance(path, ObjectPath):
        path.write_bytes(data)
        return
    tmp = _temp_sibling(path)
    try:
        tmp.write_bytes(data)
        shutil.copymode(path, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# ---- the record --------------------------------------------------------------------------------


def _redact(text: str, values: set[str], generic: bool) -> str:
    text = str(text or "")
    for value in sorted(values, key=len, reverse=True):
        pattern = rf"(?<![^\W_]){re.escape(value)}(?![^\W_])"
        text = re.sub(pattern, REDACTED, text, flags=re.IGNORECASE)
    if generic:
        text = _EMAIL_RE.sub(REDACTED, text)
        text = _IPV4_RE.sub(REDACTED, text)
    return text


def _append_record(lake: Lake, record: ErasureRecord) -> None:
    path = lake.root / ERASURE_LOG
    existing = path.read_text(encoding="utf-8") if path.exists() else ""
    if existing and not existing.endswith("\n"):
        existing += "\n"
    line = json.dumps(record.to_dict(), sort_keys=True, ensure_ascii=False)
    write_text(existing + line + "\n", path)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    if isinstance(path, ObjectPath):  # no file locks in an object store: a lease on the lake's erasures
        store = lease_store(Path(), lake_uri=str(path.parent.parent))  # path: <lake>/erasures/.lock
        lease = WeekLease(store, ERASURE_DIR, ERASURE_LEASE_WEEK, f"erasure (pid {os.getpid()})")
        lease.acquire(wait=ERASURE_LOCK_WAIT)
        try:
            yield
        finally:
            lease.release()
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
