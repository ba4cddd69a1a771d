"""The team stack's topology, started natively on loopback (there is no Docker engine here), with the
weekly DAG run through Airflow against it: Airflow's metadata in PostgreSQL, an MLflow tracking
server on PostgreSQL with its artifacts in S3, and a Spark standalone cluster of two workers that
runs every heavy stage (a cluster master moves the data work to Spark): Spark's history server shows
each stage's jobs on both executors, and the data stages' outputs equal a local pandas run's. The
cluster reads the lake from a shared filesystem (``file://``): Spark here has no S3A connector and no
Maven repository is reachable to add one (the team image adds it); the lake in S3, read in place, is
tested in tests/io/test_lakefs.py. Also: the compose file and this suite agree on services and
settings."""

from __future__ import annotations

from pathlib import Path

import boto3
import pandas as pd
import pytest
import yaml

from tests.conftest import PROJECT_ROOT, airflow_subprocess_env, untuned_config
from tests.e2e.test_e2e_airflow import BIN, dags_test, run
from tests.services import (
    NATIVE_SERVICES,
    mlflow_server,
    postgres,
    s3_env,
    s3_server,
    spark_standalone,
)

BUCKET = "recsys"
MODEL = "stack_als"
UNTIL = "2026-11-23"
COMPOSE = PROJECT_ROOT / "docker-compose.yaml"


def stack_env(  # noqa: PLR0913 - one value per service of the stack
    root: Path,
    pg,  # noqa: ANN001
    s3_url: str,
    mlflow_url: str,
    spark_url: str,
    lake_uri: str = f"s3://{BUCKET}/lake",
) -> dict[str, str]:
    """The environment the DAG tasks get on the stack (compose sets the same names)."""
    return airflow_subprocess_env(
        root,
        **s3_env(s3_url),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=pg.url("airflow"),
        MLFLOW_TRACKING_URI=mlflow_url,
        RECSYS_LAKE_URI=lake_uri,
        RECSYS_SPARK_MASTER=spark_url,
        RECSYS_MODEL_NAME=MODEL,
        SPARK_LOCAL_IP="127.0.0.1",
    )


# ---- compose and the native suite agree ----------------------------------------------------------


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def test_compose_and_native_suite_have_the_same_services():
    services = set(compose()["services"])
    optional = {"redis", "airflow-worker"}  # the CeleryExecutor variant, behind a compose profile
    assert services - optional == set(NATIVE_SERVICES), services ^ set(NATIVE_SERVICES)


def test_compose_sets_the_settings_the_native_suite_sets():
    spec = compose()
    airflow_env = set(spec["x-airflow-common"]["environment"])
    native = set(stack_env(Path("/x"), _FakePg(), "http://s3", "http://mlflow", "spark://m:7077"))
    needed = {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "MLFLOW_TRACKING_URI",
        "RECSYS_LAKE_URI",
        "RECSYS_SPARK_MASTER",
        "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "RECSYS_MODEL_NAME",
    }
    assert needed <= native
    assert needed <= airflow_env, needed - airflow_env
    mlflow_env = set(spec["services"]["mlflow"]["environment"])
    assert {"MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= mlflow_env


def test_compose_comes_up_in_order_with_health_checks_and_no_committed_secret():
    spec = compose()
    services = spec["services"]
    for name in ("postgres", "minio", "mlflow", "spark-master", "airflow-apiserver"):
        assert "healthcheck" in services[name], f"{name} has no health check"
    for name, service in services.items():
        for dep, cond in (service.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            assert cond["condition"] in ("service_healthy", "service_completed_successfully"), (name, dep)
    text = COMPOSE.read_text(encoding="utf-8")
    example = (PROJECT_ROOT / ".env.example").read_text(encoding="utf-8")
    variables = {
        line.split("=", 1)[0] for line in example.splitlines() if "=" in line and not line.startswith("#")
    }
    import re

    # ${NAME} is a compose setting; $${NAME} is left to the container's shell
    used = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)(?::?-[^}]*)?\}", text))
    assert used <= variables, f"compose uses settings missing from .env.example: {sorted(used - variables)}"
    for line in example.splitlines():  # secrets are placeholders, never real values
        if (
            any(word in line for word in ("PASSWORD", "SECRET", "KEY"))
            and "=" in line
            and not line.startswith("#")
        ):
            assert line.split("=", 1)[1] in ("", "change-me", "change-me-too"), line


