"""The A/B feedback log: simulated into raw/feedback, ingested with a quarantine, anonymized."""

from __future__ import annotations

import gzip
import json
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from recsys.cli.main import main
from recsys.core.errors import DataNotFoundError, DataReadError, ValidationFailed
from recsys.core.schemas import ANON_FEEDBACK_COLUMNS, QUARANTINE_REASON, RAW_FEEDBACK_COLUMNS, SOURCE_LINE
from recsys.data.ingest import RAW_LINE
from recsys.data.raw import raw_file
from recsys.data.synthetic import GeneratorConfig, World, build_world, generate, generator_file, world_of_lake
from recsys.experiments.feedback_log import (
    DUPLICATE,
    REASONS,
    active_users,
    exposures_file,
    feedback_file,
    ingest_feedback,
    quarantine_file,
    read_exposures,
    read_feedback,
    simulate_week,
)
from recsys.experiments.simulation import FeedbackConfig
from recsys.io.storage import Lake, write_parquet
from recsys.privacy.anonymize import FEEDBACK_POLICY, pseudonymize
from tests.conftest import TEST_KEY

END_WEEK = date(2026, 11, 15)  # last generated week (a Sunday); the experiment's week in these tests
CONFIG = GeneratorConfig(n_users=150, n_items=90, weeks=2, seed=5)
KEY = TEST_KEY.encode()
LIST_LENGTH = 8


def write_exposures(lake: Lake, world: World, week: date = END_WEEK, n_users: int = 90) -> pd.DataFrame:
    """Hand-made exposures: ``n_users`` of the world's users, each shown LIST_LENGTH items, arms in turn."""
    rng = np.random.default_rng(1)
    users = rng.choice(len(world.user_ids), size=n_users, replace=False)
    pseudonyms = pseudonymize(world.user_ids[users].tolist(), KEY)
    arms = ("champion", "challenger", "holdout")
    rows = []
    for n, pseudonym in enumerate(pseudonyms):
        items = rng.choice(len(world.item_ids), size=LIST_LENGTH, replace=False)
        for position, item in enumerate(items, start=1):
            arm = arms[n % 3]
            rows.append((pseudonym, arm, "exp-1", int(world.item_ids[item]), position, week.isoformat(), arm))
    frame = pd.DataFrame(
        rows, columns=["user", "arm", "experiment_id", "item_id", "position", "week", "model_version"]
    )
    frame["item_id"] = frame["item_id"].astype("int64")
    frame["position"] = frame["position"].astype("int64")
    write_parquet(frame, exposures_file(lake, week))
    return frame


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    lake = Lake(tmp_path / "lake")
    generate(lake, CONFIG, END_WEEK)
    return lake


@pytest.fixture
def world(lake: Lake) -> World:
    return world_of_lake(lake)


# ---- the generator records its world ----------------------------------------------------------------


def test_generate_records_its_world(lake: Lake, world: World) -> None:
    record = json.loads(generator_file(lake).read_text(encoding="utf-8"))
    assert record == {"config": CONFIG.model_dump(mode="json"), "end_week": END_WEEK.isoformat()}
    same = build_world(CONFIG, END_WEEK)
    assert world.first_week == same.first_week
    assert (world.user_ids == same.user_ids).all() and (world.item_ids == same.item_ids).all()
    assert np.array_equal(world.match, same.match)
    assert not list(generator_file(lake).parent.glob(".*tmp*"))  # written atomically


def test_world_of_a_lake_not_written_by_generate(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match=r"no generator\.json in .*: feedback can only be simulated"):
        world_of_lake(Lake(tmp_path))


@pytest.mark.parametrize(
    "content",
    ["{not json", '{"config": {"n_users": -3}, "end_week": "2026-11-15"}', '{"config": {}}', "[]"],
)
def test_corrupt_generator_record(lake: Lake, content: str) -> None:
    generator_file(lake).write_text(content, encoding="utf-8")
    with pytest.raises(DataReadError, match=r"generator\.json is corrupt .*run `recsys generate` again"):
        world_of_lake(lake)


# ---- simulate, then ingest ----------------------------------------------------------------------------


