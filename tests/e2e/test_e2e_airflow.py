"""End to end through Airflow itself: `airflow dags test weekly_retrain` on two synthetic weeks.

Real Airflow (SQLite metadata DB made by `airflow db migrate`, a copy of the session's), real Spark (local[2]), real MLflow
(SQLite store + local artifacts), real Great Expectations. Asserts the registry state, the
recommendation files and that every raw row is either valid or quarantined.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import PROJECT_ROOT, airflow_subprocess_env, install_airflow_db, untuned_config
from tests.standalone import LANE, run_tracked

BIN = Path(sys.executable).parent
UNTIL = "2026-11-23"  # a Monday: the last complete week is 2026-11-15 .. 2026-11-22


def run(cmd: list[str], env: dict[str, str], timeout: int = 900) -> subprocess.CompletedProcess:
    result = run_tracked(cmd, env=env, timeout=timeout, cwd=PROJECT_ROOT)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-60:])
        pytest.fail(f"{' '.join(cmd)} exited {result.returncode}:\n{tail}")
    return result


def dags_test(env: dict[str, str], dag_id: str, day: str, *extra: str) -> str:
    """`airflow dags test DAG_ID DAY [EXTRA...]`; asserts the run succeeded and returns its output."""
    result = run([str(BIN / "airflow"), "dags", "test", dag_id, day, *extra], env)
    output = result.stdout + result.stderr
    finished = [line for line in output.splitlines() if "DagRun Finished" in line]
    assert finished and "state=success" in finished[-1], "\n".join(output.splitlines()[-80:])
    return output


def build_e2e(root: Path, migrated_airflow_db: Path) -> dict:
    """Two synthetic weeks under ``root``, each through `airflow dags test weekly_retrain`.

    Run in the background beside the shared standalone's modules when they run in the same session
    (tests.standalone.LANE, tests/e2e/conftest.py), else by the fixture."""
    env = airflow_subprocess_env(root, RECSYS_MODEL_NAME="e2e_als", RECSYS_CONFIG=untuned_config(root))
    install_airflow_db(migrated_airflow_db, env)
    run(
        [
            str(BIN / "recsys"),
            "generate",
            "--until",
            UNTIL,
            "--weeks",
            "2",
            "--users",
            "300",
            "--items",
            "150",
        ],
        env,
    )
    dates = run([str(BIN / "recsys"), "run-dates", "--until", UNTIL, "--weeks", "2"], env).stdout.split()
    logs = []
    for day in dates:
        logs.append(dags_test(env, "weekly_retrain", day))
    return {"root": root, "env": env, "dates": dates, "logs": logs, "lake": root / "home" / "lake"}


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory, migrated_airflow_db: Path):
    return LANE.result("e2e", lambda: build_e2e(tmp_path_factory.mktemp("e2e"), migrated_airflow_db))


def raw_rows(path: Path) -> int:
    with path.open(newline="", encoding="utf-8") as handle:
        return sum(1 for _ in csv.reader(handle)) - 1


@pytest.mark.slow
@pytest.mark.integration
def test_registry_has_two_versions_and_champion_on_the_newest_passed(e2e):
    out = run([str(BIN / "recsys"), "registry", "--json"], e2e["env"]).stdout
    versions = json.loads(out)
    assert [v["version"] for v in versions] == ["2", "1"]
    assert versions[1]["status"] == "passed", "the first model (no champion yet) must beat the baseline"
    passed = [v for v in versions if v["status"] == "passed"]
    champions = [v for v in versions if "champion" in v["aliases"]]
    assert len(champions) == 1 and champions[0]["version"] == passed[0]["version"]
    assert {v["week"] for v in versions} == {"2026-11-08", "2026-11-15"}


@pytest.mark.slow
@pytest.mark.integration
def test_every_raw_row_is_valid_or_quarantined(e2e):
    lake = e2e["lake"]
    for week in ("2026-11-08", "2026-11-15"):
        accounting = json.loads((lake / "reports" / f"week={week}" / "accounting.json").read_text())
        events = accounting["events"] if "events" in accounting else accounting["kinds"]["events"]
        raw = sum(raw_rows(p) for p in (lake / "raw" / "events" / f"week={week}").glob("*.csv"))
        assert events["rows_read"] == raw
        assert events["rows_valid"] + events["rows_quarantined"] == raw
        assert events["rows_quarantined"] > 0, "the generator injects bad rows: some must be quarantined"
        valid = pd.read_parquet(lake / "validated" / "events" / f"week={week}" / "data.parquet")
        quarantined = pd.read_parquet(lake / "quarantine" / "events" / f"week={week}" / "data.parquet")
        assert len(valid) == events["rows_valid"] and len(quarantined) == events["rows_quarantined"]
        assert quarantined["_reason"].str.len().gt(0).all()


@pytest.mark.slow
@pytest.mark.integration
def test_recommendations_written_by_the_champion_without_personal_data(e2e):
    lake = e2e["lake"]
    recs = pd.read_parquet(lake / "recommendations" / "week=2026-11-15" / "recommendations.parquet")
    assert set(recs.columns) >= {"user", "rank", "item_id", "score", "model_version"}
    per_user = recs.groupby("user").size()
    assert per_user.max() == 10 and per_user.min() >= 1
    assert not recs.duplicated(["user", "item_id"]).any()
    train = pd.read_parquet(lake / "prepared" / "week=2026-11-15" / "train.parquet")
    assert set(recs["user"]) == set(train["user"])
    seen = set(zip(train["user"], train["item_id"], strict=True))
    assert not any((u, i) in seen for u, i in zip(recs["user"], recs["item_id"], strict=True))
    raw_users = pd.read_csv(lake / "raw" / "users" / "week=2026-11-15" / "users.csv", dtype=str)
    assert not set(recs["user"]) & set(raw_users["user_id"]), "raw user ids leaked into recommendations"


@pytest.mark.slow
@pytest.mark.integration
def test_the_page_rows_carry_ids_titles_and_reasons(e2e):
    """Top picks, Because you watched, Trending now and New this week for every user; each item with
    its reason; the top picks are the recommendations file's lists."""
    lake = e2e["lake"]
    folder = lake / "recommendations" / "week=2026-11-15"
    rows = pd.read_parquet(folder / "rows.parquet")
    recs = pd.read_parquet(folder / "recommendations.parquet")
    items = pd.read_parquet(lake / "anonymized" / "items" / "week=2026-11-15" / "data.parquet")
    titles = dict(zip(items["item_id"], items["title"], strict=True))
    kinds = rows["row_id"].str.split(":").str[0]
    assert set(kinds) == {"top_picks", "because", "trending", "new"}
    assert set(rows["user"]) == set(recs["user"])
    for (row_id, title), _ in rows.groupby(["row_id", "row_title"]):
        expected = {"top_picks": "Top picks for you", "trending": "Trending now", "new": "New this week"}
        kind = row_id.split(":")[0]
        if kind == "because":
            assert title == f"Because you watched {titles[int(row_id.split(':')[1])]}"
        else:
            assert title == expected[kind]
    picks = rows[rows["row_id"] == "top_picks"]
    pd.testing.assert_frame_equal(
        picks[["user", "rank", "item_id"]].reset_index(drop=True),
        recs.sort_values(["user", "rank"])[["user", "rank", "item_id"]].reset_index(drop=True),
    )
    # every top pick names the watched title it comes from (or says it is popular)
    named = recs["reason_item_id"].notna()
    assert named.mean() > 0.9
    for item, reason in zip(recs.loc[named, "reason_item_id"], recs.loc[named, "reason"], strict=True):
        assert reason == f"Because you watched {titles[int(item)]}"
    added = pd.to_datetime(items["added_at"], utc=True)
    new_items = set(items.loc[(added >= "2026-11-15") & (added < "2026-11-22"), "item_id"])
    assert set(rows.loc[kinds == "new", "item_id"]) <= new_items and new_items
    assert set(rows.loc[kinds == "trending", "reason"]) == {"trending"}


