import pandas as pd
import pytest

from recsys.core.errors import ValidationFailed
from recsys.privacy.anonymize import anonymize_events, anonymize_users, pseudonymize

KEY = b"k" * 32


def users_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": ["u1", "u2"],
            "name": ["Ann Lee", "Bo Chan"],
            "email": ["ann@example.com", "bo@example.org"],
            "ip_address": ["10.1.2.3", "192.168.0.9"],
            "device_id": ["dev-aaa", "dev-bbb"],
            "age": ["17", "40"],
            "gender": ["F", "M"],
            "occupation": ["student", "writer"],
            "zip_code": ["02139", "T8H1N"],
            "signup_date": ["2026-11-18", "2025-01-01"],
            "_source_file": ["users.csv"] * 2,
            "_source_line": [2, 3],
        }
    )


def test_pseudonyms_are_stable_keyed_and_unlinkable():
    a = pseudonymize(["u1", "u2", "u1"], KEY)
    assert a[0] == a[2] and a[0] != a[1]
    assert len(a[0]) == 32 and all(c in "0123456789abcdef" for c in a[0])
    assert pseudonymize(["u1"], b"other-key-xxxxxxxxxxxxxxxx")[0] != a[0]
    assert pseudonymize([None], KEY) == [None]


def test_users_lose_direct_identifiers_and_coarsen_quasi_identifiers():
    out = anonymize_users(users_frame(), KEY)
    assert set(out.columns) == {"user", "age_band", "gender", "occupation", "zip3", "signup_week"}
    text = out.astype(str).to_csv()
    for secret in ["Ann Lee", "ann@example.com", "10.1.2.3", "dev-aaa", "u1", "02139"]:
        assert secret not in text
    assert out["age_band"].tolist() == ["<18", "35-44"]
    assert out["zip3"].tolist() == ["021", "T8H"]
    assert out["signup_week"].tolist() == ["2026-11-15", "2024-12-29"]


def test_events_drop_device_and_ip():
    events = pd.DataFrame(
        {
            "event_id": ["e1"],
            "user_id": ["u1"],
            "item_id": [5],
            "ts": [pd.Timestamp("2026-11-16", tz="UTC")],
            "event_type": ["view"],
            "rating": [float("nan")],
            "watch_seconds": [100.0],
            "device_type": ["tv"],
            "device_id": ["dev-aaa"],
            "ip_address": ["10.1.2.3"],
        }
    )
    out = anonymize_events(events, KEY)
    assert list(out.columns) == [
        "user",
        "item_id",
        "ts",
        "event_type",
        "rating",
        "watch_seconds",
        "device_type",
    ]
    assert out["user"].iloc[0] == pseudonymize(["u1"], KEY)[0]


def test_unknown_column_is_refused_fail_closed():
    frame = users_frame().assign(phone=["555-0100", "555-0101"])
    with pytest.raises(ValidationFailed, match=r"\['phone'\].*not covered"):
        anonymize_users(frame, KEY)


def released_frame(rows):
    return pd.DataFrame(rows, columns=["user", "age_band", "gender", "occupation", "zip3", "signup_week"])


def test_k_anonymity_generalizes_small_groups_and_keeps_big_ones():
    from recsys.privacy.anonymize import enforce_k_anonymity

    big = [[f"p{i}", "25-34", "F", "writer", "021", "2026-11-15"] for i in range(5)]
    # two users alike but for zip: zip to its first digit makes them a group of... only 2, then broader
    small = [
        ["q1", "18-24", "M", "artist", "945", "w"],
        ["q2", "25-34", "M", "artist", "946", "w"],
        ["q3", "18-24", "M", "lawyer", "947", "w"],
    ]
    out, report = enforce_k_anonymity(released_frame(big + small), k=3)
    assert report.satisfied and report.smallest_group >= 3
    assert report.users_released + report.users_suppressed == 8
    kept = out[out.user.str.startswith("p")]
    assert (kept["zip3"] == "021").all() and (kept["age_band"] == "25-34").all()  # untouched
    q = out[out.user.str.startswith("q")]
    assert (
        len(q) == 3
        and set(q["zip3"]) == {"9"}
        and set(q["age_band"]) == {"<35"}
        and set(q["occupation"]) == {"*"}
    )
    assert report.generalized["zip3->zip1"] == 3


def test_k_anonymity_suppresses_what_cannot_be_generalized_enough():
    from recsys.privacy.anonymize import enforce_k_anonymity

    rows = [[f"p{i}", "25-34", "F", "writer", "021", "w"] for i in range(4)] + [
        ["lone", "65+", "M", "x", "999", "w"]
    ]
    out, report = enforce_k_anonymity(released_frame(rows), k=4)
    assert "lone" not in set(out["user"]) and report.users_suppressed == 1
    assert report.satisfied and report.smallest_group == 4


def test_k_of_one_changes_nothing():
    from recsys.privacy.anonymize import enforce_k_anonymity

    frame = released_frame([["a", "25-34", "F", "w", "021", "x"], ["b", "65+", "M", "z", "999", "y"]])
    out, report = enforce_k_anonymity(frame, k=1)
    assert report.generalized == {} and report.users_suppressed == 0
    assert out.astype(str).equals(frame.astype(str))


def test_item_tags_reach_the_anonymized_catalogue_without_who_tagged(tmp_path, settings):
    """ml-latest-small's tags.csv through the lake (land, ingest, validate, anonymize): the anonymized
    catalogue carries each film's tags and nothing of the taggers, and the content model uses them."""
    from datetime import date

    from recsys.data.ingest import ingest_week
    from recsys.data.movielens import land_movielens
    from recsys.io.storage import Lake
    from recsys.models.content import ContentModel
    from recsys.pipeline.context import StageContext
    from recsys.pipeline.data_stages import anonymize as anonymize_stage
    from recsys.validation.validate import validate_week
    from tests.data.test_movielens import write_latest

    lake = Lake(settings.lake_dir)
    week = date(2000, 8, 6)
    assert land_movielens(lake, write_latest(tmp_path / "ml-latest-small"))[-1] == week
    ingest_week(lake, week)
    validate_week(lake, week)
    anonymize_stage(StageContext.create(week, settings))
    items = pd.read_parquet(lake.data_file("anonymized", "items", week))
    assert items.set_index("item_id")["tags"].to_dict() == {
        1: "fun|pixar",
        2: "time travel, board game",
        3: "a b",
    }
    for layer in ("staged", "validated", "anonymized"):
        frame = pd.read_parquet(lake.data_file(layer, "items", week))
        assert not frame.astype(str).apply(lambda s: s.str.contains("4242")).any().any(), layer
    assert ContentModel.fit(items).meta["tags"] is True
