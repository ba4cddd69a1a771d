"""Real broken file systems for the fault tests: a full one (a small tmpfs) and a read-only one.

Mounting needs root (and CAP_SYS_ADMIN). As root, ``chmod`` does not stop writes, so a read-only
directory is a read-only bind mount of itself; as another user it is ``chmod a-w``. A full disk
has no such substitute: :func:`small_tmpfs` skips the test, with the reason, when it cannot mount.
"""

from __future__ import annotations

import functools
import os
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def _mount(*args: str) -> str | None:
    """Run ``mount``; the reason it failed, or None."""
    result = subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)
    return None if result.returncode == 0 else (result.stderr.strip() or f"mount exit {result.returncode}")


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30, check=False)


@contextmanager
def small_tmpfs(path: Path, size: str = "2m") -> Iterator[Path]:
    """``path`` as a tmpfs of ``size`` (a disk that fills up), unmounted afterwards; skips when not root."""
    if os.geteuid() != 0:
        pytest.skip(
            f"a full file system needs a small tmpfs, and mounting one needs root (running as uid {os.geteuid()})"
        )
    path.mkdir(parents=True, exist_ok=True)
    problem = _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    if problem:
        pytest.skip(f"cannot mount a {size} tmpfs at {path} as root (no CAP_SYS_ADMIN?): {problem}")
    try:
        yield path
    finally:
        _umount(path)


@contextmanager
def read_only(path: Path) -> Iterator[Path]:
    """``path`` (an existing directory) made read-only for this process, and writable again afterwards."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [path, *path.rglob("*")]}
        for p, mode in modes.items():
            p.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        try:
            yield path
        finally:
            for p, mode in modes.items():
                p.chmod(mode)
        return
    problem = _mount("--bind", str(path), str(path))
    if problem:
        pytest.skip(f"cannot bind-mount {path} read-only as root (no CAP_SYS_ADMIN?): {problem}")
    try:
        problem = _mount("-o", "remount,ro,bind", str(path))
        if problem:
            pytest.skip(f"cannot remount {path} read-only: {problem}")
        yield path
    finally:
        _umount(path)


@functools.cache
def mlflow_store_template() -> Path:
    """An empty MLflow SQLite store (its tables made), created once per test session, to copy.

    Copy it to a fresh path before making that read-only: SQLAlchemy keeps a store's connection open,
    and a connection opened before the read-only mount would still write."""
    # deferred: mlflow is heavy; only the tests that need a store load it
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    directory = Path(tempfile.mkdtemp(prefix="recsys-store-template-"))
    db = directory / "mlflow.db"
    SqlAlchemyStore(f"sqlite:///{db}", (directory / "artifacts").as_uri())
    return db
