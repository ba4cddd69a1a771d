"""The lake's root as a URI: a local folder (``file://`` or a plain path) or an object store prefix
(``s3://bucket/prefix``), read and written in place through ``pyarrow.fs``.

A local lake is a :class:`pathlib.Path`. An object-store lake is an :class:`ObjectPath`: the part of
pathlib's API the lake uses (``/``, ``parent``, ``name``, ``exists``, ``is_dir``, ``iterdir``,
``read_text``, ``write_text``, ``open``, ``unlink``), each call one request to the store through a
``pyarrow.fs.S3FileSystem``. Nothing is copied to the machine first: a task reads the objects of the
partitions it needs, and writes its outputs where they belong (:mod:`recsys.io.storage` makes those
writes atomic: one object is one ``PutObject``; a partition of several files is committed by a marker
that readers require).

The S3 filesystem takes boto3's configuration (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY``, profiles, instance roles), the same as the week leases
(:mod:`recsys.io.lease`) use, so one set of settings reaches the bucket.
"""

from __future__ import annotations

import fnmatch
import functools
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, TypeAlias
from urllib.parse import urlsplit

import pyarrow.fs as pafs

from recsys.core.errors import ConfigError


def split_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``("bucket", "a/b")`` (prefix without slashes at either end)."""
    if not uri.startswith("s3://"):
        raise ConfigError(f"not an s3:// URI: {uri!r}")
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    if not bucket:
        raise ConfigError(f"no bucket in {uri!r}")
    return bucket, prefix.strip("/")


@functools.cache
def _s3(
    endpoint: str | None, access_key: str | None, secret_key: str | None, region: str | None
) -> pafs.FileSystem:
    kwargs: dict[str, Any] = {"region": region or "us-east-1", "allow_bucket_creation": False}
    if endpoint:
        parts = urlsplit(endpoint)
        kwargs["endpoint_override"] = parts.netloc or endpoint
        kwargs["scheme"] = parts.scheme or "https"
    if access_key and secret_key:
        kwargs["access_key"], kwargs["secret_key"] = access_key, secret_key
    return pafs.S3FileSystem(**kwargs)


def s3_filesystem() -> pafs.FileSystem:
    """A ``pyarrow.fs.S3FileSystem`` configured as boto3 is (endpoint, credentials, region)."""
    import boto3  # deferred: only an s3:// lake needs it

    session = boto3.session.Session()
    credentials = session.get_credentials()
    frozen = credentials.get_frozen_credentials() if credentials is not None else None
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    return _s3(
        endpoint,
        frozen.access_key if frozen else None,
        frozen.secret_key if frozen else None,
        session.region_name,
    )


def lake_location(uri_or_path: str | Path) -> Path | ObjectPath:
    """The lake root for a ``s3://`` URI, a ``file://`` URI or a local path."""
    text = str(uri_or_path)
    if text.startswith("s3://"):
        bucket, prefix = split_uri(text)
        return ObjectPath(s3_filesystem(), f"{bucket}/{prefix}".rstrip("/"))
    if text.startswith("file://"):
        return Path(urlsplit(text).path)
    if "://" in text:
        raise ConfigError(f"lake URI {text!r}: expected s3://bucket/prefix, file:///path or a local path")
    return Path(text)


def readable(path: Path | ObjectPath) -> Any:
    """What a reader of files (pyarrow's Parquet and CSV readers, numpy) opens: the local path itself,
    or a seekable input file of the object store."""
    return path.open("rb") if isinstance(path, ObjectPath) else path


@dataclass(frozen=True)
class _Stat:
    st_size: int
    st_mtime: float


