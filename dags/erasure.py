"""user_erasure: remove one user's rows from every layer of the lake (the "right to be forgotten").

Triggered by hand with the user's raw id, e.g.
``airflow dags trigger user_erasure -c '{"user_id": "u000123", "reason": "ticket 4711"}'``.
One task calls ``recsys.privacy.erase_user`` with the pseudonym key (environment, else the Airflow
Variable ``recsys_pseudonym_secret``, as the weekly DAG uses); it logs
and returns (XCom) only the pseudonym and the rows removed per layer, never the raw id. The erasure
is idempotent, so a retry is safe. ``max_active_runs=1``: erasures run one after another.

Models already trained keep the user's factor row until the next weekly retrain (see
``recsys/privacy/erasure.py``). Airflow itself keeps the run's conf (with the raw id) in its
metadata database: clear old runs with ``airflow db clean`` under the retention policy.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from airflow.sdk import Param, dag, get_current_context, task

from recsys.airflow.defaults import default_args
from recsys.core.intervals import DAG_START

log = logging.getLogger("recsys.dags.user_erasure")


@dag(
    dag_id="user_erasure",
    description="Erase one user's rows from every lake layer (right to be forgotten); recorded by pseudonym",
    schedule=None,
    start_date=DAG_START,  # any week of a history can run: the lake decides (recsys.core.intervals)
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=["recsys", "privacy"],
    params={
        "user_id": Param(
            type="string",
            minLength=1,
            title="user id",
            description="raw id of the user to erase (as in raw/users); never logged",
        ),
        "reason": Param(
            "",
            type="string",
            title="reason",
            description="why (e.g. a ticket number); recorded with personal data redacted",
        ),
    },
    doc_md=__doc__,
)
def user_erasure() -> None:
    @task(execution_timeout=timedelta(hours=1))
    def erase() -> dict:
        from recsys.airflow.tasks import fail_fast, pseudonym_key_from_airflow
        from recsys.core.settings import Settings, pseudonym_key
        from recsys.privacy import erase_user

        context = get_current_context()
        params = context["params"]
        run_id = context["dag_run"].run_id
        # bad config or unreadable file: a retry cannot help. The message names files, not the user.
        with fail_fast("user_erasure"):
            record = erase_user(
                Settings.from_env(),
                str(params["user_id"]),
                pseudonym_key_from_airflow() or pseudonym_key(),
                requested_by=f"airflow:user_erasure/{run_id}",
                reason=str(params.get("reason") or ""),
            )
        # erase_user has logged the pseudonym and the total; the raw id is never logged
        for layer, kinds in record.removed.items():
            log.info("removed from %s: %s", layer, kinds)
        return record.to_dict()

    erase()


user_erasure()
