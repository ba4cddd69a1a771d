"""Which pseudonym key the lake was built with: its fingerprint, recorded in the lake and checked.

A pseudonym is HMAC(key, user id): another key gives pseudonyms that share nothing with earlier
weeks, so a run with a different (valid) key would silently cut every user's history in two. The
lake therefore records the fingerprint of its key in ``<lake root>/_meta/pseudonym_key.json`` and
every keyed stage calls :func:`check_pseudonym_key` before it writes a pseudonym:

* no record and no anonymized data yet: a new lake; the key's fingerprint is recorded;
* the record matches: nothing to do;
* the record differs: refused, in one line naming both fingerprints and what to do;
* anonymized data but no record (a lake built before the record existed): the key is checked
  against the data itself where it can be (the newest week with both validated and anonymized
  events: some of its raw user ids must get, under this key, a pseudonym the anonymized week
  holds), then recorded; a lake that cannot be checked is recorded with a warning.

Only ``recsys rekey`` (:mod:`recsys.privacy.rekey`) moves the record to another key. It first
records the rotation as pending (``rotating_to``), rewrites the pseudonyms, and only then records
the new key: killed halfway, the lake holds pseudonyms of both keys, every keyed stage refuses to
run, and re-running the rotation with the same two keys finishes it.

The fingerprint is HMAC-SHA256(key, a fixed label), hex, truncated: it tells keys apart and
reveals nothing about the key. It is the same fingerprint the erasure log (``key_id``) and the key
rotation log record.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recsys.core.errors import ConfigError
from recsys.io.storage import Lake, read_parquet, write_json
from recsys.privacy.anonymize import pseudonymize

log = logging.getLogger(__name__)

KEY_RECORD = Path("_meta") / "pseudonym_key.json"
LEGACY_SAMPLE_IDS = 1000  # raw ids of one week tried against the anonymized week: one match is enough
HOW_TO_ROTATE = (
    "to move the lake to a new key, keep the lake's key in RECSYS_PSEUDONYM_KEY, put the new one in "
    "another variable and run `recsys rekey --new-key-env THAT_VARIABLE`"
)


def key_fingerprint(key: bytes) -> str:
    """A short, non-secret identifier of a pseudonym key (12 hex characters of an HMAC under the key)."""
    return hmac.new(key, b"recsys-pseudonym-key-id", hashlib.sha256).hexdigest()[:12]


def key_record_file(lake_root: Path) -> Path:
    return lake_root / KEY_RECORD


def recorded_key(lake_root: Path) -> dict[str, Any] | None:
    """The lake's key record (``fingerprint``, and ``rotating_to`` while a rotation is unfinished)."""
    path = key_record_file(lake_root)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"cannot read the lake's pseudonym key record {path}: {exc}; restore it from a backup, or "
            "delete it to have the next run check its key against the lake's data and record it again"
        ) from None
    if not isinstance(record, dict) or not isinstance(record.get("fingerprint"), str):
        raise ConfigError(
            f"the lake's pseudonym key record {path} has no fingerprint; restore it from a backup, or "
            "delete it to have the next run check its key against the lake's data and record it again"
        )
    return record


def _write_record(lake_root: Path, fingerprint: str, **extra: Any) -> None:
    record = {"fingerprint": fingerprint, "recorded_at": datetime.now(tz=UTC).isoformat(), **extra}
    write_json(key_record_file(lake_root), record)


def _unfinished(lake_root: Path, record: dict[str, Any]) -> str:
    return (
        f"the lake {lake_root} has an unfinished pseudonym key rotation from key {record['fingerprint']} "
        f"to key {record['rotating_to']} (fingerprints): its pseudonyms are under both keys"
    )