def test_simulated_feedback_is_ingested_and_anonymized(lake: Lake, world: World) -> None:
    exposures = write_exposures(lake, world)
    sim = simulate_week(lake, END_WEEK, KEY)
    raw = raw_file(lake, "feedback", END_WEEK)
    assert sim["path"] == str(raw) == str(lake.root / "raw/feedback/week=2026-11-15/feedback.csv")
    assert sim["rows"] == sim["clicks"] + sim["plays"] > 0 and sim["clicks"] > 0
    assert sim["exposures"] == len(exposures) and sum(sim["skipped"].values()) == 0

    text = raw.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[0] == ",".join(RAW_FEEDBACK_COLUMNS)
    assert len(lines) == sim["rows"] + 1
    assert "<NA>" not in text and "nan" not in text.lower()
    assert ",,,,false" in text  # an organic play: no position, experiment or arm
    assert {line.rsplit(",", 1)[1] for line in lines[1:]} == {"true", "false"}

    result = ingest_feedback(lake, END_WEEK, KEY)
    assert result["read"] == sim["rows"] == result["used"] + result["quarantined"] + result["erased"]
    assert result["quarantined"] == 0 and result["by_reason"] == {} and result["erased"] == 0
    assert result["path"] == str(feedback_file(lake, END_WEEK))

    out = pd.read_parquet(result["path"])
    assert tuple(out.columns) == ANON_FEEDBACK_COLUMNS and len(out) == result["used"]
    assert str(out["item_id"].dtype) == "int64" and str(out["position"].dtype) == "Int64"
    assert out["from_recommendation"].dtype == bool
    assert str(out["ts"].dt.tz) == "UTC"
    assert (out["week"] == END_WEEK.isoformat()).all()
    assert set(out["event"]) == {"click", "play"}
    # no raw user id anywhere; the pseudonyms are the exposures'
    raw_ids = set(world.user_ids.tolist())
    for column in out.columns:
        assert not set(out[column].astype(str)) & raw_ids, column
    assert set(out["user"]) <= set(exposures["user"])
    recommended = out[out["from_recommendation"]]
    assert recommended["arm"].notna().all() and (recommended["experiment_id"] == "exp-1").all()
    assert out.loc[~out["from_recommendation"], "position"].isna().all()
    plays = out[out["event"] == "play"]
    assert (plays["watch_seconds"] >= 1).all()
    assert out.loc[out["event"] == "click", "watch_seconds"].isna().all()
    # the quarantine partition is written, empty
    quarantine = pd.read_parquet(quarantine_file(lake, END_WEEK))
    assert len(quarantine) == 0 and QUARANTINE_REASON in quarantine.columns

    # the readout's inputs
    assert read_feedback(lake, [END_WEEK - timedelta(weeks=1), END_WEEK]).equals(out)
    shown = read_exposures(lake, [END_WEEK, END_WEEK + timedelta(weeks=1)])
    assert len(shown) == len(exposures)
    active = active_users(out)
    assert list(active.columns) == ["user", "week"] and len(active) == out["user"].nunique()


def test_simulation_is_deterministic_and_seeded(lake: Lake, world: World) -> None:
    write_exposures(lake, world)
    raw = raw_file(lake, "feedback", END_WEEK)
    simulate_week(lake, END_WEEK, KEY, FeedbackConfig(seed=1))
    first = raw.read_bytes()
    simulate_week(lake, END_WEEK, KEY, FeedbackConfig(seed=1))
    assert raw.read_bytes() == first
    simulate_week(lake, END_WEEK, KEY, FeedbackConfig(seed=2))
    assert raw.read_bytes() != first


def test_gzipped_and_several_files_are_read(lake: Lake, world: World) -> None:
    write_exposures(lake, world)
    sim = simulate_week(lake, END_WEEK, KEY)
    raw = raw_file(lake, "feedback", END_WEEK)
    lines = raw.read_text(encoding="utf-8").splitlines(keepends=True)
    half = len(lines) // 2
    (raw.parent / "a.csv.gz").write_bytes(gzip.compress("".join(lines[: half + 1]).encode()))
    (raw.parent / "b.csv").write_text(lines[0] + "".join(lines[half + 1 :]), encoding="utf-8")
    raw.unlink()
    result = ingest_feedback(lake, END_WEEK, KEY)
    assert result["files"] == ["a.csv.gz", "b.csv"]
    assert result["read"] == result["used"] == sim["rows"]


# ---- bad rows ----------------------------------------------------------------------------------------

