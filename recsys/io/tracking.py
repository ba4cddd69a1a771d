"""The one place MLflow is configured (tracking + registry URIs, the experiment)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from recsys.core.errors import ConfigError
from recsys.core.settings import Settings

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)


def configure(settings: Settings, experiment: str | None = None) -> MlflowClient:
    """Point MLflow at the configured store and make sure the experiment exists (and is the active one)."""
    # deferred: mlflow is heavy (seconds to import); DAG parsing and the CLI's start-up stay free of it
    import mlflow
    from mlflow import MlflowClient

    uri = settings.mlflow_tracking_uri
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    name = experiment or settings.mlflow_experiment
    try:
        found = mlflow.get_experiment_by_name(name)
    except Exception as exc:  # noqa: BLE001 - any connection problem becomes one clear line
        raise ConfigError(f"cannot reach MLflow at {uri}: {exc.__class__.__name__}: {exc}") from None
    if found is None:
        root = settings.mlflow_artifact_root
        if root:
            location = root if "://" in root else Path(root).resolve().as_uri()
            mlflow.create_experiment(name, artifact_location=f"{location}/{name}")
        else:  # a tracking server stores (or proxies) the artifacts where it is configured to
            mlflow.create_experiment(name)
    mlflow.set_experiment(name)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


CONTENT_SUFFIX = "_content"
"""The content stage logs its runs in the experiment ``<mlflow_experiment>_content``."""


def metric_key(name: str) -> str:
    """MLflow metric names cannot hold '@': ``ndcg@10`` is logged as ``ndcg_at_10``."""
    return name.replace("@", "_at_")
