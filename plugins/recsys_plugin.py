"""recsys-retrain's additions to the Airflow UI (Airflow 3 plugin).

* Extra links on task instances (``global_operator_extra_links``):

  - **MLflow run**: tasks whose result (XCom ``return_value``) holds ``run_id`` or
    ``mlflow_run_id`` (``train``, ``register``, ``validate``, ``drift_monitor.check``), and
    ``evaluate`` / ``gate`` through the ``train`` result of the same DAG run;
  - **Model version**: tasks whose result names a model version (``register``, ``promote``,
    ``recommend`` (the champion it used), ``model_rollback.rollback``).

  A link is empty (the button is disabled) when the task has no such result. Links are built from
  the XCom alone (no MLflow call), with ``RECSYS_MLFLOW_PUBLIC_URL`` as the MLflow UI's address.

* The **Model history** page, a FastAPI app mounted at ``/recsys`` (``/recsys/model-history``, its
  data as JSON at ``/recsys/api/model-history``), listed under Browse in the Airflow navigation
  (``external_views``). It needs a logged-in Airflow user and reads MLflow on each request.

Only wiring lives here; the logic is in :mod:`recsys.reporting.mlflow_links` (links),
:mod:`recsys.reporting.model_history` (the page's data) and :mod:`recsys.reporting.ui_pages` (the
page). Nothing heavy is imported at plugin load (every Airflow process loads plugins): MLflow and
Airflow's API-server modules are imported inside the request handlers and link callbacks.
"""

from __future__ import annotations

import html
import logging
import os
from typing import TYPE_CHECKING, Any

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperatorLink
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from recsys.reporting import mlflow_links, model_history, ui_pages

if TYPE_CHECKING:
    from airflow.sdk.types import TaskInstanceKey

log = logging.getLogger(__name__)

URL_PREFIX = "/recsys"
PAGE = "model-history"


# ---- extra links -------------------------------------------------------------------------------
def _settings() -> Any:
    from recsys.core.settings import Settings

    return Settings.from_env()


def _result_reader(ti_key: TaskInstanceKey) -> mlflow_links.ResultReader:
    """Reads the ``return_value`` XCom of a task of ``ti_key``'s DAG run from Airflow's metadata DB
    (extra links are evaluated in the API server, which has the DB; the task SDK's ``XCom`` talks to
    a supervisor there is none of)."""

    def read(task_id: str) -> Any:
        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session

        with create_session() as session:
            row = session.execute(
                XComModel.get_many(
                    key="return_value",
                    run_id=ti_key.run_id,
                    dag_ids=ti_key.dag_id,
                    task_ids=task_id,
                    map_indexes=ti_key.map_index if task_id == ti_key.task_id else None,
                ).with_only_columns(XComModel.value)
            ).first()
        return XComModel.deserialize_value(row) if row is not None else None

    return read


class MlflowRunLink(BaseOperatorLink):
    """The MLflow run a task created or worked on."""

    name = mlflow_links.RUN_LINK_NAME

    def get_link(self, operator: Any, *, ti_key: TaskInstanceKey) -> str:
        try:
            return mlflow_links.task_run_link(
                _settings().mlflow_public_url, ti_key.task_id, _result_reader(ti_key)
            )
        except Exception:  # noqa: BLE001 - a link must never break the Airflow UI
            log.warning("no %r link for %s", self.name, ti_key, exc_info=True)
            return ""


class ModelVersionLink(BaseOperatorLink):
    """The registered model version a task created, promoted or used."""

    name = mlflow_links.MODEL_VERSION_LINK_NAME

    def get_link(self, operator: Any, *, ti_key: TaskInstanceKey) -> str:
        try:
            settings = _settings()
            return mlflow_links.task_model_version_link(
                settings.mlflow_public_url, ti_key.task_id, _result_reader(ti_key), settings.model_name
            )
        except Exception:  # noqa: BLE001 - a link must never break the Airflow UI
            log.warning("no %r link for %s", self.name, ti_key, exc_info=True)
            return ""


# ---- the model-history page --------------------------------------------------------------------
async def _login_problem(request: Request) -> str | None:
    """None when the request carries a valid Airflow login (token cookie or bearer header), else why not."""
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user
    from fastapi import HTTPException

    try:
        await get_user(request, _oauth_token=None, bearer_credentials=await bearer_scheme(request))
    except HTTPException as exc:
        return str(exc.detail)
    return None


def _history() -> model_history.ModelHistory:
    settings = _settings()
    if settings.mlflow_tracking_uri.startswith(("http://", "https://")):
        # an MLflow server that is down must give a clear page within seconds, not after retries
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    return model_history.load_model_history(settings)


def create_app(require_login: bool = True) -> FastAPI:
    """The page's FastAPI app; ``require_login=False`` for tests without an Airflow API server."""
    app = FastAPI(title="recsys model history", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/", include_in_schema=False)
    def index() -> RedirectResponse:
        return RedirectResponse(PAGE)

    @app.get(f"/{PAGE}", response_class=HTMLResponse)
    async def model_history(request: Request) -> HTMLResponse:
        if require_login and (problem := await _login_problem(request)):
            return HTMLResponse(
                "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>log in</title></head>"
                f"<body><p>Log in to Airflow first ({html.escape(problem)}): "
                "<a href='../'>Airflow</a>.</p></body></html>",
                status_code=401,
            )
        history = await run_in_threadpool(_history)
        return HTMLResponse(ui_pages.render_model_history(history), headers={"Cache-Control": "no-store"})

    @app.get("/api/model-history")
    async def model_history_json(request: Request) -> JSONResponse:
        if require_login and (problem := await _login_problem(request)):
            return JSONResponse({"detail": problem}, status_code=401)
        history = await run_in_threadpool(_history)
        return JSONResponse(history.to_dict(), headers={"Cache-Control": "no-store"})

    return app


class RecsysPlugin(AirflowPlugin):
    name = "recsys"
    global_operator_extra_links = [MlflowRunLink(), ModelVersionLink()]
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "recsys model history"}]
    # no url_route: the page opens in a tab of its own, because Airflow frames embedded views in a
    # sandbox that blocks links opening MLflow (and MLflow refuses to be framed)
    external_views = [
        {
            "name": "Model history",
            "href": f"{URL_PREFIX.lstrip('/')}/{PAGE}",
            "destination": "nav",
            "category": "browse",
        }
    ]