GOOD = {
    "user_id": "u000001",
    "item_id": "7",
    "ts": "2026-11-16T20:00:00Z",
    "event": "click",
    "watch_seconds": "",
    "position": "2",
    "experiment_id": "exp-1",
    "arm": "champion",
    "from_recommendation": "true",
}
ORGANIC = {**GOOD, "event": "play", "watch_seconds": "1200", "position": "", "experiment_id": "", "arm": ""}
ORGANIC.update(from_recommendation="False", ts="1794873600")  # Unix seconds: 2026-11-17T00:00:00Z
BAD_ROWS = [  # (reason, the row)
    ("user_id missing", {**GOOD, "user_id": "  "}),
    ("item_id not an integer", {**GOOD, "item_id": "7.5"}),
    ("item_id not an integer", {**GOOD, "item_id": "abc"}),
    ("ts not a timestamp", {**GOOD, "ts": "yesterday"}),
    ("ts outside the week", {**GOOD, "ts": "2026-11-22T00:00:00Z"}),
    ("ts outside the week", {**GOOD, "ts": "2026-11-14T23:59:59Z"}),
    ("event not one of click, play", {**GOOD, "event": "purchase"}),
    ("watch_seconds missing or negative on a play", {**GOOD, "event": "play", "watch_seconds": ""}),
    ("watch_seconds missing or negative on a play", {**GOOD, "event": "play", "watch_seconds": "-5"}),
    ("watch_seconds not a number >= 0", {**GOOD, "watch_seconds": "lots"}),
    ("from_recommendation not a boolean", {**GOOD, "from_recommendation": "maybe"}),
    ("from_recommendation not a boolean", {**GOOD, "from_recommendation": ""}),
    ("position not a whole number >= 1", {**GOOD, "position": "0"}),
    ("position not a whole number >= 1", {**GOOD, "position": "1.5"}),
    ("position not a whole number >= 1", {**GOOD, "position": ""}),
    ("recommendation row without experiment_id or arm", {**GOOD, "experiment_id": ""}),
    ("recommendation row without experiment_id or arm", {**GOOD, "arm": ""}),
    ("arm not one of champion, challenger, holdout", {**GOOD, "arm": "treatment"}),
    (DUPLICATE, GOOD),
]


def csv_line(row: dict[str, str]) -> str:
    return ",".join(row[c] for c in RAW_FEEDBACK_COLUMNS)


def test_bad_rows_are_quarantined_with_one_reason_each(lake: Lake) -> None:
    folder = lake.partition("raw", END_WEEK, "feedback")
    folder.mkdir(parents=True)
    lines = [",".join(RAW_FEEDBACK_COLUMNS), csv_line(GOOD), csv_line(ORGANIC)]
    lines += [csv_line(row) for _, row in BAD_ROWS]
    lines.append(csv_line(GOOD) + ",extra")  # malformed: one field too many
    lines.append(csv_line({**GOOD, "item_id": "8", "event": "play", "watch_seconds": "0"}))  # valid
    (folder / "app-log.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")

    result = ingest_feedback(lake, END_WEEK, KEY)
    expected = [reason for reason, _ in BAD_ROWS] + ["malformed_line: expected 9 fields, got 10"]
    assert result["read"] == len(lines) - 1
    assert result["used"] == 3 and result["quarantined"] == len(expected)
    assert result["read"] == result["used"] + result["quarantined"]
    assert result["by_reason"] == dict(sorted(pd.Series(expected).value_counts().items()))
    assert set(result["by_reason"]) - {"malformed_line: expected 9 fields, got 10"} == set(REASONS)

    quarantine = pd.read_parquet(quarantine_file(lake, END_WEEK))
    assert quarantine[SOURCE_LINE].tolist() == list(range(4, 4 + len(expected)))
    assert quarantine[QUARANTINE_REASON].tolist() == expected
    assert quarantine[RAW_LINE].iloc[-1] == csv_line(GOOD) + ",extra"
    assert quarantine["item_id"].iloc[1] == "7.5"  # the row as read, text

    out = pd.read_parquet(feedback_file(lake, END_WEEK))
    assert out["user"].tolist() == pseudonymize(["u000001"] * 3, KEY)
    assert out["item_id"].tolist() == [7, 7, 8]
    assert out["from_recommendation"].tolist() == [True, False, True]
    assert out["ts"].iloc[1] == pd.Timestamp("2026-11-17T00:00:00Z")
    assert out["position"].isna().tolist() == [False, True, False]
    assert out["watch_seconds"].tolist()[1:] == [1200.0, 0.0]


def test_unknown_column_is_refused_and_nothing_is_written(lake: Lake) -> None:
    folder = lake.partition("raw", END_WEEK, "feedback")
    folder.mkdir(parents=True)
    header = ",".join((*RAW_FEEDBACK_COLUMNS, "email"))
    (folder / "f.csv").write_text(f"{header}\n{csv_line(GOOD)},a@example.com\n", encoding="utf-8")
    with pytest.raises(ValidationFailed, match=r"\['email'\] are not covered by the anonymization policy"):
        ingest_feedback(lake, END_WEEK, KEY)
    assert not feedback_file(lake, END_WEEK).exists() and not quarantine_file(lake, END_WEEK).exists()
    assert not list(lake.root.glob(".feedback-*"))  # no work folder left behind
    assert "email" not in FEEDBACK_POLICY


