"""The lake in S3 (any S3-compatible store: AWS, MinIO, moto), reached through boto3.

With ``RECSYS_LAKE_URI=s3://bucket/prefix`` the bucket is the lake and ``RECSYS_LAKE_DIR`` is a
working copy on the machine that runs a task. Every entry point that reads or writes the lake (a
pipeline stage, the drift monitor, the CLI's data commands, erasure) runs inside :func:`synced_lake`:

* **pull** before: objects that are new or changed in the bucket since this working copy last saw
  them (size and ETag, kept in a manifest) are downloaded, atomically (temporary name, then rename);
  files whose object was deleted in the bucket are deleted here;
* **push** after (also after a failure, so a quarantine written before a failed validation is kept):
  files created or changed here are uploaded; objects whose file this working copy deleted (and had
  pulled or pushed before) are deleted from the bucket.

So any worker can run any task (a fresh worker pulls what it needs), and the bucket always holds
every partition the stages wrote. Nested entry points (a stage inside the drift monitor's refresh)
sync once. Endpoint and credentials come from boto3's own configuration (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, profiles, instance roles).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys.core.errors import ConfigError
from recsys.core.settings import Settings

log = logging.getLogger(__name__)

MANIFEST = ".s3-manifest.json"
#: S3 error codes that a retry cannot fix
CONFIG_ERROR_CODES = frozenset(
    {"NoSuchBucket", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled"}
)
_depth = threading.local()


@dataclass
class SyncStats:
    downloaded: int = 0
    uploaded: int = 0
    deleted_local: int = 0
    deleted_remote: int = 0
    unchanged: int = 0

    def __str__(self) -> str:
        return (
            f"{self.downloaded} downloaded, {self.uploaded} uploaded, {self.deleted_local} deleted here, "
            f"{self.deleted_remote} deleted in the bucket, {self.unchanged} unchanged"
        )


def split_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``("bucket", "a/b")`` (prefix without slashes at either end)."""
    if not uri.startswith("s3://"):
        raise ConfigError(f"not an s3:// URI: {uri!r}")
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    if not bucket:
        raise ConfigError(f"no bucket in {uri!r}")
    return bucket, prefix.strip("/")


def _is_synced(rel: str) -> bool:
    """Working files (hidden names, temporary files of atomic writes) never go to the bucket, and the
    week leases (``_leases/``, :mod:`recsys.io.lease`) live only there: they are never copied."""
    parts = rel.split("/")
    return parts[0] != "_leases" and not any(part.startswith(".") for part in parts)


class S3Lake:
    """The bucket side of the lake and the working copy at ``local_root``."""

    def __init__(self, uri: str, local_root: Path, client: Any = None) -> None:
        self.uri = uri
        self.bucket, self.prefix = split_uri(uri)
        self.root = local_root
        if client is None:
            import boto3  # deferred: boto3 is heavy, loaded only for an s3:// lake

            client = boto3.client("s3")
        self.client = client
        self._manifest_file = self.root / MANIFEST

    # ---- manifest: what this working copy last saw in the bucket ---------------------------------
    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            return json.loads(self._manifest_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def _save(self, manifest: dict[str, dict[str, Any]]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self._manifest_file.with_name(f"{MANIFEST}.{uuid.uuid4().hex}.tmp")
        tmp.write_text(json.dumps(manifest, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self._manifest_file)

    def _key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def _rel(self, key: str) -> str:
        return key[len(self.prefix) + 1 :] if self.prefix else key

    @staticmethod
    def _stamp(path: Path) -> dict[str, int]:
        st = path.stat()
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}

    def _remote(self) -> dict[str, dict[str, Any]]:
        # deferred: botocore comes with boto3, loaded only for an s3:// lake
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        objects: dict[str, dict[str, Any]] = {}
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(
                Bucket=self.bucket, Prefix=f"{self.prefix}/" if self.prefix else ""
            ):
                for obj in page.get("Contents", []):
                    rel = self._rel(obj["Key"])
                    if rel and _is_synced(rel):
                        objects[rel] = {"etag": obj["ETag"], "size": obj["Size"]}
        except (NoCredentialsError, ClientError) as exc:
            code = exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else ""
            if isinstance(exc, NoCredentialsError) or code in CONFIG_ERROR_CODES:
                # wrong bucket, credentials or permissions: retrying cannot help
                raise ConfigError(f"cannot list the lake {self.uri}: {exc}") from None
            raise  # throttling, a server error: the task's retries may help
        except BotoCoreError as exc:  # endpoint unreachable, timeouts: retryable, with the lake named
            raise ConnectionError(f"cannot reach the lake {self.uri}: {exc}") from exc
        return objects

    # ---- pull / push ---------------------------------------------------------------------------
    def pull(self) -> SyncStats:
        stats = SyncStats()
        manifest = self._load()
        remote = self._remote()
        for rel, obj in sorted(remote.items()):
            path = self.root / rel
            seen = manifest.get(rel)
            if (
                seen
                and seen.get("etag") == obj["etag"]
                and path.exists()
                and self._stamp(path) == {"size": seen["size"], "mtime_ns": seen["mtime_ns"]}
            ):
                stats.unchanged += 1
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
            self.client.download_file(self.bucket, self._key(rel), str(tmp))
            os.replace(tmp, path)
            manifest[rel] = {"etag": obj["etag"], **self._stamp(path)}
            stats.downloaded += 1
        for rel in sorted(set(manifest) - set(remote)):
            path = self.root / rel
            if path.exists() and self._stamp(path) == {
                "size": manifest[rel]["size"],
                "mtime_ns": manifest[rel]["mtime_ns"],
            }:
                path.unlink()  # deleted in the bucket since we saw it, not changed here since
                stats.deleted_local += 1
            manifest.pop(rel)
        self._save(manifest)
        return stats

    def push(self) -> SyncStats:
        stats = SyncStats()
        manifest = self._load()
        local: dict[str, Path] = {}
        if self.root.exists():
            for path in self.root.rglob("*"):
                if path.is_file():
                    rel = path.relative_to(self.root).as_posix()
                    if _is_synced(rel):
                        local[rel] = path
        for rel, path in sorted(local.items()):
            seen = manifest.get(rel)
            stamp = self._stamp(path)
            if seen and {"size": seen["size"], "mtime_ns": seen["mtime_ns"]} == stamp:
                stats.unchanged += 1
                continue
            self.client.upload_file(str(path), self.bucket, self._key(rel))
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(rel))
            manifest[rel] = {"etag": head["ETag"], **stamp}
            stats.uploaded += 1
        for rel in sorted(set(manifest) - set(local)):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(rel))
            manifest.pop(rel)
            stats.deleted_remote += 1
        self._save(manifest)
        return stats


def lake_for(settings: Settings) -> S3Lake | None:
    return S3Lake(settings.lake_uri, settings.lake_dir) if settings.lake_uri else None


@contextmanager
def synced_lake(settings: Settings) -> Iterator[None]:
    """Pull the lake from S3 before the block and push it after (nothing without ``lake_uri``)."""
    depth = getattr(_depth, "value", 0)
    remote = lake_for(settings) if depth == 0 else None
    if remote is not None:
        log.info("lake %s: pull into %s: %s", remote.uri, remote.root, remote.pull())
    _depth.value = depth + 1
    try:
        yield
    finally:
        _depth.value = depth
        if remote is not None:
            log.info("lake %s: push from %s: %s", remote.uri, remote.root, remote.push())
