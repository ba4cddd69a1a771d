"""Training-run reuse: a retry, re-run or backfill of a week trains nothing already trained.

The train stage tags its MLflow run with the week, the digest of the training pairs
(``train_digest``, from prepare) and the digest of the config that decides the fit
(:func:`training_config_digest`); :func:`find_training_run` finds a finished run with the same three
and the train stage returns it instead of training (and registering) a duplicate.

Model-selection reuse: the search of a week's train run (the tuning grid, the hybrid's learned blend)
is the dearest part of training (at the 10M-pair shape, three of its four ALS fits). Its choice is
recorded on the run (:data:`SELECTION_TAG`, with the week and :func:`selection_digest`), and
:func:`find_selection` gives the weeks after it, up to ``tuning.every_weeks``, what it chose: they
refit that config on their own window instead of searching again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from recsys.core.errors import RecsysError
from recsys.models.hybrid import BlendWeights
from recsys.pipeline.config import PipelineConfig
from recsys.pipeline.context import StageContext
from recsys.pipeline.results import TrainResult
from recsys.training.als import ALSConfig

log = logging.getLogger(__name__)


class TrainingInProgress(RecsysError):
    """The week's training run on the same data and config is still running (in another process)."""

    retryable = True


def training_config_digest(config: PipelineConfig) -> str:
    """Digest of everything besides the data that decides what ``train`` fits."""
    return _training_digest(config, set())


def _training_digest(config: PipelineConfig, tuning_left_out: set[str]) -> str:
    relevant = {
        "als": config.als.model_dump(),
        "tuning": config.tuning.model_dump(exclude=tuning_left_out),
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


# ---- model selection ---------------------------------------------------------------------------
SELECTION_TAG = "model_selection"
"""Train-run tag: what the search chose (JSON of :meth:`Selection.to_tag`), on the run that searched and
on every run that refitted its choice."""
SELECTION_WEEK_TAG = "selection_week"
SELECTION_DIGEST_TAG = "selection_digest"


@dataclass(frozen=True)
class Selection:
    """What one week's search chose: the ALS config (tuned, or the base config when tuning is off) and
    the hybrid's warm and cold blend weights (None: no blend was learned)."""

    week: date  # the week whose train run searched
    run_id: str  # that run
    als: ALSConfig
    blend: dict[str, BlendWeights] | None = None

    def to_tag(self) -> str:
        return json.dumps(
            {
                "week": self.week.isoformat(),
                "run_id": self.run_id,
                "als": self.als.model_dump(),
                "blend": {k: v.model_dump() for k, v in self.blend.items()} if self.blend else None,
            },
            sort_keys=True,
        )

    @classmethod
    def from_tag(cls, text: str) -> Selection | None:
        """The selection a tag holds; None for a tag that is not one (edited by hand, or an older
        layout): the week then searches again."""
        try:
            data = json.loads(text)
            blend = data.get("blend")
            return cls(
                week=date.fromisoformat(data["week"]),
                run_id=str(data["run_id"]),
                als=ALSConfig.model_validate(data["als"]),
                blend={k: BlendWeights.model_validate(blend[k]) for k in ("warm", "cold")} if blend else None,
            )
        except (ValueError, KeyError, TypeError, AttributeError, ValidationError):
            return None


def selection_digest(config: PipelineConfig) -> str:
    """Digest of the config a search depends on: what :func:`training_config_digest` covers but the
    search's cadence (``tuning.every_weeks``), so a changed grid, base config, blend grid or content
    model searches again and a changed cadence does not."""
    return _training_digest(config, {"every_weeks"})


def find_selection(ctx: StageContext, digest: str) -> Selection | None:
    """The latest search on the same config (``digest``: :func:`selection_digest`) in this week or the
    ``tuning.every_weeks - 1`` weeks before it, as a finished train run recorded it; None when there is
    none (or ``every_weeks`` is 1): the week searches itself.

    Only earlier or equal weeks count, so a week's choice does not depend on weeks run after it (a
    backfill of an old week finds what its scheduled run found, if the lake's runs are the same)."""
    import mlflow  # deferred: mlflow takes seconds to import; only stages that log load it

    every = ctx.config.tuning.every_weeks
    experiment = mlflow.get_experiment_by_name(ctx.settings.mlflow_experiment)
    if every <= 1 or experiment is None:
        return None
    client = mlflow.MlflowClient()
    for back in range(every):
        week = ctx.week - timedelta(weeks=back)
        runs = client.search_runs(
            [experiment.experiment_id],
            filter_string=(
                f"tags.{SELECTION_WEEK_TAG} = '{week.isoformat()}' and tags.{SELECTION_DIGEST_TAG} = '{digest}' "
                "and attributes.status = 'FINISHED'"
            ),
            order_by=["attributes.start_time DESC"],
            max_results=20,
        )
        for run in runs:
            found = Selection.from_tag(run.data.tags.get(SELECTION_TAG, ""))
            if "model_uri" in run.data.tags and found is not None and found.week == week:
                return found
    return None


def earlier_selection(ctx: StageContext) -> Selection | None:
    """The search of an earlier week (within ``tuning.every_weeks``, same config) this week refits, or
    None: this week searches (a drift-triggered retrain always does: the data moved)."""
    if ctx.plan is not None and ctx.plan.trigger == "drift":
        log.info("a drift-triggered retrain searches its hyper-parameters again")
        return None
    found = find_selection(ctx, selection_digest(ctx.config))
    if found is None:
        if ctx.config.tuning.every_weeks > 1:
            log.info(
                "no search on this config in the last %d week(s): week %s searches",
                ctx.config.tuning.every_weeks,
                ctx.week,
            )
        return None
    if ctx.config.served_model == "hybrid" and ctx.config.hybrid.learn and found.blend is None:
        return None  # that search learned no blend this week needs
    log.info(
        "refitting the choice of week %s's search (run %s; searched every %d weeks): %s",
        found.week,
        found.run_id,
        ctx.config.tuning.every_weeks,
        found.als.model_dump(),
    )
    return found
