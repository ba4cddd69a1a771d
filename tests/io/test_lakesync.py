"""The lake in S3 through boto3, against a real S3-compatible endpoint on loopback (moto's server):
working copies pull and push only what changed, deletions travel both ways, and the whole weekly
pipeline runs on a lake that lives in the bucket."""

from __future__ import annotations

from datetime import date

import boto3
import pytest

from recsys.core.errors import ConfigError
from recsys.io.lakesync import MANIFEST, S3Lake, split_uri, synced_lake
from tests.standalone import free_port

BUCKET = "lake-test"


@pytest.fixture(scope="module")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3(s3_endpoint, monkeypatch, tmp_path):
    for key, value in {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    client = boto3.client("s3")
    bucket = f"{BUCKET}-{tmp_path.name[-20:].lower().replace('_', '-')}".strip("-")
    client.create_bucket(Bucket=bucket)
    return client, bucket


def keys(client, bucket: str) -> set[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {obj["Key"] for page in pages for obj in page.get("Contents", [])}


def test_split_uri():
    assert split_uri("s3://b/a/b/") == ("b", "a/b")
    assert split_uri("s3://b") == ("b", "")
    with pytest.raises(ConfigError):
        split_uri("/local/path")


def test_push_pull_round_trip_with_changes_and_deletions(s3, tmp_path):
    client, bucket = s3
    uri = f"s3://{bucket}/lake"
    a = S3Lake(uri, tmp_path / "a", client)
    (tmp_path / "a/raw/events/week=2026-11-08").mkdir(parents=True)
    (tmp_path / "a/raw/events/week=2026-11-08/events.csv").write_text("x,y\n1,2\n")
    (tmp_path / "a/runs/week=2026-11-08").mkdir(parents=True)
    (tmp_path / "a/runs/week=2026-11-08/ingest.json").write_text("{}")
    (tmp_path / "a/runs/week=2026-11-08/.ingest.json.tmp-1234").write_text("half-written")
    stats = a.push()
    assert stats.uploaded == 2
    assert keys(client, bucket) == {
        "lake/raw/events/week=2026-11-08/events.csv",
        "lake/runs/week=2026-11-08/ingest.json",
    }  # working files (hidden names) and the manifest never leave the machine
    assert a.push().uploaded == 0  # nothing changed

    b = S3Lake(uri, tmp_path / "b", client)  # another worker
    assert b.pull().downloaded == 2
    assert (tmp_path / "b/raw/events/week=2026-11-08/events.csv").read_text() == "x,y\n1,2\n"
    assert b.pull().downloaded == 0 and b.pull().unchanged == 2

    # b changes one file and deletes another; a sees both
    (tmp_path / "b/runs/week=2026-11-08/ingest.json").write_text('{"rows": 1}')
    (tmp_path / "b/raw/events/week=2026-11-08/events.csv").unlink()
    pushed = b.push()
    assert (pushed.uploaded, pushed.deleted_remote) == (1, 1)
    pulled = a.pull()
    assert (pulled.downloaded, pulled.deleted_local) == (1, 1)
    assert (tmp_path / "a/runs/week=2026-11-08/ingest.json").read_text() == '{"rows": 1}'
    assert not (tmp_path / "a/raw/events/week=2026-11-08/events.csv").exists()
    assert (tmp_path / "a" / MANIFEST).exists()


def test_a_missing_bucket_is_a_clear_error(s3, tmp_path):
    client, _ = s3
    with pytest.raises(ConfigError, match="cannot list the lake s3://no-such-bucket-here"):
        S3Lake("s3://no-such-bucket-here/lake", tmp_path, client).pull()


def test_weekly_pipeline_on_a_lake_in_s3(s3, env, monkeypatch, tmp_path):
    """Data generated on one machine, every stage run on a fresh working copy: the bucket holds it all."""
    from recsys.cli.main import main
    from recsys.core.settings import Settings
    from recsys.pipeline.context import StageContext
    from recsys.pipeline.runner import run_stage

    client, bucket = s3
    monkeypatch.setenv("RECSYS_LAKE_URI", f"s3://{bucket}/lake")
    monkeypatch.setenv("RECSYS_LAKE_DIR", str(tmp_path / "loader-copy"))
    assert (
        main(["generate", "--until", "2026-11-16", "--weeks", "1", "--users", "300", "--items", "150"]) == 0
    )
    raw = {k for k in keys(client, bucket) if k.startswith("lake/raw/")}
    assert {k.split("/")[2] for k in raw} == {"events", "items", "users"}

    week = date(2026, 11, 8)
    for i, stage in enumerate(
        ("ingest", "validate", "anonymize", "prepare", "content", "train", "evaluate", "gate", "register")
    ):
        monkeypatch.setenv("RECSYS_LAKE_DIR", str(tmp_path / f"worker-{i}"))  # a new worker each time
        result = run_stage(stage, StageContext.create(week, Settings.from_env()))
        assert result.stage == stage
    stored = keys(client, bucket)
    for layer in ("staged", "validated", "quarantine", "anonymized", "prepared", "models", "reports", "runs"):
        assert any(k.startswith(f"lake/{layer}/") for k in stored), layer
    assert "lake/runs/week=2026-11-08/register.json" in stored
    assert result.status == "passed" and "champion" in result.aliases
    # nothing is left to push in the last working copy, and the sync never nests
    with synced_lake(Settings.from_env()), synced_lake(Settings.from_env()):
        pass
    assert S3Lake(f"s3://{bucket}/lake", tmp_path / "worker-7", client).push().uploaded == 0
