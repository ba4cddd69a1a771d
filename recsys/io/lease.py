"""One run per week at a time: a lease on (pipeline, week) in the lake's own store.

Every entry point that works on a week (an Airflow task, ``recsys pipeline`` / ``recsys stage``, the
drift monitor's refresh, a backfill run) takes the week's lease before it touches the lake and holds
it while it works. A second run of the same week waits for it or fails at once, naming who holds it.

The lease is a small JSON record, ``_leases/<pipeline>/week=YYYY-MM-DD.json`` beside the lake's
layers, written only by conditional operations of a store that already gives atomicity:

* a local lake (:class:`FileLeaseStore`): an exclusive ``flock`` on ``_leases/.lock`` around each
  read-check-write, and atomic renames;
* a lake in S3 (:class:`S3LeaseStore`): ``PutObject`` with ``If-None-Match: *`` to take a free
  lease and ``If-Match: <ETag>`` to renew, hand over or take a stale one, so two workers on two
  machines can never both hold it.

A holder renews its lease every ``ttl / 3`` seconds from a background thread while it works
(*active*). Between the tasks of one Airflow run the lease stays with the run, *idle*, for ``gap``
seconds, so that another run cannot slip in between ``train`` and ``register``. A lease whose
expiry has passed is free to take; so is an active lease held by a process of this machine that no
longer exists (a killed run is taken over at once, without waiting for the expiry).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Protocol

from recsys.core.errors import RecsysError
from recsys.core.intervals import week_key
from recsys.core.processes import process_alive
from recsys.io.lakefs import split_uri

log = logging.getLogger(__name__)

LEASES = "_leases"
#: seconds a working holder's lease lasts without a renewal (renewed every third of it)
DEFAULT_TTL = 90.0
#: seconds an Airflow run keeps its week between two of its tasks
DEFAULT_GAP = 900.0
POLL_SECONDS = 2.0


class LeaseHeld(RecsysError):
    """Another run holds the week's lease."""

    retryable = True


