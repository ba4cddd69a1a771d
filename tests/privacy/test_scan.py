"""The leak scanner: a clean lake is clean; personal data planted in each kind of place is found,
with the right kind and location, and never shown in full."""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.core.intervals import week_start_of
from recsys.core.schemas import RAW_EVENT_COLUMNS, RAW_USER_COLUMNS
from recsys.data.raw import csv_text, raw_file
from recsys.io.storage import Lake, write_json, write_parquet, write_text
from recsys.privacy import LeakReport, PrivacyLeak, mask, require_clean, scan_for_leaks
from recsys.privacy.anonymize import pseudonymize
from tests.conftest import TEST_KEY

KEY = TEST_KEY.encode()
WEEK = week_start_of(date(2031, 3, 12))  # far from other tests' weeks in the shared MLflow store
PREVIOUS = date.fromordinal(WEEK.toordinal() - 7)

USERS = pd.DataFrame(
    {
        "user_id": ["u000101", "u000102", "u000103"],
        "name": ["Jane Doe", "Omar Haddad", "Li Wei"],
        "email": ["jane.doe101@example.com", "ohaddad102@example.org", "wei.li103@example.net"],
        "ip_address": ["81.2.69.160", "192.168.7.22", "2001:db8::7"],
        "device_id": [
            "3f2a9c1e-5b7d-4e0f-9a21-6c8d0b4e7f13",
            "a81b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
            "0d1e2f3a-4b5c-4d6e-af80-91a2b3c4d5e6",
        ],
        "age": ["34", "51", "27"],
        "gender": ["F", "M", "X"],
        "occupation": ["writer", "engineer", "student"],
        "zip_code": ["02139", "94110", "10001"],
        "signup_date": ["2030-01-02", "2030-05-06", "2030-07-08"],
    },
    columns=list(RAW_USER_COLUMNS),
)
# an earlier snapshot holds a user who is no longer in the week's snapshot
OLD_USER = {
    "user_id": "u000099",
    "name": "Ada Byron",
    "email": "ada.byron99@example.com",
    "ip_address": "151.101.1.69",
    "device_id": "dev-0099-old-tablet",
}


def _events(users: pd.DataFrame, week: date) -> pd.DataFrame:
    rows = []
    for n, user in enumerate(users.itertuples()):
        for i in range(3):
            rows.append(
                {
                    "event_id": f"e{week:%m%d}{n}{i}",
                    "user_id": user.user_id,
                    "item_id": str(10 + i),
                    "timestamp": f"{week.isoformat()}T1{i}:00:00Z",
                    "event_type": "view",
                    "rating": "",
                    "watch_seconds": "600",
                    "device_type": "web",
                    "device_id": user.device_id,
                    "ip_address": user.ip_address,
                }
            )
    return pd.DataFrame(rows, columns=list(RAW_EVENT_COLUMNS))


def build_lake(root: Path, users: pd.DataFrame = USERS) -> Lake:
    """Raw input of two weeks + a clean run's outputs for WEEK (pseudonyms only)."""
    lake = Lake(root)
    old = pd.concat([users, pd.DataFrame([OLD_USER])], ignore_index=True).fillna("")
    write_text(csv_text(old), raw_file(lake, "users", PREVIOUS))
    write_text(csv_text(_events(old, PREVIOUS)), raw_file(lake, "events", PREVIOUS))
    write_text(csv_text(users), raw_file(lake, "users", WEEK))
    write_text(csv_text(_events(users, WEEK)), raw_file(lake, "events", WEEK))
    # the layers legitimately holding personal data are not scanned
    write_parquet(users, lake.data_file("validated", "users", WEEK))
    write_parquet(users.assign(_reason="duplicate"), lake.data_file("quarantine", "users", WEEK))

    pseudo = pseudonymize(users["user_id"], KEY)
    write_parquet(
        pd.DataFrame(
            {
                "user": pseudo,
                "item_id": [10, 11, 12],
                "ts": pd.to_datetime([f"{WEEK}T10:00:00Z"] * 3),
                "event_type": ["view"] * 3,
                "device_type": pd.Categorical(["web", "tv", "web"]),
            }
        ),
        lake.data_file("anonymized", "events", WEEK),
    )
    write_parquet(
        pd.DataFrame(
            {"user": pseudo, "age_band": ["25-34", "45-54", "25-34"], "zip3": ["021", "941", "100"]}
        ),
        lake.data_file("anonymized", "users", WEEK),
    )
    write_parquet(
        pd.DataFrame({"item_id": [10, 11, 12], "title": ["Heat (1995)", "Up, Again", "Mr. 192.x"]}),
        lake.data_file("anonymized", "items", WEEK),
    )
    prepared = pd.DataFrame({"user": pseudo, "item_id": [10, 11, 12], "strength": [1.5, 1.0, 2.0]})
    write_parquet(prepared, lake.partition("prepared", WEEK) / "train.parquet")
    write_parquet(prepared.iloc[:1], lake.partition("prepared", WEEK) / "holdout.parquet")
    write_parquet(
        recommendations(pseudo), lake.partition("recommendations", WEEK) / "recommendations.parquet"
    )
    write_json(
        lake.stage_result_file(WEEK, "prepare"),
        {"stage": "prepare", "week": WEEK.isoformat(), "users": 3, "train_pairs": 3, "holdout_pairs": 1},
    )
    write_json(
        lake.partition("reports", WEEK) / "accounting.json",
        {"events": {"rows_read": 9, "rows_valid": 9, "rows_quarantined": 0}},
    )
    return lake


