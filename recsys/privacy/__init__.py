"""Privacy checks and duties: a leak scanner for what a run wrote, and user erasure.

* :func:`scan_for_leaks` / :func:`require_clean` (``recsys.privacy.scan``): after a weekly run,
  look for personal data of the week's raw input in everything from ``anonymized/`` on, in the
  week's MLflow runs, models and artifacts, and in Airflow task logs.
* :func:`erase_user` / :func:`erased_pseudonyms` (``recsys.privacy.erasure``): the "right to be
  forgotten": remove one user's rows from every lake layer and record it (by pseudonym only).
* :func:`check_pseudonym_key` (``recsys.privacy.keyring``): refuse a pseudonym key the lake was
  not built with (the lake records its key's fingerprint).

They are plain functions: the ``user_erasure`` DAG, the CLI and the tests call them.
"""

from __future__ import annotations

from recsys.privacy.erasure import (
    ERASURE_LOG,
    ErasureRecord,
    erase_user,
    erased_pseudonyms,
    read_erasure_log,
)
from recsys.privacy.keyring import check_pseudonym_key
from recsys.privacy.scan import (
    Finding,
    LeakReport,
    PrivacyLeak,
    mask,
    require_clean,
    scan_for_leaks,
)

__all__ = [
    "ERASURE_LOG",
    "ErasureRecord",
    "Finding",
    "LeakReport",
    "PrivacyLeak",
    "check_pseudonym_key",
    "erase_user",
    "erased_pseudonyms",
    "mask",
    "read_erasure_log",
    "require_clean",
    "scan_for_leaks",
]
