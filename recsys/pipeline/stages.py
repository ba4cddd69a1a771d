"""The weekly pipeline as plain functions, one per stage.

Airflow's ``weekly_retrain`` DAG calls these (one task each), and so do the ``recsys`` CLI and the
tests. Each stage reads its inputs from the lake (and what earlier stages recorded in
``runs/week=.../<stage>.json``), writes its outputs atomically, records its own result there and
returns it: a small JSON-able dict fit for XCom.
"""

from __future__ import annotations

import functools
import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from recsys.core.errors import DataNotFoundError
from recsys.core.intervals import serving_week, week_bounds
from recsys.core.runplan import RunPlan
from recsys.core.settings import Settings, pseudonym_key
from recsys.io.storage import Lake, json_safe, read_parquet, write_json, write_parquet
from recsys.pipeline.config import PipelineConfig

log = logging.getLogger(__name__)

STAGES = (
    "window",
    "ingest",
    "validate",
    "anonymize",
    "prepare",
    "content",
    "train",
    "evaluate",
    "gate",
    "register",
    "recommend",
    "privacy_scan",
)


@dataclass(frozen=True)
class StageContext:
    week: date
    settings: Settings
    config: PipelineConfig
    lake: Lake
    # the pseudonymization key when it comes from elsewhere than the environment (an Airflow
    # Variable / secrets backend); never logged, never part of a result
    key: bytes | None = field(default=None, repr=False)
    # why and how this run works on its week (Airflow's run type and conf); None: a plain run
    plan: RunPlan | None = None

    @classmethod
    def create(
        cls,
        week: date,
        settings: Settings | None = None,
        config: PipelineConfig | None = None,
        key: bytes | None = None,
        plan: RunPlan | None = None,
    ) -> StageContext:
        settings = settings or Settings.from_env()
        config = config or PipelineConfig.load(settings.config_file)
        if plan is not None and plan.backfill:
            # a backfill recomputes history: it moves champion only when configured to
            config = config.model_copy(update={"promotion": config.backfill_promotion})
        return cls(
            week=week, settings=settings, config=config, lake=Lake(settings.lake_dir), key=key, plan=plan
        )

    @property
    def now(self) -> datetime | None:
        """The processing time of a week in progress (an early retrain); None: the week is complete."""
        return self.plan.through if self.plan is not None else None

    @property
    def trigger(self) -> str:
        return self.plan.trigger if self.plan is not None else "manual"

    def run_tags(self) -> dict[str, str]:
        """Tags every MLflow run and model version of this run carries: what triggered it, on what data."""
        tags = {"trigger": self.trigger}
        if self.now is not None:
            tags["data_through"] = self.now.isoformat()
        return tags

    def pseudonym_key(self) -> bytes:
        return self.key if self.key is not None else pseudonym_key()

    def result(self, stage: str) -> dict[str, Any]:
        found = self.lake.read_stage_result(self.week, stage)
        if found is None:
            raise DataNotFoundError(
                f"stage '{stage}' has no result for week {self.week.isoformat()}: run it before this one"
            )
        return found

    def record(self, stage: str, result: dict[str, Any]) -> dict[str, Any]:
        result = json_safe({"stage": stage, "week": self.week.isoformat(), **result})
        self.lake.write_stage_result(self.week, stage, result)
        return result


# ---- stages ------------------------------------------------------------------------------------

WINDOW_STAGES = ("ingest", "validate", "anonymize")
"""What the ``window`` stage runs on each earlier window week that has raw data but no anonymized events."""


def window(ctx: StageContext) -> dict[str, Any]:
    """Make sure the run's week can be worked on, and bring its training window up to ``anonymized``.

    Fails at once, in one line naming the lake's first and last raw weeks, when the week has no raw
    events (a date before the history, after it, or in a gap). Then, by ``prepare.window_fill``:
    ``process`` runs ingest, validate and anonymize on every earlier week of the window that has raw
    events but no anonymized ones, oldest first, each recorded under its own week as a normal run
    records it (a week whose validation fails is left out and named, with the reason); ``warn``
    only says how many weeks training will miss; ``refuse`` fails the run naming them.
    """
    from recsys.core.errors import RecsysError
    from recsys.data.ingest import lake_history
    from recsys.data.prepare import plan_window, require_window

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
                    STAGE_FUNCTIONS[stage](sub)
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
        "window", {"mode": mode, "processed": processed, "failed": failed, "window": after.to_dict()}
    )


def _span(weeks: list[date]) -> str:
    return weeks[0].isoformat() if len(weeks) == 1 else f"{weeks[0].isoformat()} .. {weeks[-1].isoformat()}"


def ingest(ctx: StageContext) -> dict[str, Any]:
    from recsys.data.ingest import ingest_week

    return ctx.record("ingest", ingest_week(ctx.lake, ctx.week))


def validate(ctx: StageContext) -> dict[str, Any]:
    """Validate the week; the report goes to MLflow (and its path to the task log) pass or fail."""
    from recsys.core.errors import ValidationFailed
    from recsys.validation.validate import validate_week

    try:
        result = validate_week(ctx.lake, ctx.week, ctx.config.validation, now=ctx.now)
    except ValidationFailed as exc:
        log_validation_run(ctx, passed=False, error=str(exc))
        raise
    run_id = log_validation_run(ctx, passed=True)
    return ctx.record("validate", {**result, "mlflow_run_id": run_id})