def recommendations(users: list) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user": np.repeat(users, 2),
            "rank": [1, 2] * len(users),
            "item_id": [20, 21] * len(users),
            "score": [0.9, 0.8] * len(users),
            "model_version": ["1"] * 2 * len(users),
            "week": [WEEK.isoformat()] * 2 * len(users),
        }
    )


@pytest.fixture
def isolated(settings, tmp_path):
    """Settings with an experiment and a model name of this test only (the MLflow store is shared)."""
    name = f"privacy_{uuid.uuid4().hex[:10]}"
    return dataclasses.replace(settings, mlflow_experiment=name, model_name=name)


def _kinds_at(report: LeakReport, fragment: str) -> set[str]:
    return {f.kind for f in report.findings if fragment in f.location}


def _assert_nothing_shown_in_full(report: LeakReport, values: list[str]) -> None:
    text = json.dumps(report.to_dict())
    for value in values:
        assert value.lower() not in text.lower(), f"report shows a personal value in full: {mask(value, 'x')}"


ALL_VALUES = [
    v for column in ("user_id", "name", "email", "ip_address", "device_id") for v in USERS[column]
] + [OLD_USER[k] for k in ("user_id", "name", "email", "ip_address", "device_id")]


def test_a_clean_run_is_clean(isolated):
    lake = build_lake(isolated.lake_dir)
    report = scan_for_leaks(isolated, WEEK)
    assert report.clean, report.summary()
    assert report.findings == [] and report.unscanned == []
    # the week's and the earlier snapshot's identifiers were collected, the raw layers not scanned
    assert report.identifiers == {"user_id": 4, "email": 4, "ip": 4, "device_id": 4, "name": 4}
    assert report.files_scanned == 8  # anonymized x3, prepared x2, recommendations, runs, reports
    assert report.checked["parquet_columns"] > 0
    assert require_clean(report) is report
    assert (lake.root / "validated").exists()  # present, holds PII, and did not count as a leak


