"""drift_monitor: daily drift check of the newest data against the champion's; early retrains.

1. ``refresh``: ingest, validate and anonymize the week in progress, as far as its raw events have
   landed (the scheduled ``weekly_retrain`` run processes the whole week when it ends).
2. ``check``: compare the newest anonymized interactions with the same span of the week the
   champion was trained on (popularity and activity PSI, Jensen-Shannon distance, rating KS test,
   unseen items and users, the champion's NDCG on the new data). One MLflow run per check, in
   experiment ``<experiment>_drift``; its ``drift/history.html`` charts every check so far.
3. ``drifted``: go on only when the check asks for an early retrain: drift above a threshold, no
   early retrain asked for within the cooldown, and no ``weekly_retrain`` run queued or running.
4. ``trigger_retrain``: trigger ``weekly_retrain`` on the week in progress, with the reasons and the
   measured figures in the run's conf (the triggered run carries them as MLflow tags).

Thresholds, the cooldown and whether drift may trigger at all: ``drift`` in the pipeline config.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import CronTriggerTimetable, dag, get_current_context, task

from recsys.airflow.defaults import default_args
from recsys.airflow.notify import RecsysNotifier
from recsys.core.intervals import DAG_START

RETRAIN_DAG = "weekly_retrain"


def _check_time() -> pendulum.DateTime:
    """The moment the check stands for: its data interval end (a manual run: now)."""
    context = get_current_context()
    return context.get("data_interval_end") or pendulum.now("UTC")


@dag(
    dag_id="drift_monitor",
    description="Daily drift check of the newest interactions against the champion's; triggers early retrains",
    schedule=CronTriggerTimetable("@daily", timezone="UTC", interval=timedelta(days=1)),
    start_date=DAG_START,  # any week of a history can run: the lake decides (recsys.core.intervals)
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    on_failure_callback=RecsysNotifier("run_failed"),
    tags=["recsys", "drift", "mlflow"],
    doc_md=__doc__,
)
def drift_monitor() -> None:
    @task(execution_timeout=timedelta(minutes=30))
    def refresh() -> dict:
        from recsys.airflow.tasks import fail_fast, pseudonym_key_from_airflow
        from recsys.core.settings import Settings
        from recsys.pipeline.config import PipelineConfig
        from recsys.pipeline.monitor import refresh as refresh_week

        with fail_fast("drift_monitor refresh"):
            settings = Settings.from_env()
            config = PipelineConfig.load(settings.config_file)
            if not config.drift.refresh:
                return {"status": "skipped", "reason": "drift.refresh is false in the pipeline config"}
            return refresh_week(_check_time(), settings, config, key=pseudonym_key_from_airflow())

    @task(execution_timeout=timedelta(minutes=30))
    def check() -> dict:
        from recsys.airflow.tasks import fail_fast
        from recsys.pipeline.monitor import check as check_drift

        ti = get_current_context()["ti"]
        running = ti.get_dr_count(dag_id=RETRAIN_DAG, states=["queued", "running"]) > 0
        with fail_fast("drift_monitor check"):
            return check_drift(_check_time(), retrain_running=running).to_dict()

    @task.short_circuit
    def drifted(result: dict) -> bool:
        """True only when the check asks for an early retrain; otherwise the trigger is skipped."""
        return bool(result.get("trigger"))

    checked = check()
    trigger_retrain = TriggerDagRunOperator(
        task_id="trigger_retrain",
        trigger_dag_id=RETRAIN_DAG,
        trigger_run_id="drift__{{ data_interval_end | ts_nodash }}",
        conf=checked["conf"],
        skip_when_already_exists=True,  # a retried monitor run does not retrain twice
        wait_for_completion=False,
        on_success_callback=RecsysNotifier("drift_retrain"),  # only when it started a run
    )
    refresh() >> checked
    drifted(checked) >> trigger_retrain


drift_monitor()
