"""The drift monitor: is the newest data far from what the champion was trained on?

The ``drift_monitor`` DAG (daily) calls :func:`refresh` then :func:`check`; ``recsys drift-check``
does the same without Airflow.

1. :func:`refresh` brings the **week in progress** into the lake: it runs the pipeline's own ingest,
   validate and anonymize stages on the raw events landed so far (validation's processing time is
   the check time, and its volume checks scale to the elapsed share of the week). The scheduled
   ``weekly_retrain`` run processes the whole week again when it ends.
2. :func:`check` compares the **recent window** (the newest anonymized week newer than the
   champion's training week, up to the check time) with the **reference window** (the same span of
   the champion's training week, its ``week`` tag; a span of equal length, so per-user activity is
   comparable), using :func:`recsys.evaluation.drift.detect_drift`: item popularity and user activity PSI,
   Jensen-Shannon distance, a KS test on ratings, the shares of interactions on items / by users the
   champion has never seen, and the champion's NDCG@k on the recent interactions against its
   training-time holdout NDCG@k (the version's tag).
3. A drifted check asks for an **early retrain** unless one was already asked for within
   ``cooldown_hours`` (recorded in MLflow), or a ``weekly_retrain`` run is queued or running.

Every check is one MLflow run in experiment ``<experiment>_drift``: the figures as metrics, the
decision and reasons as tags, the full report as ``drift/check.json``, and a chart of the drift
metrics over the checks so far as ``drift/history.html``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd

from recsys.core.intervals import week_bounds, week_start_of
from recsys.core.runplan import RunPlan
from recsys.core.settings import Settings
from recsys.data.prepare import relevant_holdout, to_pairs
from recsys.evaluation.drift import DriftConfig, DriftReport, detect_drift, interactions
from recsys.evaluation.evaluate import score_model
from recsys.io.storage import Lake, json_safe, read_parquet
from recsys.io.tracking import configure, metric_key
from recsys.pipeline.config import PipelineConfig
from recsys.pipeline.context import StageContext
from recsys.pipeline.results import AnonymizeResult, ValidateResult
from recsys.pipeline.runner import run_stage
from recsys.promotion.registry import TAG_WEEK, champion_version, load_factor_model
from recsys.reporting.mlflow_links import DRIFT_HISTORY_ARTIFACT
from recsys.reporting.model_report import drift_history_html

log = logging.getLogger(__name__)

#: decisions of a check; only RETRAIN triggers weekly_retrain
RETRAIN = "retrain"
DECISIONS = (RETRAIN, "no_drift", "skipped", "cooldown", "retrain_running", "alert_only")


@dataclass
class CheckResult:
    """What one check found and decided; ``conf`` is what an early retrain run receives."""

    checked_at: datetime
    decision: str
    message: str
    report: DriftReport | None = None
    champion_version: str | None = None
    reference_week: date | None = None
    recent_week: date | None = None
    window: dict[str, str] = field(default_factory=dict)
    mlflow_run_id: str | None = None

    @property
    def trigger(self) -> bool:
        return self.decision == RETRAIN

    def retrain_conf(self) -> dict[str, Any]:
        """The ``weekly_retrain`` conf of the early retrain this check asks for."""
        if not self.trigger or self.recent_week is None:
            return {}
        _, end = week_bounds(self.recent_week)
        through = self.checked_at if self.checked_at < end else None
        return json_safe(
            {
                "trigger": "drift",
                "week": self.recent_week.isoformat(),
                "through": through.isoformat() if through else None,
                "reasons": list(self.report.reasons) if self.report else [],
                "figures": dict(self.report.metrics) if self.report else {},
                "champion_version": self.champion_version,
                "drift_check_run_id": self.mlflow_run_id,
            }
        )

    def to_dict(self) -> dict[str, Any]:
        return json_safe(
            {
                "checked_at": self.checked_at.isoformat(),
                "decision": self.decision,
                "trigger": self.trigger,
                "message": self.message,
                "champion_version": self.champion_version,
                "reference_week": self.reference_week.isoformat() if self.reference_week else None,
                "recent_week": self.recent_week.isoformat() if self.recent_week else None,
                "window": self.window,
                "report": self.report.to_dict() if self.report else None,
                "mlflow_run_id": self.mlflow_run_id,
                "conf": self.retrain_conf(),
            }
        )


def _utc(moment: datetime) -> datetime:
    """A plain aware UTC ``datetime`` (Airflow hands out pendulum DateTimes, which pandas and Great
    Expectations do not compare with their timestamps)."""
    plain = datetime.fromisoformat(moment.isoformat())
    return plain.replace(tzinfo=UTC) if plain.tzinfo is None else plain.astimezone(UTC)


# ---- 1. refresh --------------------------------------------------------------------------------


def refresh(
    now: datetime,
    settings: Settings | None = None,
    config: Any = None,
    key: bytes | None = None,
) -> dict[str, Any]:
    """Ingest, validate and anonymize the week in progress at ``now`` (the raw events landed so far).

    Returns what was done, or ``{"status": "skipped", "reason": ...}`` when the week has no raw
    events yet. Raises the stages' errors (a bad batch fails the refresh, as it fails a retrain).
    """

    now = _utc(now)
    week = week_start_of(now)
    start, _ = week_bounds(week)
    settings = settings or Settings.from_env()
    return _refresh(now, week, start, settings, config, key)


def _refresh(
    now: datetime, week: date, start: datetime, settings: Settings, config: Any, key: bytes | None
) -> dict[str, Any]:
    lake = Lake.from_settings(settings)
    if now <= start or not lake.raw_files("events", week):
        return {
            "status": "skipped",
            "week": week.isoformat(),
            "reason": f"no raw events landed yet for the week in progress ({week.isoformat()})",
        }
    plan = RunPlan(week=week, trigger="drift_monitor", run_type="monitor", through=now)
    ctx = StageContext.create(week, settings=settings, config=config, key=key, plan=plan)
    results = {stage: run_stage(stage, ctx) for stage in ("ingest", "validate", "anonymize")}
    validated, anonymized = results["validate"], results["anonymize"]
    assert isinstance(validated, ValidateResult) and isinstance(anonymized, AnonymizeResult)
    accounting = validated.accounting.get("events", {})
    return {
        "status": "refreshed",
        "week": week.isoformat(),
        "through": now.isoformat(),
        "events_read": accounting.get("rows_read"),
        "events_valid": accounting.get("rows_valid"),
        "events_quarantined": accounting.get("rows_quarantined"),
        "events_anonymized": anonymized.events,
    }


# ---- 2. check ----------------------------------------------------------------------------------


def _events_before(events: pd.DataFrame, end: datetime) -> pd.DataFrame:
    ts = pd.to_datetime(events["ts"], utc=True)
    return events[ts < pd.Timestamp(end)].reset_index(drop=True)


def _tag_time(tags: dict[str, str], name: str) -> datetime | None:
    try:
        return _utc(datetime.fromisoformat(tags[name])) if tags.get(name) else None
    except ValueError:
        return None


def champion_quality_now(
    model: Any,
    champion_train: pd.DataFrame,
    recent: pd.DataFrame,
    k: int,
    catalog_size: int,
    prepare_config: Any,
) -> float:
    """NDCG@k of the champion on the recent interactions of users it knows, excluding what it trained on.

    The recent window plays the holdout: each known user's relevant (watched, or rated at least
    ``relevance_min_rating``) items there that were not in the user's training pairs. NaN when no
    such pair exists.
    """
    pairs = to_pairs(interactions(recent))
    pairs = pairs[pairs["strength"] > 0]
    pairs = relevant_holdout(pairs, prepare_config)
    pairs = pairs[pairs["user"].isin(set(model.users))]
    if not champion_train.empty:
        seen = champion_train[["user", "item_id"]].drop_duplicates().assign(_seen=True)
        pairs = pairs.merge(seen, on=["user", "item_id"], how="left")
        pairs = pairs[pairs["_seen"].isna()].drop(columns="_seen")
    if pairs.empty:
        return math.nan
    scored = score_model(model, champion_train, pairs, k, catalog_size)
    return float(scored.get(f"ndcg@{k}", math.nan))


def last_trigger(settings: Settings, before: datetime, hours: float) -> datetime | None:
    """When an early retrain was last asked for within ``hours`` before ``before`` (from MLflow)."""
    import mlflow  # deferred: mlflow takes seconds to import; only a check or its history loads it

    experiment = mlflow.get_experiment_by_name(drift_experiment(settings))
    if experiment is None:
        return None
    low = (before - timedelta(hours=hours)).timestamp()
    runs = mlflow.MlflowClient().search_runs(
        [experiment.experiment_id],
        filter_string=(
            f"metrics.retrain_triggered = 1 and metrics.checked_at >= {low} "
            f"and metrics.checked_at <= {before.timestamp()}"
        ),
        order_by=["metrics.checked_at DESC"],
        max_results=1,
    )
    if not runs:
        return None
    return datetime.fromtimestamp(runs[0].data.metrics["checked_at"], tz=UTC)


def drift_experiment(settings: Settings) -> str:
    return f"{settings.mlflow_experiment}_drift"


def check(
    now: datetime,
    settings: Settings | None = None,
    config: Any = None,
    retrain_running: bool = False,
) -> CheckResult:
    """One drift check at ``now`` (see the module docstring); logged to MLflow, returned."""
    now = _utc(now)
    settings = settings or Settings.from_env()
    config = config or PipelineConfig.load(settings.config_file)
    return _check(now, settings, config, retrain_running)


def _check(now: datetime, settings: Settings, config: Any, retrain_running: bool) -> CheckResult:
    drift: DriftConfig = config.drift
    lake = Lake.from_settings(settings)
    client = configure(settings)
    result = CheckResult(checked_at=now, decision="skipped", message="")

    champ = champion_version(client, settings.model_name)
    newest = [w for w in lake.weeks("anonymized", "events") if w <= week_start_of(now)]
    if champ is None:
        result.message = "no model holds the champion alias yet: nothing to compare with"
    elif not (champ.tags or {}).get(TAG_WEEK):
        result.message = (
            f"champion version {champ.version} has no '{TAG_WEEK}' tag: its training week is unknown"
        )
    elif not newest:
        result.message = f"no anonymized events in {lake.root / 'anonymized'} up to {now.isoformat()}"
    else:
        result.champion_version = str(champ.version)
        result.reference_week = date.fromisoformat(champ.tags[TAG_WEEK])
        result.recent_week = max(newest)
        if result.recent_week <= result.reference_week:
            result.message = (
                f"no interactions newer than the champion's training week "
                f"({result.reference_week.isoformat()}; newest anonymized week {result.recent_week.isoformat()})"
            )
        else:
            _compare(result, champ, lake, config, now, load_factor_model, settings)
            result.decision, result.message = _decide(result.report, drift, retrain_running, settings, now)
    if result.decision == "skipped" and result.report is not None and result.report.skipped:
        result.message = result.report.skipped
    log_check(result, settings, drift)
    log.info("drift check at %s: %s (%s)", now.isoformat(), result.decision, result.message)
    return result


def _compare(
    result: CheckResult,
    champ: Any,
    lake: Lake,
    config: Any,
    now: datetime,
    load_factor_model: Any,
    settings: Settings,
) -> None:
    """Fill ``result.report``: the recent window against the same span of the champion's week."""
    assert result.recent_week is not None and result.reference_week is not None
    recent_start, recent_end = week_bounds(result.recent_week)
    ref_start, _ = week_bounds(result.reference_week)
    span = min(now, recent_end) - recent_start
    champion_through = _tag_time(champ.tags, "data_through")  # an early retrain trained on part of its week
    if champion_through is not None:
        span = min(span, champion_through - ref_start)
    recent = _events_before(
        read_parquet(lake.data_file("anonymized", "events", result.recent_week)), recent_start + span
    )
    ref_file = lake.data_file("anonymized", "events", result.reference_week)
    reference = (
        _events_before(read_parquet(ref_file), ref_start + span) if ref_file.exists() else recent.iloc[0:0]
    )
    result.window = {
        "recent": f"{recent_start.isoformat()} .. {(recent_start + span).isoformat()}",
        "reference": f"{ref_start.isoformat()} .. {(ref_start + span).isoformat()}",
    }
    model = load_factor_model(f"models:/{settings.model_name}/{champ.version}")
    k = config.top_k
    train_file = lake.partition("prepared", result.reference_week) / "train.parquet"
    champion_train = (
        read_parquet(train_file) if train_file.exists() else pd.DataFrame(columns=["user", "item_id"])
    )
    items_file = lake.data_file("anonymized", "items", result.recent_week)
    catalog_size = len(read_parquet(items_file)) if items_file.exists() else len(model.items)
    quality_now = champion_quality_now(model, champion_train, recent, k, catalog_size, config.prepare)
    tag = (champ.tags or {}).get(metric_key(f"ndcg@{k}"))
    try:
        quality_at_training = float(tag) if tag not in (None, "", "n/a") else None
    except ValueError:
        quality_at_training = None
    result.report = detect_drift(
        reference,
        recent,
        config.drift.thresholds,
        known_items=set(int(i) for i in model.items),
        known_users=set(str(u) for u in model.users),
        quality_now=quality_now,
        quality_at_training=quality_at_training,
    )
    result.report.metrics["quality_now"] = quality_now
    result.report.metrics["quality_at_training"] = (
        quality_at_training if quality_at_training is not None else math.nan
    )