def log_validation_run(ctx: StageContext, passed: bool, error: str | None = None) -> str | None:
    """One MLflow run per validation (experiment ``<experiment>_validation``): report, accounting, counts."""
    import mlflow

    from recsys.io.tracking import configure

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
            import json

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
            mlflow.log_artifact(str(accounting_file), artifact_path="validation")
        if report.exists():
            mlflow.log_artifact(str(report), artifact_path="validation")
    log.info("validation logged to MLflow run %s (%s)", run.info.run_id, ctx.settings.mlflow_tracking_uri)
    return run.info.run_id


def anonymize(ctx: StageContext) -> dict[str, Any]:
    from recsys.privacy import erased_pseudonyms
    from recsys.privacy.anonymize import anonymize_events, anonymize_users, enforce_k_anonymity

    key = ctx.pseudonym_key()
    lake, week = ctx.lake, ctx.week
    events = anonymize_events(read_parquet(lake.data_file("validated", "events", week)), key)
    users = anonymize_users(read_parquet(lake.data_file("validated", "users", week)), key)
    # users who asked to be forgotten stay forgotten, even if an upstream system sends them again
    erased = erased_pseudonyms(lake, key)
    dropped_erased = int(events["user"].isin(erased).sum()) if erased else 0
    if erased:
        events = events[~events["user"].isin(erased)].reset_index(drop=True)
        users = users[~users["user"].isin(erased)].reset_index(drop=True)
    users, kanon = enforce_k_anonymity(users, ctx.config.anonymize.k)
    items = read_parquet(lake.data_file("validated", "items", week))
    items = items[[c for c in items.columns if not c.startswith("_")]]
    write_parquet(events, lake.data_file("anonymized", "events", week))
    write_parquet(users, lake.data_file("anonymized", "users", week))
    write_parquet(items, lake.data_file("anonymized", "items", week))
    log.info("k-anonymity (k=%d) of released user attributes: %s", kanon.k, kanon.to_dict())
    return ctx.record(
        "anonymize",
        {
            "events": len(events),
            "users": len(users),
            "items": len(items),
            "k_anonymity": kanon.to_dict(),
            "events_of_erased_users_dropped": dropped_erased,
            "columns": {"events": list(events.columns), "users": list(users.columns)},
        },
    )


def prepare(ctx: StageContext) -> dict[str, Any]:
    from recsys.data.prepare import plan_window, read_window, require_window
    from recsys.data.prepare import prepare as prepare_pairs

    config = ctx.config.prepare
    filled = ctx.lake.read_stage_result(ctx.week, "window") or {}
    window = plan_window(ctx.lake, ctx.week, config.window_weeks, filled.get("failed"))
    require_window(window, config.window_fill)
    if window.unprocessed:
        log.warning("week %s trains on less than its window: %s", ctx.week, window.describe())
    else:
        log.info("week %s: %s", ctx.week, window.describe())
    events, weeks = read_window(ctx.lake, window)
    prepared = prepare_pairs(events, config)
    folder = ctx.lake.partition("prepared", ctx.week)
    write_parquet(prepared.train, folder / "train.parquet")
    write_parquet(prepared.holdout, folder / "holdout.parquet")
    stats = {
        **prepared.stats,
        "window_weeks": [w.isoformat() for w in weeks],
        "window_size": config.window_weeks,
        "window": window.describe(),
    }
    stats["profile"] = str(_write_profile(ctx))
    return ctx.record("prepare", stats)


def _write_profile(ctx: StageContext) -> Path:
    """The week's data profile (genres, times, activity, popularity, new vs returning) as HTML in
    ``reports/week=.../week_profile.html``; the train stage logs it to its MLflow run."""
    from recsys.io.storage import write_text
    from recsys.reporting.data_profile import profile_from_lake

    _, page = profile_from_lake(ctx.lake, ctx.week, history_weeks=ctx.config.prepare.window_weeks)
    return write_text(page, ctx.lake.partition("reports", ctx.week) / "week_profile.html")


def content(ctx: StageContext) -> dict[str, Any]:
    """Fit the content model on the week's catalogue (genres, release year, title words, tags), keep it
    in the lake for the train and recommend stages, and log it to MLflow as a run of its own
    (experiment ``<experiment>_content``; the train run links it by its ``content_run_id`` tag)."""
    import hashlib

    import mlflow

    from recsys.io.storage import replace_dir
    from recsys.io.tracking import CONTENT_SUFFIX, configure
    from recsys.models.content import ContentModel

    experiment_name = ctx.settings.mlflow_experiment + CONTENT_SUFFIX
    configure(ctx.settings, experiment=experiment_name)
    items_file = ctx.lake.data_file("anonymized", "items", ctx.week)
    items = read_parquet(items_file)
    model = ContentModel.fit(items, ctx.config.content)
    folder = ctx.lake.partition("models", ctx.week) / "content"
    with tempfile.TemporaryDirectory(dir=ctx.lake.root, prefix=".content-") as tmp:
        replace_dir(model.save(Path(tmp) / "content"), folder)
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
            mlflow.log_artifacts(str(folder), artifact_path="content_model")
        run_id = run.info.run_id
    return ctx.record(
        "content",
        {
            "run_id": run_id,
            "path": str(folder),
            "items": len(model.items),
            "features": len(model.feature_names),
            "content_digest": digest,
        },
    )


