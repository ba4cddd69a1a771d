"""Key rotation: re-key the anonymized store from an old pseudonymization key to a new one.

HMAC pseudonyms cannot be inverted, so the mapping old pseudonym -> new pseudonym is rebuilt from
the raw user ids still held in the validated layer (the personal-data zone): for every user id,
old = HMAC(old_key, id) and new = HMAC(new_key, id). Every ``user`` column in the layers after
anonymization (anonymized, prepared, recommendations) is then rewritten, file by file, atomically.

The whole store is checked first: a pseudonym that the old key does not produce (a wrong old key,
or a user erased since) stops the rotation before any file is written, unless ``allow_unmapped``
(then such rows are dropped and counted).

The lake's key record (:mod:`recsys.privacy.keyring`) must name the old key (or be absent, on a
lake built before it existed). The rotation is recorded as pending before the first file is
rewritten and the new key is recorded only after the last one: a rotation killed halfway leaves
the pipeline refusing both keys, and running it again with the same two keys finishes it (a
pseudonym already under the new key is left as it is). Registered models keep the old pseudonyms: retrain right
after a rotation (`airflow dags trigger weekly_retrain`); until then the champion serves popular
items to every (now unknown) pseudonym.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from recsys.core.errors import ConfigError
from recsys.io.storage import Lake, parquet_columns, read_parquet, recommit_file, write_parquet, write_text
from recsys.privacy.anonymize import pseudonymize
from recsys.privacy.keyring import begin_rotation, check_rotation, finish_rotation, key_fingerprint

REKEYED_LAYERS = ("anonymized", "prepared", "recommendations")


def raw_user_ids(lake: Lake) -> set[str]:
    ids: set[str] = set()
    for kind in ("events", "users"):
        for week in lake.weeks("validated", kind):
            path = lake.data_file("validated", kind, week)
            if not path.is_file():
                continue
            column = read_parquet(path, columns=["user_id"])["user_id"].dropna().astype(str)
            ids.update(column.tolist())
    return ids


def _user_files(lake: Lake) -> list[Path]:
    files: list[Path] = []
    for layer in REKEYED_LAYERS:
        files.extend(sorted((lake.root / layer).rglob("*.parquet")))
    return [f for f in files if not f.name.startswith((".", "_")) and "user" in parquet_columns(f)]


def rekey_store(
    lake: Lake,
    old_key: bytes,
    new_key: bytes,
    allow_unmapped: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    if old_key == new_key:
        raise ConfigError("the new key is the same as the old key: nothing to rotate")
    check_rotation(lake.root, old_key, new_key)
    ids = sorted(raw_user_ids(lake))
    if not ids:
        raise ConfigError(
            f"no raw user ids in {lake.root / 'validated'}: cannot rebuild the pseudonym mapping"
        )
    new_pseudonyms = pseudonymize(ids, new_key)
    mapping = dict(zip(pseudonymize(ids, old_key), new_pseudonyms, strict=True))
    # a rotation killed halfway left some files under the new key already: they stay as they are
    mapping.update(zip(new_pseudonyms, new_pseudonyms, strict=True))
    files = _user_files(lake)
    frames: dict[Path, pd.DataFrame] = {}
    unmapped_total = 0
    for path in files:
        frame = read_parquet(path)
        known = frame["user"].isin(mapping.keys()) | frame["user"].isna()
        unmapped = int((~known).sum())
        if unmapped and not allow_unmapped:
            raise ConfigError(
                f"{path}: {unmapped} pseudonyms are not produced by the old key from any known user id "
                "(wrong old key?); nothing was changed"
            )
        unmapped_total += unmapped
        frames[path] = frame[known]
    begin_rotation(lake.root, old_key, new_key)
    for i, (path, frame) in enumerate(frames.items(), 1):
        frame = frame.assign(user=frame["user"].map(mapping).astype("string"))
        write_parquet(frame, path)
        recommit_file(path)
        if progress:
            progress(f"[{i}/{len(frames)}] re-keyed {path.relative_to(lake.root)}")
    record = {
        "time": datetime.now(tz=UTC).isoformat(),
        "old_key": key_fingerprint(old_key),
        "new_key": key_fingerprint(new_key),
        "files": len(frames),
        "users": len(ids),
        "rows_dropped_unmapped": unmapped_total,
    }
    log_file = lake.root / "privacy" / "key_rotations.jsonl"
    previous = log_file.read_text(encoding="utf-8") if log_file.exists() else ""
    write_text(previous + json.dumps(record, sort_keys=True) + "\n", log_file)
    finish_rotation(lake.root, new_key)
    return record