class ObjectPath:
    """A key (or prefix) in an object store, with the part of pathlib's API the lake uses."""

    scheme = "s3"

    def __init__(self, fs: pafs.FileSystem, key: str) -> None:
        self.fs = fs
        self.key = key.strip("/")

    # ---- pure path operations --------------------------------------------------------------
    def __truediv__(self, other: str | PurePosixPath) -> ObjectPath:
        return ObjectPath(self.fs, f"{self.key}/{str(other).strip('/')}")

    def joinpath(self, *parts: str) -> ObjectPath:
        path = self
        for part in parts:
            path = path / part
        return path

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.name).suffix

    @property
    def stem(self) -> str:
        return PurePosixPath(self.name).stem

    @property
    def parent(self) -> ObjectPath:
        return ObjectPath(self.fs, self.key.rsplit("/", 1)[0]) if "/" in self.key else self

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(self.key.split("/"))

    def with_name(self, name: str) -> ObjectPath:
        return self.parent / name

    def relative_to(self, other: ObjectPath) -> PurePosixPath:
        if self.key == other.key:
            return PurePosixPath(".")
        if not self.key.startswith(other.key + "/"):
            raise ValueError(f"{self} is not under {other}")
        return PurePosixPath(self.key[len(other.key) + 1 :])

    def as_posix(self) -> str:
        return str(self)

    def __str__(self) -> str:
        return f"{self.scheme}://{self.key}"

    def __repr__(self) -> str:
        return f"ObjectPath({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectPath) and other.key == self.key

    def __hash__(self) -> int:
        return hash(("ObjectPath", self.key))

    def __lt__(self, other: ObjectPath) -> bool:
        return self.key < other.key

    # ---- the store -------------------------------------------------------------------------
    def _info(self) -> pafs.FileInfo:
        return self.fs.get_file_info(self.key)

    def exists(self) -> bool:
        return self._info().type != pafs.FileType.NotFound

    def is_dir(self) -> bool:
        return self._info().type == pafs.FileType.Directory

    def is_file(self) -> bool:
        return self._info().type == pafs.FileType.File

    def stat(self) -> _Stat:
        info = self._info()
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(str(self))
        mtime = info.mtime.timestamp() if info.mtime is not None else 0.0
        return _Stat(st_size=int(info.size or 0), st_mtime=mtime)

    def iterdir(self) -> Iterator[ObjectPath]:
        selector = pafs.FileSelector(self.key, allow_not_found=True, recursive=False)
        for info in sorted(self.fs.get_file_info(selector), key=lambda i: i.path):
            yield ObjectPath(self.fs, info.path)

    def glob(self, pattern: str) -> Iterator[ObjectPath]:
        """Children whose name matches ``pattern`` (one level, as the lake uses it)."""
        for child in self.iterdir():
            if fnmatch.fnmatchcase(child.name, pattern):
                yield child

    def rglob(self, pattern: str) -> Iterator[ObjectPath]:
        """Objects and prefixes at any depth under this one whose name matches ``pattern``."""
        selector = pafs.FileSelector(self.key, allow_not_found=True, recursive=True)
        for info in sorted(self.fs.get_file_info(selector), key=lambda i: i.path):
            if fnmatch.fnmatchcase(info.base_name, pattern):
                yield ObjectPath(self.fs, info.path)

    def walk_files(self) -> Iterator[ObjectPath]:
        """Every object under this prefix."""
        selector = pafs.FileSelector(self.key, allow_not_found=True, recursive=True)
        for info in sorted(self.fs.get_file_info(selector), key=lambda i: i.path):
            if info.type == pafs.FileType.File:
                yield ObjectPath(self.fs, info.path)

    def file_stats(self) -> dict[str, _Stat]:
        """Size and time of every object under this prefix, by its path relative to the prefix: one
        listing, no request per object."""
        selector = pafs.FileSelector(self.key, allow_not_found=True, recursive=True)
        prefix = self.key.rstrip("/") + "/"
        return {
            info.path.removeprefix(prefix): _Stat(
                st_size=int(info.size or 0),
                st_mtime=info.mtime.timestamp() if info.mtime is not None else 0.0,
            )
            for info in self.fs.get_file_info(selector)
            if info.type == pafs.FileType.File
        }

    def read_bytes(self) -> bytes:
        try:
            with self.fs.open_input_stream(self.key) as stream:
                return stream.read()
        except FileNotFoundError:
            raise
        except OSError:
            # Arrow reports a missing key as a plain OSError: ask the store (on the error path only)
            if not self.is_file():
                raise FileNotFoundError(str(self)) from None
            raise

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data: bytes) -> int:
        """One ``PutObject``: readers see the old object or the new one, never a part."""
        with self.fs.open_output_stream(self.key) as stream:
            stream.write(data)
        return len(data)

    def write_text(self, text: str, encoding: str = "utf-8") -> int:
        return self.write_bytes(text.encode(encoding))

    def open(self, mode: str = "rb", encoding: str | None = None) -> IO[Any]:
        binary = "b" in mode
        if mode.startswith("r"):
            raw: Any = self.fs.open_input_file(self.key)
        elif mode.startswith("w"):
            raw = self.fs.open_output_stream(self.key)
        else:
            raise ValueError(f"mode {mode!r} is not supported on an object store")
        return raw if binary else io.TextIOWrapper(raw, encoding=encoding or "utf-8")

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Prefixes exist as soon as an object is under them: nothing to do."""

    def rmdir(self) -> None:
        """An empty prefix is no object: nothing to remove (a prefix with objects under it stays)."""

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.fs.delete_file(self.key)
        except (FileNotFoundError, OSError):
            if not missing_ok and not self.exists():
                raise FileNotFoundError(str(self)) from None

    def rmtree(self) -> None:
        """Delete every object under this prefix (nothing if there is none)."""
        try:
            self.fs.delete_dir(self.key)
        except (FileNotFoundError, OSError):
            if self.exists():
                raise


#: what a lake location is: a local folder, or a prefix of an object store
LakeLocation: TypeAlias = Path | ObjectPath
