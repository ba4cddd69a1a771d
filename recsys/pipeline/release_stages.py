"""The release stages of the weekly run: gate, register, promote, recommend and privacy_scan.

Each takes the :class:`~recsys.pipeline.context.StageContext`, records its result in
``runs/week=.../<stage>.json`` and returns it typed (:mod:`recsys.pipeline.results`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from recsys.core.aliases import CHAMPION
from recsys.core.formatting import number_or_na
from recsys.core.intervals import serving_week, week_bounds
from recsys.evaluation.evaluate import item_genres, train_items
from recsys.experiments.feedback_log import exposures_file
from recsys.io.spark import choose_engine, get_spark, spark_path
from recsys.io.storage import check_committed, read_parquet, write_parquet
from recsys.io.tracking import configure, metric_key
from recsys.models.distributed import collect_recommendations, exclusion_frame
from recsys.models.rows import page_rows
from recsys.pipeline.arms import exposures_frame, serving_arms
from recsys.pipeline.context import StageContext
from recsys.pipeline.model_stages import is_gated, log_evaluation
from recsys.pipeline.results import (
    EvaluateResult,
    GateResult,
    PrepareResult,
    PrivacyScanResult,
    PromoteResult,
    RecommendResult,
    RegisterResult,
    TrainResult,
)
from recsys.pipeline.served import content_model_of, reranked, week_content
from recsys.privacy import require_clean, scan_for_leaks
from recsys.promotion.gates import evaluate_gate
from recsys.promotion.registry import (
    TAG_REEVALUATION_OF,
    TAG_STATUS,
    TAG_WEEK,
    aliases_of,
    champion_version,
    load_served_model,
    promote_version,
    register_candidate,
)
from recsys.reporting.model_report import history_from_registry, log_model_report, render_model_report

log = logging.getLogger(__name__)


def gate(ctx: StageContext) -> GateResult:
    import mlflow  # deferred: mlflow takes seconds to import; only stages that log load it

    client = configure(ctx.settings)
    ev = ctx.result(EvaluateResult)
    prep = ctx.result(PrepareResult)
    window = {
        "weeks": len(prep.window_weeks),
        "size": prep.window_size or len(prep.window_weeks),
    }
    decision = evaluate_gate(ev.candidate, ev.champion, ev.baseline, ctx.config.gate, window=window)
    status = "passed" if decision.passed else "rejected"
    trained = ctx.result(TrainResult)
    if ev.evaluation_run_id is None and is_gated(client, trained.run_id):
        # a re-run of a week whose training run was gated before: that evidence is immutable
        recorded = client.get_run(trained.run_id).data
        if recorded.tags[TAG_STATUS] == status and _same_metrics(recorded.metrics, ev.candidate):
            log.info(
                "gate: run %s was gated %s on the same metrics before: nothing new to record",
                trained.run_id,
                status,
            )
        else:
            with mlflow.start_run(run_name=f"reevaluate-{ctx.week.isoformat()}") as run:
                mlflow.set_tags(
                    {
                        "week": ctx.week.isoformat(),
                        "pipeline": "weekly_retrain",
                        TAG_REEVALUATION_OF: trained.run_id,
                        TAG_STATUS: status,
                        **ctx.run_tags(),
                    }
                )
                log_evaluation(ev)
                mlflow.log_dict(decision.to_dict(), "gate/decision.json")
                _log_model_report(ctx, ev, decision)
            log.info(
                "gate: run %s was gated %s before; this evaluation (%s) is recorded as run %s",
                trained.run_id,
                recorded.tags[TAG_STATUS],
                status,
                run.info.run_id,
            )
    else:
        with mlflow.start_run(run_id=ev.evaluation_run_id or trained.run_id):
            mlflow.set_tag(TAG_STATUS, status)
            mlflow.log_dict(decision.to_dict(), "gate/decision.json")
            _log_model_report(ctx, ev, decision)
    for line in decision.reasons:
        log.info("gate: %s", line)
    return ctx.record(GateResult(week=ctx.week.isoformat(), **decision.to_dict()))


def _same_metrics(logged: dict[str, float], candidate: dict[str, Any]) -> bool:
    """Whether the run's logged metrics are the candidate's (the same evaluation again)."""
    for name, value in candidate.items():
        if isinstance(value, float) and value == value:
            if abs(logged.get(metric_key(name), float("nan")) - value) > 1e-9:
                return False
    return True


def _log_model_report(ctx: StageContext, ev: EvaluateResult, decision: Any) -> None:
    """The reviewer's HTML report (metrics, gate, per-segment comparison, history, tuning) in the
    active train run, as ``report/model_report.html``."""
    from mlflow import MlflowClient  # deferred: mlflow takes seconds to import; only stages that log load it

    trained = ctx.result(TrainResult)
    start, end = week_bounds(ctx.week)
    primary = ctx.config.gate.primary_metric
    context = {
        "model_name": ctx.settings.model_name,
        "week": ctx.week.isoformat(),
        "data_interval": {"start": start.isoformat(), "end": end.isoformat()},
        "k": ev.k,
        "primary_metric": primary,
        "training": ctx.result(PrepareResult).to_xcom(),
        "metrics": ev.to_xcom(),
        "gate": decision,
        "tuning": trained.tuning,
        "history": history_from_registry(MlflowClient(), ctx.settings.model_name, metric_key(primary)),
        "segments": ev.models,
        "served_model": ev.served_model,
    }
    log_model_report(render_model_report(context))


def register(ctx: StageContext) -> RegisterResult:
    client = configure(ctx.settings)
    trained, ev = ctx.result(TrainResult), ctx.result(EvaluateResult)
    decision = ctx.result(GateResult).decision()
    k = ev.k
    tags = {
        "week": ctx.week.isoformat(),
        "train_digest": ctx.result(PrepareResult).train_digest,
        **ctx.run_tags(),
    }
    for name in (f"ndcg@{k}", f"precision@{k}", f"recall@{k}", f"map@{k}", f"hit_rate@{k}"):
        tags[metric_key(name)] = number_or_na(ev.candidate.get(name), ".6f")
        tags[f"baseline_{metric_key(name)}"] = number_or_na(ev.baseline.get(name), ".6f")
    promotion, note = ctx.config.promotion, None
    newer = _champion_week(client, ctx.settings.model_name)
    if promotion != "never" and newer is not None and newer > ctx.week:
        # re-running or backfilling an old week never replaces a champion trained on newer data
        promotion = "never"
        note = f"champion is trained on a newer week ({newer.isoformat()}): not moved"
        log.info("register: %s", note)
    registration = register_candidate(
        client,
        ctx.settings.model_name,
        trained.run_id,
        trained.model_uri,
        decision,
        tags,
        promotion=promotion,
        challenger_on_reject=ctx.config.challenger_on_reject,
    )
    review = "pending" if decision.passed and promotion == "manual" else "not needed"
    return ctx.record(
        RegisterResult(
            week=ctx.week.isoformat(),
            **registration.to_dict(),
            promotion=promotion,
            review=review,
            note=note,
        )
    )


def _champion_week(client: Any, name: str) -> date | None:
    """The week the champion was trained on (its ``week`` tag), or None."""
    champ = champion_version(client, name)
    if champ is None or not (champ.tags or {}).get(TAG_WEEK):
        return None
    try:
        return date.fromisoformat(champ.tags[TAG_WEEK])
    except ValueError:
        return None


def needs_review(ctx: StageContext) -> bool:
    """True when this week's candidate passed its gate and waits for a person (promotion mode manual)."""
    return ctx.result(RegisterResult).review == "pending"