def training_config_digest(config: PipelineConfig) -> str:
    """Digest of everything besides the data that decides what ``train`` fits."""
    import hashlib

    relevant = {
        "als": config.als.model_dump(),
        "tuning": config.tuning.model_dump(),
        "content": config.content.model_dump(),
        "hybrid": config.hybrid.model_dump(),
        "served_model": config.served_model,
        "top_k": config.top_k,
        "relevance_min_rating": config.prepare.relevance_min_rating,
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]


def find_training_run(ctx: StageContext, train_digest: str, config_digest: str) -> dict[str, Any] | None:
    """The finished training run of this week on the same data and config, if there is one.

    This is what makes a retry, a re-run or a backfill of an interval reuse its run (and so its
    model version) instead of training and registering a duplicate: the interval is recognised by
    its tags (week, train_digest, config_digest).
    """
    import mlflow

    experiment = mlflow.get_experiment_by_name(ctx.settings.mlflow_experiment)
    if experiment is None:
        return None
    runs = mlflow.MlflowClient().search_runs(
        [experiment.experiment_id],
        filter_string=(
            f"tags.week = '{ctx.week.isoformat()}' and tags.train_digest = '{train_digest}' "
            f"and tags.config_digest = '{config_digest}' and attributes.status = 'FINISHED'"
        ),
        order_by=["attributes.start_time ASC"],
        max_results=1,
    )
    if not runs or "model_uri" not in runs[0].data.tags:
        return None
    run = runs[0]
    from recsys.training.als import ALSConfig

    als = ALSConfig.model_validate(
        {  # MLflow keeps params as strings: an unset option (None) comes back as "None"
            k.removeprefix("als."): v
            for k, v in run.data.params.items()
            if k.startswith("als.") and v != "None"
        }
    )
    metrics = run.data.metrics
    return {
        "run_id": run.info.run_id,
        "model_uri": run.data.tags["model_uri"],
        "fit_seconds": metrics.get("fit_seconds"),
        "rank": als.rank,
        "users": int(metrics.get("train_users", 0)),
        "items": int(metrics.get("train_items", 0)),
        "als": als.model_dump(),
        "tuning": None,
        "served_model": run.data.params.get("served_model", "als"),
        "hybrid": _logged_weights(run.data.params),
    }


def _logged_weights(params: dict[str, str]) -> dict[str, dict[str, float]] | None:
    """The hybrid's blend weights as the train run logged them (``hybrid.<segment>.<signal>``)."""
    try:
        return {
            segment: {
                signal: float(params[f"hybrid.{segment}.{signal}"]) for signal in ("content", "popularity")
            }
            for segment in ("warm", "cold")
        }
    except (KeyError, ValueError):
        return None


def train(ctx: StageContext) -> dict[str, Any]:
    import mlflow

    from recsys.io.spark import get_spark
    from recsys.io.tracking import configure
    from recsys.models.serving import log_pyfunc
    from recsys.training.als import train_als

    configure(ctx.settings)
    prep = ctx.result("prepare")
    config_digest = training_config_digest(ctx.config)
    existing = find_training_run(ctx, prep["train_digest"], config_digest)
    if existing is not None:
        log.info(
            "week %s is already trained on this data (train_digest %s) and config (%s): reusing MLflow run %s",
            ctx.week,
            prep["train_digest"],
            config_digest,
            existing["run_id"],
        )
        return ctx.record("train", {**existing, "reused": True})
    train_df = read_parquet(ctx.lake.partition("prepared", ctx.week) / "train.parquet")
    spark = get_spark(ctx.settings)
    start, end = week_bounds(ctx.week)
    with mlflow.start_run(run_name=f"weekly-{ctx.week.isoformat()}") as run:
        mlflow.set_tags(
            {
                "week": ctx.week.isoformat(),
                "data_interval_start": start.isoformat(),
                "data_interval_end": end.isoformat(),
                "train_digest": prep["train_digest"],
                "config_digest": config_digest,
                "pipeline": "weekly_retrain",
                **ctx.run_tags(),
            }
        )
        if ctx.plan is not None and ctx.plan.reasons:
            mlflow.set_tag("trigger_reasons", "; ".join(ctx.plan.reasons)[:5000])
        als_config, tuning = ctx.config.als, None
        if ctx.config.tuning.enabled:
            from recsys.training.tuning import tune

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
        model.meta.update({"week": ctx.week.isoformat(), "train_digest": prep["train_digest"]})
        mlflow.log_params({f"als.{k}": v for k, v in als_config.model_dump().items()})
        mlflow.set_tag("window", prep.get("window") or f"window: {len(prep['window_weeks'])} weeks")
        mlflow.log_params(
            {
                "window_weeks": len(prep["window_weeks"]),
                "window_size": prep.get("window_size"),
                "window_first": min(prep["window_weeks"]),
                "window_last": max(prep["window_weeks"]),
                "top_k": ctx.config.top_k,
                "spark_master": ctx.settings.spark_master,
                "tuned": tuning is not None,
                "served_model": ctx.config.served_model,
            }
        )
        mlflow.log_metrics(
            {
                "train_pairs": prep["train_pairs"],
                "train_users": prep["users"],
                "train_items": prep["items"],
                "holdout_pairs": prep["holdout_pairs"],
                "fit_seconds": model.meta["fit_seconds"],
            }
        )
        report = ctx.lake.partition("reports", ctx.week) / "validation.html"
        if report.exists():
            mlflow.log_artifact(str(report), artifact_path="validation")
        profile = ctx.lake.partition("reports", ctx.week) / "week_profile.html"
        if profile.exists():
            mlflow.log_artifact(str(profile), artifact_path="profile")
        hybrid = (
            _hybrid(ctx, model, als_config, train_df, spark) if ctx.config.served_model == "hybrid" else None
        )
        with tempfile.TemporaryDirectory() as tmp:
            example = str(model.users[0])
            if hybrid is not None:  # the bundle holds the ALS factors too
                info = log_pyfunc(hybrid_dir=hybrid.save(Path(tmp) / "hybrid_model"), example_user=example)
            else:
                info = log_pyfunc(model.save(Path(tmp) / "factor_model"), example_user=example)
        mlflow.set_tag("model_uri", info.model_uri)  # last: only a run that logged its model is reused
    return ctx.record(
        "train",
        {
            "run_id": run.info.run_id,
            "model_uri": info.model_uri,
            "fit_seconds": model.meta["fit_seconds"],
            "rank": model.rank,
            "users": len(model.users),
            "items": len(model.items),
            "als": als_config.model_dump(),
            "tuning": tuning,
            "served_model": ctx.config.served_model,
            "hybrid": hybrid.config.model_dump(include={"warm", "cold"}) if hybrid is not None else None,
            "reused": False,
        },
    )


