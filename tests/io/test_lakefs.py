"""The lake in S3, read and written in place, against a real S3-compatible endpoint on loopback (moto's
server): pathlib's operations on objects, atomic files, partition commits whose marker readers
require (a commit killed while copying is refused, a re-run heals it), an erasure's rewrite
re-committed, and the weekly pipeline run stage by stage on a lake that lives only in the bucket."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import boto3
import pandas as pd
import pytest

from recsys.core.errors import ConfigError, DataReadError
from recsys.io.lakefs import ObjectPath, lake_location, split_uri
from recsys.io.storage import (
    COMMIT_MARKER,
    Lake,
    attempt_scope,
    commit_partition,
    move_file,
    read_parquet,
    recommit_file,
    write_parquet,
)
from tests.standalone import free_port

BUCKET = "lake-test"
WEEK = date(2026, 11, 8)


@pytest.fixture(scope="module")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3(s3_endpoint, monkeypatch, tmp_path):
    values = {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    client = boto3.client("s3")
    bucket = f"{BUCKET}-{tmp_path.name[-20:].lower().replace('_', '-')}".strip("-")
    client.create_bucket(Bucket=bucket)
    return client, bucket, values


def keys(client, bucket: str) -> set[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {obj["Key"] for page in pages for obj in page.get("Contents", [])}


def test_split_uri_and_locations(tmp_path):
    assert split_uri("s3://b/a/b/") == ("b", "a/b")
    assert split_uri("s3://b") == ("b", "")
    with pytest.raises(ConfigError):
        split_uri("/local/path")
    assert lake_location(f"file://{tmp_path}") == tmp_path
    assert lake_location(str(tmp_path)) == tmp_path
    with pytest.raises(ConfigError, match="expected s3://bucket/prefix"):
        lake_location("gs://bucket/lake")


def test_object_paths_behave_like_paths(s3):
    client, bucket, _ = s3
    root = lake_location(f"s3://{bucket}/lake")
    assert isinstance(root, ObjectPath) and str(root) == f"s3://{bucket}/lake"
    f = root / "raw" / "events" / "week=2026-11-08" / "a.csv"
    assert not f.exists() and not root.exists()
    f.write_text("user_id,item_id\n1,2\n")
    assert f.is_file() and f.parent.is_dir() and f.read_text().startswith("user_id")
    assert [p.name for p in f.parent.iterdir()] == ["a.csv"]
    assert f.relative_to(root).as_posix() == "raw/events/week=2026-11-08/a.csv"
    assert [p.name for p in root.rglob("*.csv")] == ["a.csv"]
    assert f.stat().st_size == len("user_id,item_id\n1,2\n")
    assert {name: st.st_size for name, st in root.file_stats().items()} == {
        "raw/events/week=2026-11-08/a.csv": len("user_id,item_id\n1,2\n")
    }
    lake = Lake(f"s3://{bucket}/lake")
    assert lake.in_object_store and lake.raw_weeks() == [WEEK] and lake.raw_files("events", WEEK) == [f]
    f.unlink()
    assert not f.exists()
    with pytest.raises(FileNotFoundError):
        f.read_text()
    assert "lake/raw/events/week=2026-11-08/a.csv" not in keys(client, bucket)


def test_files_are_written_whole_and_moved_in_by_one_upload(s3, tmp_path):
    _, bucket, _ = s3
    root = lake_location(f"s3://{bucket}/lake")
    frame = pd.DataFrame({"user": ["u1", "u2"], "item_id": [1, 2]})
    path = write_parquet(frame, root / "anonymized" / "feedback" / "week=2026-11-08" / "data.parquet")
    pd.testing.assert_frame_equal(read_parquet(path), frame)
    local = tmp_path / "x.parquet"
    frame.iloc[:1].to_parquet(local)
    move_file(local, path)
    assert not local.exists() and len(read_parquet(path)) == 1


def _commit(root: ObjectPath, frame: pd.DataFrame, attempt: str | None = None) -> ObjectPath:
    lake = Lake(root)
    folder = lake.partition("prepared", WEEK)
    record = lake.stage_result_file(WEEK, "prepare").relative_to(root).as_posix()
    with attempt_scope(attempt) as current:
        with commit_partition(root, folder, "prepare", record) as tmp:
            write_parquet(frame, tmp / "train.parquet")
            write_parquet(frame.iloc[:1], tmp / "holdout.parquet")
        lake.write_stage_result(WEEK, "prepare", {"attempt": current})
    return folder


def test_a_partition_commit_is_required_by_readers(s3):
    client, bucket, _ = s3
    root = lake_location(f"s3://{bucket}/lake")
    frame = pd.DataFrame({"user": ["u1", "u2", "u3"], "item_id": [1, 2, 3]})
    folder = _commit(root, frame)
    assert len(read_parquet(folder / "train.parquet")) == 3
    marker = json.loads((folder / COMMIT_MARKER).read_text())
    assert marker["files"] == ["holdout.parquet", "train.parquet"] and set(marker["sizes"]) == set(
        marker["files"]
    )
    assert not any("/.week=" in k for k in keys(client, bucket)), "the temporary prefix is removed"
    # no marker: what a writer that never committed left is refused
    (folder / COMMIT_MARKER).unlink()
    with pytest.raises(DataReadError, match=r"is not committed \(no _commit.json"):
        read_parquet(folder / "train.parquet")
    # a file that is not the one the marker committed (a commit stopped while copying) is refused
    folder = _commit(root, frame)
    write_parquet(frame.iloc[:2], folder / "train.parquet")
    with pytest.raises(DataReadError, match="train.parquet is not the file its _commit.json committed"):
        read_parquet(folder / "holdout.parquet")
    # an in-place rewrite that re-commits (an erasure) is taken again
    recommit_file(folder / "train.parquet")
    assert len(read_parquet(folder / "train.parquet")) == 2
    # re-running the stage heals the partition
    folder = _commit(root, frame)
    assert len(read_parquet(folder / "train.parquet")) == 3


KILLED_WRITER = """
import sys
import pandas as pd
from recsys.io.lakefs import lake_location
from recsys.io.storage import Lake, attempt_scope, commit_partition, write_parquet
from datetime import date
root = lake_location(sys.argv[1])
lake = Lake(root)
week = date(2026, 11, 8)
frame = pd.DataFrame({"user": ["a", "b", "c", "d"], "item_id": [9, 9, 9, 9]})
record = lake.stage_result_file(week, "prepare").relative_to(root).as_posix()
with attempt_scope():
    with commit_partition(root, lake.partition("prepared", week), "prepare", record) as tmp:
        write_parquet(frame, tmp / "train.parquet")
        write_parquet(frame, tmp / "holdout.parquet")