@dataclass(frozen=True)
class LeaseRecord:
    pipeline: str
    week: str
    holder: str
    host: str
    pid: int
    active: bool
    acquired_at: float
    renewed_at: float
    expires_at: float

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, raw: bytes) -> LeaseRecord:
        return cls(**json.loads(raw))

    def stale(self, now: float) -> str | None:
        """Why the lease may be taken (None: it is held)."""
        if now >= self.expires_at:
            return f"expired {now - self.expires_at:.0f}s ago"
        if self.active and self.host == socket.gethostname() and not process_alive(self.pid):
            return f"its process {self.pid} on {self.host} is gone"
        return None

    def describe(self, now: float) -> str:
        state = (
            f"working in process {self.pid} on {self.host}"
            if self.active
            else f"between two of its tasks (last in process {self.pid} on {self.host})"
        )
        since = datetime.fromtimestamp(self.acquired_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return (
            f"{self.holder}, {state}, since {since}; its lease runs out in "
            f"{max(0.0, self.expires_at - now):.0f}s unless renewed"
        )


class LeaseStore(Protocol):
    """Conditional operations on small records; ``version`` is an opaque token of what was read."""

    def read(self, name: str) -> tuple[LeaseRecord, str] | None: ...

    def create(self, name: str, record: LeaseRecord) -> str | None:
        """Write ``record`` if ``name`` does not exist; its new version, or None when it exists."""
        ...

    def replace(self, name: str, record: LeaseRecord, version: str) -> str | None:
        """Write ``record`` if ``name`` is still at ``version``; its new version, or None."""
        ...

    def delete(self, name: str, version: str) -> bool: ...

    def where(self, name: str) -> str: ...


class FileLeaseStore:
    """Leases as files under ``<lake>/_leases``; every operation under an exclusive ``flock``."""

    def __init__(self, lake_root: Path) -> None:
        self.root = Path(lake_root) / LEASES

    def where(self, name: str) -> str:
        return str(self.root / name)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _read(self, name: str) -> tuple[LeaseRecord, str] | None:
        try:
            raw = (self.root / name).read_bytes()
        except FileNotFoundError:
            return None
        try:
            return LeaseRecord.from_json(raw), hashlib.sha256(raw).hexdigest()
        except (ValueError, TypeError):  # a torn or foreign file: treat as expired, version by content
            return _broken(name), hashlib.sha256(raw).hexdigest()

    def _write(self, name: str, record: LeaseRecord) -> str:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        raw = record.to_json()
        tmp.write_bytes(raw)
        os.replace(tmp, path)
        return hashlib.sha256(raw).hexdigest()

    def read(self, name: str) -> tuple[LeaseRecord, str] | None:
        with self._locked():
            return self._read(name)

    def create(self, name: str, record: LeaseRecord) -> str | None:
        with self._locked():
            if self._read(name) is not None:
                return None
            return self._write(name, record)

    def replace(self, name: str, record: LeaseRecord, version: str) -> str | None:
        with self._locked():
            current = self._read(name)
            if current is None or current[1] != version:
                return None
            return self._write(name, record)

    def delete(self, name: str, version: str) -> bool:
        with self._locked():
            current = self._read(name)
            if current is None or current[1] != version:
                return False
            (self.root / name).unlink()
            return True


class S3LeaseStore:
    """Leases as objects under ``s3://bucket/prefix/_leases``, through S3's conditional writes."""

    def __init__(self, bucket: str, prefix: str, client: Any) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.client = client

    def _key(self, name: str) -> str:
        return "/".join(p for p in (self.prefix, LEASES, name) if p)

    def where(self, name: str) -> str:
        return f"s3://{self.bucket}/{self._key(name)}"

    @staticmethod
    def _code(exc: Exception) -> str:
        return getattr(exc, "response", {}).get("Error", {}).get("Code", "")

    def read(self, name: str) -> tuple[LeaseRecord, str] | None:
        try:
            got = self.client.get_object(Bucket=self.bucket, Key=self._key(name))
        except self.client.exceptions.NoSuchKey:
            return None
        raw = got["Body"].read()
        try:
            return LeaseRecord.from_json(raw), got["ETag"]
        except (ValueError, TypeError):
            return _broken(name), got["ETag"]

    def _put(self, name: str, record: LeaseRecord, **condition: str) -> str | None:
        try:
            put = self.client.put_object(
                Bucket=self.bucket, Key=self._key(name), Body=record.to_json(), **condition
            )
        except self.client.exceptions.ClientError as exc:
            if self._code(exc) in {"PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey"}:
                return None
            raise
        return put["ETag"]

    def create(self, name: str, record: LeaseRecord) -> str | None:
        return self._put(name, record, IfNoneMatch="*")

    def replace(self, name: str, record: LeaseRecord, version: str) -> str | None:
        return self._put(name, record, IfMatch=version)

    def delete(self, name: str, version: str) -> bool:
        current = self.read(name)
        if current is None or current[1] != version:
            return False
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(name), IfMatch=version)
        except self.client.exceptions.ClientError as exc:
            if self._code(exc) in {"PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey"}:
                return False
            raise
        return True


def _broken(name: str) -> LeaseRecord:
    return LeaseRecord(
        pipeline="?", week=name, holder="an unreadable lease record", host="?", pid=0,
        active=False, acquired_at=0.0, renewed_at=0.0, expires_at=0.0,
    )  # fmt: skip


def lease_name(pipeline: str, week: date) -> str:
    return f"{pipeline}/{week_key(week)}.json"


