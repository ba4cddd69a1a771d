"""Hyper-parameter search for ALS with a time-aware validation split of the training window.

The search never sees the holdout: :func:`tune` gets the training frame only and carves its own
validation set out of it with :func:`time_aware_split` (per user, the most recent pairs by
``last_ts``, exactly as :mod:`recsys.data.prepare` carves the holdout out of the whole window). Each grid
point is fitted with Spark ALS (:func:`recsys.training.als.train_als`) on the earlier pairs and scored with
:func:`recsys.evaluation.evaluate.score_model` on the later ones: the same ranking metrics, the same exclusion
of already-seen items, as the evaluate stage.

Why not ``pyspark.ml.tuning.TrainValidationSplit`` / ``CrossValidator``: they split rows at random
(later pairs would leak into the fit) and score with Spark evaluators on Spark's predictions, not
with our top-k ranking metrics that exclude each user's training items. The loop here is the same
idea with a time split, and each fit still runs in Spark.

Trials run in grid order (the cartesian product of ``grid`` in the order its keys and values are
given); ties on the metric go to the earlier trial. When the grid has more points than
``max_trials``, a seeded random subset of ``max_trials`` points is tried (still in grid order).
The caller refits :attr:`TuningResult.best` on the whole training window.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from recsys.data.prepare import PrepareConfig, relevant_holdout, split_by_time
from recsys.evaluation.evaluate import score_model
from recsys.evaluation.metrics import RANKING_METRICS
from recsys.io.storage import json_safe
from recsys.io.tracking import metric_key
from recsys.training.als import ALSConfig, train_als

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

_METRIC_PATTERN = re.compile(rf"^({'|'.join(RANKING_METRICS)})@([1-9][0-9]*)$")
_REQUIRED_COLUMNS = ("user", "item_id", "strength", "last_ts")


#: the wide search (36 points) of bench/train.py's quality comparison, tuned there against implicit;
#: ``{"tuning": {"grid": ...}}`` with these values runs it in the training stage
WIDE_GRID: dict[str, list[Any]] = {
    "rank": [16, 32, 64],
    "reg_param": [0.01, 0.1, 1.0, 10.0],
    "alpha": [1.0, 5.0, 20.0],
}


def _default_grid() -> dict[str, list[Any]]:
    # the regularisation that suits the data differs by an order of magnitude between MovieLens
    # (0.1: many pairs per user, Spark scales it by them) and sparse weekly logs (1.0): two fits
    return {"reg_param": [0.1, 1.0]}


class TuningConfig(BaseModel):
    """Grid search over ALSConfig fields, validated on the latest pairs of the training window."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        True,
        description="tune before training (the best config is then refit); when the window is too small "
        "to validate on, the base config is trained and the reason recorded",
    )
    grid: dict[str, list[Any]] = Field(
        default_factory=_default_grid,
        description="ALSConfig field -> values to try; every other field comes from the base config",
    )
    validation_fraction: float = Field(
        0.2, gt=0.0, lt=1.0, description="each user's most recent share of training pairs used to validate"
    )
    min_user_pairs: int = Field(5, ge=2, description="users with fewer training pairs are not validated on")
    metric: str = Field("ndcg@10", description="higher-is-better ranking metric that picks the winner")
    max_trials: int = Field(36, ge=1, le=1000, description="cap on grid points tried (seeded subset beyond)")
    seed: int = Field(0, description="seed of the subset drawn when the grid exceeds max_trials")
    every_weeks: int = Field(
        4,
        ge=1,
        le=52,
        description="search the grid (and learn the hybrid's blend) at most every N weeks: a week within N "
        "weeks of the last search with the same config refits what that search chose; 1 searches every "
        "week; a drift-triggered retrain always searches",
    )

    @field_validator("metric")
    @classmethod
    def _ranking_metric(cls, value: str) -> str:
        if not _METRIC_PATTERN.match(value):
            names = ", ".join(f"{name}@k" for name in RANKING_METRICS)
            raise ValueError(f"tuning metric {value!r} must be one of {names} (k a positive integer)")
        return value

    @field_validator("grid")
    @classmethod
    def _grid_of_als_fields(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        if not grid:
            raise ValueError("tuning grid is empty: give at least one ALSConfig field and its values")
        fields = ALSConfig.model_fields
        checked: dict[str, list[Any]] = {}
        for name, values in grid.items():
            if name not in fields:
                raise ValueError(
                    f"tuning grid field {name!r} is not an ALSConfig field; choose from {', '.join(fields)}"
                )
            if not values:
                raise ValueError(f"tuning grid field {name!r} has no values")
            coerced: list[Any] = []
            for value in values:
                try:
                    parsed = getattr(ALSConfig(**{name: value}), name)
                except ValidationError as exc:
                    msg = exc.errors()[0]["msg"]
                    raise ValueError(
                        f"tuning grid field {name!r}: value {value!r} is invalid: {msg}"
                    ) from None
                if parsed not in coerced:  # a repeated value would only repeat a trial
                    coerced.append(parsed)
            checked[name] = coerced
        return checked

    @property
    def k(self) -> int:
        """The cut-off of :attr:`metric` (10 for ``ndcg@10``)."""
        match = _METRIC_PATTERN.match(self.metric)
        assert match is not None  # guaranteed by the validator
        return int(match.group(2))

    def n_points(self) -> int:
        return math.prod(len(values) for values in self.grid.values())


@dataclass
class TuningResult:
    best: ALSConfig
    best_score: float
    trials: list[dict[str, Any]]
    metric: str
    best_trial: int = 0
    split: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (NaN and infinities become None)."""
        return json_safe(
            {
                "metric": self.metric,
                "best": self.best.model_dump(),
                "best_score": self.best_score,
                "best_trial": self.best_trial,
                "split": dict(self.split),
                "trials": self.trials,
            }
        )


# ---- split -------------------------------------------------------------------------------------
def time_aware_split(
    train: pd.DataFrame,
    validation_fraction: float = 0.2,
    min_user_pairs: int = 5,
    relevance_min_rating: float | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split the training window per user by time into (fit, validation).

    For every user with at least ``min_user_pairs`` pairs, the most recent
    ``floor(n * validation_fraction)`` pairs (at least one) by ``last_ts`` go to validation, the rest
    to fit; users with fewer pairs stay wholly in fit. Equal timestamps are ordered by item id, so a
    validation pair is never earlier than any fit pair of the same user (strictly later whenever
    timestamps differ). This is :func:`recsys.data.prepare.split_by_time`, applied to the training frame.

    Like the holdout, validation keeps only relevant pairs (watched, or rated at least
    ``relevance_min_rating``, by default the prepare stage's threshold) when the frame has the
    ``viewed`` and ``rating`` columns; the later irrelevant pairs are in neither part.
    """
    missing = [c for c in _REQUIRED_COLUMNS if c not in train.columns]
    if missing:
        raise ValueError(f"training frame lacks column(s) {', '.join(missing)} needed for a time split")
    options: dict[str, Any] = {"holdout_fraction": validation_fraction, "min_user_pairs": min_user_pairs}
    if relevance_min_rating is not None:
        options["relevance_min_rating"] = relevance_min_rating
    try:
        prep = PrepareConfig(**options)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ValueError(f"time split: {first['loc'][0]}: {first['msg']}") from None
    fit, validation = split_by_time(train, prep)
    if {"viewed", "rating"} <= set(validation.columns):
        validation = relevant_holdout(validation, prep).reset_index(drop=True)
    return fit, validation


# ---- search ------------------------------------------------------------------------------------
def grid_points(config: TuningConfig) -> list[dict[str, Any]]:
    """The overrides tried, in grid order (at most ``max_trials``: a seeded subset beyond that)."""
    keys = list(config.grid)
    points = [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*config.grid.values())]
    if len(points) > config.max_trials:
        keep = sorted(random.Random(config.seed).sample(range(len(points)), config.max_trials))
        log.warning(
            "tuning grid has %d points, above max_trials=%d: trying a seeded subset of %d",
            len(points),
            config.max_trials,
            config.max_trials,
        )
        points = [points[i] for i in keep]
    return points