"""


@pytest.mark.parametrize("point", ["write:holdout.parquet", "copy:prepared/week=2026-11-08"])
def test_a_writer_killed_mid_commit_leaves_nothing_a_reader_takes(s3, point):
    """A process SIGKILLed while writing (or while copying into place) over a committed partition:
    readers get the old partition or a one-line refusal, never a mix; a re-run heals it."""
    _, bucket, values = s3
    root = lake_location(f"s3://{bucket}/lake")
    frame = pd.DataFrame({"user": ["u1", "u2", "u3"], "item_id": [1, 2, 3]})
    folder = _commit(root, frame)
    env = {**os.environ, **values, "RECSYS_CHAOS_KILL_AT": point}
    done = subprocess.run([sys.executable, "-c", KILLED_WRITER, f"s3://{bucket}/lake"], env=env, timeout=120)
    assert done.returncode == -9, "the writer was killed at the checkpoint"
    try:
        train = read_parquet(folder / "train.parquet")
    except DataReadError as exc:
        assert point.startswith("copy:") and "not committed" in str(exc) and "\n" not in str(exc)
    else:  # killed before the copy: the partition is the old one, whole
        assert point.startswith("write:")
        pd.testing.assert_frame_equal(train, frame)
        assert len(read_parquet(folder / "holdout.parquet")) == 1
    folder = _commit(root, frame)
    pd.testing.assert_frame_equal(read_parquet(folder / "train.parquet"), frame)


def test_weekly_pipeline_on_a_lake_in_s3(s3, env, monkeypatch, tmp_path):
    """Data generated into the bucket, every stage run by a process with no local lake: the bucket
    holds every layer, and nothing of the lake is written to the machine's disk."""
    from recsys.cli.main import main
    from recsys.core.settings import Settings
    from recsys.pipeline.context import StageContext
    from recsys.pipeline.runner import run_stage

    client, bucket, _ = s3
    monkeypatch.setenv("RECSYS_LAKE_URI", f"s3://{bucket}/lake")
    local = tmp_path / "no-lake-here"
    monkeypatch.setenv("RECSYS_LAKE_DIR", str(local))
    assert (
        main(["generate", "--until", "2026-11-16", "--weeks", "1", "--users", "300", "--items", "150"]) == 0
    )
    raw = {k for k in keys(client, bucket) if k.startswith("lake/raw/")}
    assert {k.split("/")[2] for k in raw} == {"events", "items", "users"}

    for stage in (
        "ingest",
        "validate",
        "anonymize",
        "prepare",
        "content",
        "train",
        "evaluate",
        "gate",
        "register",
    ):
        result = run_stage(stage, StageContext.create(WEEK, Settings.from_env()))
        assert result.stage == stage
    stored = keys(client, bucket)
    for layer in ("staged", "validated", "quarantine", "anonymized", "prepared", "models", "reports", "runs"):
        assert any(k.startswith(f"lake/{layer}/") for k in stored), layer
    for partition in ("validated/events", "anonymized/events", "prepared"):
        assert f"lake/{partition}/week=2026-11-08/{COMMIT_MARKER}" in stored, partition
    assert "lake/runs/week=2026-11-08/register.json" in stored
    assert not any("/." in k for k in stored), "no temporary object is left behind"
    assert result.status == "passed" and "champion" in result.aliases
    assert not local.exists(), "the lake is read and written in place, with no working copy"
    assert isinstance(Lake.from_settings(Settings.from_env()).root, ObjectPath)
    assert Path(env["RECSYS_HOME"]).exists()
