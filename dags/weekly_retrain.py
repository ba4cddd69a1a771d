"""weekly_retrain: training window, validate, anonymize, content model, train (Spark ALS + hybrid), evaluate,
gate, register, recommend.

This file only wires tasks: each task derives the week from its data interval, runs one stage of
``recsys.pipeline`` (``recsys.pipeline.runner.run_stage``, through ``recsys.airflow.tasks``) and
returns the stage's small result as a dict (XCom). Nothing heavy is imported at parse time.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import CronTriggerTimetable, Param, dag, get_current_context, task

from recsys.airflow.defaults import default_args
from recsys.airflow.notify import RecsysNotifier
from recsys.core.intervals import DAG_START


def _run(stage: str, **kwargs: object) -> dict:
    from recsys.airflow.tasks import run_stage_task

    return run_stage_task(stage, **kwargs)


def _task_log_dirs(dag_id: str, run_id: str) -> list:
    """Where this run's task logs are (local log folder); empty when logs go elsewhere."""
    from pathlib import Path

    try:
        from airflow.configuration import conf

        base = Path(conf.get("logging", "base_log_folder"))
    except Exception:  # noqa: BLE001 - no local log folder configured: nothing to scan there
        return []
    folder = base / f"dag_id={dag_id}" / f"run_id={run_id}"
    return [folder] if folder.is_dir() else []


@dag(
    dag_id="weekly_retrain",
    description="Weekly retrain of the Spark ALS recommender, gated promotion through the MLflow registry",
    schedule=CronTriggerTimetable("@weekly", timezone="UTC", interval=timedelta(weeks=1)),
    start_date=DAG_START,  # any week of a history can run: the lake decides (recsys.core.intervals)
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    on_failure_callback=RecsysNotifier("run_failed"),
    tags=["recsys", "retrain", "mlflow", "spark"],
    doc_md=__doc__,
    params={
        "week": Param(
            None,
            type=["null", "string"],
            description="Week to (re)train, any day of it (YYYY-MM-DD). Empty: the last complete week "
            "before the run's data interval end.",
        ),
        "through": Param(
            None,
            type=["null", "string"],
            description="Early retrain on the week in progress: use the data landed up to this UTC "
            "date-time (ISO 8601). Set by drift_monitor.",
        ),
        "trigger": Param(None, type=["null", "string"], description="Why this run: drift, manual, ..."),
        "reasons": Param([], type="array", description="The reasons given by whoever triggered the run."),
    },
)
def weekly_retrain() -> None:
    @task(execution_timeout=timedelta(hours=2))
    def window() -> dict:
        """Fail at once when the week has no raw data; bring the window's earlier weeks to anonymized."""
        return _run("window")

    @task(execution_timeout=timedelta(minutes=30))
    def ingest() -> dict:
        return _run("ingest")

    @task(execution_timeout=timedelta(minutes=30))
    def validate() -> dict:
        return _run("validate")

    @task(execution_timeout=timedelta(minutes=30))
    def anonymize() -> dict:
        return _run("anonymize")

    @task(execution_timeout=timedelta(minutes=30))
    def prepare() -> dict:
        return _run("prepare")

    @task(execution_timeout=timedelta(minutes=30))
    def content() -> dict:
        """Content model of the week's catalogue (genres, year, title words), its own MLflow run."""
        return _run("content")

    @task(execution_timeout=timedelta(hours=2))
    def train() -> dict:
        return _run("train")

    @task(execution_timeout=timedelta(minutes=30))
    def evaluate() -> dict:
        return _run("evaluate")

    @task(execution_timeout=timedelta(minutes=10))
    def gate() -> dict:
        return _run("gate")

    # a rejected candidate is registered (validation_status=rejected), not a failure: notify here
    @task(execution_timeout=timedelta(minutes=10), on_success_callback=RecsysNotifier("gate_rejected"))
    def register() -> dict:
        return _run("register")

    @task.branch(execution_timeout=timedelta(minutes=5))
    def review_needed() -> str:
        """Promotion mode `manual` and a passed gate: wait for a person; otherwise go straight on."""
        registered = get_current_context()["ti"].xcom_pull(task_ids="register") or {}
        return "review" if registered.get("review") == "pending" else "no_review"

    review = ApprovalOperator(
        task_id="review",
        subject="Promote {{ ti.xcom_pull(task_ids='register')['name'] }} version "
        "{{ ti.xcom_pull(task_ids='register')['version'] }} to champion?",
        body=REVIEW_BODY,
        response_timeout=timedelta(days=3),
        retries=0,  # waiting for a person is not retried; a timeout leaves the champion as it is
    )

    @task(execution_timeout=timedelta(minutes=10))
    def promote() -> dict:
        answer = get_current_context()["ti"].xcom_pull(task_ids="review") or {}
        return _run("promote", approved_by=str(answer.get("responded_by_user") or "reviewer"))

    no_review = EmptyOperator(task_id="no_review")

    @task(execution_timeout=timedelta(minutes=30), trigger_rule="none_failed")
    def recommend() -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        result = _run("recommend")
        if result.get("status") == "skipped":
            raise AirflowSkipException(result["reason"])
        return result

    @task(execution_timeout=timedelta(minutes=30), trigger_rule="none_failed")
    def privacy_scan() -> dict:
        """Fail the run if anything it published holds personal data from its input."""
        context = get_current_context()
        return _run("privacy_scan", airflow_log_dirs=_task_log_dirs(context["dag"].dag_id, context["run_id"]))

    registered = (
        window()
        >> ingest()
        >> validate()
        >> anonymize()
        >> prepare()
        >> content()
        >> train()
        >> evaluate()
        >> gate()
        >> register()
    )
    recommended = recommend()
    registered >> review_needed() >> [review, no_review]
    review >> promote() >> recommended
    no_review >> recommended
    recommended >> privacy_scan()


REVIEW_BODY = """\
### Week {{ ti.xcom_pull(task_ids='register')['week'] }}: candidate version {{ ti.xcom_pull(task_ids='register')['version'] }}

Gate: **{{ 'PASSED' if ti.xcom_pull(task_ids='gate')['passed'] else 'REJECTED' }}**

{% for line in ti.xcom_pull(task_ids='gate')['reasons'] %}
- {{ line }}
{% endfor %}

Approve moves the `champion` alias to this version (the current champion stays available for
rollback); Reject leaves the current champion serving. The model report is in the version's
MLflow run (artifact `report/model_report.html`).
"""


weekly_retrain()