def tune(
    train: pd.DataFrame,
    base: ALSConfig,
    config: TuningConfig,
    spark: SparkSession,
    k: int = 10,
    catalog_size: int | None = None,
    log_to_mlflow: bool = True,
    relevance_min_rating: float | None = None,
) -> TuningResult:
    """Try every grid point on a time-aware split of ``train`` and return the best ALSConfig.

    ``k`` is the list length scored and must match the cut-off of ``config.metric``.
    ``catalog_size`` (for coverage) defaults to the number of distinct items in ``train``. When
    ``log_to_mlflow`` and an MLflow run is active, each trial is logged as a nested run
    ``trial-<i>`` (params ``als.*``, metrics with ``@`` spelled ``_at_``), and the parent run gets
    ``tuning/result.json`` and ``tuning_best_<metric>``. ``relevance_min_rating`` decides which
    validation pairs count as relevant (pass the prepare stage's; None: its default).

    A trial whose fit raises ValueError (e.g. explicit mode without ratings) is recorded with its
    error and a NaN score; other errors propagate. Raises ValueError when no user can be validated
    on or when no trial produced a score.
    """
    if config.k != k:
        raise ValueError(f"tuning metric {config.metric!r} is measured at k={config.k}, but k={k} was given")
    fit, validation = time_aware_split(
        train, config.validation_fraction, config.min_user_pairs, relevance_min_rating
    )
    if validation.empty:
        raise ValueError(
            f"no validation pairs: no user has {config.min_user_pairs}+ training pairs with a relevant "
            "latest share; lower tuning.min_user_pairs or disable tuning"
        )
    if catalog_size is None:
        catalog_size = int(train["item_id"].nunique())
    split = {
        "fit_pairs": len(fit),
        "validation_pairs": len(validation),
        "validation_users": int(validation["user"].nunique()),
    }
    points = grid_points(config)
    log.info(
        "tuning %d trial(s) on %d fit / %d validation pairs (%d users), picking by %s",
        len(points),
        split["fit_pairs"],
        split["validation_pairs"],
        split["validation_users"],
        config.metric,
    )
    parent = _active_run() if log_to_mlflow else None
    trials: list[dict[str, Any]] = []
    best_index, best_score = -1, -math.inf
    for i, overrides in enumerate(points, start=1):
        als = ALSConfig.model_validate({**base.model_dump(), **overrides})
        started = time.perf_counter()
        trial: dict[str, Any] = {"trial": i, "params": dict(overrides)}
        try:
            model = train_als(fit, als, spark)
        except ValueError as exc:
            metrics: dict[str, float] = {}
            trial["error"] = str(exc)
        else:
            metrics = score_model(model, fit, validation, k, catalog_size)
        score = float(metrics.get(config.metric, math.nan))
        trial.update(metrics=metrics, score=score, seconds=round(time.perf_counter() - started, 3))
        if parent is not None:
            trial["run_id"] = _log_trial(parent, i, als, overrides, trial, metric_key)
        trials.append(trial)
        shown = " ".join(f"{key}={value}" for key, value in overrides.items())
        if "error" in trial:
            log.info("trial %d/%d %s: failed: %s", i, len(points), shown, trial["error"])
        else:
            log.info(
                "trial %d/%d %s: %s=%.4f (%.1fs)",
                i,
                len(points),
                shown,
                config.metric,
                score,
                trial["seconds"],
            )
        if math.isfinite(score) and score > best_score:  # strict: ties stay with the earlier trial
            best_index, best_score = i - 1, score
    if best_index < 0:
        raise ValueError(f"no tuning trial produced a finite {config.metric}: {trials[0].get('error', '')}")
    best = ALSConfig.model_validate({**base.model_dump(), **points[best_index]})
    result = TuningResult(
        best=best,
        best_score=best_score,
        trials=trials,
        metric=config.metric,
        best_trial=best_index + 1,
        split=split,
    )
    log.info(
        "tuning best: trial %d %s with %s=%.4f", best_index + 1, points[best_index], config.metric, best_score
    )
    if parent is not None:
        import mlflow  # deferred: mlflow is heavy to import

        mlflow.log_dict(result.to_dict(), "tuning/result.json")
        mlflow.log_metric(f"tuning_best_{metric_key(config.metric)}", best_score)
    return result


def _active_run() -> Any:
    import mlflow  # deferred: mlflow is heavy to import

    return mlflow.active_run()


def _log_trial(
    parent: Any,
    index: int,
    als: ALSConfig,
    overrides: dict[str, Any],
    trial: dict[str, Any],
    metric_key: Any,
) -> str:
    import mlflow  # deferred: mlflow is heavy to import

    with mlflow.start_run(
        run_name=f"trial-{index}", nested=True, experiment_id=parent.info.experiment_id
    ) as run:
        mlflow.set_tags({"tuning_trial": str(index), "tuned": ",".join(overrides)})
        mlflow.log_params({f"als.{key}": value for key, value in als.model_dump().items()})
        values = {metric_key(name): v for name, v in trial["metrics"].items() if math.isfinite(v)}
        values["trial_seconds"] = trial["seconds"]
        mlflow.log_metrics(values)
        if "error" in trial:
            mlflow.set_tag("error", trial["error"][:5000])
    return run.info.run_id