def _hybrid(ctx: StageContext, als: Any, als_config: Any, train_df: pd.DataFrame, spark: Any) -> Any:
    """The ALS model joined with this week's content model, its blend weights learned on a validation
    split of the window (ALS refitted on the earlier part); logged to the active MLflow run."""
    import mlflow

    from recsys.models.content import ContentModel
    from recsys.models.hybrid import HybridModel, learn_blend
    from recsys.training.als import train_als
    from recsys.training.tuning import time_aware_split

    made = ctx.result("content")
    content_model = ContentModel.load(Path(made["path"]))
    mlflow.set_tag("content_run_id", made["run_id"])
    config = ctx.config.hybrid
    if config.learn:
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
    for segment in ("warm", "cold"):
        weights = config.weights(segment)
        mlflow.log_params(
            {f"hybrid.{segment}.content": weights.content, f"hybrid.{segment}.popularity": weights.popularity}
        )
    mlflow.log_params({"hybrid.cold_user_max": config.cold_user_max})
    history = train_df[[c for c in ("user", "item_id", "strength", "last_ts") if c in train_df.columns]]
    return HybridModel(als, content_model, history, config, meta=dict(als.meta))


def evaluate(ctx: StageContext) -> dict[str, Any]:
    """Score the served candidate, the champion and a popularity baseline on the same holdout; and,
    per segment (all, cold users, warm users, new items), ALS alone, content alone, the hybrid and
    popularity: the comparison behind the hybrid's blend."""
    import mlflow

    from recsys.evaluation.evaluate import item_genres, score_model, score_segments
    from recsys.io.tracking import configure, metric_key
    from recsys.models.content import ContentRecommender
    from recsys.models.factors import popularity_model
    from recsys.models.hybrid import HybridModel
    from recsys.promotion.registry import champion_version, load_served_model

    client = configure(ctx.settings)
    trained = ctx.result("train")
    folder = ctx.lake.partition("prepared", ctx.week)
    train_df = read_parquet(folder / "train.parquet")
    holdout = read_parquet(folder / "holdout.parquet")
    items = read_parquet(ctx.lake.data_file("anonymized", "items", ctx.week))
    genres = item_genres(items)
    k = ctx.config.top_k

    def score(model: Any) -> dict[str, float]:
        return score_model(model, train_df, holdout, k, len(items), genres)

    served = load_served_model(trained["model_uri"])
    candidate = score(_reranked(ctx, served, train_df, genres))
    popularity = popularity_model(train_df)
    baseline = score(popularity)
    champ = champion_version(client, ctx.settings.model_name)
    champion = None
    if champ is not None and champ.run_id != trained["run_id"]:
        champion_model = load_served_model(f"models:/{ctx.settings.model_name}/{champ.version}")
        champion = score(_reranked(ctx, champion_model, train_df, genres))
    compared: dict[str, Any] = {
        "popularity": popularity,
        "als": served.als if isinstance(served, HybridModel) else served,
        "content": ContentRecommender(_content_model(served, lambda: _week_content(ctx)), train_df),
    }
    if isinstance(served, HybridModel):
        compared["hybrid"] = served
    cold_max = ctx.config.hybrid.cold_user_max
    models = {
        name: score_segments(model, train_df, holdout, k, len(items), cold_max, genres)
        for name, model in compared.items()
    }
    with mlflow.start_run(run_id=trained["run_id"]):
        for prefix, values in (("", candidate), ("baseline_", baseline), ("champion_", champion or {})):
            mlflow.log_metrics({prefix + metric_key(k_): v for k_, v in values.items() if v == v})
        mlflow.log_metrics(
            {
                f"{name}_{segment}_{metric_key(key)}": value
                for name, segments in models.items()
                for segment, values in segments.items()
                for key, value in values.items()
                if value == value
            }
        )
        mlflow.log_dict(models, "evaluation/segments.json")
    return ctx.record(
        "evaluate",
        {
            "k": k,
            "served_model": "hybrid" if isinstance(served, HybridModel) else "als",
            "candidate": candidate,
            "baseline": baseline,
            "champion": champion,
            "champion_version": champ.version if champion is not None else None,
            "models": models,
        },
    )


def _content_model(served: Any, week_content: Callable[[], Any]) -> Any:
    """The served hybrid's content model, or (ALS served alone) the one the content stage fitted,
    from ``week_content()`` (:func:`_week_content`), called only then."""
    from recsys.models.hybrid import HybridModel

    return served.content if isinstance(served, HybridModel) else week_content()


