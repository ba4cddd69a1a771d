"""Glue shared by the DAG files: what a task needs from Airflow, in one place.

Imported only inside task callables (never at DAG parse time), so Airflow stays out of the rest of
``recsys``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

#: Airflow Variable (or secrets-backend entry) holding the pseudonymization key when the environment
#: has none. The name contains "secret", so Airflow masks the value in task logs.
PSEUDONYM_VARIABLE = "recsys_pseudonym_secret"


def pseudonym_key_from_airflow() -> bytes | None:
    """The pseudonymization key from the Airflow Variable when ``RECSYS_PSEUDONYM_KEY`` is not set
    (``None``: the environment has it, or neither has; :func:`recsys.settings.pseudonym_key` then
    reads the environment or says what is missing)."""
    if os.environ.get("RECSYS_PSEUDONYM_KEY"):
        return None
    from airflow.sdk import Variable

    value = Variable.get(PSEUDONYM_VARIABLE, default=None)
    return value.encode("utf-8") if value else None


@contextmanager
def fail_fast(what: str) -> Iterator[None]:
    """Turn a :class:`~recsys.errors.RecsysError` (bad input, bad config, a rejected gate) into
    ``AirflowFailException``: retrying cannot help, so the task fails at once with the message."""
    from airflow.sdk.exceptions import AirflowFailException

    from recsys.errors import RecsysError

    try:
        yield
    except RecsysError as exc:
        raise AirflowFailException(f"{what}: {exc}") from exc