class WeekLease:
    """The lease on one (pipeline, week) as one holder sees it: acquire, keep renewed, pause, release."""

    def __init__(
        self,
        store: LeaseStore,
        pipeline: str,
        week: date,
        holder: str,
        ttl: float = DEFAULT_TTL,
        gap: float = DEFAULT_GAP,
    ) -> None:
        self.store = store
        self.pipeline = pipeline
        self.week = week
        self.holder = holder
        self.ttl = ttl
        self.gap = gap
        self.name = lease_name(pipeline, week)
        self._version: str | None = None
        self._record: LeaseRecord | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: set by :meth:`acquire`: why the week was free (None: this holder already had it)
        self.took_over: str | None = None

    def _new_record(self, now: float, acquired_at: float | None = None) -> LeaseRecord:
        return LeaseRecord(
            pipeline=self.pipeline,
            week=self.week.isoformat(),
            holder=self.holder,
            host=socket.gethostname(),
            pid=os.getpid(),
            active=True,
            acquired_at=acquired_at if acquired_at is not None else now,
            renewed_at=now,
            expires_at=now + self.ttl,
        )

    def acquire(self, wait: float = 0.0) -> WeekLease:
        """Take the lease (or renew it when this holder has it already); wait up to ``wait`` seconds
        for another holder to finish, then raise :class:`LeaseHeld` naming it."""
        deadline = time.monotonic() + wait
        announced = False
        while True:
            now = time.time()
            current = self.store.read(self.name)
            if current is None:
                record = self._new_record(now)
                if (version := self.store.create(self.name, record)) is not None:
                    self.took_over = "free"
                    return self._held(record, version)
                continue  # someone created it between our read and create: look again
            record, version = current
            if record.holder == self.holder:
                mine = self._new_record(now, record.acquired_at)
                if (new := self.store.replace(self.name, mine, version)) is not None:
                    self.took_over = None
                    return self._held(mine, new)
                continue
            why = record.stale(now)
            if why is not None:
                mine = self._new_record(now)
                if (new := self.store.replace(self.name, mine, version)) is not None:
                    self.took_over = f"taken over from {record.holder}: {why}"
                    log.warning("week %s of %s: lease %s", self.week, self.pipeline, self.took_over)
                    return self._held(mine, new)
                continue
            if time.monotonic() >= deadline:
                raise LeaseHeld(
                    f"week {self.week.isoformat()} of {self.pipeline} is being worked on by "
                    f"{record.describe(now)}; wait for it to finish (lease: {self.store.where(self.name)})"
                )
            if not announced:
                log.info("week %s of %s: waiting for %s", self.week, self.pipeline, record.describe(now))
                announced = True
            time.sleep(min(POLL_SECONDS, max(0.1, deadline - time.monotonic())))

    def _held(self, record: LeaseRecord, version: str) -> WeekLease:
        with self._lock:
            self._record = record
            self._version = version
        self._start_heartbeat()
        return self

    def _start_heartbeat(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{self.week.isoformat()}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                self.renew()
            except Exception as exc:  # a store hiccup: the next beat tries again before the expiry
                log.warning("week %s: renewing the lease failed: %s", self.week, exc)

    def renew(self) -> None:
        with self._lock:
            if self._record is None or self._version is None:
                return
            now = time.time()
            record = replace(self._record, renewed_at=now, expires_at=now + self.ttl)
            version = self.store.replace(self.name, record, self._version)
            if version is None:
                log.error("week %s: the lease was taken by another run while this one held it", self.week)
                self._record = None
                return
            self._record = record
            self._version = version

    def _stop_heartbeat(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._thread = None

    def pause(self) -> None:
        """Keep the week for this holder for ``gap`` seconds without working on it (between two tasks)."""
        self._stop_heartbeat()
        with self._lock:
            if self._record is None or self._version is None:
                return
            now = time.time()
            record = replace(self._record, active=False, renewed_at=now, expires_at=now + self.gap)
            self.store.replace(self.name, record, self._version)
            self._record = None
            self._version = None

    def release(self) -> None:
        self._stop_heartbeat()
        with self._lock:
            if self._version is not None:
                self.store.delete(self.name, self._version)
            self._record = None
            self._version = None


def release_if_held(store: LeaseStore, pipeline: str, week: date, holder: str) -> bool:
    """Release the week's lease when ``holder`` has it (a failed Airflow run gives its week back)."""
    name = lease_name(pipeline, week)
    current = store.read(name)
    if current is None or current[0].holder != holder:
        return False
    return store.delete(name, current[1])


def lease_store(lake_root: Path, lake_uri: str | None = None, client: Any = None) -> LeaseStore:
    """The lake's lease store: in the bucket for an ``s3://`` lake, else beside the local lake."""
    if lake_uri:
        bucket, prefix = split_uri(lake_uri)
        if client is None:
            import boto3  # deferred: boto3 is heavy, loaded only for an s3:// lake

            client = boto3.client("s3")
        return S3LeaseStore(bucket, prefix, client)
    return FileLeaseStore(lake_root)
