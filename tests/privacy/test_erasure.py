"""Erasure: one user's rows leave every layer, everything else stays as it was, and the record holds
only the pseudonym. Plus the user_erasure DAG, parsed and run through Airflow itself."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from recsys.core.intervals import week_start_of
from recsys.core.schemas import RAW_EVENT_COLUMNS, RAW_FEEDBACK_COLUMNS, RAW_ITEM_COLUMNS, RAW_USER_COLUMNS
from recsys.data.ingest import ingest_week
from recsys.data.raw import csv_text, raw_file
from recsys.io.storage import Lake, write_parquet, write_text
from recsys.pipeline.context import StageContext
from recsys.pipeline.data_stages import anonymize as anonymize_stage
from recsys.pipeline.data_stages import prepare as prepare_stage
from recsys.privacy import ERASURE_LOG, erase_user, erased_pseudonyms, read_erasure_log
from recsys.privacy.anonymize import pseudonymize
from recsys.validation.validate import validate_week
from tests.conftest import PROJECT_ROOT, TEST_KEY, airflow_subprocess_env

KEY = TEST_KEY.encode()
WEEK2 = week_start_of(date(2025, 5, 14))  # a past week: validation refuses future timestamps
WEEK1 = date.fromordinal(WEEK2.toordinal() - 7)
TARGET = "u000002"
PSEUDONYM = pseudonymize([TARGET], KEY)[0]
USERS = pd.DataFrame(
    {
        "user_id": ["u000001", TARGET, "u000003"],
        "name": ["Ana Lima", "Bruno Keller", "Smith, Ann"],  # a quoted field must survive as written
        "email": ["ana.lima1@example.com", "bkeller2@example.org", "ann.smith3@example.net"],
        "ip_address": ["81.2.69.160", "151.101.1.69", "192.168.7.22"],
        "device_id": ["dev-aaaa-0001", "dev-bbbb-0002", "dev-cccc-0003"],
        "age": ["34", "51", "27"],
        "gender": ["F", "M", "F"],
        "occupation": ["writer", "engineer", "student"],
        "zip_code": ["02139", "94110", "10001"],
        "signup_date": ["2030-01-02", "2030-05-06", "2030-07-08"],
    },
    columns=list(RAW_USER_COLUMNS),
)
TARGET_PII = USERS.loc[1, ["user_id", "name", "email", "ip_address", "device_id"]].tolist()
ITEMS = pd.DataFrame(
    {
        "item_id": [str(i) for i in range(1, 9)],
        "title": [f"Film {i}" for i in range(1, 9)],
        "genres": ["Drama"] * 8,
        "release_year": ["1999"] * 8,
        "added_at": ["2030-01-01T00:00:00Z"] * 8,
    },
    columns=list(RAW_ITEM_COLUMNS),
)


def events_text(week: date) -> str:
    rows = []
    for u, user in enumerate(USERS.itertuples()):
        for i in range(7):
            rows.append(
                {
                    "event_id": f"e{week:%m%d}-{u}-{i}",
                    "user_id": user.user_id,
                    "item_id": str(1 + (i + u) % 8),
                    "timestamp": f"{week.isoformat()}T{10 + i}:0{u}:00Z",
                    "event_type": "rating" if i % 3 == 0 else "view",
                    "rating": "4.5" if i % 3 == 0 else "",
                    "watch_seconds": "" if i % 3 == 0 else str(600 + 60 * i),
                    "device_type": "web",
                    "device_id": user.device_id,
                    "ip_address": user.ip_address,
                }
            )
    frame = pd.DataFrame(rows, columns=list(RAW_EVENT_COLUMNS))
    bad_rating = frame.iloc[[0]].assign(event_id=f"e{week:%m%d}-bad", rating="9")  # u000001: quarantined
    duplicate = frame.iloc[[8]].assign(event_id=f"e{week:%m%d}-dup")  # the target's: quarantined
    text = csv_text(pd.concat([frame, bad_rating, duplicate], ignore_index=True))
    malformed = f"e{week:%m%d}-mal,{TARGET},3,{week.isoformat()}T09:00:00Z,view,,60,web,dev-bbbb-0002,151.101.1.69,extra\n"
    return text + malformed


def build_lake(settings) -> Lake:
    """Two weeks through ingest, validate, anonymize and prepare, plus recommendations."""
    lake = Lake(settings.lake_dir)
    for week in (WEEK1, WEEK2):
        write_text(events_text(week), raw_file(lake, "events", week))
        write_text(csv_text(ITEMS), raw_file(lake, "items", week))
        write_text(csv_text(USERS), raw_file(lake, "users", week))
        ingest_week(lake, week)
        validate_week(lake, week)
        ctx = StageContext.create(week, settings)
        anonymize_stage(ctx)
        prepare_stage(ctx)
        train = pd.read_parquet(lake.partition("prepared", week) / "train.parquet")
        users = sorted(train["user"].unique())
        recs = pd.DataFrame(
            {
                "user": [u for u in users for _ in range(2)],
                "rank": [1, 2] * len(users),
                "item_id": [7, 8] * len(users),
                "score": [0.9, 0.5] * len(users),
            }
        )
        write_parquet(recs, lake.partition("recommendations", week) / "recommendations.parquet")
    # the A/B test's logs: what was shown (exposures) and the feedback to it, the target's included
    from recsys.experiments.feedback_log import ingest_feedback

    shown = recs.assign(arm="champion", experiment_id="exp-1", position=recs["rank"], week=WEEK2.isoformat())
    write_parquet(shown.assign(model_version="1"), lake.data_file("anonymized", "exposures", WEEK2))
    write_text(feedback_text(WEEK2), raw_file(lake, "feedback", WEEK2))
    ingest_feedback(lake, WEEK2, KEY)
    return lake


def feedback_text(week: date) -> str:
    """Clicks and plays of every user, and one bad row of the target's (quarantined)."""
    head = "user_id,item_id,ts,event,watch_seconds,position,experiment_id,arm,from_recommendation\n"
    rows = [
        f"{user},7,{week.isoformat()}T20:0{u}:00Z,click,,1,exp-1,champion,true\n"
        f"{user},7,{week.isoformat()}T20:1{u}:00Z,play,1200,1,exp-1,champion,true\n"
        f"{user},3,{week.isoformat()}T21:0{u}:00Z,play,300,,,,false\n"
        for u, user in enumerate(USERS["user_id"])
    ]
    return head + "".join(rows) + f"{TARGET},7,{week.isoformat()}T22:00:00Z,rate,,,,,false\n"