def _decide(
    report: DriftReport | None, drift: DriftConfig, retrain_running: bool, settings: Settings, now: datetime
) -> tuple[str, str]:
    if report is None or report.skipped:
        return "skipped", (report.skipped if report else "no report")
    if not report.drifted:
        return "no_drift", "no check above its threshold"
    reasons = "; ".join(report.reasons)
    if not drift.trigger_retrain:
        return "alert_only", f"drift ({reasons}); early retrains are off (drift.trigger_retrain = false)"
    if retrain_running:
        return "retrain_running", f"drift ({reasons}); a weekly_retrain run is already queued or running"
    last = last_trigger(settings, now, drift.cooldown_hours)
    if last is not None:
        return "cooldown", (
            f"drift ({reasons}); an early retrain was already asked for at {last.isoformat()} "
            f"(cooldown {drift.cooldown_hours:g} h)"
        )
    return RETRAIN, f"drift: {reasons}"


def log_check(result: CheckResult, settings: Settings, drift: DriftConfig) -> None:
    """Log one check as an MLflow run of the drift experiment (module docstring); sets its run id."""
    import mlflow  # deferred: mlflow takes seconds to import; only a check or its history loads it

    configure(settings, experiment=drift_experiment(settings))
    with mlflow.start_run(run_name=f"drift-{result.checked_at.strftime('%Y-%m-%dT%H%M')}") as run:
        result.mlflow_run_id = run.info.run_id
        tags = {
            "decision": result.decision,
            "message": result.message[:5000],
            "champion_version": result.champion_version or "",
            "reference_week": result.reference_week.isoformat() if result.reference_week else "",
            "recent_week": result.recent_week.isoformat() if result.recent_week else "",
            "checked_at": result.checked_at.isoformat(),
        }
        mlflow.set_tags(tags)
        metrics: dict[str, float] = {
            "checked_at": result.checked_at.timestamp(),
            "retrain_triggered": 1.0 if result.trigger else 0.0,
        }
        if result.report is not None:
            metrics["drifted"] = 1.0 if result.report.drifted else 0.0
            for name, value in result.report.metrics.items():
                if value is not None and math.isfinite(value):
                    metrics[metric_key(name)] = float(value)
            for name, drifted in result.report.checks.items():
                metrics[f"drift_{name}"] = 1.0 if drifted else 0.0
        step = int(result.checked_at.timestamp() // 86400)  # the check's day: metrics over time
        mlflow.log_metrics(metrics, step=step)
        mlflow.log_params({f"threshold.{k}": v for k, v in drift.thresholds.model_dump().items()})
        mlflow.log_dict(result.to_dict(), "drift/check.json")
        history = drift_history(settings)
        if not history.empty:
            mlflow.log_text(drift_history_html(history, drift.thresholds), DRIFT_HISTORY_ARTIFACT)


def drift_history(settings: Settings, max_results: int = 500) -> pd.DataFrame:
    """The drift metrics of past checks (oldest first), from the drift experiment's runs."""
    import mlflow  # deferred: mlflow takes seconds to import; only a check or its history loads it

    experiment = mlflow.get_experiment_by_name(drift_experiment(settings))
    if experiment is None:
        return pd.DataFrame()
    runs = mlflow.MlflowClient().search_runs(
        [experiment.experiment_id], order_by=["metrics.checked_at DESC"], max_results=max_results
    )
    rows = []
    for run in runs:
        m = run.data.metrics
        if "checked_at" not in m:
            continue
        rows.append(
            {
                "checked_at": datetime.fromtimestamp(m["checked_at"], tz=UTC),
                "decision": run.data.tags.get("decision", ""),
                **{k: v for k, v in m.items() if k not in ("checked_at",)},
            }
        )
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows).sort_values("checked_at").reset_index(drop=True)