def test_planted_leaks_are_found_with_kind_location_and_a_masked_sample(isolated, tmp_path):
    import mlflow

    from recsys.io.tracking import configure

    lake = build_lake(isolated.lake_dir)
    jane, omar, li = USERS.to_dict("records")
    # 1. a raw email in a string column of the recommendations
    recs_path = lake.partition("recommendations", WEEK) / "recommendations.parquet"
    recs = pd.read_parquet(recs_path)
    recs["note"] = ["for " + jane["email"]] + [""] * (len(recs) - 1)
    recs.loc[1, "user"] = omar["email"]
    write_parquet(recs, recs_path)
    # 2. a raw user id in a runs/*.json
    write_json(lake.stage_result_file(WEEK, "train"), {"example_user": li["user_id"], "users": 3})
    # 3. an IP in an MLflow param, an email in an artifact of a run tagged with the week
    configure(isolated)
    with mlflow.start_run() as run:
        mlflow.set_tag("week", WEEK.isoformat())
        mlflow.log_param("client", jane["ip_address"])
        mlflow.log_text(f"contact: {OLD_USER['email']}\n", "notes/contact.txt")
        mlflow.log_metric("rows", 3)
    with mlflow.start_run():  # another week: not this run's business
        mlflow.set_tag("week", PREVIOUS.isoformat())
        mlflow.log_param("client", omar["ip_address"])
    # 3b. a user-written tag in the content model's run (its own experiment) naming someone's email
    configure(isolated, experiment=isolated.mlflow_experiment + "_content")
    with mlflow.start_run() as content_run:
        mlflow.set_tag("week", WEEK.isoformat())
        mlflow.log_text(f"title,tags\nFilm 1,great! ask {li['email']}\n", "content/catalogue.csv")
    configure(isolated)
    # 4. a device id (and a name) in an Airflow task log
    logs = tmp_path / "airflow-logs"
    task_log = logs / "dag_id=weekly_retrain" / "run_id=manual" / "task_id=train" / "attempt=1.log"
    task_log.parent.mkdir(parents=True)
    task_log.write_text(
        f"[2031-03-10T10:00:00] INFO - device={omar['device_id']} user {li['name']} took 10 s\n"
    )

    report = scan_for_leaks(isolated, WEEK, airflow_log_dirs=[logs])

    assert not report.clean
    rec_loc = f"lake:recommendations/week={WEEK}/recommendations.parquet"
    assert _kinds_at(report, f"{rec_loc}[note]") == {"email"}
    assert _kinds_at(report, f"{rec_loc}[user]") == {"email"}
    assert _kinds_at(report, f"lake:runs/week={WEEK}/train.json") == {"user_id"}
    run_loc = f"mlflow:run/{run.info.run_id}"
    assert _kinds_at(report, f"{run_loc}/params/client") == {"ip"}
    assert _kinds_at(report, f"{run_loc}/artifacts/notes/contact.txt") == {"email"}
    assert _kinds_at(report, f"airflow-log:{task_log}") == {"device_id", "name"}
    content_loc = f"mlflow:run/{content_run.info.run_id}/artifacts/content/catalogue.csv"
    assert _kinds_at(report, content_loc) == {"email"}
    assert report.checked["mlflow_runs"] == 2, "only the runs tagged with the week"
    assert len(report.findings) == 8
    assert all(f.matched == "input" and f.count >= 1 for f in report.findings)
    note = next(f for f in report.findings if f.location.endswith("[note]"))
    assert note.sample == "j***@example.com"
    _assert_nothing_shown_in_full(report, ALL_VALUES)

    with pytest.raises(PrivacyLeak) as caught:
        require_clean(report)
    message = str(caught.value)
    assert "\n" not in message
    assert "recommendations.parquet[note] (email" in message and "train.json (user_id" in message
    assert not any(v.lower() in message.lower() for v in ALL_VALUES)


def test_registered_versions_of_the_week_are_scanned(isolated, tmp_path):
    from mlflow import MlflowClient

    from recsys.io.tracking import configure

    build_lake(isolated.lake_dir)
    source = tmp_path / "model"
    source.mkdir()
    (source / "MLmodel").write_text(f"flavors: {{}}\nexample_client: {USERS['ip_address'][0]}\n")
    client: MlflowClient = configure(isolated)
    client.create_registered_model(isolated.model_name)
    version = client.create_model_version(isolated.model_name, source=source.as_uri())
    client.set_model_version_tag(isolated.model_name, version.version, "week", WEEK.isoformat())
    client.set_model_version_tag(isolated.model_name, version.version, "contact", USERS["email"][2])
    other = client.create_model_version(isolated.model_name, source=source.as_uri())
    client.set_model_version_tag(isolated.model_name, other.version, "week", PREVIOUS.isoformat())
    client.set_model_version_tag(isolated.model_name, other.version, "contact", USERS["email"][1])

    report = scan_for_leaks(isolated, WEEK)

    where = f"mlflow:model/{isolated.model_name}/{version.version}"
    assert sorted((f.location, f.kind) for f in report.findings) == [
        (f"{where}/artifacts/MLmodel", "ip"),
        (f"{where}/tags/contact", "email"),
    ]
    assert report.checked["model_versions"] == 1, "only the version tagged with the week"


def test_generic_nets_catch_emails_and_public_ips_not_in_the_input(isolated):
    lake = build_lake(isolated.lake_dir)
    write_json(
        lake.partition("reports", WEEK) / "notes.json",
        {
            "escalate_to": "someone.else@corp.example",
            "seen_from": "8.8.4.4",
            "spark_ui": "http://127.0.0.1:4040",
            "driver": "10.0.0.5",
        },
    )
    report = scan_for_leaks(isolated, WEEK, mlflow=False)
    found = {(f.kind, f.matched, f.sample) for f in report.findings}
    assert ("email", "pattern", "s***@corp.example") in found
    assert ("ip", "pattern", "8.*.*.*") in found
    # loopback / private infrastructure addresses are not flagged unless they are in the input
    assert not any(f.sample.startswith(("127.", "10.")) for f in report.findings)


