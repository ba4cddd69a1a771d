"""The anonymize stage on Spark writes what the pandas path writes: one generated week run both ways
(``engine`` pandas and spark), erased users and k-anonymity included; the key stays out of the plans."""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from recsys.core.errors import ValidationFailed
from recsys.core.settings import Settings
from recsys.data.ingest import ingest_week
from recsys.data.synthetic import GeneratorConfig, generate
from recsys.io.spark_lake import ORDER, nanos_as_long
from recsys.io.storage import Lake, attempt_scope
from recsys.pipeline.config import PipelineConfig
from recsys.pipeline.context import StageContext
from recsys.pipeline.data_stages import anonymize
from recsys.privacy.anonymize import USER_POLICY, enforce_k_anonymity, pseudonymize
from recsys.privacy.erasure import ERASURE_LOG, key_id
from recsys.privacy.spark_anonymize import (
    anonymize_week_spark,
    apply_policy_spark,
    enforce_k_anonymity_spark,
    pseudonym_table,
)
from recsys.validation.validate import validate_week
from tests.conftest import TEST_KEY

WEEK = date(2026, 11, 8)
KEY = TEST_KEY.encode()


@pytest.fixture(scope="module")
def validated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lake with one generated week ingested and validated, and one user erased."""
    root = tmp_path_factory.mktemp("validated") / "lake"
    lake = Lake(root)
    generate(lake, GeneratorConfig(n_users=150, n_items=60, weeks=1, seed=11), WEEK)
    ingest_week(lake, WEEK)
    validate_week(lake, WEEK)
    someone = pd.read_parquet(lake.data_file("validated", "events", WEEK))["user_id"].iloc[0]
    record = {"pseudonym": pseudonymize([someone], KEY)[0], "key_id": key_id(KEY)}
    (root / ERASURE_LOG).parent.mkdir(parents=True, exist_ok=True)
    (root / ERASURE_LOG).write_text(json.dumps(record) + "\n", encoding="utf-8")
    return root


def run_anonymize(validated: Path, tmp_path: Path, engine: str, k: int = 5):
    root = tmp_path / engine
    shutil.copytree(validated.parent, root)
    settings = Settings.from_env(
        {
            "RECSYS_HOME": str(root / "home"),
            "RECSYS_LAKE_DIR": str(root / "lake"),
            "RECSYS_SPARK_MASTER": "local[2]",
        }
    )
    config = PipelineConfig.model_validate({"engine": {"engine": engine}, "anonymize": {"k": k}})
    with attempt_scope():  # as a run does: the partitions are committed with a marker
        result = anonymize(StageContext.create(WEEK, settings, config, key=KEY))
    return Lake(root / "lake"), result


def test_one_week_both_ways_gives_the_same_files(spark, validated, tmp_path):
    pandas_lake, pandas_result = run_anonymize(validated, tmp_path, "pandas")
    spark_lake, spark_result = run_anonymize(validated, tmp_path, "spark")
    assert spark_result.to_xcom() == pandas_result.to_xcom()
    assert pandas_result.events_of_erased_users_dropped > 0  # the erased user was in the week
    assert pandas_result.k_anonymity["generalized"]  # k-anonymity had work to do
    for kind in ("events", "users", "items"):
        expected = pd.read_parquet(pandas_lake.data_file("anonymized", kind, WEEK))
        got = pd.read_parquet(spark_lake.data_file("anonymized", kind, WEEK))
        assert len(got) > 0, kind
        pd.testing.assert_frame_equal(got, expected, check_exact=True, obj=kind)  # same rows, order, dtypes
        marker = json.loads((spark_lake.partition("anonymized", WEEK, kind) / "_commit.json").read_text())
        assert marker["files"] == ["data.parquet"], kind  # Spark's scratch is gone


def test_the_key_is_not_in_the_spark_plans(spark, validated):
    lake = Lake(validated)
    with nanos_as_long(spark):
        week = anonymize_week_spark(spark, lake, WEEK, KEY, frozenset({"f" * 32}), k=5)
        try:
            plans = [
                frame._jdf.queryExecution().toString() + frame._jdf.queryExecution().executedPlan().toString()
                for frame in (week.events, week.users)
            ]
        finally:
            week.release()
    for plan in plans:
        assert TEST_KEY not in plan and KEY.hex() not in plan
        assert "f" * 32 not in plan  # nor the erased pseudonyms


def users_frame(spark, rows):
    columns = ["user", "age_band", "gender", "occupation", "zip3", "signup_week"]
    frame = pd.DataFrame(rows, columns=columns)
    spark_frame = spark.createDataFrame(frame.assign(**{ORDER: range(len(frame))}))
    return frame, spark_frame


@pytest.mark.parametrize(
    ("rows", "k"),
    [
        (
            [[f"p{i}", "25-34", "F", "writer", "021", "w"] for i in range(5)]
            + [
                ["q1", "18-24", "M", "artist", "945", "w"],
                ["q2", "25-34", "M", "artist", "946", "w"],
                ["q3", "18-24", "M", "lawyer", "947", "w"],
            ],
            3,
        ),
        (
            [[f"p{i}", "25-34", "F", "writer", "021", "w"] for i in range(4)]
            + [["lone", "65+", "M", "x", "999", "w"]],
            4,
        ),
        ([["a", "25-34", "F", "w", "021", "x"], ["b", "65+", None, "z", "999", "y"]], 1),
        (
            [
                ["a", None, "F", "w", "", "x"],
                ["b", "65+", None, "z", "999", "y"],
                ["c", "65+", None, "z", "9", "y"],
            ],
            2,
        ),
    ],
)
def test_k_anonymity_on_spark_releases_what_pandas_releases(spark, rows, k):
    frame, spark_frame = users_frame(spark, rows)
    expected, expected_report = enforce_k_anonymity(frame, k)
    released, report = enforce_k_anonymity_spark(spark_frame, k)
    got = released.toPandas().sort_values(ORDER).drop(columns=ORDER).reset_index(drop=True)
    assert report == expected_report
    pd.testing.assert_frame_equal(got.astype("string"), expected.astype("string"))


def test_an_unknown_column_is_refused_on_spark_too(spark):
    frame = spark.createDataFrame(pd.DataFrame({"user_id": ["u1"], "phone": ["555-0100"], ORDER: [0]}))
    pseudonyms = pseudonym_table(frame.select("user_id"), KEY)
    with pytest.raises(ValidationFailed, match=r"\['phone'\].*not covered"):
        apply_policy_spark(frame, USER_POLICY, pseudonyms, "users")
