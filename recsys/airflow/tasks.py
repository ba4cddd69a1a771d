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
    """Turn a :class:`~recsys.core.errors.RecsysError` (bad input, bad config, a rejected gate) into
    ``AirflowFailException``: retrying cannot help, so the task fails at once with the message."""
    # deferred: Airflow is heavy; loaded only inside a task
    from airflow.sdk.exceptions import AirflowFailException

    try:
        yield
    except RecsysError as exc:
        raise AirflowFailException(f"{what}: {exc}") from exc


def run_stage_task(stage: str, **kwargs: Any) -> dict:
    """Run one stage of the weekly pipeline (:func:`recsys.pipeline.runner.run_stage`) inside an Airflow
    task: the week and the run's plan come from the task's Dag run (data interval, run type, conf), the
    key (for the stages that pseudonymize) from the environment or the Airflow Variable; returns the
    stage's result as XCom (:meth:`~recsys.pipeline.results.StageResult.to_xcom`)."""
    from airflow.sdk import get_current_context  # deferred: Airflow is heavy; loaded only inside a task

    # deferred: the stages load pandas, scipy and the models, which the tasks that use only fail_fast
    # and the key lookup (model_rollback, user_erasure) do not need
    from recsys.pipeline.context import KEYED_STAGES, StageContext
    from recsys.pipeline.runner import run_stage

    context = get_current_context()
    dag_run = context["dag_run"]
    with fail_fast(f"{stage} of {dag_run.run_id}"):
        plan = plan_run(dag_run.run_type, context.get("data_interval_end"), dag_run.conf)
        log.info("%s for %s", stage, plan.describe())
        key = pseudonym_key_from_airflow() if stage in KEYED_STAGES else None
        return run_stage(stage, StageContext.create(plan.week, key=key, plan=plan), **kwargs).to_xcom()
