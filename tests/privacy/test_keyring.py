"""The lake records the fingerprint of its pseudonym key, and a run with another key is refused."""

from __future__ import annotations

import json
import logging
from datetime import date

import pandas as pd
import pytest

from recsys.core.errors import ConfigError
from recsys.io.storage import Lake, write_parquet
from recsys.privacy.anonymize import pseudonymize
from recsys.privacy.keyring import check_pseudonym_key, key_fingerprint, key_record_file, recorded_key

KEY, OTHER = b"lake-key-0123456789abcdef", b"other-key-0123456789abcdef"
WEEK = date(2026, 11, 15)


def legacy_lake(tmp_path, key: bytes = KEY, validated: bool = True) -> Lake:
    """A lake built before the key record existed: anonymized (and validated) weeks, no record."""
    lake = Lake(tmp_path / "lake")
    ids = ["u1", "u2", "u3"]
    if validated:
        write_parquet(
            pd.DataFrame({"user_id": ids, "item_id": [1, 2, 3]}), lake.data_file("validated", "events", WEEK)
        )
    write_parquet(
        pd.DataFrame({"user": pseudonymize(ids, key), "item_id": [1, 2, 3]}),
        lake.data_file("anonymized", "events", WEEK),
    )
    return lake


def test_the_fingerprint_tells_keys_apart_and_is_not_the_key():
    assert key_fingerprint(KEY) == key_fingerprint(KEY)
    assert key_fingerprint(KEY) != key_fingerprint(OTHER)
    assert len(key_fingerprint(KEY)) == 12 and KEY.decode() not in key_fingerprint(KEY)


def test_a_new_lake_records_the_key(tmp_path):
    root = tmp_path / "lake"
    check_pseudonym_key(root, KEY)
    path = root / "_meta" / "pseudonym_key.json"
    assert key_record_file(root) == path
    record = json.loads(path.read_text())
    assert record["fingerprint"] == key_fingerprint(KEY)
    assert KEY.decode() not in path.read_text()


def test_the_same_key_passes_and_changes_nothing(tmp_path):
    root = tmp_path / "lake"
    check_pseudonym_key(root, KEY)
    before = key_record_file(root).read_text()
    check_pseudonym_key(root, KEY)
    assert key_record_file(root).read_text() == before


def test_another_key_is_refused_in_one_line_naming_both_fingerprints(tmp_path):
    root = tmp_path / "lake"
    check_pseudonym_key(root, KEY)
    before = key_record_file(root).read_text()
    with pytest.raises(ConfigError) as caught:
        check_pseudonym_key(root, OTHER)
    message = str(caught.value)
    assert "\n" not in message
    assert str(root) in message
    assert key_fingerprint(KEY) in message and key_fingerprint(OTHER) in message
    assert "RECSYS_PSEUDONYM_KEY" in message and "recsys rekey" in message
    assert KEY.decode() not in message and OTHER.decode() not in message
    assert key_record_file(root).read_text() == before  # the lake keeps its key


def test_a_legacy_lake_adopts_the_key_that_built_it_with_a_warning(tmp_path, caplog):
    lake = legacy_lake(tmp_path)
    with caplog.at_level(logging.WARNING, logger="recsys.privacy.keyring"):
        check_pseudonym_key(lake.root, KEY)
    assert recorded_key(lake.root)["fingerprint"] == key_fingerprint(KEY)
    assert "recorded no pseudonym key" in caplog.text
    with pytest.raises(ConfigError, match="not the key the lake"):
        check_pseudonym_key(lake.root, OTHER)  # from now on the record decides


def test_a_legacy_lake_refuses_a_key_its_data_was_not_built_with(tmp_path):
    lake = legacy_lake(tmp_path)
    with pytest.raises(ConfigError) as caught:
        check_pseudonym_key(lake.root, OTHER)
    message = str(caught.value)
    assert "\n" not in message and str(lake.root) in message and WEEK.isoformat() in message
    assert not key_record_file(lake.root).exists()  # nothing adopted


def test_a_legacy_lake_that_cannot_be_checked_records_the_key_with_a_warning(tmp_path, caplog):
    lake = legacy_lake(tmp_path, key=OTHER, validated=False)  # no raw ids left to check against
    with caplog.at_level(logging.WARNING, logger="recsys.privacy.keyring"):
        check_pseudonym_key(lake.root, KEY)
    assert recorded_key(lake.root)["fingerprint"] == key_fingerprint(KEY)
    assert "no week has both validated and anonymized events" in caplog.text


def test_an_unreadable_record_is_refused_in_one_line(tmp_path):
    root = tmp_path / "lake"
    key_record_file(root).parent.mkdir(parents=True)
    key_record_file(root).write_text("{not json")
    with pytest.raises(ConfigError) as caught:
        check_pseudonym_key(root, KEY)
    assert "\n" not in str(caught.value) and str(key_record_file(root)) in str(caught.value)