def test_raw_week_column_is_refused_too(lake: Lake) -> None:
    folder = lake.partition("raw", END_WEEK, "feedback")
    folder.mkdir(parents=True)
    header = ",".join((*RAW_FEEDBACK_COLUMNS, "week"))
    (folder / "f.csv").write_text(f"{header}\n{csv_line(GOOD)},2026-11-15\n", encoding="utf-8")
    with pytest.raises(ValidationFailed, match=r"\['week'\] are not covered"):
        ingest_feedback(lake, END_WEEK, KEY)


def test_missing_column_is_a_clear_error(lake: Lake) -> None:
    folder = lake.partition("raw", END_WEEK, "feedback")
    folder.mkdir(parents=True)
    columns = [c for c in RAW_FEEDBACK_COLUMNS if c != "arm"]
    (folder / "f.csv").write_text(",".join(columns) + "\n", encoding="utf-8")
    with pytest.raises(ValidationFailed, match=r"lack column\(s\) arm"):
        ingest_feedback(lake, END_WEEK, KEY)


def test_erased_users_are_dropped_and_counted(lake: Lake, env: dict[str, str]) -> None:
    from recsys.core.settings import Settings
    from recsys.privacy import erase_user

    erase_user(Settings.from_env(), "u000002", KEY, requested_by="test", reason="asked")
    folder = lake.partition("raw", END_WEEK, "feedback")
    folder.mkdir(parents=True)
    lines = [",".join(RAW_FEEDBACK_COLUMNS), csv_line(GOOD), csv_line({**GOOD, "user_id": "u000002"})]
    (folder / "f.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = ingest_feedback(lake, END_WEEK, KEY)
    assert (result["read"], result["used"], result["quarantined"], result["erased"]) == (2, 1, 0, 1)
    assert pd.read_parquet(result["path"])["user"].tolist() == pseudonymize(["u000001"], KEY)


# ---- missing inputs ------------------------------------------------------------------------------------


def test_missing_exposures(lake: Lake) -> None:
    with pytest.raises(
        DataNotFoundError,
        match=r"no exposures for week 2026-11-15: run the recommend stage with an experiment configured first",
    ):
        simulate_week(lake, END_WEEK, KEY)


def test_missing_generator_record(lake: Lake, world: World) -> None:
    write_exposures(lake, world)
    generator_file(lake).unlink()
    with pytest.raises(DataNotFoundError, match="only be simulated on a lake written by `recsys generate`"):
        simulate_week(lake, END_WEEK, KEY)


def test_missing_raw_feedback(lake: Lake) -> None:
    with pytest.raises(DataNotFoundError, match=r"no raw feedback for week 2026-11-15: looked in .*feedback"):
        ingest_feedback(lake, END_WEEK, KEY)


def test_week_must_be_a_week_start(lake: Lake) -> None:
    with pytest.raises(Exception, match="not a week start"):
        ingest_feedback(lake, END_WEEK + timedelta(days=1), KEY)


def test_readers_without_files_give_empty_frames(tmp_path: Path) -> None:
    assert read_feedback(Lake(tmp_path), [END_WEEK]).empty
    assert list(read_exposures(Lake(tmp_path), [END_WEEK]).columns)[:2] == ["user", "arm"]


# ---- the command ----------------------------------------------------------------------------------------


def test_cli_simulate_feedback(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    lake = Lake(Path(env["RECSYS_LAKE_DIR"]))
    generate(lake, CONFIG, END_WEEK)
    day = (END_WEEK + timedelta(days=10)).isoformat()  # a Wednesday: its last complete week is END_WEEK

    assert main(["simulate-feedback", "--date", day]) == 2
    assert "no exposures for week 2026-11-15" in capsys.readouterr().err

    write_exposures(lake, world_of_lake(lake))
    assert main(["simulate-feedback", "--date", day, "--seed", "3"]) == 0
    out = capsys.readouterr().out.strip()
    assert len(out.splitlines()) == 1 and out.startswith("simulated feedback of week 2026-11-15: ")
    raw = raw_file(lake, "feedback", END_WEEK)
    assert str(raw) in out
    expected = simulate_week(lake, END_WEEK, KEY, FeedbackConfig(seed=3))
    assert f"{expected['rows']} events" in out
    assert pq.read_metadata(exposures_file(lake, END_WEEK)).num_rows == expected["exposures"]

    with pytest.raises(SystemExit):
        main(["simulate-feedback", "--date", day, "--seed", "-1"])