def _week_content(ctx: StageContext) -> Any:
    """The content model the week's content stage fitted (read from the lake)."""
    from recsys.models.content import ContentModel

    return ContentModel.load(Path(ctx.result("content")["path"]))


def _reranked(ctx: StageContext, model: Any, history: pd.DataFrame, genres: dict[int, set[str]]) -> Any:
    """``model`` as served: through the configured re-ranking (MMR / genre caps / exploration), if any."""
    from recsys.models.rerank import Reranked

    rerank = ctx.config.rerank
    if rerank.method == "none" and rerank.exploration_share == 0:
        return model
    return Reranked(model, genres, history, rerank)


def gate(ctx: StageContext) -> dict[str, Any]:
    import mlflow

    from recsys.io.tracking import configure
    from recsys.promotion.gates import evaluate_gate

    configure(ctx.settings)
    ev = ctx.result("evaluate")
    prep = ctx.result("prepare")
    window = {
        "weeks": len(prep["window_weeks"]),
        "size": prep.get("window_size") or len(prep["window_weeks"]),
    }
    decision = evaluate_gate(ev["candidate"], ev["champion"], ev["baseline"], ctx.config.gate, window=window)
    run_id = ctx.result("train")["run_id"]
    with mlflow.start_run(run_id=run_id):
        mlflow.set_tag("validation_status", "passed" if decision.passed else "rejected")
        mlflow.log_dict(decision.to_dict(), "gate/decision.json")
        _log_model_report(ctx, ev, decision)
    for line in decision.reasons:
        log.info("gate: %s", line)
    return ctx.record("gate", decision.to_dict())


def _log_model_report(ctx: StageContext, ev: dict[str, Any], decision: Any) -> None:
    """The reviewer's HTML report (metrics, gate, per-segment comparison, history, tuning) in the
    active train run, as ``report/model_report.html``."""
    from mlflow import MlflowClient

    from recsys.io.tracking import metric_key
    from recsys.reporting.model_report import history_from_registry, log_model_report, render_model_report

    trained = ctx.result("train")
    start, end = week_bounds(ctx.week)
    primary = ctx.config.gate.primary_metric
    context = {
        "model_name": ctx.settings.model_name,
        "week": ctx.week.isoformat(),
        "data_interval": {"start": start.isoformat(), "end": end.isoformat()},
        "k": ev["k"],
        "primary_metric": primary,
        "training": ctx.result("prepare"),
        "metrics": ev,
        "gate": decision,
        "tuning": trained.get("tuning"),
        "history": history_from_registry(MlflowClient(), ctx.settings.model_name, metric_key(primary)),
        "segments": ev.get("models"),
        "served_model": ev.get("served_model"),
    }
    log_model_report(render_model_report(context))


def register(ctx: StageContext) -> dict[str, Any]:
    from recsys.io.tracking import configure, metric_key
    from recsys.promotion.gates import GateDecision
    from recsys.promotion.registry import register_candidate

    client = configure(ctx.settings)
    trained, ev = ctx.result("train"), ctx.result("evaluate")
    decision = GateDecision.from_dict(ctx.result("gate"))
    k = ev["k"]
    tags = {
        "week": ctx.week.isoformat(),
        "train_digest": ctx.result("prepare")["train_digest"],
        **ctx.run_tags(),
    }
    for name in (f"ndcg@{k}", f"precision@{k}", f"recall@{k}", f"map@{k}", f"hit_rate@{k}"):
        tags[metric_key(name)] = _fmt(ev["candidate"].get(name), ".6f")
        tags[f"baseline_{metric_key(name)}"] = _fmt(ev["baseline"].get(name), ".6f")
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
        trained["run_id"],
        trained["model_uri"],
        decision,
        tags,
        promotion=promotion,
        challenger_on_reject=ctx.config.challenger_on_reject,
    )
    review = "pending" if decision.passed and promotion == "manual" else "not needed"
    return ctx.record(
        "register",
        {**registration.to_dict(), "promotion": promotion, "review": review, "note": note},
    )


def _champion_week(client: Any, name: str) -> date | None:
    """The week the champion was trained on (its ``week`` tag), or None."""
    from recsys.promotion.registry import TAG_WEEK, champion_version

    champ = champion_version(client, name)
    if champ is None or not (champ.tags or {}).get(TAG_WEEK):
        return None
    try:
        return date.fromisoformat(champ.tags[TAG_WEEK])
    except ValueError:
        return None


def needs_review(ctx: StageContext) -> bool:
    """True when this week's candidate passed its gate and waits for a person (promotion mode manual)."""
    return ctx.result("register").get("review") == "pending"


def promote(ctx: StageContext, approved_by: str | None = None) -> dict[str, Any]:
    """After a person approved: move ``champion`` to this week's candidate (only if its gate passed)."""
    from recsys.io.tracking import configure
    from recsys.promotion.gates import GateDecision
    from recsys.promotion.registry import aliases_of, promote_version

    client = configure(ctx.settings)
    registered = ctx.result("register")
    decision = GateDecision.from_dict(ctx.result("gate"))
    changed = promote_version(client, ctx.settings.model_name, registered["version"], decision, approved_by)
    aliases = aliases_of(client, ctx.settings.model_name, registered["version"])
    ctx.lake.write_stage_result(
        ctx.week, "register", {**registered, "aliases": aliases, "review": "approved"}
    )
    return ctx.record(
        "promote",
        {
            "version": registered["version"],
            "changed": changed,
            "approved_by": approved_by,
            "aliases": aliases,
        },
    )


