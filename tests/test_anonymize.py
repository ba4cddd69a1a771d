import pandas as pd
import pytest

from recsys.anonymize import anonymize_events, anonymize_users, pseudonymize
from recsys.errors import ValidationFailed

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