@pytest.mark.slow
@pytest.mark.integration
def test_evaluation_compares_als_content_hybrid_and_popularity_per_segment(e2e):
    lake = e2e["lake"]
    ev = json.loads((lake / "runs" / "week=2026-11-15" / "evaluate.json").read_text())
    assert ev["served_model"] == "hybrid"
    assert set(ev["models"]) == {"popularity", "als", "content", "hybrid"}
    for segments in ev["models"].values():
        assert set(segments) == {"all", "cold_users", "warm_users", "new_items"}
        assert segments["all"]["users_evaluated"] == ev["candidate"]["users_evaluated"]
        assert (
            segments["cold_users"]["users_evaluated"] + segments["warm_users"]["users_evaluated"]
            == (segments["all"]["users_evaluated"])
        )
    # the served (and gated) candidate is the hybrid
    assert ev["candidate"]["ndcg@10"] == pytest.approx(ev["models"]["hybrid"]["all"]["ndcg@10"])
    assert {"coverage@10", "diversity@10", "gini@10"} <= set(ev["candidate"])
    trained = json.loads((lake / "runs" / "week=2026-11-15" / "train.json").read_text())
    assert set(trained["hybrid"]) == {"warm", "cold"}
    # the reviewer's report in the train run holds the comparison
    report = next(
        e2e["root"].glob(f"home/mlflow/artifacts/*/{trained['run_id']}/artifacts/report/model_report.html")
    )
    page = report.read_text()
    assert "ALS, content and hybrid per segment" in page and "hybrid (served)" in page
    # and the week's data profile, linked from the same run
    profile = report.parent.parent / "profile" / "week_profile.html"
    text = profile.read_text()
    assert (
        "Weekly data profile" in text and "Most-watched genres" in text and "data:image/png;base64," in text
    )


