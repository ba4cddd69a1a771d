"""The team stack's topology, started natively on loopback (there is no Docker engine here), with the
weekly DAG run through Airflow against it: Airflow's metadata in PostgreSQL, an MLflow tracking
server on PostgreSQL with its artifacts in S3, the lake in S3 through boto3, training submitted to a
Spark standalone master. Also: the compose file and this suite agree on services and settings."""

from __future__ import annotations

from pathlib import Path

import boto3
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


def stack_env(root: Path, pg, s3_url: str, mlflow_url: str, spark_url: str) -> dict[str, str]:  # noqa: ANN001
    """The environment the DAG tasks get on the stack (compose sets the same names)."""
    return airflow_subprocess_env(
        root,
        **s3_env(s3_url),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=pg.url("airflow"),
        MLFLOW_TRACKING_URI=mlflow_url,
        RECSYS_LAKE_URI=f"s3://{BUCKET}/lake",
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


@pytest.mark.slow
@pytest.mark.integration
def test_weekly_dag_on_the_native_stack(tmp_path):
    with (
        postgres(tmp_path / "pg") as pg,
        s3_server(tmp_path, (BUCKET,)) as s3_url,
        mlflow_server(
            tmp_path, pg.url("mlflow"), f"s3://{BUCKET}/mlflow", {**_base_env(), **s3_env(s3_url)}
        ) as mlflow_url,
        spark_standalone(tmp_path) as spark,
    ):
        # what is tested is where everything runs and lands, not the tuning grid (test_history_airflow
        # tunes through Airflow): the training submits two ALS fits to the master instead of four
        env = {
            **stack_env(tmp_path, pg, s3_url, mlflow_url, spark.url),
            "RECSYS_CONFIG": untuned_config(tmp_path),
        }
        run([str(BIN / "airflow"), "db", "migrate"], env)
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
        # artifacts and the lake are objects in S3, reached through boto3
        s3 = boto3.client("s3", **{k: v for k, v in _boto_kwargs(s3_url).items()})
        keys = {
            o["Key"]
            for p in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
            for o in p.get("Contents", [])
        }
        for layer in (
            "raw",
            "staged",
            "validated",
            "quarantine",
            "anonymized",
            "prepared",
            "recommendations",
            "runs",
        ):
            assert any(k.startswith(f"lake/{layer}/") for k in keys), f"no lake/{layer} objects in S3"
        assert any(k.startswith("mlflow/") and k.endswith("MLmodel") for k in keys), (
            "no model artifacts in S3"
        )
        assert not (tmp_path / "home" / "mlflow" / "artifacts").exists(), "artifacts were written locally"
        # training was submitted to the Spark master and ran on its worker
        apps = spark.status().get("completedapps", []) + spark.status().get("activeapps", [])
        assert any(app.get("name") == "recsys-retrain" for app in apps), apps


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
