"""model_rollback: move the `champion` alias back (manually triggered).

Params: `version` (empty = the current champion's predecessor, recorded when it was promoted) and
`reason`. Who triggered it and why are recorded as tags on both versions. Repeating a rollback to
the version that already is champion changes nothing.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, dag, get_current_context, task

from recsys.airflow.defaults import default_args
from recsys.core.intervals import DAG_START


@dag(
    dag_id="model_rollback",
    description="Move the champion alias back to a named or the previous model version",
    schedule=None,
    start_date=DAG_START,  # any week of a history can run: the lake decides (recsys.core.intervals)
    catchup=False,
    max_active_runs=1,
    default_args=default_args(retry_delay=timedelta(minutes=1), exponential_backoff=False),
    params={
        "version": Param("", type="string", description="version to restore; empty = the previous champion"),
        "reason": Param("", type="string", description="why (recorded on the model versions)"),
    },
    tags=["recsys", "registry"],
    doc_md=__doc__,
)
def model_rollback() -> None:
    @task(execution_timeout=timedelta(minutes=10))
    def rollback() -> dict:
        from recsys.airflow.tasks import fail_fast
        from recsys.core.settings import Settings
        from recsys.io.tracking import configure
        from recsys.promotion.registry import rollback as rollback_champion

        context = get_current_context()
        params = context["params"]
        run = context["dag_run"]
        by = getattr(run, "triggering_user_name", None) or f"airflow run {run.run_id}"
        settings = Settings.from_env()
        with fail_fast("model_rollback"):
            return rollback_champion(
                configure(settings),
                settings.model_name,
                params.get("version") or None,
                reason=params.get("reason") or "",
                by=str(by),
            )

    rollback()


model_rollback()
