"""Which run works on a week: the pipeline's use of the week lease (:mod:`recsys.io.lease`) and the
reconciling a run does when it finds its week given up by another.

:func:`week_lease` wraps every stage (:func:`recsys.pipeline.runner.run_stage`) and the whole of
``recsys pipeline`` (:func:`recsys.pipeline.runner.run_all`): a process that already holds the week
does not take it twice. The weekly stages share one lease per week (``weekly_retrain``); the A/B
test's stages another (``ab_readout``), since they work on the week the lists were shown in.

When a run takes a week that was free or whose holder died (:attr:`WeekLease.took_over`), nothing
else can be working on it, so whatever is still marked as in progress was left by a dead run:
:func:`reconcile_week` marks its MLflow runs ``FAILED`` (with the reason in the tag
``recsys.failure``) and removes the hidden scratch of the week's partitions (the temporary
directories of :func:`recsys.io.storage.commit_partition` and of atomic file writes).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

from recsys.core.intervals import week_key
from recsys.io.faults import sqlite_store
from recsys.io.lease import DEFAULT_GAP, DEFAULT_TTL, WeekLease, lease_store
from recsys.io.spark import clean_dead_scratch
from recsys.io.storage import remove_tree
from recsys.io.tracking import bound_http_client, preflight
from recsys.pipeline.context import AB_STAGES, StageContext

log = logging.getLogger(__name__)

WEEKLY = "weekly_retrain"
AB = "ab_readout"
#: the MLflow experiments (suffixes of the configured one) whose runs each pipeline starts for a week
EXPERIMENT_SUFFIXES = {WEEKLY: ("", "_validation"), AB: ("_ab",)}
FAILURE_TAG = "recsys.failure"

_held: dict[tuple[str, str, date], WeekLease] = {}
_held_lock = threading.Lock()
_process_holder = (
    f"{Path(sys.argv[0]).name or 'python'} {' '.join(sys.argv[1:2])}".strip()
    + f" (pid {os.getpid()} on {socket.gethostname()}, run {uuid.uuid4().hex[:8]})"
)


def lease_pipeline(stage: str) -> str:
    return AB if stage in AB_STAGES else WEEKLY


def _seconds(name: str, default: float) -> float:
    raw = os.environ.get(name)
    try:
        return float(raw) if raw else default
    except ValueError:
        log.warning("%s=%r is not a number of seconds: using %g", name, raw, default)
        return default


@contextmanager
def week_lease(ctx: StageContext, stage: str) -> Iterator[WeekLease]:
    """Hold the week's lease for the block (taken once per process; see the module doc)."""
    pipeline = lease_pipeline(stage)
    key = (str(ctx.settings.lake_uri or ctx.settings.lake_dir), pipeline, ctx.week)
    with _held_lock:
        mine = _held.get(key)
    if mine is not None:
        yield mine
        return
    lease = WeekLease(
        lease_store(ctx.settings.lake_dir, ctx.settings.lake_uri),
        pipeline,
        ctx.week,
        holder_of(ctx),
        ttl=_seconds("RECSYS_LEASE_TTL_SECONDS", DEFAULT_TTL),
        gap=_seconds("RECSYS_LEASE_GAP_SECONDS", DEFAULT_GAP),
    ).acquire(wait=ctx.lease_wait)
    with _held_lock:
        _held[key] = lease
    try:
        if lease.took_over is not None:
            reconcile_week(ctx, pipeline, lease.took_over)
        yield lease
    finally:
        with _held_lock:
            _held.pop(key, None)
        if ctx.keep_lease:
            lease.pause()  # an Airflow run keeps its week between its tasks
        else:
            lease.release()


def reconcile_week(ctx: StageContext, pipeline: str, why: str) -> None:
    """Mark what a dead run left in progress for the week as failed and remove its scratch."""
    removed = clean_scratch(ctx.lake.root, ctx.week) + clean_dead_scratch(ctx.settings)
    try:
        failed = fail_orphan_runs(ctx, pipeline, why)
    except Exception as exc:  # noqa: BLE001 - the stage still runs; a later run reconciles MLflow
        log.warning("week %s: could not check MLflow for runs left RUNNING: %s", ctx.week, str(exc)[:300])
        failed = []
    if removed or failed:
        log.warning(
            "week %s: cleaned up after a run that did not finish (%s): %d MLflow run(s) marked FAILED%s, "
            "%d scratch path(s) removed",
            ctx.week,
            why,
            len(failed),
            f" ({', '.join(failed)})" if failed else "",
            len(removed),
        )


def clean_scratch(root: Path, week: date) -> list[Path]:
    """Remove the hidden temporaries of ``week``'s partitions: ``.week=...tmp-*`` siblings (partition
    commits), ``.<file>.tmp-*`` files inside the partitions (atomic writes) and the week's working
    folders at the lake's root (``.ingest-<week>-*``, ``.validation-<week>-*``, ``.feedback-<week>-*``)
    that a kill left."""
    name = week_key(week)
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for path in root.glob(f".*-{week.isoformat()}-*"):
        remove_tree(path)
        removed.append(path)
    bases = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))]
    bases += [
        k for b in list(bases) for k in b.iterdir() if k.is_dir() and not k.name.startswith(("week=", "."))
    ]
    for base in bases:
        for path in base.glob(f".{name}.tmp-*"):
            remove_tree(path) if path.is_dir() else path.unlink(missing_ok=True)
            removed.append(path)
        partition = base / name
        if partition.is_dir():
            for path in partition.glob(".*.tmp-*"):
                if path.is_file():
                    path.unlink(missing_ok=True)
                    removed.append(path)
    return removed


def fail_orphan_runs(ctx: StageContext, pipeline: str, why: str) -> list[str]:
    """Mark the week's MLflow runs still RUNNING (and their nested runs) FAILED; their ids."""
    if (store := sqlite_store(ctx.settings)) is not None and not store.exists():
        return []  # no tracking store yet: nothing can be left running in it
    preflight(ctx.settings)  # a server that does not answer: one line within seconds, not minutes of retries
    bound_http_client()
    from mlflow import MlflowClient  # deferred: mlflow takes seconds to import; only a reconcile loads it

    client = MlflowClient(tracking_uri=ctx.settings.mlflow_tracking_uri)
    ids = []
    for suffix in EXPERIMENT_SUFFIXES[pipeline]:
        experiment = client.get_experiment_by_name(ctx.settings.mlflow_experiment + suffix)
        if experiment is not None:
            ids.append(experiment.experiment_id)
    if not ids:
        return []
    running = client.search_runs(
        ids, filter_string=f"tags.week = '{ctx.week.isoformat()}' and attributes.status = 'RUNNING'"
    )
    orphans = [r.info.run_id for r in running]
    for parent in list(orphans):
        children = client.search_runs(
            ids, filter_string=f"tags.`mlflow.parentRunId` = '{parent}' and attributes.status = 'RUNNING'"
        )
        orphans += [c.info.run_id for c in children]
    note = f"left RUNNING by a run that did not finish ({why}); marked FAILED by {holder_of(ctx)}"
    for run_id in orphans:
        client.set_tag(run_id, FAILURE_TAG, note[:5000])
        client.set_terminated(run_id, status="FAILED")
    return orphans


def holder_of(ctx: StageContext) -> str:
    """Who works on the week: the Airflow run that names itself, else this process."""
    return ctx.holder or _process_holder
