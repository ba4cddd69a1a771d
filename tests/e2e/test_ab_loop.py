"""The A/B loop end to end, on simulated users: serve two arms, simulate feedback, read out, act.

A synthetic world (``recsys generate``) stands in for the product. Week A trains a deliberately weak
champion (rank-4 ALS served alone, three iterations; its gate only asks it to beat popularity); week B trains the normal hybrid, which
passes its gate and, in promotion mode ``ab``, becomes the challenger. Week B's lists are served in
the next week (the readout week R): the recommend stage splits users between champion, challenger
and a popularity holdout and logs the exposures; the simulator turns what each user was shown into
clicks and plays (from the same latent tastes that generated their history); the feedback goes
through ingest, validation and pseudonymization; the readout ships the challenger, and champion
moves. Then a copy of the champion is tested against it: inconclusive, nothing moves, and over
repeated seeds the readout does not ship a copy more often than its alpha allows.

Real parts: Spark (training), the MLflow registry and tracking store, the weekly pipeline's stages,
and the ab_readout Dag through ``airflow dags test``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from recsys.core.aliases import CHALLENGER, CHAMPION
from recsys.core.settings import Settings
from recsys.data.synthetic import GeneratorConfig, build_world, generate
from recsys.experiments.ab_config import ExperimentConfig
from recsys.experiments.abtest import readout
from recsys.experiments.feedback_log import simulate_week
from recsys.experiments.simulation import FeedbackConfig, simulate_feedback
from recsys.io.storage import Lake
from recsys.io.tracking import configure
from recsys.pipeline.config import PipelineConfig
from recsys.pipeline.context import StageContext
from recsys.pipeline.runner import run_all, run_stage
from recsys.promotion.registry import TAG_STATUS, champion_version, serving_challenger
from tests.conftest import PROJECT_ROOT, TEST_KEY, airflow_subprocess_env, install_airflow_db

pytestmark = [pytest.mark.slow]

BIN = Path(sys.executable).parent
GENERATOR = GeneratorConfig(n_users=1500, n_items=250, weeks=4, seed=21)
READOUT_WEEK = date(2026, 11, 15)  # the last generated week: week B's lists are served in it
WEEK_B = READOUT_WEEK - timedelta(weeks=1)
WEEK_A = READOUT_WEEK - timedelta(weeks=2)
EXPERIMENT = {
    "experiment_id": "picks-2026-11",
    "salt": "s1",
    "arms": {"champion": 0.45, "challenger": 0.45, "holdout": 0.1},
    "min_users_per_arm": 200,
}


def config(**overrides) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {"promotion": "ab", "experiment": EXPERIMENT, "tuning": {"enabled": False}, **overrides}
    )


WEAK = config(
    served_model="als",
    als={"rank": 4, "max_iter": 3},  # NDCG@10 ~0.39 here, the hybrid ~0.49
    gate={"baseline_margin": 0.0},  # it only has to beat popularity: it is the champion to beat
)
NORMAL = config()


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    root = tmp_path_factory.mktemp("abloop")
    env = {
        "RECSYS_HOME": str(root / "home"),
        "RECSYS_LAKE_DIR": str(root / "home" / "lake"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "RECSYS_MLFLOW_ARTIFACT_ROOT": str(root / "artifacts"),
        "RECSYS_SPARK_MASTER": "local[2]",
        "RECSYS_PSEUDONYM_KEY": TEST_KEY,
        "RECSYS_MODEL_NAME": "abloop",
        "RECSYS_MLFLOW_EXPERIMENT": "abloop",
    }
    mp = pytest.MonkeyPatch()
    for key, value in env.items():
        mp.setenv(key, value)
    mp.delenv("RECSYS_CONFIG", raising=False)
    settings = Settings.from_env()
    lake = Lake(settings.lake_dir)
    generate(lake, GENERATOR, READOUT_WEEK)
    champion_run = run_all(StageContext.create(WEEK_A, settings, config=WEAK))
    challenger_run = run_all(StageContext.create(WEEK_B, settings, config=NORMAL))
    yield {
        "root": root,
        "env": env,
        "settings": settings,
        "lake": lake,
        "a": champion_run,
        "b": challenger_run,
    }
    mp.undo()


def test_first_model_is_champion_and_the_better_candidate_the_challenger(loop):
    a, b = loop["a"], loop["b"]
    assert a["gate"].passed and a["register"].aliases == [CHAMPION]
    assert b["gate"].passed, b["gate"].reasons
    assert b["register"].promotion == "ab" and b["register"].aliases == [CHALLENGER]
    client = configure(loop["settings"])
    assert str(champion_version(client, "abloop").version) == a["register"].version
    # week A's lists: no challenger yet, both arms on the champion
    arms_a = a["recommend"].experiment["arms"]
    assert (
        arms_a["champion"]["model_version"] == arms_a["challenger"]["model_version"] == a["register"].version
    )


def test_recommend_splits_users_by_arm_and_logs_exposures(loop):
    lake, b = loop["lake"], loop["b"]
    rec = b["recommend"]
    assert rec.experiment["serving_week"] == READOUT_WEEK.isoformat()
    recs = pd.read_parquet(rec.path)
    exposures = pd.read_parquet(lake.data_file("anonymized", "exposures", READOUT_WEEK))
    experiment = ExperimentConfig(**EXPERIMENT)
    from recsys.experiments.ab_config import assign

    arms = assign(sorted(recs["user"].unique()), experiment)
    # every user's list comes from the arm the salted hash gives, with that arm's model
    assert (recs["arm"].to_numpy() == arms.reindex(recs["user"]).to_numpy()).all()
    versions = recs.groupby("arm")["model_version"].unique().to_dict()
    assert list(versions["champion"]) == [loop["a"]["register"].version]
    assert list(versions["challenger"]) == [b["register"].version]
    assert list(versions["holdout"]) == ["popularity"]
    holdout = recs[recs["arm"] == "holdout"]
    assert (holdout["source"] == "popularity").all() and (holdout["reason"] == "popular with everyone").all()
    # the holdout is shown the same popular list, nothing personal on its page
    rows = pd.read_parquet(rec.rows_path)
    held = rows[rows["arm"] == "holdout"]
    assert set(held["row_id"]) <= {"top_picks", "trending"}, set(held["row_id"])
    assert rows.loc[rows["arm"] == "challenger", "row_id"].str.startswith("because:").any()
    # the exposures are exactly the lists shown, position = rank
    assert len(exposures) == len(recs)
    assert set(exposures.columns) >= {
        "user",
        "arm",
        "experiment_id",
        "item_id",
        "position",
        "week",
        "model_version",
    }
    assert (exposures["experiment_id"] == EXPERIMENT["experiment_id"]).all()
    assert (exposures["week"] == READOUT_WEEK.isoformat()).all()
    merged = exposures.merge(recs, left_on=["user", "item_id"], right_on=["user", "item_id"])
    assert (merged["position"] == merged["rank"]).all() and len(merged) == len(recs)
    # shares within tolerance of the configured split
    share = arms.value_counts(normalize=True)
    assert abs(share["champion"] - 0.45) < 0.05 and abs(share["holdout"] - 0.1) < 0.04


def test_better_challenger_ships_through_the_readout_and_moves_champion(loop, capsys):
    settings, lake = loop["settings"], loop["lake"]
    simulated = simulate_week(lake, READOUT_WEEK, TEST_KEY.encode())
    assert simulated["clicks"] > 0 and simulated["plays"] > 0
    ctx = StageContext.create(READOUT_WEEK, settings, config=NORMAL)
    ingested = run_stage("feedback", ctx)
    assert ingested.status == "ingested" and ingested.read == ingested.used + ingested.quarantined
    result = run_stage("ab_readout", ctx)
    assert result.status == "read out", result
    assert result.weeks == [READOUT_WEEK.isoformat()]  # week A's exposures served no challenger
    assert result.decision == "ship", result.readout["reasons"]
    primary = result.readout["comparisons"]["plays_per_user"]
    assert primary["relative_lift"] > 0 and primary["p_adjusted"] < 0.05
    assert result.readout["srm"]["flagged"] is False
    assert result.action.startswith("promoted")
    client = configure(settings)
    challenger_version = loop["b"]["register"].version
    assert str(champion_version(client, "abloop").version) == challenger_version
    assert serving_challenger(client, "abloop") is None
    assert client.get_model_version("abloop", challenger_version).tags["ab_test"].startswith("shipped")
    # the readout is an MLflow run with its plot and page, and a page in the lake
    run = mlflow.get_run(result.mlflow_run_id)
    assert run.data.tags["decision"] == "ship" and run.data.metrics["lift.plays_per_user"] > 0
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "ab")}
    assert {"ab/readout.json", "ab/readout.png", "ab/readout.html"} <= artifacts
    assert "SHIP" in Path(result.report).read_text()
    # `recsys ab-status` prints the recorded readout
    from recsys.cli.main import main

    assert main(["ab-status", "--date", (READOUT_WEEK + timedelta(days=8)).isoformat()]) == 0
    printed = capsys.readouterr().out
    assert "picks-2026-11: SHIP" in printed and "plays_per_user" in printed and "action: promoted" in printed
    # nothing raw in what the readout wrote
    feedback = pd.read_parquet(lake.data_file("anonymized", "feedback", READOUT_WEEK))
    raw_ids = set(pd.read_csv(lake.raw_files("feedback", READOUT_WEEK)[0], dtype=str)["user_id"])
    assert not raw_ids & set(feedback["user"].astype(str))
    assert not any(raw in Path(result.report).read_text() for raw in list(raw_ids)[:50])


def test_a_copy_of_the_champion_is_inconclusive_and_moves_nothing(loop, migrated_airflow_db):
    """A/A through the real stages and the ab_readout Dag: the challenger is a second registered
    version of the champion's own model."""
    settings, lake, env = loop["settings"], loop["lake"], loop["env"]
    client = configure(settings)
    champ = champion_version(client, "abloop")
    copy = mlflow.register_model(champ.source, "abloop", tags={"week": WEEK_B.isoformat()})
    client.set_model_version_tag("abloop", copy.version, TAG_STATUS, "passed")
    client.set_model_version_tag("abloop", copy.version, "gate_reasons", json.dumps(["PASS: copy"]))
    client.set_registered_model_alias("abloop", CHALLENGER, copy.version)
    aa = config(experiment={**EXPERIMENT, "experiment_id": "aa-2026-11", "salt": "aa"})
    run_stage("recommend", StageContext.create(WEEK_B, settings, config=aa))
    simulate_week(lake, READOUT_WEEK, TEST_KEY.encode())
    config_file = loop["root"] / "aa.json"
    config_file.write_text(aa.model_dump_json())
    airflow_env = airflow_subprocess_env(loop["root"] / "af", **env, RECSYS_CONFIG=str(config_file))
    install_airflow_db(migrated_airflow_db, airflow_env)
    done = subprocess.run(
        [str(BIN / "airflow"), "dags", "test", "ab_readout", (READOUT_WEEK + timedelta(weeks=1)).isoformat()],
        env=airflow_env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = done.stdout + done.stderr
    finished = [line for line in output.splitlines() if "DagRun Finished" in line]
    assert finished and "state=success" in finished[-1], "\n".join(output.splitlines()[-80:])
    result = json.loads(lake.stage_result_file(READOUT_WEEK, "ab_readout").read_text())
    assert result["experiment_id"] == "aa-2026-11" and result["challenger_version"] == str(copy.version)
    assert result["decision"] == "inconclusive", result["readout"]["reasons"]
    assert result["action"].startswith("continue")
    assert str(champion_version(client, "abloop").version) == str(champ.version)
    assert str(serving_challenger(client, "abloop").version) == str(copy.version)


def test_no_false_ship_of_a_copy_over_repeated_seeds(loop):
    """20 A/A experiments (new salt, new behaviour seed each) on the shown lists of one model: the
    readout ships at most as often as alpha = 0.05 allows (expected 1 in 20; 3 or more would be a
    broken test)."""
    lake = loop["lake"]
    world = build_world(GENERATOR, READOUT_WEEK)
    shown = pd.read_parquet(lake.data_file("anonymized", "exposures", READOUT_WEEK))
    from recsys.experiments.ab_config import assign
    from recsys.privacy.anonymize import pseudonymize

    raw_of = dict(zip(pseudonymize(world.user_ids.tolist(), TEST_KEY.encode()), world.user_ids, strict=True))
    decisions = []
    for seed in range(20):
        experiment = ExperimentConfig(
            experiment_id="aa-seeds", salt=f"seed-{seed}", arms={"champion": 0.5, "challenger": 0.5}
        )
        exposures = shown.assign(
            arm=assign(shown["user"].tolist(), experiment).reindex(shown["user"]).to_numpy(),
            experiment_id="aa-seeds",
        )
        events = simulate_feedback(
            world, exposures, TEST_KEY.encode(), FeedbackConfig(seed=seed), READOUT_WEEK
        )
        pseudonym = {raw: p for p, raw in raw_of.items()}
        feedback = pd.DataFrame(
            {
                "user": events["user_id"].map(pseudonym),
                "item_id": events["item_id"].astype("int64"),
                "event": events["event"],
                "watch_seconds": events["watch_seconds"].astype("float"),
                "from_recommendation": events["from_recommendation"],
                "week": READOUT_WEEK.isoformat(),
            }
        )
        active = feedback[["user", "week"]].drop_duplicates()
        decisions.append(readout(exposures, feedback, active, experiment).decision)
    assert decisions.count("ship") <= 2, decisions
    assert decisions.count("keep") <= 2, decisions
