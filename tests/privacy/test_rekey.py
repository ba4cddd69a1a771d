from datetime import date

import pandas as pd
import pytest

from recsys.core.errors import ConfigError
from recsys.io.storage import Lake, write_parquet
from recsys.privacy import rekey as rekey_module
from recsys.privacy.anonymize import pseudonymize
from recsys.privacy.keyring import check_pseudonym_key, recorded_key
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


def test_rotation_moves_the_lakes_key_record_to_the_new_key(tmp_path):
    lake = build(tmp_path)
    check_pseudonym_key(lake.root, OLD)  # the lake's key is recorded
    rekey_store(lake, OLD, NEW)
    assert recorded_key(lake.root) == {"fingerprint": key_fingerprint(NEW), **_recorded_at(lake)}
    check_pseudonym_key(lake.root, NEW)
    with pytest.raises(ConfigError, match="not the key the lake"):
        check_pseudonym_key(lake.root, OLD)


def test_rotation_from_a_key_the_lake_was_not_built_with_is_refused_before_any_write(tmp_path):
    lake = build(tmp_path)
    check_pseudonym_key(lake.root, OLD)
    third = b"third-key-0123456789abcdef"
    before = pd.read_parquet(lake.data_file("anonymized", "events", WEEK))
    with pytest.raises(ConfigError, match="not the key the lake"):
        rekey_store(lake, third, NEW)
    with pytest.raises(ConfigError, match="already under the new key"):
        rekey_store(lake, third, OLD)
    pd.testing.assert_frame_equal(pd.read_parquet(lake.data_file("anonymized", "events", WEEK)), before)
    assert recorded_key(lake.root)["fingerprint"] == key_fingerprint(OLD)


def test_wrong_old_key_records_no_rotation(tmp_path):
    lake = build(tmp_path)
    with pytest.raises(ConfigError, match="wrong old key"):
        rekey_store(lake, b"not-the-key-0123456789", NEW)
    assert recorded_key(lake.root) is None


def test_a_rotation_killed_halfway_is_refused_by_the_stages_and_finished_by_a_rerun(tmp_path, monkeypatch):
    lake = build(tmp_path)
    check_pseudonym_key(lake.root, OLD)
    written: list[str] = []

    def dies_after_two_files(frame, path, *args, **kwargs):
        if len(written) == 2:
            raise KeyboardInterrupt("killed")
        written.append(str(path))
        return write_parquet(frame, path, *args, **kwargs)

    monkeypatch.setattr(rekey_module, "write_parquet", dies_after_two_files)
    with pytest.raises(KeyboardInterrupt):
        rekey_store(lake, OLD, NEW)
    monkeypatch.undo()

    # the lake holds pseudonyms of both keys: the record says so, and no key passes
    record = recorded_key(lake.root)
    assert (record["fingerprint"], record["rotating_to"]) == (key_fingerprint(OLD), key_fingerprint(NEW))
    for key in (OLD, NEW):
        with pytest.raises(ConfigError, match="unfinished pseudonym key rotation") as caught:
            check_pseudonym_key(lake.root, key)
        assert "\n" not in str(caught.value) and "recsys rekey" in str(caught.value)
    # another rotation cannot start on a half-rotated lake
    with pytest.raises(ConfigError, match="unfinished"):
        rekey_store(lake, OLD, b"third-key-0123456789abcdef")

    rekey_store(lake, OLD, NEW)  # the re-run finishes it
    new = set(pseudonymize(["u1", "u2", "u3"], NEW))
    files = [path for path in tmp_path.rglob("*.parquet") if "user" in pd.read_parquet(path).columns]
    assert len(files) == 4
    for path in files:
        assert set(pd.read_parquet(path)["user"]) <= new, path
    assert recorded_key(lake.root)["fingerprint"] == key_fingerprint(NEW)
    assert "rotating_to" not in recorded_key(lake.root)
    check_pseudonym_key(lake.root, NEW)


def _recorded_at(lake: Lake) -> dict[str, str]:
    return {"recorded_at": recorded_key(lake.root)["recorded_at"]}