def promote(ctx: StageContext, approved_by: str | None = None) -> PromoteResult:
    """After a person approved: move ``champion`` to this week's candidate (only if its gate passed)."""
    client = configure(ctx.settings)
    registered = ctx.result(RegisterResult)
    decision = ctx.result(GateResult).decision()
    changed = promote_version(client, ctx.settings.model_name, registered.version, decision, approved_by)
    aliases = aliases_of(client, ctx.settings.model_name, registered.version)
    ctx.lake.write_stage_result(
        ctx.week,
        RegisterResult.stage,
        {**registered.to_xcom(), "aliases": aliases, "review": "approved"},
    )
    return ctx.record(
        PromoteResult(
            week=ctx.week.isoformat(),
            version=registered.version,
            changed=changed,
            approved_by=approved_by,
            aliases=aliases,
        )
    )


def recommend(ctx: StageContext) -> RecommendResult:
    """The champion's "Top picks for you" for every user of the window, each item with its reason,
    and the rows of each user's page (Because you watched ..., Trending now, New this week).

    With an ``experiment`` configured, each user gets the list of their arm's model (champion, the
    challenger under test, or popularity for a holdout; :func:`recsys.experiments.ab_config.assign`) and what was
    shown is logged as exposures (``anonymized/exposures``) for the ab_readout Dag."""
    # deferred: recsys.models.serving imports mlflow and pyspark at its top
    from recsys.models.serving import explained, serving_frame

    if ctx.plan is not None and ctx.plan.backfill:
        return ctx.record(
            RecommendResult(
                week=ctx.week.isoformat(),
                status="skipped",
                reason="backfill run: recommendations are published by current runs only",
            )
        )
    client = configure(ctx.settings)
    champ = champion_version(client, ctx.settings.model_name)
    if champ is None:
        return ctx.record(
            RecommendResult(
                week=ctx.week.isoformat(), status="skipped", reason="no model holds the champion alias yet"
            )
        )
    model = load_served_model(f"models:/{ctx.settings.model_name}@{CHAMPION}")
    train_df = read_parquet(ctx.lake.partition("prepared", ctx.week) / "train.parquet")
    items = read_parquet(ctx.lake.data_file("anonymized", "items", ctx.week))
    users = sorted(train_df["user"].unique())
    genres = item_genres(items)
    titles = dict(
        zip(items["item_id"].astype("int64").tolist(), items["title"].astype(str).tolist(), strict=True)
    )
    arms = serving_arms(ctx, client, users, model, str(champ.version), train_df)
    out = ctx.lake.partition("recommendations", ctx.week)
    start, end = week_bounds(ctx.week)
    top_picks = _top_picks(ctx, train_df)
    cached_content = functools.cache(lambda: week_content(ctx))  # ALS arms share it: read once
    rec_parts, row_parts = [], []
    for arm in arms:
        lists = top_picks(reranked(ctx, arm.model, train_df, genres), arm.users)
        rows_config = ctx.config.rows
        shown_by = model if arm.popularity else arm.model  # the holdout's rows use the champion's
        content = content_model_of(shown_by, cached_content)
        if arm.popularity:  # a holdout is shown nothing personalized: popular titles and trending
            rows_config = rows_config.model_copy(update={"because_rows": 0, "new_this_week": False})
            recs = serving_frame(lists).assign(
                source="popularity",
                reason_item_id=pd.array([pd.NA] * len(lists), dtype="Int64"),
                reason="popular with everyone",
            )
        else:
            recs = explained(arm.model, lists, titles)
        rows = page_rows(
            recs, arm.model, content, train_df, items, titles, start, end, rows_config, arm.users
        )
        for frame in (recs, rows):
            frame["model_version"] = arm.version
            if arm.name is not None:
                frame["arm"] = arm.name
        rec_parts.append(recs)
        row_parts.append(rows)
    recs = pd.concat(rec_parts, ignore_index=True).sort_values(["user", "rank"], kind="stable")
    rows = pd.concat(row_parts, ignore_index=True).sort_values(["user", "row_position"], kind="stable")
    recs["week"] = rows["week"] = ctx.week.isoformat()
    with ctx.lake.commit("recommendations", ctx.week, stage="recommend") as folder:
        write_parquet(recs.reset_index(drop=True), folder / "recommendations.parquet")
        write_parquet(rows.reset_index(drop=True), folder / "rows.parquet")
    path, rows_path = out / "recommendations.parquet", out / "rows.parquet"
    experiment = None
    if ctx.config.experiment is not None:
        shown_in = serving_week(ctx.week)  # trained on this week, shown during the next
        exposures = exposures_frame(recs, ctx.config.experiment.experiment_id, shown_in)
        experiment = {
            "experiment_id": ctx.config.experiment.experiment_id,
            "serving_week": shown_in.isoformat(),
            "exposures_path": str(_commit_exposures(ctx, exposures, shown_in)),
            "arms": {
                a.name: {"users": len(a.users), "model_version": a.version}
                for a in arms
                if a.name is not None
            },
        }
    return ctx.record(
        RecommendResult(
            week=ctx.week.isoformat(),
            status="written",
            path=str(path),
            rows_path=str(rows_path),
            users=len(users),
            rows=len(recs),
            page_rows=rows.groupby("row_id").size().groupby(lambda r: r.split(":")[0]).sum().to_dict(),
            sources=recs["source"].value_counts().to_dict(),
            model_version=str(champ.version),
            experiment=experiment,
        )
    )


