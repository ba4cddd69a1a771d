"""Infrastructure faults in one line: a full or read-only disk, a read-only MLflow store, a service down.

A stage deep in pandas, pyarrow, SQLAlchemy or Spark that hits a full disk raises whatever that
library raises (``OSError: [Errno 28] Error writing bytes to file``, with no file name, under tens
of lines of traceback). The entry points (``recsys.cli.main`` and
``recsys.airflow.tasks.fail_fast``) pass what escaped a stage through :func:`explain`, which walks
the exception's chain and, when it finds such a fault, returns one
:class:`~recsys.core.errors.InfrastructureError` that names the file, directory, store or service
and what to do; its ``retryable`` says whether running again later can help.
"""

from __future__ import annotations

import errno
import os
import pwd
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from recsys.core.errors import (
    InfrastructureError,
    ServiceUnavailable,
    StorageFull,
    StorageReadOnly,
)
from recsys.core.settings import Settings

FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
READ_ONLY_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
#: local variables that name the file a frame was writing (write_parquet's ``tmp``, pandas' ``path`` …)
PATH_LOCALS = ("where", "path", "tmp", "filename", "file", "target", "dest", "dst", "local_path", "out")
FULL_TEXT = ("no space left on device", "database or disk is full", "disk quota exceeded")
READONLY_DB_TEXT = "attempt to write a readonly database"
READ_ONLY_TEXT = "read-only file system"
UNREACHABLE_TEXT = ("max retries exceeded", "connection refused", "failed to establish a new connection")


def explain(exc: BaseException, settings: Settings | None = None) -> InfrastructureError | None:
    """The infrastructure fault behind ``exc`` as one-line error, or ``None`` when it is not one."""
    for error in _chain(exc):
        if isinstance(error, InfrastructureError):
            return error
        found = _classify(error, exc, settings)
        if found is not None:
            return found
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 32:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _classify(
    error: BaseException, top: BaseException, settings: Settings | None
) -> InfrastructureError | None:
    code = getattr(error, "errno", None) if isinstance(error, OSError) else None
    text = str(error).lower()
    if code in FULL_ERRNOS or any(t in text for t in FULL_TEXT):
        if "database or disk is full" in text and (store := sqlite_store(settings)) is not None:
            return storage_full(store, what="the MLflow store")
        return storage_full(_written_path(error, top), settings=settings)
    if READONLY_DB_TEXT in text:
        store = sqlite_store(settings)
        where = f"the MLflow store {store}" if store else "the MLflow store"
        return StorageReadOnly(
            f"{where} is read-only ({READONLY_DB_TEXT}): make the file and its directory writable "
            "by this user, or point MLFLOW_TRACKING_URI at a writable store"
        )
    if code in READ_ONLY_ERRNOS and isinstance(error, OSError):
        return _read_only(error, top)
    if READ_ONLY_TEXT in text:  # the JVM's (Spark's) IOException: a message, no errno
        return _read_only(OSError(errno.EROFS, READ_ONLY_TEXT), top)
    if _unreachable(error, text):
        return _service_down(error, settings)
    return None


def storage_full(path: Path | None, *, what: str = "", settings: Settings | None = None) -> StorageFull:
    """``StorageFull`` naming ``path`` (or, unknown, the local directories the run writes) and the free space."""
    if path is None:
        places = _local_places(settings)
        if not places:
            return StorageFull("disk full (no space left on device): free space and re-run")
        listed = "; ".join(f"{name} {p}: {_free(p)}" for name, p in places)
        return StorageFull(f"disk full (no space left on device): {listed}; free space there and re-run")
    label = f"{what} {path}" if what else str(path)
    return StorageFull(
        f"disk full writing {label} ({_free(path)}): free space there, or move RECSYS_HOME / "
        "RECSYS_LAKE_DIR to a larger disk, and re-run"
    )


def _read_only(error: OSError, top: BaseException) -> StorageReadOnly:
    path = Path(os.fsdecode(error.filename)) if error.filename else _written_path(error, top)
    where = str(path) if path else "a file of the run"
    if error.errno == errno.EROFS:
        return StorageReadOnly(
            f"cannot write {where}: read-only file system; remount it read-write or point the "
            "setting that names it (RECSYS_HOME, RECSYS_LAKE_DIR, MLFLOW_TRACKING_URI) at a writable directory"
        )
    user = _user()
    return StorageReadOnly(
        f"permission denied on {where} for user {user}: give {user} read and write access (chown/chmod) or point "
        "the setting that names it (RECSYS_HOME, RECSYS_LAKE_DIR, MLFLOW_TRACKING_URI) elsewhere"
    )


def _unreachable(error: BaseException, text: str) -> bool:
    name = type(error).__name__
    return (
        isinstance(error, ConnectionError)
        or name.endswith("ConnectionError")
        or name in {"MaxRetryError", "NewConnectionError", "ConnectTimeoutError"}
        or any(t in text for t in UNREACHABLE_TEXT)
    )


def _service_down(error: BaseException, settings: Settings | None) -> ServiceUnavailable:
    text = _first_line(error)
    uri = settings.mlflow_tracking_uri if settings else ""
    host = re.match(r"https?://([^/:]+)(?::(\d+))?", uri)
    if host and host.group(1) in text and (host.group(2) is None or host.group(2) in text):
        return ServiceUnavailable(
            f"MLflow tracking server {uri} stopped answering ({text[:200]}): check that it is up and "
            "re-run, or fix MLFLOW_TRACKING_URI"
        )
    return ServiceUnavailable(f"a service did not answer ({text[:300]}): check that it is up and re-run")


def sqlite_store(settings: Settings | None) -> Path | None:
    """The file of a ``sqlite:///`` tracking store (``None`` for any other store)."""
    if settings is None or not settings.mlflow_tracking_uri.startswith("sqlite:///"):
        return None
    return Path(settings.mlflow_tracking_uri.removeprefix("sqlite:///").split("?")[0])


def _written_path(error: BaseException, top: BaseException) -> Path | None:
    """The file being written when ``error`` was raised: its ``filename``, else the innermost frame's
    local that names an absolute path (pandas' ``path``, the lake's temporary ``tmp`` …)."""
    name = getattr(error, "filename", None)
    if name:
        return Path(os.fsdecode(name))
    for tb in (error.__traceback__, top.__traceback__):
        for frame_locals in reversed(list(_frames(tb))):
            for key in PATH_LOCALS:
                value = frame_locals.get(key)
                if isinstance(value, os.PathLike | str) and os.path.isabs(os.fspath(value)):
                    return Path(os.fspath(value))
    return None


def _frames(tb: TracebackType | None) -> Iterator[dict[str, object]]:
    while tb is not None:
        yield tb.tb_frame.f_locals
        tb = tb.tb_next


def _local_places(settings: Settings | None) -> list[tuple[str, Path]]:
    if settings is None:
        return []
    places = [("lake", settings.lake_dir), ("RECSYS_HOME", settings.home)]
    if (store := sqlite_store(settings)) is not None:
        places.append(("MLflow store", store))
    seen: set[int] = set()
    unique = []
    for name, path in places:
        existing = _existing(path)
        device = existing.stat().st_dev if existing else -1
        if device not in seen:
            seen.add(device)
            unique.append((name, path))
    return unique


def _existing(path: Path) -> Path | None:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return None


def _free(path: Path) -> str:
    existing = _existing(path)
    if existing is None:
        return "free space unknown"
    usage = shutil.disk_usage(existing)
    return f"now {_size(usage.free)} free of {_size(usage.total)} on {_mount_point(existing)}"


def _mount_point(path: Path) -> Path:
    path = path.resolve()
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
