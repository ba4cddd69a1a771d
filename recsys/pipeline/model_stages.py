"""The model stages of the weekly run: content, train (Spark ALS and the hybrid) and evaluate.

Each takes the :class:`~recsys.pipeline.context.StageContext`, logs to MLflow, records its result in
``runs/week=.../<stage>.json`` and returns it typed (:mod:`recsys.pipeline.results`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from recsys.core.chaos import checkpoint
from recsys.core.intervals import week_bounds
from recsys.evaluation.distributed import holdout_frames, score_model_spark, score_segments_spark
from recsys.evaluation.evaluate import HoldoutSets, item_genres, score_model, score_segments
from recsys.io.spark import choose_engine, get_spark
from recsys.io.spark_lake import nanos_as_long, read_file
from recsys.io.storage import local_scratch, read_parquet, replace_dir
from recsys.io.tracking import CONTENT_SUFFIX, configure, log_lake_artifact, log_lake_artifacts, metric_key
from recsys.models.content import ContentModel, ContentRecommender
from recsys.models.factors import popularity_model
from recsys.models.hybrid import BlendWeights, HybridModel
from recsys.pipeline.context import StageContext
from recsys.pipeline.results import ContentResult, EvaluateResult, PrepareResult, TrainResult
from recsys.pipeline.reuse import (
    SELECTION_DIGEST_TAG,
    SELECTION_TAG,
    SELECTION_WEEK_TAG,
    Selection,
    earlier_selection,
    find_training_run,
    selection_digest,
    training_config_digest,
)
from recsys.pipeline.served import content_model_of, reranked, week_content
from recsys.promotion.registry import TAG_STATUS, champion_version, load_served_model
from recsys.training.als import train_als
from recsys.training.blend import learn_blend
from recsys.training.tuning import time_aware_split, tune

log = logging.getLogger(__name__)


def content(ctx: StageContext) -> ContentResult:
    """Fit the content model on the week's catalogue (genres, release year, title words, tags), keep it
    in the lake for the train and recommend stages, and log it to MLflow as a run of its own
    (experiment ``<experiment>_content``; the train run links it by its ``content_run_id`` tag)."""
    import mlflow  # deferred: mlflow takes seconds to import; only stages that log load it

    experiment_name = ctx.settings.mlflow_experiment + CONTENT_SUFFIX
    configure(ctx.settings, experiment=experiment_name)
    items_file = ctx.lake.data_file("anonymized", "items", ctx.week)
    items = read_parquet(items_file)
    model = ContentModel.fit(items, ctx.config.content)
    folder = ctx.lake.partition("models", ctx.week) / "content"
    with local_scratch(ctx.lake, f"content-{ctx.week.isoformat()}") as tmp:
        replace_dir(model.save(tmp / "content"), folder)
    digest = hashlib.sha256(
        pd.util.hash_pandas_object(
            items[[c for c in ("item_id", "title", "genres", "release_year", "tags") if c in items.columns]],
            index=False,
        )
        .to_numpy()
        .tobytes()
        + json.dumps(ctx.config.content.model_dump(), sort_keys=True).encode()
    ).hexdigest()[:16]
    experiment = mlflow.get_experiment_by_name(experiment_name)
    runs = (
        mlflow.MlflowClient().search_runs(
            [experiment.experiment_id],
            filter_string=(
                f"tags.week = '{ctx.week.isoformat()}' and tags.content_digest = '{digest}' "
                "and tags.model_kind = 'content' and attributes.status = 'FINISHED'"
            ),
            max_results=1,
        )
        if experiment is not None
        else []
    )
    if runs:
        run_id = runs[0].info.run_id
        log.info("content model of week %s already logged (run %s): reused", ctx.week, run_id)
    else:
        with mlflow.start_run(run_name=f"content-{ctx.week.isoformat()}") as run:
            mlflow.set_tags(
                {
                    "week": ctx.week.isoformat(),
                    "pipeline": "weekly_retrain",
                    "model_kind": "content",
                    "content_digest": digest,
                    **ctx.run_tags(),
                }
            )
            mlflow.log_params({f"content.{k}": v for k, v in ctx.config.content.model_dump().items()})
            mlflow.log_metrics(
                {"catalogue_items": len(model.items), "content_features": len(model.feature_names)}
            )
            log_lake_artifacts(folder, "content_model")
        run_id = run.info.run_id
    return ctx.record(
        ContentResult(
            week=ctx.week.isoformat(),
            run_id=run_id,
            path=str(folder),
            items=len(model.items),
            features=len(model.feature_names),
            content_digest=digest,
        )
    )


def train(ctx: StageContext) -> TrainResult:
    import mlflow  # deferred: mlflow takes seconds to import; only stages that log load it

    # deferred: recsys.models.serving imports mlflow and pyspark at its top
    from recsys.models.serving import log_pyfunc

    configure(ctx.settings)
    prep = ctx.result(PrepareResult)
    config_digest = training_config_digest(ctx.config)
    existing = find_training_run(ctx, prep.train_digest, config_digest)
    if existing is not None:
        log.info(
            "week %s is already trained on this data (train_digest %s) and config (%s): reusing MLflow run %s",
            ctx.week,
            prep.train_digest,
            config_digest,
            existing.run_id,
        )
        return ctx.record(existing)
    train_df = read_parquet(ctx.lake.partition("prepared", ctx.week) / "train.parquet")
    spark = get_spark(ctx.settings)
    start, end = week_bounds(ctx.week)
    with mlflow.start_run(run_name=f"weekly-{ctx.week.isoformat()}") as run:
        mlflow.set_tags(
            {
                "week": ctx.week.isoformat(),
                "data_interval_start": start.isoformat(),
                "data_interval_end": end.isoformat(),
                "train_digest": prep.train_digest,
                "config_digest": config_digest,
                "pipeline": "weekly_retrain",
                **ctx.run_tags(),
            }
        )
        if ctx.plan is not None and ctx.plan.reasons:
            mlflow.set_tag("trigger_reasons", "; ".join(ctx.plan.reasons)[:5000])
        checkpoint("train:running")
        als_config, tuning = ctx.config.als, None
        searches = ctx.config.tuning.enabled or (
            ctx.config.served_model == "hybrid" and ctx.config.hybrid.learn
        )
        chosen = earlier_selection(ctx) if searches else None
        if chosen is not None:
            als_config = chosen.als
            tuning = {
                "reused_from": {"week": chosen.week.isoformat(), "run_id": chosen.run_id},
                "best": als_config.model_dump(),
                "every_weeks": ctx.config.tuning.every_weeks,
                "blend": {k: v.model_dump() for k, v in chosen.blend.items()} if chosen.blend else None,
            }
            mlflow.set_tag("selection_reused_from", chosen.run_id)
        elif ctx.config.tuning.enabled:
            try:
                result = tune(
                    train_df,
                    als_config,
                    ctx.config.tuning,
                    spark,
                    k=ctx.config.top_k,
                    relevance_min_rating=ctx.config.prepare.relevance_min_rating,
                )
            except ValueError as exc:  # e.g. too few pairs per user to hold any out
                log.warning("tuning skipped, training the base ALS config: %s", exc)
                mlflow.set_tag("tuning_skipped", str(exc)[:5000])
            else:
                als_config, tuning = result.best, result.to_dict()
                log.info(
                    "tuning chose %s (%s = %.4f)", als_config.model_dump(), result.metric, result.best_score
                )
        model = train_als(train_df, als_config, spark)  # the chosen config, refit on the whole window
        model.meta.update({"week": ctx.week.isoformat(), "train_digest": prep.train_digest})
        mlflow.log_params({f"als.{k}": v for k, v in als_config.model_dump().items()})
        mlflow.set_tag("window", prep.window or f"window: {len(prep.window_weeks)} weeks")
        mlflow.log_params(
            {
                "window_weeks": len(prep.window_weeks),
                "window_size": prep.window_size,
                "window_first": min(prep.window_weeks),
                "window_last": max(prep.window_weeks),
                "top_k": ctx.config.top_k,
                "spark_master": ctx.settings.spark_master,
                "tuned": tuning is not None,
                "served_model": ctx.config.served_model,
            }
        )
        mlflow.log_metrics(
            {
                "train_pairs": prep.train_pairs,
                "train_users": prep.users,
                "train_items": prep.items,
                "holdout_pairs": prep.holdout_pairs,
                "fit_seconds": model.meta["fit_seconds"],
            }
        )
        report = ctx.lake.partition("reports", ctx.week) / "validation.html"
        if report.exists():
            log_lake_artifact(report, "validation")
        profile = ctx.lake.partition("reports", ctx.week) / "week_profile.html"
        if profile.exists():
            log_lake_artifact(profile, "profile")
        hybrid, learned = (
            _hybrid(ctx, model, als_config, train_df, spark, chosen.blend if chosen is not None else None)
            if ctx.config.served_model == "hybrid"
            else (None, False)
        )
        if chosen is None and searches and (tuning is not None or not ctx.config.tuning.enabled):
            blend = {"warm": hybrid.config.warm, "cold": hybrid.config.cold} if learned else None
            if hybrid is None or not ctx.config.hybrid.learn or learned:  # a search that did not finish is
                # not recorded: the next week searches again
                chosen = Selection(ctx.week, run.info.run_id, als_config, blend)
        if chosen is not None:
            mlflow.set_tags(
                {
                    SELECTION_TAG: chosen.to_tag(),
                    SELECTION_WEEK_TAG: chosen.week.isoformat(),
                    SELECTION_DIGEST_TAG: selection_digest(ctx.config),
                }
            )
        with tempfile.TemporaryDirectory() as tmp:
            example = str(model.users[0])
            if hybrid is not None:  # the bundle holds the ALS factors too
                info = log_pyfunc(hybrid_dir=hybrid.save(Path(tmp) / "hybrid_model"), example_user=example)
            else:
                info = log_pyfunc(model.save(Path(tmp) / "factor_model"), example_user=example)
        mlflow.set_tag("model_uri", info.model_uri)  # last: only a run that logged its model is reused
    return ctx.record(
        TrainResult(
            week=ctx.week.isoformat(),
            run_id=run.info.run_id,
            model_uri=info.model_uri,
            fit_seconds=model.meta["fit_seconds"],
            rank=model.rank,
            users=len(model.users),
            items=len(model.items),
            als=als_config.model_dump(),
            tuning=tuning,
            served_model=ctx.config.served_model,
            hybrid=hybrid.config.model_dump(include={"warm", "cold"}) if hybrid is not None else None,
            reused=False,
        )
    )


def _hybrid(
    ctx: StageContext,
    als: Any,
    als_config: Any,
    train_df: pd.DataFrame,
    spark: Any,
    blend: dict[str, BlendWeights] | None = None,
) -> tuple[Any, bool]:
    """The ALS model joined with this week's content model, its blend weights learned on a validation
    split of the window (ALS refitted on the earlier part), or ``blend`` (an earlier week's learned
    weights) when given; logged to the active MLflow run. Also whether the weights were learned here."""
    import mlflow  # deferred: mlflow takes seconds to import; only stages that log load it

    made = ctx.result(ContentResult)
    content_model = week_content(ctx)
    mlflow.set_tag("content_run_id", made.run_id)
    config, learned = ctx.config.hybrid, False
    if blend is not None:
        config = config.model_copy(update=blend)
    elif config.learn:
        try:
            fit, validation = time_aware_split(
                train_df, 0.2, min_user_pairs=2, relevance_min_rating=ctx.config.prepare.relevance_min_rating
            )
            if fit.empty or validation.empty:
                raise ValueError("the window is too small to hold validation pairs out")
            als_fit = train_als(fit, als_config, spark)
            config, report = learn_blend(als_fit, content_model, fit, validation, config, ctx.config.top_k)
        except ValueError as exc:
            log.warning("hybrid weights not learned, the configured ones are used: %s", exc)
            mlflow.set_tag("blend_skipped", str(exc)[:5000])
        else:
            mlflow.log_dict(report, "hybrid/blend.json")
            log.info("hybrid weights: %s", json.dumps(report))
            learned = True
    for segment in ("warm", "cold"):
        weights = config.weights(segment)
        mlflow.log_params(
            {f"hybrid.{segment}.content": weights.content, f"hybrid.{segment}.popularity": weights.popularity}
        )
    mlflow.log_params({"hybrid.cold_user_max": config.cold_user_max})
    history = train_df[[c for c in ("user", "item_id", "strength", "last_ts") if c in train_df.columns]]
    return HybridModel(als, content_model, history, config, meta=dict(als.meta)), learned


def evaluate(ctx: StageContext) -> EvaluateResult:
    """Score the served candidate, the champion and a popularity baseline on the same holdout; and,
    per segment (all, cold users, warm users, new items), ALS alone, content alone, the hybrid and
    popularity: the comparison behind the hybrid's blend. On a large week or a cluster the holdout
    is scored by Spark jobs (:func:`_holdout_scorers`)."""
    client = configure(ctx.settings)
    trained = ctx.result(TrainResult)
    folder = ctx.lake.partition("prepared", ctx.week)
    train_df = read_parquet(folder / "train.parquet")
    items = read_parquet(ctx.lake.data_file("anonymized", "items", ctx.week))
    genres = item_genres(items)
    with _holdout_scorers(ctx, folder, train_df, len(items), genres) as (score, score_by_segment):
        return _evaluate(ctx, client, trained, train_df, genres, score, score_by_segment)


Scorer = Callable[[Any], Any]


@contextmanager
def _holdout_scorers(
    ctx: StageContext, folder: Path, train_df: pd.DataFrame, catalog_size: int, genres: dict[int, set[str]]
) -> Iterator[tuple[Scorer, Scorer]]:
    """``score_model`` and ``score_segments`` of a model on the week's holdout: with pandas on this
    machine, or (the engine says spark: a large week or a cluster) as Spark jobs over the prepared
    partition (:mod:`recsys.evaluation.distributed`: one row per holdout user on the executors, only
    aggregates back). Both give the same metrics."""
    k, cold_max = ctx.config.top_k, ctx.config.hybrid.cold_user_max
    engine = choose_engine(ctx.config.engine, len(train_df), ctx.settings.spark_master)
    if engine == "pandas":
        holdout = read_parquet(folder / "holdout.parquet")
        sets = HoldoutSets.of(train_df, holdout)  # shared by every model scored
        yield (
            lambda model: score_model(model, train_df, holdout, k, catalog_size, genres, sets),
            lambda model: score_segments(model, train_df, holdout, k, catalog_size, cold_max, genres, sets),
        )
        return
    spark = get_spark(ctx.settings)
    log.info("evaluate: on Spark (%d training pairs, master %s)", len(train_df), ctx.settings.spark_master)
    with nanos_as_long(spark):  # the prepared pairs' last_ts is in nanoseconds, which Spark refuses
        train = read_file(spark, folder / "train.parquet")
        holdout_frame = read_file(spark, folder / "holdout.parquet")
        with holdout_frames(train, holdout_frame) as frames:
            yield (
                lambda model: score_model_spark(model, frames, k, catalog_size, genres),
                lambda model: score_segments_spark(model, frames, k, catalog_size, cold_max, genres),
            )


def _evaluate(
    ctx: StageContext,
    client: Any,
    trained: TrainResult,
    train_df: pd.DataFrame,
    genres: dict[int, set[str]],
    score: Scorer,
    score_by_segment: Scorer,
) -> EvaluateResult:
    """The evaluate stage once its holdout scorers are chosen (:func:`_holdout_scorers`)."""
    import mlflow  # deferred: mlflow takes seconds to import; only stages that log load it

    k = ctx.config.top_k
    served = load_served_model(trained.model_uri)
    candidate = score(reranked(ctx, served, train_df, genres))
    popularity = popularity_model(train_df)
    baseline = score(popularity)
    champ = champion_version(client, ctx.settings.model_name)
    champion = None
    if champ is not None and champ.run_id != trained.run_id:
        champion_model = load_served_model(f"models:/{ctx.settings.model_name}/{champ.version}")
        champion = score(reranked(ctx, champion_model, train_df, genres))
    compared: dict[str, Any] = {
        "popularity": popularity,
        "als": served.als if isinstance(served, HybridModel) else served,
        "content": ContentRecommender(content_model_of(served, lambda: week_content(ctx)), train_df),
    }
    if isinstance(served, HybridModel):
        compared["hybrid"] = served
    models = {name: score_by_segment(model) for name, model in compared.items()}
    result = EvaluateResult(
        week=ctx.week.isoformat(),
        k=k,
        served_model="hybrid" if isinstance(served, HybridModel) else "als",
        candidate=candidate,
        baseline=baseline,
        champion=champion,
        champion_version=champ.version if champion is not None else None,
        models=models,
    )
    if is_gated(client, trained.run_id):
        # the evidence this run was gated (and perhaps registered and promoted) on is immutable: the
        # gate stage records this evaluation as a new run if it says anything else (release_stages.gate)
        log.info("evaluate: run %s was gated before: its evaluation is left as it is", trained.run_id)
        return ctx.record(result)
    with mlflow.start_run(run_id=trained.run_id):
        log_evaluation(result)
    return ctx.record(replace(result, evaluation_run_id=trained.run_id))


def is_gated(client: Any, run_id: str) -> bool:
    """Whether the gate decided on this run already (its tag ``validation_status`` is set)."""
    return TAG_STATUS in client.get_run(run_id).data.tags


def log_evaluation(ev: EvaluateResult) -> None:
    """An evaluation's metrics (candidate, baseline, champion, per model and segment) in the active run."""
    import mlflow  # deferred: mlflow takes seconds to import; only stages that log load it

    def known(value: Any) -> bool:  # NaN in the stage, None once recorded as JSON: not logged
        return isinstance(value, int | float) and value == value

    for prefix, values in (("", ev.candidate), ("baseline_", ev.baseline), ("champion_", ev.champion or {})):
        mlflow.log_metrics({prefix + metric_key(k_): v for k_, v in values.items() if known(v)})
    models = ev.models or {}
    mlflow.log_metrics(
        {
            f"{name}_{segment}_{metric_key(key)}": value
            for name, segments in models.items()
            for segment, values in segments.items()
            for key, value in values.items()
            if known(value)
        }
    )
    mlflow.log_dict(models, "evaluation/segments.json")