def _fields(line: str) -> list[str]:
    return next(csv.reader(io.StringIO(line)), [])


def _targets_line(line: str) -> bool:
    return any(f.strip() == TARGET for f in _fields(line))


def _is_target_row(frame: pd.DataFrame) -> pd.Series:
    mine = pd.Series(False, index=frame.index)
    if "user" in frame.columns:
        mine |= frame["user"] == PSEUDONYM
    if "user_id" in frame.columns:
        mine |= frame["user_id"].astype("string").str.strip().eq(TARGET).fillna(False).astype(bool)
    if "_raw_line" in frame.columns:
        mine |= frame["_raw_line"].map(lambda t: isinstance(t, str) and _targets_line(t))
    return mine


def snapshot(lake: Lake) -> dict[str, object]:
    files: dict[str, object] = {}
    for path in sorted(lake.root.rglob("*")):
        # the erasure log and the lake's key record (recorded on first use) are the lake's own records
        if not path.is_file() or {ERASURE_LOG.split("/")[0], "_meta"} & set(path.parts):
            continue
        rel = path.relative_to(lake.root).as_posix()
        files[rel] = pd.read_parquet(path) if path.suffix == ".parquet" else path.read_bytes()
    return files


@pytest.fixture(scope="module")
def built_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The lake is built once (validation runs Great Expectations); each test gets its own copy."""
    from recsys.core.settings import Settings

    home = tmp_path_factory.mktemp("erasure-template")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RECSYS_PSEUDONYM_KEY", TEST_KEY)
        patch.delenv("RECSYS_CONFIG", raising=False)
        settings = Settings.from_env({"RECSYS_HOME": str(home), "RECSYS_LAKE_DIR": str(home / "lake")})
        build_lake(settings)
    return home / "lake"


@pytest.fixture
def lake(settings, built_lake: Path) -> Lake:
    shutil.copytree(built_lake, settings.lake_dir)
    return Lake(settings.lake_dir)


def test_erasure_removes_exactly_the_users_rows_from_every_layer(settings, lake):
    before = snapshot(lake)
    expected: dict[str, dict[str, int]] = {}
    for rel, content in before.items():
        layer = rel.split("/")[0]
        if isinstance(content, pd.DataFrame):
            n = int(_is_target_row(content).sum())
        elif layer == "raw":
            n = sum(_targets_line(line) for line in content.decode().splitlines(keepends=True)[1:])
        else:
            continue
        if n:
            expected.setdefault(layer, {})
            expected[layer][rel] = n
    # the test means something: the user is in every layer before
    assert set(expected) == {
        "raw",
        "staged",
        "validated",
        "quarantine",
        "anonymized",
        "prepared",
        "recommendations",
    }
    assert any("ingest.parquet" in rel for rel in expected["quarantine"]), "malformed line quarantined"

    record = erase_user(
        settings,
        f" {TARGET} ",
        KEY,
        requested_by="dpo",
        reason=f"ticket 17: {TARGET} ({TARGET_PII[2]}, {TARGET_PII[1]}) asked from 151.101.1.69",
    )

    after = snapshot(lake)
    assert set(after) == set(before), "no file appears or disappears"
    for rel, old in before.items():
        new = after[rel]
        if isinstance(old, pd.DataFrame):
            kept = old[~_is_target_row(old)].reset_index(drop=True)
            pd.testing.assert_frame_equal(new, kept, check_dtype=True, obj=rel)
        elif rel.startswith("raw/") and not rel.startswith("raw/items"):
            lines = old.decode().splitlines(keepends=True)
            want = lines[0] + "".join(line for line in lines[1:] if not _targets_line(line))
            assert new.decode() == want, rel
            header = {
                "events": RAW_EVENT_COLUMNS,
                "users": RAW_USER_COLUMNS,
                "feedback": RAW_FEEDBACK_COLUMNS,
            }
            assert new.decode().splitlines()[0] == ",".join(header[rel.split("/")[1]])
        else:
            assert new == old, f"{rel} changed"
    assert '"Smith, Ann"' in after[f"raw/users/week={WEEK2}/users.csv"].decode()

    # the counts per layer are exact
    for layer, files in expected.items():
        assert sum(record.removed[layer].values()) == sum(files.values()), layer
    # events: 7 + duplicate + malformed per week; feedback: click, play, organic play, a bad row
    assert record.removed["raw"] == {"events": 2 * 9, "users": 2, "feedback": 4}
    assert record.removed["anonymized"]["feedback"] == 3 and record.removed["anonymized"]["exposures"] == 2
    assert record.removed["quarantine"]["feedback"] == 1
    assert record.found and record.total_removed == sum(sum(f.values()) for f in expected.values())
    assert record.pseudonym == PSEUDONYM

    # the record: pseudonym and counts, no raw personal data
    log_text = (lake.root / ERASURE_LOG).read_text()
    assert len(log_text.splitlines()) == 1
    entry = json.loads(log_text)
    assert entry["pseudonym"] == PSEUDONYM and entry["requested_by"] == "dpo"
    assert entry["removed"]["prepared"]["train"] >= 1 and entry["total_removed"] == record.total_removed
    for value in [*TARGET_PII, "151.101.1.69", "Bruno"]:
        assert value.lower() not in log_text.lower(), "the erasure record holds personal data"
    assert entry["reason"].startswith("ticket 17: [redacted]")
    assert erased_pseudonyms(lake) == {PSEUDONYM}
    assert erased_pseudonyms(lake, KEY) == {PSEUDONYM}
    assert erased_pseudonyms(lake, b"another-key-0123456789") == frozenset()

    # the next retrain no longer contains the user
    for week in (WEEK1, WEEK2):
        ctx = StageContext.create(week, settings)
        anonymize_stage(ctx)
        prepare_stage(ctx)
        for name in ("train", "holdout"):
            prepared = pd.read_parquet(lake.partition("prepared", week) / f"{name}.parquet")
            assert PSEUDONYM not in set(prepared["user"])
        train = pd.read_parquet(lake.partition("prepared", week) / "train.parquet")
        assert len(set(train["user"])) == 2


def test_second_erasure_removes_nothing_and_is_recorded(settings, lake):
    first = erase_user(settings, TARGET, KEY)
    assert first.found and not first.previously_erased
    files = snapshot(lake)
    second = erase_user(settings, TARGET, KEY, requested_by="cli", reason="repeat")
    assert not second.found and second.total_removed == 0 and second.files_rewritten == 0
    assert second.previously_erased and "erased before" in second.message
    after = snapshot(lake)
    for rel, content in files.items():
        if isinstance(content, pd.DataFrame):
            pd.testing.assert_frame_equal(after[rel], content)
        else:
            assert after[rel] == content
    records = read_erasure_log(lake)
    assert [r["pseudonym"] for r in records] == [PSEUDONYM, PSEUDONYM]
    assert [r["total_removed"] for r in records] == [first.total_removed, 0]


def test_unknown_user_is_recorded_with_zero_counts(settings, lake, caplog):
    record = erase_user(settings, "u999999", KEY, reason="no such user")
    assert not record.found and not record.previously_erased
    assert "not found anywhere" in record.message
    assert "not found anywhere" in caplog.text and "u999999" not in caplog.text
    entry = read_erasure_log(lake)[-1]
    assert entry["found"] is False and entry["total_removed"] == 0
    assert set(entry["removed"]) == {
        "raw",
        "staged",
        "validated",
        "quarantine",
        "anonymized",
        "prepared",
        "recommendations",
    }
    assert all(n == 0 for kinds in entry["removed"].values() for n in kinds.values())
    assert entry["pseudonym"] == pseudonymize(["u999999"], KEY)[0]
    assert "u999999" not in (lake.root / ERASURE_LOG).read_text()


def test_erasure_under_another_key_is_refused_and_changes_nothing(settings, lake):
    """Under another key the user's pseudonymized rows would not be found and would silently stay."""
    from recsys.core.errors import ConfigError

    before = snapshot(lake)
    with pytest.raises(ConfigError, match="not the key the lake"):
        erase_user(settings, TARGET, b"another-key-0123456789abcdef")
    after = snapshot(lake)
    assert set(after) == set(before)
    assert not (lake.root / ERASURE_LOG).exists()


