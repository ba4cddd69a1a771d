"""Training-run reuse: a retry, re-run or backfill of a week trains nothing already trained.

The train stage tags its MLflow run with the week, the digest of the training pairs
(``train_digest``, from prepare) and the digest of the config that decides the fit
(:func:`training_config_digest`); :func:`find_training_run` finds a finished run with the same three
and the train stage returns it instead of training (and registering) a duplicate.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from recsys.core.errors import RecsysError
from recsys.pipeline.config import PipelineConfig
from recsys.pipeline.context import StageContext
from recsys.pipeline.results import TrainResult
from recsys.training.als import ALSConfig


class TrainingInProgress(RecsysError):
    """The week's training run on the same data and config is still running (in another process)."""

    retryable = True


def training_config_digest(config: PipelineConfig) -> str:
    """Digest of everything besides the data that decides what ``train`` fits."""
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


def find_training_run(ctx: StageContext, train_digest: str, config_digest: str) -> TrainResult | None:
    """The finished training run of this week on the same data and config, if there is one.

    This is what makes a retry, a re-run or a backfill of an interval reuse its run (and so its
    model version) instead of training and registering a duplicate: the interval is recognised by
    its tags (week, train_digest, config_digest).
    """
    import mlflow  # deferred: mlflow takes seconds to import; only stages that log load it

    experiment = mlflow.get_experiment_by_name(ctx.settings.mlflow_experiment)
    if experiment is None:
        return None
    same = (
        f"tags.week = '{ctx.week.isoformat()}' and tags.train_digest = '{train_digest}' "
        f"and tags.config_digest = '{config_digest}'"
    )
    client = mlflow.MlflowClient()
    running = client.search_runs(
        [experiment.experiment_id], filter_string=f"{same} and attributes.status = 'RUNNING'", max_results=1
    )
    if running:
        # under the week's lease a run left RUNNING by a dead process is marked FAILED before any stage
        # (recsys.pipeline.leases); one still RUNNING is being trained right now: never a duplicate
        raise TrainingInProgress(
            f"week {ctx.week.isoformat()} is being trained on the same data and config by MLflow run "
            f"{running[0].info.run_id} (started {_started(running[0])}); wait for it to finish and re-run"
        )
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"{same} and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time ASC"],
        max_results=1,
    )
    if not runs or "model_uri" not in runs[0].data.tags:
        return None
    run = runs[0]
    als = ALSConfig.model_validate(
        {  # MLflow keeps params as strings: an unset option (None) comes back as "None"
            k.removeprefix("als."): v
            for k, v in run.data.params.items()
            if k.startswith("als.") and v != "None"
        }
    )
    metrics = run.data.metrics
    return TrainResult(
        week=ctx.week.isoformat(),
        run_id=run.info.run_id,
        model_uri=run.data.tags["model_uri"],
        fit_seconds=metrics.get("fit_seconds"),
        rank=als.rank,
        users=int(metrics.get("train_users", 0)),
        items=int(metrics.get("train_items", 0)),
        als=als.model_dump(),
        tuning=None,
        served_model=run.data.params.get("served_model", "als"),
        hybrid=_logged_weights(run.data.params),
        reused=True,
    )


def _started(run: Any) -> str:
    return datetime.fromtimestamp(run.info.start_time / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


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