class _FakePg:
    def url(self, database: str) -> str:
        return f"postgresql+psycopg2://u:p@h:5432/{database}"


# ---- the stack, natively ----------------------------------------------------------------------------


#: the stages whose data work a cluster master moves to Spark, each its own Spark application
HEAVY_STAGES = ("anonymize", "prepare", "train", "evaluate", "recommend", "privacy_scan")


@pytest.mark.slow
@pytest.mark.integration
def test_weekly_dag_on_the_native_stack(tmp_path):
    lake = tmp_path / "lake"
    with (
        postgres(tmp_path / "pg") as pg,
        s3_server(tmp_path, (BUCKET,)) as s3_url,
        mlflow_server(
            tmp_path, pg.url("mlflow"), f"s3://{BUCKET}/mlflow", {**_base_env(), **s3_env(s3_url)}
        ) as mlflow_url,
        spark_standalone(tmp_path, workers=2, worker_memory="1g") as spark,
    ):
        # what is tested is where everything runs and lands, not the tuning grid (test_history_airflow
        # tunes through Airflow): the training submits two ALS fits to the master instead of four
        env = {
            **stack_env(tmp_path, pg, s3_url, mlflow_url, spark.url, lake_uri=lake.as_uri()),
            "RECSYS_CONFIG": untuned_config(tmp_path),
            "SPARK_CONF_DIR": str(spark.conf_dir),
            # the executors' Python workers run this interpreter (the team image's python has the stack)
            "PYSPARK_PYTHON": str(BIN / "python"),
        }
        run([str(BIN / "airflow"), "db", "migrate"], env)
        run(
            [
                str(BIN / "recsys"),
                "generate",
                "--until",
                UNTIL,
                "--weeks",
                "1",  # the run's week alone: no earlier week for the window stage to bring up first
                "--users",
                "300",
                "--items",
                "150",
            ],
            env,
        )
        dates = run([str(BIN / "recsys"), "run-dates", "--until", UNTIL, "--weeks", "1"], env).stdout.split()
        for day in dates:
            dags_test(env, "weekly_retrain", day)

        # Airflow's metadata is in PostgreSQL
        states = pg.query("airflow", "select state from dag_run where dag_id = 'weekly_retrain'")
        assert [s for (s,) in states] == ["success"]
        # the registry is the MLflow server's, on PostgreSQL; the champion is the newest passed version
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=mlflow_url, registry_uri=mlflow_url)
        versions = client.search_model_versions(f"name = '{MODEL}'")
        assert len(versions) == 1
        assert pg.query("mlflow", "select count(*) from model_versions")[0][0] == 1
        champion = client.get_model_version_by_alias(MODEL, "champion")
        assert champion.tags["validation_status"] == "passed"
        # the artifacts are objects in S3, reached through boto3
        s3 = boto3.client("s3", **{k: v for k, v in _boto_kwargs(s3_url).items()})
        keys = {
            o["Key"]
            for p in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
            for o in p.get("Contents", [])
        }
        assert any(k.startswith("mlflow/") and k.endswith("MLmodel") for k in keys), (
            "no model artifacts in S3"
        )
        assert not (tmp_path / "home" / "mlflow" / "artifacts").exists(), "artifacts were written locally"
        for layer in (
            "raw",
            "staged",
            "validated",
            "quarantine",
            "anonymized",
            "prepared",
            "recommendations",
        ):
            assert any((lake / layer).rglob("*.parquet")) or any((lake / layer).rglob("*.csv")), layer

        # every heavy stage ran as Spark jobs on the cluster, with tasks on both executors (the history
        # server's REST API; `airflow dags test` runs the tasks in one process, so one application holds
        # every stage's jobs, each stage's in its own job group)
        week = _week_of(lake)
        ran: dict[str, set[str]] = {}
        for app in _wait_for_apps(spark, week):
            for group, executors in spark.executors_by_job_group(app["id"]).items():
                ran.setdefault(group, set()).update(executors)
        for stage in HEAVY_STAGES:
            executors = ran.get(f"recsys-retrain {stage} {week}", set()) - {"driver"}
            assert len(executors) >= 2, (
                f"{stage}: tasks ran on executors {sorted(executors)}; groups {sorted(ran)}"
            )

        # the cluster's data stages wrote what a local pandas run writes from the same raw files
        local = _local_data_stages(tmp_path, lake, week)
        for part in ("anonymized/events", "anonymized/users", "prepared"):
            for name in ("data.parquet",) if part != "prepared" else ("train.parquet", "holdout.parquet"):
                mine = _sorted(pd.read_parquet(lake / part / f"week={week}" / name))
                theirs = _sorted(pd.read_parquet(local / part / f"week={week}" / name))
                pd.testing.assert_frame_equal(mine, theirs, check_exact=False, rtol=1e-9)