def test_empty_user_id_is_refused(settings):
    from recsys.core.errors import ConfigError

    with pytest.raises(ConfigError, match="empty"):
        erase_user(settings, "  ", KEY)
    assert not (Lake(settings.lake_dir).root / ERASURE_LOG).exists()


def test_csv_rewrite_keeps_other_records_byte_for_byte(settings):
    """CRLF line ends, a BOM, quoted commas and quoted line breaks, gzip: all kept as they were."""
    lake = Lake(settings.lake_dir)
    header = ",".join(RAW_USER_COLUMNS)
    keep1 = 'u1,"Doe, Jane",j@example.com,81.2.69.160,d1,30,F,"writer\r\nand poet",02139,2030-01-01'
    gone = f"{TARGET},Bo Keller,b@example.com,1.2.3.4,d2,40,M,engineer,94110,2030-01-01"
    keep2 = f'u3,"Ann ""{TARGET}"" Lee",a@example.com,5.6.7.8,d3,22,F,student,10001,2030-01-01'
    text = "\r\n".join([header, keep1, gone, keep2]) + "\r\n"
    users = raw_file(lake, "users", WEEK2)
    users.parent.mkdir(parents=True)
    users.write_bytes(b"\xef\xbb\xbf" + text.encode())
    events = lake.partition("raw", WEEK2, "events") / "events.csv.gz"
    events.parent.mkdir(parents=True)
    lines = [",".join(RAW_EVENT_COLUMNS)] + [
        f"e{i},{uid},1,{WEEK2}T10:00:00Z,view,,60,web,d,1.2.3.4" for i, uid in enumerate(["u1", TARGET, "u3"])
    ]
    events.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    untouched = lake.partition("raw", WEEK1, "users") / "users.csv"
    untouched.parent.mkdir(parents=True)
    untouched.write_text(header + "\n" + keep2 + "\n")
    mtime = untouched.stat().st_mtime_ns

    record = erase_user(settings, TARGET, KEY)

    assert users.read_bytes() == b"\xef\xbb\xbf" + ("\r\n".join([header, keep1, keep2]) + "\r\n").encode()
    assert gzip.decompress(events.read_bytes()).decode() == "\n".join([lines[0], lines[1], lines[3]]) + "\n"
    assert untouched.stat().st_mtime_ns == mtime, "a file without the user is not rewritten"
    assert record.removed["raw"] == {"events": 1, "users": 1, "feedback": 0} and record.files_rewritten == 2
    assert not list(users.parent.glob(".*")), "no temporary file left behind"