@pytest.mark.slow
@pytest.mark.integration
def test_privacy_scan_ran_clean_and_no_raw_id_in_task_output(e2e):
    lake = e2e["lake"]
    for week in ("2026-11-08", "2026-11-15"):
        scan = json.loads((lake / "runs" / f"week={week}" / "privacy_scan.json").read_text())
        assert scan["files_scanned"] > 0 and scan["findings"] == [] and scan["clean"] is True
    raw_users = pd.read_csv(lake / "raw" / "users" / "week=2026-11-15" / "users.csv", dtype=str)
    output = "\n".join(e2e["logs"])
    for email in raw_users["email"].dropna().head(50):
        assert email not in output


@pytest.mark.slow
@pytest.mark.integration
def test_summary_reports_the_run(e2e):
    out = run([str(BIN / "recsys"), "summary", "--date", e2e["dates"][-1]], e2e["env"]).stdout
    assert "week 2026-11-15" in out
    assert "quarantined" in out and "gate" in out and "registered" in out


@pytest.mark.slow
@pytest.mark.integration
def test_each_run_held_its_week_and_gave_it_back(e2e):
    """Every task took its week's lease as its Dag run; the last task gave it back."""
    leases = e2e["lake"] / "_leases" / "weekly_retrain"
    assert leases.is_dir()  # the runs took their weeks' leases
    assert not [p.name for p in leases.iterdir() if p.name.startswith("week=")]
    for week in ("2026-11-08", "2026-11-15"):
        committed = json.loads((e2e["lake"] / "prepared" / f"week={week}" / "_commit.json").read_text())
        record = json.loads((e2e["lake"] / "runs" / f"week={week}" / "prepare.json").read_text())
        assert committed["attempt"] == record["attempt"] and committed["stage"] == "prepare"


@pytest.mark.slow
@pytest.mark.integration
def test_rollback_dag_restores_version_one_and_is_idempotent(e2e):
    """Runs last: the manually triggered model_rollback DAG, through Airflow, twice."""
    for _ in range(2):
        result = run(
            [
                str(BIN / "airflow"),
                "dags",
                "test",
                "model_rollback",
                "-c",
                json.dumps({"version": "1", "reason": "e2e rollback"}),
            ],
            e2e["env"],
        )
        finished = [
            line for line in (result.stdout + result.stderr).splitlines() if "DagRun Finished" in line
        ]
        assert finished and "state=success" in finished[-1]
        versions = json.loads(run([str(BIN / "recsys"), "registry", "--json"], e2e["env"]).stdout)
        assert [v["version"] for v in versions if "champion" in v["aliases"]] == ["1"]
        assert len(versions) == 2
