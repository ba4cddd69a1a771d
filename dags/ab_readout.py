"""ab_readout: read out the champion-vs-challenger A/B test each week, and act on it.

Runs weekly (and on demand), after the week it reads has ended:

1. `ingest_feedback`: the week's raw feedback log (`raw/feedback/week=...`: clicks, plays, watch
   time, from the app or `recsys simulate-feedback`) is validated, bad rows quarantined with a
   reason, and pseudonymized into `anonymized/feedback`;
2. `readout`: per arm, click-through rate, plays and watch time per exposed user, the share of views
   from recommendations and churn; challenger vs champion with confidence intervals and
   Holm-corrected p-values, a sample-ratio check, and a decision (ship / keep / inconclusive),
   logged to the MLflow experiment `<experiment>_ab` with its plot and page. With promotion mode
   `ab`, "ship" moves `champion` to the challenger and "keep" retires the challenger.

The experiment (`experiment` in the pipeline config: id, salt, arm shares, alpha, minimum users) is
the one the `recommend` task of weekly_retrain serves. Param `week` reads out another week.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import CronTriggerTimetable, Param, dag, task

from recsys.airflow.defaults import default_args
from recsys.core.intervals import DAG_START


@dag(
    dag_id="ab_readout",
    description="Weekly A/B readout of champion vs challenger: feedback in, metrics, decision, promotion",
    schedule=CronTriggerTimetable("@weekly", timezone="UTC", interval=timedelta(weeks=1)),
    start_date=DAG_START,  # any week of a history can run: the lake decides (recsys.core.intervals)
    catchup=False,
    max_active_runs=1,
    default_args=default_args(exponential_backoff=False),
    params={
        "week": Param(
            None,
            type=["null", "string"],
            description="Week to read out, any day of it (YYYY-MM-DD). Empty: the last complete week "
            "before the run's data interval end.",
        ),
    },
    tags=["recsys", "ab-test", "mlflow"],
    doc_md=__doc__,
)
def ab_readout() -> None:
    @task(execution_timeout=timedelta(minutes=30))
    def ingest_feedback() -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from recsys.airflow.tasks import run_stage_task

        result = run_stage_task("feedback")
        if result.get("status") == "skipped":
            raise AirflowSkipException(result["reason"])
        return result

    # earlier weeks' feedback may still make a readout when this week has none to ingest
    @task(execution_timeout=timedelta(minutes=30), trigger_rule="none_failed")
    def readout() -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from recsys.airflow.tasks import run_stage_task

        result = run_stage_task("ab_readout")
        if result.get("status") == "skipped":
            raise AirflowSkipException(result["reason"])
        return result

    ingest_feedback() >> readout()


ab_readout()