# ---- the DAG -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(PROJECT_ROOT / "dags"))


def test_user_erasure_dag_shape(dagbag):
    from airflow.sdk.definitions.param import Param

    assert dagbag.import_errors == {}
    dag = dagbag.dags["user_erasure"]
    assert dag.schedule is None
    assert type(dag.timetable).__name__ == "NullTimetable"
    assert dag.max_active_runs == 1
    assert set(dag.tags) == {"recsys", "privacy"}
    param = dag.params.get_param("user_id")
    assert isinstance(param, Param)
    assert param.schema["type"] == "string" and param.schema["minLength"] == 1
    assert not param.has_value, "no default: the user id must be given"
    assert [t.task_id for t in dag.tasks] == ["erase"]
    for task in dag.tasks:
        assert task.retries >= 1 and task.execution_timeout is not None


def test_user_erasure_dag_import_is_light():
    code = (
        "import sys, runpy\n"
        f"runpy.run_path({str(PROJECT_ROOT / 'dags' / 'erasure.py')!r})\n"
        "heavy = [m for m in ('pyspark', 'mlflow', 'great_expectations', 'pyarrow', 'recsys.privacy')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip().splitlines()[-1:] in ([""], []), f"heavy imports at parse time: {out.stdout}"


BIN = Path(sys.executable).parent


def _run(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=PROJECT_ROOT)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-60:])
        pytest.fail(f"{' '.join(cmd[:3])} exited {result.returncode}:\n{tail}")
    return result


