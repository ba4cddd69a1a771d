"""The one place MLflow is configured (tracking + registry URIs, the experiment)."""

from __future__ import annotations

import logging
import os
import ssl
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from recsys.core.errors import ConfigError, ServiceUnavailable, TrackingStoreMissing
from recsys.core.settings import Settings
from recsys.io.faults import explain, sqlite_store
from recsys.io.lakefs import LakeLocation
from recsys.io.storage import Lake, fetch

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

#: bounds on MLflow's own HTTP client (its defaults, 7 retries with backoff factor 2 and a 120 s
#: timeout, keep a call to a server that is down retrying for about four minutes); set in the
#: environment to override
HTTP_CLIENT_BOUNDS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}
#: seconds the preflight waits for a tracking server's ``/health``
HEALTH_TIMEOUT = 10.0
#: HTTP statuses from a proxy in front of a tracking server that is down
GATEWAY_DOWN = frozenset({502, 503, 504})
#: the stage result a week's registration leaves in the lake (``recsys.pipeline.results.RegisterResult``)
REGISTER_STAGE = "register"


def preflight(settings: Settings) -> None:
    """Refuse, in one line and within seconds, a tracking store the run cannot use: an http(s) server
    that does not answer, or a ``sqlite:///`` file that is missing while the lake already has
    registered weeks (a mistyped URI would otherwise start an empty registry beside the real one)."""
    uri = settings.mlflow_tracking_uri
    if uri.startswith(("http://", "https://")):
        check_server(uri)
    elif (store := sqlite_store(settings)) is not None and not store.exists():
        check_no_registered_weeks(store, Lake.from_settings(settings))


def bound_http_client() -> None:
    """Bound MLflow's own HTTP retries (:data:`HTTP_CLIENT_BOUNDS`) unless the environment sets them."""
    for name, value in HTTP_CLIENT_BOUNDS.items():
        os.environ.setdefault(name, value)


def check_server(uri: str, timeout: float = HEALTH_TIMEOUT) -> None:
    """One GET of ``<uri>/health``; any answer but a gateway's "down" (502-504) counts as up."""
    url = f"{uri.rstrip('/')}/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout):  # noqa: S310 - the configured http(s) URI
            return
    except urllib.error.HTTPError as exc:
        if exc.code not in GATEWAY_DOWN:
            return  # it answered (an auth proxy's 401, a server without /health's 404): MLflow takes over
        reason = f"HTTP {exc.code} from {url}"
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ssl.SSLError):
            return  # it answered the TLS handshake; MLflow's client has its own certificate settings
        reason = str(exc.reason)
    except (TimeoutError, OSError) as exc:
        reason = str(exc) or type(exc).__name__
    raise ServiceUnavailable(
        f"MLflow tracking server {uri} is not reachable ({reason}): start it, or fix MLFLOW_TRACKING_URI, "
        "and re-run"
    )


def check_no_registered_weeks(store: Path, lake: Lake) -> None:
    weeks = [w for w in lake.weeks("runs") if lake.stage_result_file(w, REGISTER_STAGE).exists()]
    if weeks:
        raise TrackingStoreMissing(
            f"tracking store {store} does not exist but the lake {lake.root} has registered weeks "
            f"({len(weeks)}: {weeks[0].isoformat()} .. {weeks[-1].isoformat()}); fix MLFLOW_TRACKING_URI "
            "or restore the store"
        )


def configure(settings: Settings, experiment: str | None = None) -> MlflowClient:
    """Point MLflow at the configured store and make sure the experiment exists (and is the active one)."""
    preflight(settings)  # before mlflow's import: a store that cannot be used is refused in a second
    # deferred: mlflow is heavy (seconds to import); DAG parsing and the CLI's start-up stay free of it
    import mlflow
    from mlflow import MlflowClient

    uri = settings.mlflow_tracking_uri
    if (store := sqlite_store(settings)) is not None:
        store.parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    bound_http_client()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    name = experiment or settings.mlflow_experiment
    try:
        found = mlflow.get_experiment_by_name(name)
    except Exception as exc:  # noqa: BLE001 - any store problem becomes one clear line
        fault = explain(exc, settings)
        if fault is not None:
            raise fault from None
        first = (str(exc).strip().splitlines() or [""])[0]
        raise ConfigError(f"cannot reach MLflow at {uri}: {exc.__class__.__name__}: {first}") from None
    try:
        if found is None:
            root = settings.mlflow_artifact_root
            if root:
                location = root if "://" in root else Path(root).resolve().as_uri()
                mlflow.create_experiment(name, artifact_location=f"{location}/{name}")
            else:  # a tracking server stores (or proxies) the artifacts where it is configured to
                mlflow.create_experiment(name)
        mlflow.set_experiment(name)
    except Exception as exc:
        fault = explain(exc, settings)  # a read-only or full store: one line naming it
        if fault is not None:
            raise fault from None
        raise
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


CONTENT_SUFFIX = "_content"
"""The content stage logs its runs in the experiment ``<mlflow_experiment>_content``."""


def metric_key(name: str) -> str:
    """MLflow metric names cannot hold '@': ``ndcg@10`` is logged as ``ndcg_at_10``."""
    return name.replace("@", "_at_")


def log_lake_artifact(path: LakeLocation, artifact_path: str) -> None:
    """Log one file of the lake to the active MLflow run (fetched first when the lake is an object
    store: MLflow's client uploads local files)."""
    import mlflow  # deferred: mlflow takes seconds to import

    with tempfile.TemporaryDirectory(prefix="recsys-artifact-") as tmp:
        local = fetch(path, Path(tmp) / path.name)
        mlflow.log_artifact(str(local), artifact_path=artifact_path)


def log_lake_artifacts(folder: LakeLocation, artifact_path: str) -> None:
    """Log a folder of the lake to the active MLflow run (see :func:`log_lake_artifact`)."""
    import mlflow  # deferred: mlflow takes seconds to import

    with tempfile.TemporaryDirectory(prefix="recsys-artifacts-") as tmp:
        local = fetch(folder, Path(tmp) / folder.name)
        mlflow.log_artifacts(str(local), artifact_path=artifact_path)
