"""Glue shared by the DAG files: what a task needs from Airflow, in one place.

Imported only inside task callables (never at DAG parse time), so Airflow stays out of the rest of
``recsys``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from recsys.core.errors import RecsysError
from recsys.core.runplan import plan_run
from recsys.core.settings import Settings
from recsys.io.faults import explain
from recsys.io.lease import lease_store, release_if_held

log = logging.getLogger(__name__)

#: Airflow Variable (or secrets-backend entry) holding the pseudonymization key when the environment
#: has none. The name contains "secret", so Airflow masks the value in task logs.
PSEUDONYM_VARIABLE = "recsys_pseudonym_secret"


def pseudonym_key_from_airflow() -> bytes | None:
    """The pseudonymization key from the Airflow Variable when ``RECSYS_PSEUDONYM_KEY`` is not set
    (``None``: the environment has it, or neither has; :func:`recsys.core.settings.pseudonym_key` then
    reads the environment or says what is missing)."""
    if os.environ.get("RECSYS_PSEUDONYM_KEY"):
        return None
    from airflow.sdk import Variable  # deferred: Airflow is heavy; loaded only inside a task

    value = Variable.get(PSEUDONYM_VARIABLE, default=None)
    return value.encode("utf-8") if value else None


@contextmanager
def fail_fast(what: str) -> Iterator[None]:
    """Classify what a task raised for Airflow's retries, in one line.

    A :class:`~recsys.core.errors.RecsysError` (bad input, bad config, a rejected gate, a read-only
    store, a missing tracking store) becomes ``AirflowFailException``: retrying cannot help, so the
    task fails at once with the message. An infrastructure fault a retry can fix (a full disk, a
    service down; ``retryable``) is raised as that one-line error, which Airflow retries. Anything
    else a stage raised is first passed through :func:`recsys.io.faults.explain`, so a full or
    read-only disk deep in pandas or Spark is reported the same way; the rest is left as it is."""
    # deferred: Airflow is heavy; loaded only inside a task
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    try:
        yield
    except AirflowException:  # Airflow's own (fail, skip, reschedule): already classified
        raise
    except Exception as exc:
        error = exc if isinstance(exc, RecsysError) else explain(exc, _settings_or_none())
        if error is None:
            raise
        if getattr(error, "retryable", False):  # Airflow retries it, with the one line
            raise type(error)(f"{what}: {error}") from exc
        raise AirflowFailException(f"{what}: {error}") from error


def _settings_or_none() -> Settings | None:
    try:
        return Settings.from_env()
    except RecsysError:
        return None


def run_stage_task(stage: str, **kwargs: Any) -> dict:
    """Run one stage of the weekly pipeline (:func:`recsys.pipeline.runner.run_stage`) inside an Airflow
    task: the week and the run's plan come from the task's Dag run (data interval, run type, conf), the
    key (for the stages that pseudonymize) from the environment or the Airflow Variable; returns the
    stage's result as XCom (:meth:`~recsys.pipeline.results.StageResult.to_xcom`)."""
    from airflow.sdk import get_current_context  # deferred: Airflow is heavy; loaded only inside a task

    # deferred: the stages load pandas, scipy and the models, which the tasks that use only fail_fast
    # and the key lookup (model_rollback, user_erasure) do not need
    from recsys.pipeline.context import FINAL_STAGES, KEYED_STAGES, StageContext
    from recsys.pipeline.runner import run_stage

    context = get_current_context()
    dag_run = context["dag_run"]
    with fail_fast(f"{stage} of {dag_run.run_id}"):
        plan = plan_run(dag_run.run_type, context.get("data_interval_end"), dag_run.conf)
        log.info("%s for %s", stage, plan.describe())
        key = pseudonym_key_from_airflow() if stage in KEYED_STAGES else None
        ctx = StageContext.create(
            plan.week,
            key=key,
            plan=plan,
            # the run holds its week from its first task to its last (recsys.pipeline.leases); another
            # run of the week waits up to RECSYS_LEASE_WAIT_SECONDS for it, then the task retries
            holder=lease_holder(dag_run.dag_id, dag_run.run_id),
            keep_lease=stage not in FINAL_STAGES,
            lease_wait=float(os.environ.get("RECSYS_LEASE_WAIT_SECONDS", "1800")),
        )
        return run_stage(stage, ctx, **kwargs).to_xcom()


def lease_holder(dag_id: str, run_id: str) -> str:
    """How an Airflow Dag run names itself as the holder of its week's lease."""
    return f"Airflow run {dag_id}/{run_id}"


def release_week(context: Any) -> None:
    """``on_failure_callback`` of the pipeline tasks: a run whose task failed for good gives its week
    back at once, instead of keeping it for RECSYS_LEASE_GAP_SECONDS."""
    # deferred: the stages load pandas, scipy and the models (see run_stage_task)
    from recsys.pipeline.leases import AB, WEEKLY

    dag_run = context["dag_run"]
    try:
        plan = plan_run(dag_run.run_type, context.get("data_interval_end"), dag_run.conf)
        settings = Settings.from_env()
        store = lease_store(settings.lake_dir, settings.lake_uri)
        holder = lease_holder(dag_run.dag_id, dag_run.run_id)
        for pipeline in (WEEKLY, AB):
            if release_if_held(store, pipeline, plan.week, holder):
                log.info("week %s of %s given back after the failure of %s", plan.week, pipeline, holder)
    except Exception as exc:  # noqa: BLE001 - a callback must not hide the task's own failure
        log.warning("could not give back the week's lease: %s", exc)