def _week_of(lake: Path) -> str:
    weeks = sorted(
        p.name.removeprefix("week=") for p in (lake / "prepared").iterdir() if p.name.startswith("week=")
    )
    assert len(weeks) == 1, weeks
    return weeks[0]


def _wait_for_apps(spark, week: str) -> list[dict]:  # noqa: ANN001
    """The week's completed applications, once the history server has read their event logs."""
    import time

    deadline = time.monotonic() + 120
    while True:
        apps = [a for a in spark.applications() if a["name"].endswith(f" {week}")]
        if apps or time.monotonic() > deadline:
            return apps
        time.sleep(2)


def _local_data_stages(root: Path, lake: Path, week: str) -> Path:
    """The same raw files through the data stages on this machine (local Spark, pandas engine)."""
    import shutil

    local = root / "local-lake"
    shutil.copytree(lake / "raw", local / "raw")
    env = airflow_subprocess_env(
        root / "local",
        RECSYS_LAKE_DIR=str(local),
        MLFLOW_TRACKING_URI=f"sqlite:///{root / 'local-mlflow.db'}",
        RECSYS_MLFLOW_ARTIFACT_ROOT=str(root / "local-artifacts"),
        RECSYS_CONFIG=untuned_config(root),
    )
    script = (
        "from datetime import date\n"
        "from recsys.core.settings import Settings\n"
        "from recsys.pipeline.context import StageContext\n"
        "from recsys.pipeline.runner import run_stage\n"
        f"ctx = StageContext.create(date.fromisoformat('{week}'), Settings.from_env())\n"
        "for stage in ('window', 'ingest', 'validate', 'anonymize', 'prepare'):\n"
        "    run_stage(stage, ctx)\n"
    )
    # one process, one start-up for the five stages; a file, not `python -c` (pyspark's Spark Connect
    # check exits a `-c` process when great_expectations is imported)
    path = root / "local_data_stages.py"
    path.write_text(script, encoding="utf-8")
    run([str(BIN / "python"), str(path)], env)
    return local


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(list(frame.columns), kind="stable").reset_index(drop=True)


def _base_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RECSYS", "MLFLOW"))}


def _boto_kwargs(url: str) -> dict[str, str]:
    env = s3_env(url)
    return {
        "endpoint_url": env["AWS_ENDPOINT_URL"],
        "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
        "region_name": env["AWS_DEFAULT_REGION"],
    }