def check_pseudonym_key(lake_root: Path, key: bytes) -> None:
    """Refuse ``key`` unless the lake was built with it; record it on a lake that has no record yet.

    Raises :class:`ConfigError` (one line) when the lake records another key, when a key rotation
    was left unfinished, or when a lake without a record holds data this key did not pseudonymize.
    """
    lake_root = Lake(lake_root).root
    mine = key_fingerprint(key)
    record = recorded_key(lake_root)
    if record is not None:
        if record.get("rotating_to"):
            raise ConfigError(
                f"{_unfinished(lake_root, record)}; finish it before running the pipeline: run `recsys rekey "
                "--new-key-env VAR` again with the same two keys (RECSYS_PSEUDONYM_KEY = key "
                f"{record['fingerprint']}, VAR = key {record['rotating_to']})"
            )
        if record["fingerprint"] != mine:
            raise ConfigError(
                f"the pseudonym key (fingerprint {mine}) is not the key the lake {lake_root} was built with "
                f"(fingerprint {record['fingerprint']}): its pseudonyms would share nothing with earlier "
                f"weeks; set RECSYS_PSEUDONYM_KEY to the lake's key, or {HOW_TO_ROTATE}"
            )
        return
    if not any((lake_root / "anonymized").rglob("*.parquet")):
        _write_record(lake_root, mine)
        log.info("lake %s: recorded the pseudonym key's fingerprint %s", lake_root, mine)
        return
    verdict, week = _legacy_match(Lake(lake_root), key)
    if verdict is False:
        raise ConfigError(
            f"the pseudonym key (fingerprint {mine}) is not the key the lake {lake_root} was built with: "
            f"none of the raw user ids of week {week} gets, under it, a pseudonym that anonymized/events "
            f"of that week holds; set RECSYS_PSEUDONYM_KEY to the lake's key, or {HOW_TO_ROTATE}"
        )
    _write_record(lake_root, mine, adopted=True, checked_week=week)
    if verdict is None:
        log.warning(
            "lake %s holds anonymized data but recorded no pseudonym key, and no week has both validated "
            "and anonymized events to check the key against: recorded this key (fingerprint %s) as the "
            "lake's; if it is not the key the earlier weeks were built with, their pseudonyms will not "
            "match the new ones",
            lake_root,
            mine,
        )
    else:
        log.warning(
            "lake %s recorded no pseudonym key (built before the record existed): the key (fingerprint "
            "%s) matches the pseudonyms of week %s and is now recorded as the lake's",
            lake_root,
            mine,
            week,
        )


def _legacy_match(lake: Lake, key: bytes) -> tuple[bool | None, str | None]:
    """Whether ``key`` made the newest checkable anonymized events week (None: no week to check)."""
    for week in reversed(lake.weeks("anonymized", "events")):
        anonymized = lake.data_file("anonymized", "events", week)
        validated = lake.data_file("validated", "events", week)
        if not (anonymized.is_file() and validated.is_file()):
            continue
        ids = read_parquet(validated, columns=["user_id"])["user_id"].dropna().drop_duplicates()
        users = set(read_parquet(anonymized, columns=["user"])["user"].dropna().tolist())
        if ids.empty or not users:
            continue
        sample = ids.head(LEGACY_SAMPLE_IDS).tolist()
        return bool(users.intersection(pseudonymize(sample, key))), week.isoformat()
    return None, None


# ---- key rotation (recsys rekey) ------------------------------------------------------------------


def check_rotation(lake_root: Path, old_key: bytes, new_key: bytes) -> None:
    """Refuse a rotation the lake's record does not allow (nothing is written).

    Allowed: a lake without a record; a lake recorded under ``old_key``; a lake whose unfinished
    rotation is from ``old_key`` to ``new_key`` (this run finishes it).
    """
    lake_root = Lake(lake_root).root
    record = recorded_key(lake_root)
    if record is None:
        return
    old, new = key_fingerprint(old_key), key_fingerprint(new_key)
    pending = record.get("rotating_to")
    if pending:
        if (record["fingerprint"], pending) != (old, new):
            raise ConfigError(
                f"{_unfinished(lake_root, record)}; this rotation (key {old} to key {new}) cannot start "
                f"before it is finished: run it again with RECSYS_PSEUDONYM_KEY = key {record['fingerprint']} "
                f"and the new key = key {pending}"
            )
        return
    if record["fingerprint"] == new:
        raise ConfigError(f"the lake {lake_root} is already under the new key ({new}): nothing to rotate")
    if record["fingerprint"] != old:
        raise ConfigError(
            f"RECSYS_PSEUDONYM_KEY (fingerprint {old}) is not the key the lake {lake_root} was built with "
            f"(fingerprint {record['fingerprint']}): set it to the lake's key to rotate from it"
        )


def begin_rotation(lake_root: Path, old_key: bytes, new_key: bytes) -> None:
    """Record the rotation as pending, before the first pseudonym is rewritten."""
    _write_record(lake_root, key_fingerprint(old_key), rotating_to=key_fingerprint(new_key))


def finish_rotation(lake_root: Path, new_key: bytes) -> None:
    """Record ``new_key`` as the lake's key, once every pseudonym is under it."""
    _write_record(lake_root, key_fingerprint(new_key))