def test_whole_token_matching_in_text(isolated):
    lake = build_lake(isolated.lake_dir)
    write_text(
        "u0001011 xu000101 u00010 u000101x jane.doe101 example.com\n",
        lake.partition("runs", WEEK) / "near-misses.log",
    )
    assert scan_for_leaks(isolated, WEEK, mlflow=False).clean
    write_text(
        '{"id": "u000101"}; path=models/user_u000101/ JANE.DOE101@EXAMPLE.COM\n',
        lake.partition("runs", WEEK) / "hits.log",
    )
    report = scan_for_leaks(isolated, WEEK, mlflow=False)
    hits = {(f.kind, f.count) for f in report.findings}
    assert hits == {("user_id", 2), ("email", 1)}


NUMERIC_USERS = pd.DataFrame(
    {
        "user_id": ["7", "42", "196"],
        "name": ["", "", ""],
        "email": ["", "", ""],
        "ip_address": ["", "", ""],
        "device_id": ["", "", ""],
        "age": ["24", "53", "33"],
        "gender": ["M", "F", "M"],
        "occupation": ["technician", "other", "writer"],
        "zip_code": ["85711", "94043", "32067"],
        "signup_date": ["", "", ""],
    },
    columns=list(RAW_USER_COLUMNS),
)


def test_short_numeric_ids_cause_no_false_positives_in_text_but_are_checked_in_user_columns(isolated):
    lake = build_lake(isolated.lake_dir, NUMERIC_USERS)
    write_json(
        lake.stage_result_file(WEEK, "evaluate"),
        {"k": 7, "users": 42, "items": 196, "ndcg@10": 0.42, "rows": [7, 42, 196], "top": "item 196"},
    )
    write_parquet(
        pd.DataFrame({"item_id": ["7", "42"], "rank": ["196", "7"], "genre": ["42", "x"]}),
        lake.partition("prepared", WEEK) / "extra.parquet",
    )
    report = scan_for_leaks(isolated, WEEK, mlflow=False)
    assert report.clean, report.summary()
    assert report.not_in_text >= 3

    # a raw numeric id where a pseudonym belongs is found
    path = lake.partition("prepared", WEEK) / "train.parquet"
    train = pd.read_parquet(path)
    train.loc[0, "user"] = "42"
    write_parquet(train, path)
    write_parquet(
        pd.DataFrame({"user_id": [196, 5000]}), lake.partition("recommendations", WEEK) / "ints.parquet"
    )
    report = scan_for_leaks(isolated, WEEK, mlflow=False)
    assert {(f.location.rsplit("/", 1)[-1], f.kind, f.count) for f in report.findings} == {
        ("train.parquet[user]", "user_id", 1),
        ("ints.parquet[user_id]", "user_id", 1),
    }
    assert all("42" not in f.sample and "196" not in f.sample for f in report.findings)


def test_npz_user_arrays_are_checked_by_value(isolated, tmp_path):
    import mlflow

    from recsys.io.tracking import configure

    build_lake(isolated.lake_dir)
    model_dir = tmp_path / "factor_model"
    model_dir.mkdir()
    users = np.array(pseudonymize(USERS["user_id"], KEY) + ["u000102"])
    np.savez_compressed(model_dir / "factors.npz", users=users, items=np.arange(3), f=np.ones((4, 2)))
    configure(isolated)
    with mlflow.start_run() as run:
        mlflow.set_tag("week", WEEK.isoformat())
        mlflow.log_artifacts(str(model_dir), artifact_path="model")
    report = scan_for_leaks(isolated, WEEK)
    assert [(f.location, f.kind, f.count) for f in report.findings] == [
        (f"mlflow:run/{run.info.run_id}/artifacts/model/factors.npz[users]", "user_id", 1)
    ]


def test_unreadable_files_make_the_report_not_clean(isolated):
    lake = build_lake(isolated.lake_dir)
    (lake.partition("prepared", WEEK) / "broken.parquet").write_bytes(b"PAR1 not really")
    report = scan_for_leaks(isolated, WEEK, mlflow=False)
    assert report.findings == [] and not report.clean
    assert report.unscanned[0]["location"] == f"lake:prepared/week={WEEK}/broken.parquet"
    with pytest.raises(PrivacyLeak, match="unreadable"):
        require_clean(report)


@pytest.mark.parametrize(
    ("value", "kind", "sample"),
    [
        ("jane.doe101@example.com", "email", "j***@example.com"),
        ("81.2.69.160", "ip", "81.*.*.*"),
        ("2001:db8::7", "ip", "2001:***"),
        ("u000101", "user_id", "u0***"),
        ("3f2a9c1e-5b7d-4e0f-9a21-6c8d0b4e7f13", "device_id", "3f2***"),
        ("Jane Doe", "name", "Ja***"),
        ("42", "user_id", "***"),
    ],
)
def test_mask_never_shows_the_value(value, kind, sample):
    assert mask(value, kind) == sample
    assert value not in mask(value, kind)
