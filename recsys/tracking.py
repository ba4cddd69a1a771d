"""The one place MLflow is configured (tracking + registry URIs, the experiment)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from recsys.errors import ConfigError
from recsys.settings import Settings

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)


def configure(settings: Settings) -> MlflowClient:
    """Point MLflow at the configured store and make sure the experiment exists."""
    import mlflow
    from mlflow import MlflowClient

    uri = settings.mlflow_tracking_uri
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        experiment = mlflow.get_experiment_by_name(settings.mlflow_experiment)
    except Exception as exc:  # noqa: BLE001 - any connection problem becomes one clear line
        raise ConfigError(f"cannot reach MLflow at {uri}: {exc.__class__.__name__}: {exc}") from None
    if experiment is None:
        root = settings.mlflow_artifact_root
        location = root if "://" in root else Path(root).resolve().as_uri()
        mlflow.create_experiment(
            settings.mlflow_experiment, artifact_location=f"{location}/{settings.mlflow_experiment}"
        )
    mlflow.set_experiment(settings.mlflow_experiment)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def metric_key(name: str) -> str:
    """MLflow metric names cannot hold '@': ``ndcg@10`` is logged as ``ndcg_at_10``."""
    return name.replace("@", "_at_")