def _top_picks(ctx: StageContext, train: pd.DataFrame) -> Callable[[Any, list[str]], pd.DataFrame]:
    """``lists(served, users)``: the served model's top-k of ``users`` with their training items
    excluded, in pandas, or on Spark above the configured size or on a cluster
    (:func:`recsys.io.spark.choose_engine`): blocks of users through ``mapInPandas``, the same lists
    (:mod:`recsys.models.distributed`), the exclusions grouped from the train partition by Spark."""
    k = ctx.config.top_k
    if choose_engine(ctx.config.engine, len(train), ctx.settings.spark_master) == "pandas":
        exclude = train_items(train)
        return lambda served, users: served.recommend(users, k=k, exclude=exclude)
    spark = get_spark(ctx.settings)
    folder = ctx.lake.partition("prepared", ctx.week)
    check_committed(folder)
    # the two columns only: Spark refuses the file's nanosecond timestamps, which a schema leaves unread
    pairs = spark.read.schema("user string, item_id long").parquet(
        spark_path(spark, folder / "train.parquet")
    )
    exclude = exclusion_frame(pairs)
    log.info("recommend: top-%d on Spark (%d training pairs)", k, len(train))
    return lambda served, users: collect_recommendations(spark, served, users, k=k, exclude=exclude)


def privacy_scan(ctx: StageContext, airflow_log_dirs: list[Path] | None = None) -> PrivacyScanResult:
    """Scan everything this week's run published (lake after anonymize, MLflow, task logs) for personal data."""
    report = scan_for_leaks(
        ctx.settings,
        ctx.week,
        airflow_log_dirs or [],
        window_weeks=ctx.config.prepare.window_weeks,
        engine=ctx.config.engine,
    )
    result = ctx.record(PrivacyScanResult(**report.to_dict()))
    require_clean(report)
    return result


def _commit_exposures(ctx: StageContext, exposures: pd.DataFrame, shown_in: date) -> Path:
    """The exposures of the week the lists are shown in, committed by this week's recommend record."""
    final = exposures_file(ctx.lake, shown_in)  # anonymized/exposures/week=<shown_in>/data.parquet
    with ctx.lake.commit(
        "anonymized", shown_in, "exposures", stage="recommend", record_week=ctx.week
    ) as folder:
        write_parquet(exposures, folder / final.name)
    return final
