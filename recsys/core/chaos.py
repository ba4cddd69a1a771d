"""Fault injection for the chaos tests (tests/chaos): kill this process at a named point.

``RECSYS_CHAOS_KILL_AT=<point>[,<point>...]`` makes :func:`checkpoint` send SIGKILL to its own process
when the run reaches one of those points, the way an OOM killer, a lost node or ``kill -9`` would:
no ``finally`` block, no ``atexit`` hook, no flush runs. Unset (always, outside the chaos tests), a
checkpoint costs one dictionary lookup. Points are named where the platform must stay whole:

* ``write:<file name>``: a file was renamed into place (:func:`recsys.io.storage.write_parquet`);
* ``commit:<partition>``: a partition was committed (``anonymized/events/week=2026-11-08``);
* ``record:<stage>``: before a stage's result is recorded (the stage's commit point);
* ``train:running``: the training run is open in MLflow, before the fit.
"""

from __future__ import annotations

import os
import signal

VARIABLE = "RECSYS_CHAOS_KILL_AT"


def checkpoint(point: str) -> None:
    """SIGKILL this process when ``point`` is one of :data:`VARIABLE`'s points."""
    points = os.environ.get(VARIABLE)
    if points and point in points.split(","):
        os.kill(os.getpid(), signal.SIGKILL)