def recommend(ctx: StageContext) -> dict[str, Any]:
    """The champion's "Top picks for you" for every user of the window, each item with its reason,
    and the rows of each user's page (Because you watched ..., Trending now, New this week).

    With an ``experiment`` configured, each user gets the list of their arm's model (champion, the
    challenger under test, or popularity for a holdout; :func:`recsys.experiments.abtest.assign`) and what was
    shown is logged as exposures (``anonymized/exposures``) for the ab_readout Dag."""
    from recsys.evaluation.evaluate import item_genres, train_items
    from recsys.models.rows import page_rows
    from recsys.models.serving import explained, serving_frame
    from recsys.promotion.registry import CHAMPION, champion_version, load_served_model

    if ctx.plan is not None and ctx.plan.backfill:
        return ctx.record(
            "recommend",
            {
                "status": "skipped",
                "reason": "backfill run: recommendations are published by current runs only",
            },
        )
    from recsys.io.tracking import configure

    client = configure(ctx.settings)
    champ = champion_version(client, ctx.settings.model_name)
    if champ is None:
        return ctx.record(
            "recommend", {"status": "skipped", "reason": "no model holds the champion alias yet"}
        )
    model = load_served_model(f"models:/{ctx.settings.model_name}@{CHAMPION}")
    train_df = read_parquet(ctx.lake.partition("prepared", ctx.week) / "train.parquet")
    items = read_parquet(ctx.lake.data_file("anonymized", "items", ctx.week))
    users = sorted(train_df["user"].unique())
    genres = item_genres(items)
    titles = dict(
        zip(items["item_id"].astype("int64").tolist(), items["title"].astype(str).tolist(), strict=True)
    )
    arms = _arms(ctx, client, users, model, str(champ.version), train_df)
    out = ctx.lake.partition("recommendations", ctx.week)
    start, end = week_bounds(ctx.week)
    exclude = train_items(train_df)
    week_content = functools.cache(lambda: _week_content(ctx))  # ALS arms share it: read once
    rec_parts, row_parts = [], []
    for arm in arms:
        served = _reranked(ctx, arm.model, train_df, genres)
        lists = served.recommend(arm.users, k=ctx.config.top_k, exclude=exclude)
        rows_config = ctx.config.rows
        shown_by = model if arm.popularity else arm.model  # the holdout's rows use the champion's
        content = _content_model(shown_by, week_content)
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
    path = write_parquet(recs.reset_index(drop=True), out / "recommendations.parquet")
    rows_path = write_parquet(rows.reset_index(drop=True), out / "rows.parquet")
    result: dict[str, Any] = {
        "status": "written",
        "path": str(path),
        "rows_path": str(rows_path),
        "users": len(users),
        "rows": len(recs),
        "page_rows": rows.groupby("row_id").size().groupby(lambda r: r.split(":")[0]).sum().to_dict(),
        "sources": recs["source"].value_counts().to_dict(),
        "model_version": str(champ.version),
    }
    if ctx.config.experiment is not None:
        from recsys.experiments.feedback_log import exposures_file

        shown_in = serving_week(ctx.week)  # trained on this week, shown during the next
        exposures = _exposures(recs, ctx.config.experiment.experiment_id, shown_in)
        result["experiment"] = {
            "experiment_id": ctx.config.experiment.experiment_id,
            "serving_week": shown_in.isoformat(),
            "exposures_path": str(write_parquet(exposures, exposures_file(ctx.lake, shown_in))),
            "arms": {
                a.name: {"users": len(a.users), "model_version": a.version}
                for a in arms
                if a.name is not None
            },
        }
    return ctx.record("recommend", result)


@dataclass(frozen=True)
class _Arm:
    """Who is served which model in the recommend stage; ``name`` None: no experiment configured."""

    name: str | None
    users: list[str]
    model: Any
    version: str
    popularity: bool = False


def _arms(
    ctx: StageContext,
    client: Any,
    users: list[str],
    champion: Any,
    champion_version: str,
    train: pd.DataFrame,
) -> list[_Arm]:
    """The arms of this week's recommendations: everyone on the champion without an experiment;
    with one, each user's arm (salted hash), the challenger arm on the challenger under test (or
    on the champion while there is none) and the holdout on popularity."""
    from recsys.experiments.abtest import CHALLENGER, HOLDOUT, assign
    from recsys.models.factors import popularity_model
    from recsys.promotion.registry import load_served_model, serving_challenger

    experiment = ctx.config.experiment
    if experiment is None:
        return [_Arm(None, users, champion, champion_version)]
    assigned = assign(users, experiment)
    challenger = serving_challenger(client, ctx.settings.model_name)
    arms = []
    for name in experiment.report_order:
        members = sorted(assigned.index[assigned == name])
        if name == HOLDOUT:
            arms.append(_Arm(name, members, popularity_model(train), "popularity", popularity=True))
        elif name == CHALLENGER and challenger is not None:
            model = load_served_model(f"models:/{ctx.settings.model_name}/{challenger.version}")
            arms.append(_Arm(name, members, model, str(challenger.version)))
        else:
            arms.append(_Arm(name, members, champion, champion_version))
    log.info(
        "recommend: experiment %s, %s",
        experiment.experiment_id,
        ", ".join(f"{a.name} {len(a.users)} users on {a.version}" for a in arms),
    )
    return arms


