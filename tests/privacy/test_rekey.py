from datetime import date

import pandas as pd
import pytest

from recsys.core.errors import ConfigError
from recsys.io.storage import Lake, write_parquet
from recsys.privacy.anonymize import pseudonymize
from recsys.privacy.rekey import key_fingerprint, rekey_store

OLD, NEW = b"old-key-0123456789abcdef", b"new-key-0123456789abcdef"
WEEK = date(2026, 11, 15)


def build(tmp_path) -> Lake:
    lake = Lake(tmp_path)
    ids = ["u1", "u2", "u3"]
    write_parquet(
        pd.DataFrame({"user_id": ids, "email": ["a@x.org", "b@x.org", "c@x.org"]}),
        lake.data_file("validated", "users", WEEK),
    )
    write_parquet(
        pd.DataFrame({"user_id": ["u1", "u2"], "item_id": [1, 2]}),
        lake.data_file("validated", "events", WEEK),
    )
    old = pseudonymize(ids, OLD)
    write_parquet(
        pd.DataFrame({"user": old, "age_band": ["<18", "65+", "<18"]}),
        lake.data_file("anonymized", "users", WEEK),
    )
    write_parquet(
        pd.DataFrame({"user": old[:2], "item_id": [1, 2]}), lake.data_file("anonymized", "events", WEEK)
    )
    write_parquet(
        pd.DataFrame({"user": old[:2], "item_id": [1, 2], "strength": [1.0, 2.0]}),
        lake.partition("prepared", WEEK) / "train.parquet",
    )
    write_parquet(
        pd.DataFrame({"user": [old[0]], "rank": [1], "item_id": [2]}),
        lake.partition("recommendations", WEEK) / "recommendations.parquet",
    )
    write_parquet(
        pd.DataFrame({"item_id": [1, 2], "title": ["A", "B"]}), lake.data_file("anonymized", "items", WEEK)
    )
    return lake


def test_rotation_maps_every_pseudonym_to_the_new_key(tmp_path):
    lake = build(tmp_path)
    record = rekey_store(lake, OLD, NEW)
    new = dict(zip(["u1", "u2", "u3"], pseudonymize(["u1", "u2", "u3"], NEW), strict=True))
    users = pd.read_parquet(lake.data_file("anonymized", "users", WEEK))
    assert users["user"].tolist() == [new["u1"], new["u2"], new["u3"]]
    assert users["age_band"].tolist() == ["<18", "65+", "<18"]  # other columns untouched
    recs = pd.read_parquet(lake.partition("recommendations", WEEK) / "recommendations.parquet")
    assert recs["user"].tolist() == [new["u1"]]
    assert record["files"] == 4 and record["new_key"] == key_fingerprint(NEW)
    log = (tmp_path / "privacy" / "key_rotations.jsonl").read_text()
    assert NEW.decode() not in log and OLD.decode() not in log


def test_wrong_old_key_changes_nothing(tmp_path):
    lake = build(tmp_path)
    before = pd.read_parquet(lake.data_file("anonymized", "events", WEEK))
    with pytest.raises(ConfigError, match="wrong old key"):
        rekey_store(lake, b"not-the-key-0123456789", NEW)
    pd.testing.assert_frame_equal(pd.read_parquet(lake.data_file("anonymized", "events", WEEK)), before)


def test_same_key_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="same as the old key"):
        rekey_store(build(tmp_path), OLD, OLD)
