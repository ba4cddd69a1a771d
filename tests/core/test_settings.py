import json

import pytest

from recsys.core.errors import ConfigError
from recsys.core.settings import Settings, pseudonym_key
from recsys.pipeline.config import PipelineConfig


def test_defaults_come_from_recsys_home(tmp_path):
    s = Settings.from_env({"RECSYS_HOME": str(tmp_path)})
    assert s.lake_dir == tmp_path / "lake"
    assert s.mlflow_tracking_uri == f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    assert s.spark_master == "local[*]"
    assert s.model_name == "recsys_als"


def test_environment_overrides(tmp_path):
    s = Settings.from_env(
        {
            "RECSYS_HOME": str(tmp_path),
            "MLFLOW_TRACKING_URI": "http://mlflow:5000",
            "RECSYS_SPARK_MASTER": "spark://m:7077",
            "RECSYS_LAKE_DIR": str(tmp_path / "x"),
        }
    )
    assert (s.mlflow_tracking_uri, s.spark_master, s.lake_dir) == (
        "http://mlflow:5000",
        "spark://m:7077",
        tmp_path / "x",
    )


def test_bad_model_name_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="RECSYS_MODEL_NAME"):
        Settings.from_env({"RECSYS_HOME": str(tmp_path), "RECSYS_MODEL_NAME": "bad name; drop"})


def test_pseudonym_key_only_from_environment():
    with pytest.raises(ConfigError, match="RECSYS_PSEUDONYM_KEY is not set"):
        pseudonym_key({})
    with pytest.raises(ConfigError, match="too short"):
        pseudonym_key({"RECSYS_PSEUDONYM_KEY": "short"})
    assert pseudonym_key({"RECSYS_PSEUDONYM_KEY": "x" * 20}) == b"x" * 20


def test_pipeline_config_file(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"als": {"rank": 8}, "prepare": {"window_weeks": 4}}))
    config = PipelineConfig.load(path)
    assert config.als.rank == 8 and config.prepare.window_weeks == 4 and config.top_k == 10
    assert PipelineConfig.load(None).als.rank == 16


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"als": {"rank": 0}}), "als.rank"),
        (json.dumps({"colour": "blue"}), "colour"),
        (json.dumps({"top_k": 5}), "must be measured at top_k=5"),
        (json.dumps({"promotion": "ab"}), "promotion 'ab' needs an `experiment`"),
        (json.dumps({"experiment": {"experiment_id": "e 1", "salt": "s"}}), "experiment.experiment_id"),
        (
            json.dumps({"experiment": {"experiment_id": "e1", "salt": "s", "min_weeks": 3, "max_weeks": 2}}),
            "max_weeks",
        ),
    ],
)
def test_bad_config_files_name_the_problem(tmp_path, content, message):
    path = tmp_path / "c.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        PipelineConfig.load(path)
    with pytest.raises(ConfigError, match="not found"):
        PipelineConfig.load(tmp_path / "missing.json")


@pytest.mark.parametrize("value", ["lots", "2 g", "0g", "-1g", "2gb"])
def test_bad_driver_memory_is_refused(tmp_path, value):
    with pytest.raises(ConfigError, match="RECSYS_SPARK_DRIVER_MEMORY"):
        Settings.from_env({"RECSYS_HOME": str(tmp_path), "RECSYS_SPARK_DRIVER_MEMORY": value})


def test_driver_memory_defaults_to_auto_and_keeps_jvm_sizes(tmp_path):
    from recsys.io.spark import auto_driver_memory, driver_memory

    auto = Settings.from_env({"RECSYS_HOME": str(tmp_path)})
    assert auto.spark_driver_memory == "auto"
    assert driver_memory(auto) in {f"{g}g" for g in range(1, 9)}
    fixed = Settings.from_env({"RECSYS_HOME": str(tmp_path), "RECSYS_SPARK_DRIVER_MEMORY": "3G"})
    assert driver_memory(fixed) == "3g"
    assert [auto_driver_memory(g * 2**30) for g in (2, 8, 24, 64)] == ["1g", "2g", "6g", "8g"]


def test_experiment_config_with_ab_promotion(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(
        json.dumps(
            {
                "promotion": "ab",
                "experiment": {
                    "experiment_id": "recs-2026-12",
                    "salt": "s1",
                    "arms": {"champion": 0.45, "challenger": 0.45, "holdout": 0.1},
                },
            }
        )
    )
    config = PipelineConfig.load(path)
    assert config.promotion == "ab"
    assert config.experiment.arms["holdout"] == 0.1
    assert (config.experiment.min_weeks, config.experiment.max_weeks) == (1, 4)


def test_lake_uri_is_s3_or_a_file_uri(tmp_path):
    home = {"RECSYS_HOME": str(tmp_path)}
    assert Settings.from_env({**home, "RECSYS_LAKE_URI": "s3://bucket/lake/"}).lake_uri == "s3://bucket/lake"
    local = Settings.from_env({**home, "RECSYS_LAKE_URI": (tmp_path / "shared" / "lake").as_uri()})
    assert local.lake_uri is None and local.lake_dir == tmp_path / "shared" / "lake"
    for bad in ("gs://bucket/lake", "s3:///nobucket", "file://relative/lake"):
        with pytest.raises(ConfigError, match="RECSYS_LAKE_URI="):
            Settings.from_env({**home, "RECSYS_LAKE_URI": bad})