def _exposures(recs: pd.DataFrame, experiment_id: str, week: date) -> pd.DataFrame:
    """What each user was shown in "Top picks for you": one row per (user, item) with its position."""
    return pd.DataFrame(
        {
            "user": recs["user"].astype(str).to_numpy(),
            "arm": recs["arm"].astype(str).to_numpy(),
            "experiment_id": experiment_id,
            "item_id": recs["item_id"].astype("int64").to_numpy(),
            "position": recs["rank"].astype("int64").to_numpy(),
            "week": week.isoformat(),
            "model_version": recs["model_version"].astype(str).to_numpy(),
        }
    )


def privacy_scan(ctx: StageContext, airflow_log_dirs: list[Path] | None = None) -> dict[str, Any]:
    """Scan everything this week's run published (lake after anonymize, MLflow, task logs) for personal data."""
    from recsys.privacy import require_clean, scan_for_leaks

    report = scan_for_leaks(
        ctx.settings, ctx.week, airflow_log_dirs or [], window_weeks=ctx.config.prepare.window_weeks
    )
    result = ctx.record("privacy_scan", report.to_dict())
    require_clean(report)
    return result


STAGE_FUNCTIONS: dict[str, Callable[..., dict[str, Any]]] = {
    "window": window,
    "ingest": ingest,
    "validate": validate,
    "anonymize": anonymize,
    "prepare": prepare,
    "content": content,
    "train": train,
    "evaluate": evaluate,
    "gate": gate,
    "register": register,
    "recommend": recommend,
    "privacy_scan": privacy_scan,
    "promote": promote,  # only after a manual approval: not part of the automatic sequence
    # the A/B test's (ab_readout Dag; recsys/experiment.py)
    "feedback": lambda ctx: _experiment_stage("feedback", ctx),
    "ab_readout": lambda ctx: _experiment_stage("ab_readout", ctx),
}
AB_STAGES = ("feedback", "ab_readout")
"""The A/B test's stages (the ab_readout Dag's tasks), run on the week the lists were shown in."""
KEYED_STAGES = ("window", "anonymize", "feedback")
"""Stages that pseudonymize raw input and so need the key."""


def _experiment_stage(stage: str, ctx: StageContext) -> dict[str, Any]:
    from recsys.pipeline import experiment

    return getattr(experiment, stage)(ctx)


def run_stage(stage: str, ctx: StageContext, **kwargs: Any) -> dict[str, Any]:
    from recsys.io.lakesync import synced_lake

    if stage not in STAGE_FUNCTIONS:
        raise ValueError(f"unknown stage {stage!r}; choose one of {', '.join(STAGE_FUNCTIONS)}")
    with synced_lake(ctx.settings):  # with RECSYS_LAKE_URI: pull from S3 before, push after
        started = time.perf_counter()
        result = STAGE_FUNCTIONS[stage](ctx, **kwargs)
        seconds = round(time.perf_counter() - started, 3)
        log.info("stage %s for week %s: %.2fs of compute", stage, ctx.week, seconds)
        if isinstance(result, dict) and result.get("stage") == stage:
            # the stage's own time, apart from the orchestration around it (bench/dag.py sums these)
            result = ctx.record(stage, {**result, "compute_seconds": seconds})
        return result


