"""The data stages of the weekly run: window, ingest, validate, anonymize and prepare.

Each takes the :class:`~recsys.pipeline.context.StageContext`, reads its inputs from the lake, writes
its outputs atomically, records its result in ``runs/week=.../<stage>.json`` and returns it typed
(:mod:`recsys.pipeline.results`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

from recsys.core.errors import DataNotFoundError, RecsysError, ValidationFailed
from recsys.core.runplan import RunPlan
from recsys.data.ingest import ingest_week, lake_history
from recsys.data.prepare import Window, plan_window, read_window, require_window
from recsys.data.prepare import prepare as prepare_pairs
from recsys.data.spark_prepare import prepare_spark
from recsys.io.spark import choose_engine, get_spark
from recsys.io.spark_lake import nanos_as_long, write_single_parquet
from recsys.io.storage import parquet_rows, read_parquet, write_parquet, write_text
from recsys.io.tracking import configure, log_lake_artifact
from recsys.pipeline.context import WINDOW_STAGES, StageContext
from recsys.pipeline.results import (
    AnonymizeResult,
    IngestResult,
    PrepareResult,
    StageResult,
    ValidateResult,
    WindowResult,
)
from recsys.privacy import erased_pseudonyms
from recsys.privacy.anonymize import (
    KAnonymityReport,
    anonymize_events,
    anonymize_users,
    enforce_k_anonymity,
)
from recsys.privacy.keyring import check_pseudonym_key
from recsys.privacy.spark_anonymize import anonymize_week_spark
from recsys.reporting.data_profile import profile_from_lake
from recsys.reporting.spark_profile import profile_from_lake_spark
from recsys.validation.validate import validate_week

log = logging.getLogger(__name__)


def window(ctx: StageContext) -> WindowResult:
    """Make sure the run's week can be worked on, and bring its training window up to ``anonymized``.

    Fails at once, in one line naming the lake's first and last raw weeks, when the week has no raw
    events (a date before the history, after it, or in a gap). Then, by ``prepare.window_fill``:
    ``process`` runs ingest, validate and anonymize on every earlier week of the window that has raw
    events but no anonymized ones, oldest first, each recorded under its own week as a normal run
    records it (a week whose validation fails is left out and named, with the reason); ``warn``
    only says how many weeks training will miss; ``refuse`` fails the run naming them.
    """
    lake, week = ctx.lake, ctx.week
    if not lake.raw_files("events", week) and not lake.data_file("anonymized", "events", week).exists():
        raise DataNotFoundError(
            f"week {week.isoformat()} cannot be run: no raw events in "
            f"{lake.partition('raw', week, 'events')}; {lake_history(lake)}"
        )
    mode = ctx.config.prepare.window_fill
    size = ctx.config.prepare.window_weeks
    before = plan_window(lake, week, size)
    earlier = [w for w in before.unprocessed if w != week]
    # the run's own week is the ingest task's to process: refuse only for the earlier ones
    require_window(replace(before, unprocessed=tuple(earlier)), mode)
    processed: list[str] = []
    failed: dict[str, str] = {}
    stage_functions: dict[str, Callable[[StageContext], StageResult]] = {
        "ingest": ingest,
        "validate": validate,
        "anonymize": anonymize,
    }
    if earlier and mode == "warn":
        log.warning(
            "window of week %s: %d earlier weeks have raw data but are not anonymized; training without "
            "them (prepare.window_fill is 'warn')",
            week,
            len(earlier),
        )
    elif earlier:
        log.info("window of week %s: processing %d earlier weeks (%s)", week, len(earlier), _span(earlier))
        for i, w in enumerate(earlier, 1):
            sub = StageContext(
                week=w,
                settings=ctx.settings,
                config=ctx.config,
                lake=lake,
                key=ctx.key,
                plan=RunPlan(
                    week=w,
                    trigger="window",
                    run_type=ctx.plan.run_type if ctx.plan is not None else "manual",
                    reasons=[f"training window of week {week.isoformat()}"],
                ),
            )
            started = time.perf_counter()
            try:
                for stage in WINDOW_STAGES:
                    stage_functions[stage](sub)
            except RecsysError as exc:  # bad data of that week: left out of the window, with the reason
                failed[w.isoformat()] = f"{stage}: {exc}"
                log.warning("window of week %s: week %s left out: %s: %s", week, w, stage, exc)
            else:
                processed.append(w.isoformat())
                log.info(
                    "window of week %s: [%d/%d] week %s anonymized in %.1fs",
                    week,
                    i,
                    len(earlier),
                    w,
                    time.perf_counter() - started,
                )
    after = plan_window(lake, week, size, failed)
    log.info("%s", after.describe())
    return ctx.record(
        WindowResult(
            week=week.isoformat(), mode=mode, processed=processed, failed=failed, window=after.to_dict()
        )
    )


def _span(weeks: list[date]) -> str:
    return weeks[0].isoformat() if len(weeks) == 1 else f"{weeks[0].isoformat()} .. {weeks[-1].isoformat()}"


def ingest(ctx: StageContext) -> IngestResult:
    return ctx.record(IngestResult(**ingest_week(ctx.lake, ctx.week)))


def validate(ctx: StageContext) -> ValidateResult:
    """Validate the week; the report goes to MLflow (and its path to the task log) pass or fail."""
    try:
        result = validate_week(ctx.lake, ctx.week, ctx.config.validation, now=ctx.now)
    except ValidationFailed as exc:
        log_validation_run(ctx, passed=False, error=str(exc))
        raise
    run_id = log_validation_run(ctx, passed=True)
    return ctx.record(ValidateResult(**result, mlflow_run_id=run_id))


def log_validation_run(ctx: StageContext, passed: bool, error: str | None = None) -> str | None:
    """One MLflow run per validation (experiment ``<experiment>_validation``): report, accounting, counts."""
    import mlflow  # deferred: mlflow takes seconds to import; only stages that log load it

    folder = ctx.lake.partition("reports", ctx.week)
    report, accounting_file = folder / "validation.html", folder / "accounting.json"
    log.info("validation report for week %s: %s", ctx.week, report)
    configure(ctx.settings, experiment=f"{ctx.settings.mlflow_experiment}_validation")
    with mlflow.start_run(run_name=f"validate-{ctx.week.isoformat()}") as run:
        mlflow.set_tags(
            {
                "week": ctx.week.isoformat(),
                "stage": "validate",
                "validation_status": "passed" if passed else "failed",
            }
        )
        if error:
            mlflow.set_tag("error", error[:5000])
        if accounting_file.exists():
            accounting = json.loads(accounting_file.read_text(encoding="utf-8"))
            for kind, acc in accounting.items():
                if isinstance(acc, dict):
                    mlflow.log_metrics(
                        {
                            f"{kind}_{k}": float(acc[k])
                            for k in ("rows_read", "rows_valid", "rows_quarantined")
                            if k in acc
                        }
                    )
            log_lake_artifact(accounting_file, "validation")
        if report.exists():
            log_lake_artifact(report, "validation")
    log.info("validation logged to MLflow run %s (%s)", run.info.run_id, ctx.settings.mlflow_tracking_uri)
    return run.info.run_id


def anonymize(ctx: StageContext) -> AnonymizeResult:
    """Pseudonymize the week's users, drop and coarsen personal columns, enforce k-anonymity of the
    released user attributes: in pandas, or as Spark jobs over the partitions for a big week
    (``engine``, :func:`recsys.io.spark.choose_engine`); both write the same files."""
    key = ctx.pseudonym_key()
    lake, week = ctx.lake, ctx.week
    check_pseudonym_key(lake.root, key)  # the key the lake was built with, or a one-line refusal
    # users who asked to be forgotten stay forgotten, even if an upstream system sends them again
    erased = erased_pseudonyms(lake, key)
    rows = parquet_rows(lake.data_file("validated", "events", week))
    if choose_engine(ctx.config.engine, rows, ctx.settings.spark_master) == "spark":
        log.info("anonymize of week %s on Spark (%d events)", week, rows)
        counts, columns, kanon, dropped_erased = _anonymize_spark(ctx, key, erased)
    else:
        counts, columns, kanon, dropped_erased = _anonymize_pandas(ctx, key, erased)
    items = read_parquet(lake.data_file("validated", "items", week))
    items = items[[c for c in items.columns if not c.startswith("_")]]
    with lake.commit("anonymized", week, "items", stage="anonymize") as folder:
        write_parquet(items, folder / "data.parquet")
    log.info("k-anonymity (k=%d) of released user attributes: %s", kanon.k, kanon.to_dict())
    return ctx.record(
        AnonymizeResult(
            week=week.isoformat(),
            events=counts["events"],
            users=counts["users"],
            items=len(items),
            k_anonymity=kanon.to_dict(),
            events_of_erased_users_dropped=dropped_erased,
            columns=columns,
        )
    )


def _anonymize_pandas(
    ctx: StageContext, key: bytes, erased: frozenset[str]
) -> tuple[dict[str, int], dict[str, list[str]], KAnonymityReport, int]:
    lake, week = ctx.lake, ctx.week
    events = anonymize_events(read_parquet(lake.data_file("validated", "events", week)), key)
    users = anonymize_users(read_parquet(lake.data_file("validated", "users", week)), key)
    dropped_erased = int(events["user"].isin(erased).sum()) if erased else 0
    if erased:
        events = events[~events["user"].isin(erased)].reset_index(drop=True)
        users = users[~users["user"].isin(erased)].reset_index(drop=True)
    users, kanon = enforce_k_anonymity(users, ctx.config.anonymize.k)
    for kind, frame in (("events", events), ("users", users)):
        with lake.commit("anonymized", week, kind, stage="anonymize") as folder:
            write_parquet(frame, folder / "data.parquet")
    counts = {"events": len(events), "users": len(users)}
    return counts, {"events": list(events.columns), "users": list(users.columns)}, kanon, dropped_erased


def _anonymize_spark(
    ctx: StageContext, key: bytes, erased: frozenset[str]
) -> tuple[dict[str, int], dict[str, list[str]], KAnonymityReport, int]:
    lake, week = ctx.lake, ctx.week
    spark = get_spark(ctx.settings)
    with nanos_as_long(spark):
        week_data = anonymize_week_spark(spark, lake, week, key, erased, ctx.config.anonymize.k)
        try:
            counts = {}
            for kind, frame, schema in (
                ("events", week_data.events, week_data.events_schema),
                ("users", week_data.users, week_data.users_schema),
            ):
                with lake.commit("anonymized", week, kind, stage="anonymize") as folder:
                    counts[kind] = write_single_parquet(frame, folder / "data.parquet", schema)
        finally:
            week_data.release()
    columns = {"events": week_data.events_schema.names, "users": week_data.users_schema.names}
    return counts, columns, week_data.k_anonymity, week_data.events_of_erased_users


def prepare(ctx: StageContext) -> PrepareResult:
    config = ctx.config.prepare
    filled = ctx.recorded(WindowResult)
    window = plan_window(ctx.lake, ctx.week, config.window_weeks, filled.failed if filled else None)
    require_window(window, config.window_fill)
    if window.unprocessed:
        log.warning("week %s trains on less than its window: %s", ctx.week, window.describe())
    else:
        log.info("week %s: %s", ctx.week, window.describe())
    rows = sum(parquet_rows(ctx.lake.data_file("anonymized", "events", w)) for w in window.ready)
    if choose_engine(ctx.config.engine, rows, ctx.settings.spark_master) == "spark":
        log.info("prepare of week %s on Spark (%d events in the window)", ctx.week, rows)
        stats, weeks = _prepare_spark(ctx, window)
    else:
        events, weeks = read_window(ctx.lake, window)
        prepared = prepare_pairs(events, config)
        with ctx.lake.commit("prepared", ctx.week, stage="prepare") as folder:
            write_parquet(prepared.train, folder / "train.parquet")
            write_parquet(prepared.holdout, folder / "holdout.parquet")
        stats = prepared.stats
    return ctx.record(
        PrepareResult(
            week=ctx.week.isoformat(),
            **stats,
            window_weeks=[w.isoformat() for w in weeks],
            window_size=config.window_weeks,
            window=window.describe(),
            profile=str(_write_profile(ctx)),
        )
    )


def _prepare_spark(ctx: StageContext, window: Window) -> tuple[dict[str, Any], list[date]]:
    """The window prepared by Spark jobs over its partitions: the same files and stats as pandas."""
    spark = get_spark(ctx.settings)
    with nanos_as_long(spark), ctx.lake.commit("prepared", ctx.week, stage="prepare") as folder:
        prepared, weeks = prepare_spark(spark, ctx.lake, window, ctx.config.prepare, scratch=folder)
        try:
            write_single_parquet(prepared.train, folder / "train.parquet", prepared.train_schema)
            write_single_parquet(prepared.holdout, folder / "holdout.parquet", prepared.holdout_schema)
        finally:
            prepared.release()
    return prepared.stats, weeks


def _write_profile(ctx: StageContext) -> Path:
    """The week's data profile (genres, times, activity, popularity, new vs returning) as HTML in
    ``reports/week=.../week_profile.html``; the train stage logs it to its MLflow run. Its figures are
    Spark aggregations when the engine says so for the week's events."""
    history = ctx.config.prepare.window_weeks
    rows = parquet_rows(ctx.lake.data_file("anonymized", "events", ctx.week))
    if choose_engine(ctx.config.engine, rows, ctx.settings.spark_master) == "spark":
        spark = get_spark(ctx.settings)
        with nanos_as_long(spark):
            _, page = profile_from_lake_spark(spark, ctx.lake, ctx.week, history_weeks=history)
    else:
        _, page = profile_from_lake(ctx.lake, ctx.week, history_weeks=history)
    return write_text(page, ctx.lake.partition("reports", ctx.week) / "week_profile.html")