@pytest.mark.slow
@pytest.mark.integration
def test_user_erasure_dag_runs_through_airflow_without_logging_the_id(tmp_path):
    root = tmp_path
    env = airflow_subprocess_env(root)
    lake = Lake(root / "home" / "lake")
    for week in (WEEK1, WEEK2):
        write_text(events_text(week), raw_file(lake, "events", week))
        write_text(csv_text(USERS), raw_file(lake, "users", week))
    recs = pd.DataFrame({"user": pseudonymize(USERS["user_id"], KEY), "rank": 1, "item_id": 3})
    write_parquet(recs, lake.partition("recommendations", WEEK2) / "recommendations.parquet")

    _run([str(BIN / "airflow"), "db", "migrate"], env)
    conf = json.dumps({"user_id": TARGET, "reason": "ticket 42"})
    out = _run([str(BIN / "airflow"), "dags", "test", "user_erasure", "-c", conf], env)

    for week in (WEEK1, WEEK2):
        for kind in ("events", "users"):
            assert TARGET not in raw_file(lake, kind, week).read_text()
    remaining = pd.read_parquet(lake.partition("recommendations", WEEK2) / "recommendations.parquet")
    assert PSEUDONYM not in set(remaining["user"]) and len(remaining) == 2
    (entry,) = read_erasure_log(lake)
    assert entry["pseudonym"] == PSEUDONYM and entry["reason"] == "ticket 42"
    assert entry["requested_by"].startswith("airflow:user_erasure/")
    assert entry["removed"]["raw"] == {"events": 18, "users": 2, "feedback": 0}

    # `airflow dags test` runs the task in-process: its log is this output (and any log files)
    output = out.stdout + out.stderr
    files = [p for p in (root / "airflow" / "logs").rglob("*") if p.is_file()]
    Path(os.environ.get("RECSYS_ERASURE_E2E_LOG", os.devnull)).write_text(output)
    text = output + "\n".join(p.read_text(errors="replace") for p in files)
    assert PSEUDONYM in text, "the task logs the pseudonym"
    assert TARGET not in text, "the raw user id is in the task log"
    for value in TARGET_PII:
        assert value not in text
    assert "succeeded" in (out.stdout + out.stderr).lower() or "success" in (out.stdout + out.stderr).lower()