def run_all(ctx: StageContext, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    results = {}
    for i, stage in enumerate(STAGES, 1):
        if progress:
            progress(f"[{i}/{len(STAGES)}] {stage} ...")
        results[stage] = run_stage(stage, ctx)
    return results


# ---- summary -----------------------------------------------------------------------------------


def summary(ctx: StageContext) -> dict[str, Any]:
    """Everything a person wants to know after a run, gathered from the stage results."""
    lake, week = ctx.lake, ctx.week
    get = lambda s: lake.read_stage_result(week, s) or {}  # noqa: E731
    val, ev, gate_r, reg, rec = (
        get("validate"),
        get("evaluate"),
        get("gate"),
        get("register"),
        get("recommend"),
    )
    accounting = val.get("accounting", {})
    return {
        "week": week.isoformat(),
        "top_k": ctx.config.top_k,
        "rows": {
            kind: {k: v for k, v in acc.items() if k in ("rows_read", "rows_valid", "rows_quarantined")}
            for kind, acc in accounting.items()
        },
        "quarantine_reasons": {kind: acc.get("by_reason", {}) for kind, acc in accounting.items()},
        "metrics": {
            "candidate": ev.get("candidate"),
            "champion": ev.get("champion"),
            "baseline": ev.get("baseline"),
        },
        "models": ev.get("models"),
        "served_model": ev.get("served_model"),
        "gate": {"passed": gate_r.get("passed"), "reasons": gate_r.get("reasons", [])},
        "registered": reg,
        "recommendations": rec,
        "validation_report": val.get("report_html"),
        "window": get("prepare").get("window"),
        "window_processed": get("window").get("processed") or [],
        "window_failed": get("window").get("failed") or {},
        "privacy_scan": get("privacy_scan"),
        "k_anonymity": get("anonymize").get("k_anonymity"),
    }


def format_summary(s: dict[str, Any]) -> str:
    lines = [f"weekly_retrain summary for week {s['week']}"]
    for kind, rows in s["rows"].items():
        reasons = s["quarantine_reasons"].get(kind) or {}
        why = ", ".join(f"{r}: {n}" for r, n in sorted(reasons.items())) if reasons else "none"
        lines.append(
            f"  {kind:<7} read {rows.get('rows_read', '?'):>7}  valid {rows.get('rows_valid', '?'):>7}"
            f"  quarantined {rows.get('rows_quarantined', '?'):>5}  ({why})"
        )
    if s.get("window"):
        processed = s.get("window_processed") or []
        done = f" ({len(processed)} earlier weeks processed by this run)" if processed else ""
        lines.append(f"  {s['window'].replace('window: ', 'window      ', 1)}{done}")
        for failed_week, why in sorted((s.get("window_failed") or {}).items()):
            lines.append(f"              left out {failed_week}: {why}")
    metrics = s["metrics"]
    if metrics.get("candidate"):
        keys = [k for k in metrics["candidate"] if "@" in k and not k.startswith("coverage")]
        lines.append("  metrics     " + "  ".join(f"{k:>12}" for k in keys))
        for who in ("candidate", "champion", "baseline"):
            vals = metrics.get(who)
            if vals:
                lines.append(f"  {who:<11} " + "  ".join(f"{_fmt(vals.get(k), '.4f'):>12}" for k in keys))
            else:
                lines.append(f"  {who:<11} (none yet)")
    models = s.get("models") or {}
    if models:
        k = s["top_k"]
        lines.append(
            f"  segments    NDCG@{k} (users) of each model; served: {s.get('served_model') or 'als'}"
        )
        names = [n for n in ("popularity", "als", "content", "hybrid") if n in models]
        lines.append("              " + f"{'':<12}" + "".join(f"{n:>16}" for n in names))
        for segment in ("all", "cold_users", "warm_users", "new_items"):
            cells = []
            for name in names:
                values = models[name].get(segment) or {}
                cells.append(
                    f"{_fmt(values.get(f'ndcg@{k}'), '.4f')} ({int(values.get('users_evaluated') or 0)})"
                )
            lines.append(f"              {segment:<12}" + "".join(f"{c:>16}" for c in cells))
    g = s["gate"]
    if g.get("passed") is not None:
        lines.append(f"  gate        {'PASSED' if g['passed'] else 'REJECTED'}")
        lines.extend(f"              {r}" for r in g["reasons"])
    reg = s["registered"]
    if reg:
        aliases = ", ".join(reg.get("aliases") or []) or "no alias"
        lines.append(
            f"  registered  {reg.get('name')} version {reg.get('version')} ({reg.get('status')}; {aliases})"
        )
    rec = s["recommendations"]
    if rec.get("status") == "written":
        by = "per A/B arm (below)" if rec.get("experiment") else f"with version {rec['model_version']}"
        lines.append(f"  recommended top-{s['top_k']} lists for {rec['users']} users {by} -> {rec['path']}")
        if rec.get("rows_path"):
            counts = ", ".join(f"{kind} {n}" for kind, n in sorted((rec.get("page_rows") or {}).items()))
            lines.append(f"  page rows   {counts} -> {rec['rows_path']}")
        exp = rec.get("experiment")
        if exp:
            arms = ", ".join(
                f"{arm} {exp['arms'][arm]['users']} users on {exp['arms'][arm]['model_version']}"
                for arm in ("champion", "challenger", "holdout")
                if arm in exp["arms"]
            )
            lines.append(f"  A/B test    {exp['experiment_id']}, shown in week {exp['serving_week']}: {arms}")
    elif rec:
        lines.append(f"  recommend   skipped: {rec.get('reason')}")
    kanon = s.get("k_anonymity") or {}
    if kanon:
        lines.append(
            f"  privacy     k-anonymity k={kanon.get('k')}: {kanon.get('users_released')} user profiles "
            f"released, {kanon.get('users_suppressed')} suppressed"
        )
    scan = s.get("privacy_scan") or {}
    if scan:
        found = scan.get("findings") or []
        verdict = "clean" if not found and scan.get("clean", True) else f"{len(found)} findings: run FAILED"
        lines.append(f"  leak scan   {scan.get('files_scanned')} files scanned: {verdict}")
    if s.get("validation_report"):
        lines.append(f"  validation report: {s['validation_report']}")
    return "\n".join(lines)


def format_brief(s: dict[str, Any]) -> str:
    """One line per run, for a run over many weeks: the window, the gate's verdict, the version."""
    parts = [f"week {s['week']}"]
    if s.get("window"):
        parts.append(s["window"].split(";")[0])
    primary = (s["metrics"].get("candidate") or {}).get(f"ndcg@{s['top_k']}")
    if primary is not None:
        parts.append(f"ndcg@{s['top_k']} {_fmt(primary, '.4f')}")
    if s["gate"].get("passed") is not None:
        parts.append("gate " + ("PASSED" if s["gate"]["passed"] else "REJECTED"))
    reg = s["registered"]
    if reg:
        aliases = ", ".join(reg.get("aliases") or []) or "no alias"
        parts.append(f"version {reg.get('version')} ({aliases})")
    return f"{parts[0]}: {'; '.join(parts[1:])}" if len(parts) > 1 else parts[0]


def _fmt(value: Any, spec: str) -> str:
    return "n/a" if value is None else format(float(value), spec)


def recommendations_frame(lake: Lake, week: date) -> pd.DataFrame:
    return read_parquet(lake.partition("recommendations", week) / "recommendations.parquet")


def write_summary(ctx: StageContext) -> Path:
    return write_json(ctx.lake.partition("runs", ctx.week) / "summary.json", summary(ctx))
