"""A/B test configuration and assignment: the arms and metrics an experiment may have, its
:class:`ExperimentConfig`, and which arm each user gets (:func:`assign`).

The readout that uses them is :mod:`recsys.experiments.abtest`.

Assignment (:func:`assign`)
    ``u = int.from_bytes(sha256(f"{experiment_id}:{salt}:{user}")[:8], "big") / 2**64``, uniform in
    [0, 1); the arms, **sorted by name** (so the order of ``arms`` in the config never matters), take
    consecutive intervals of [0, 1) as long as their shares, and the user gets the arm whose interval
    holds ``u``. No state, no randomness: the same user gets the same arm on every call, every week
    and on every machine for as long as the experiment id and salt stay the same; a new salt (or a
    new experiment id) reshuffles everyone independently of the old split. Changing the shares of a
    running experiment moves users between arms: start a new experiment (or salt) instead.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from recsys.core.aliases import CHALLENGER, CHAMPION
from recsys.core.errors import RecsysError

HOLDOUT = "holdout"
ARM_NAMES = (CHAMPION, CHALLENGER, HOLDOUT)
"""The arms an experiment may have (``holdout`` is optional and served the popularity list)."""

METRICS = ("ctr", "plays_per_user", "watch_seconds_per_user", "rec_view_share", "churn")
"""Every metric of a readout, in report order."""
LOWER_IS_BETTER = frozenset({"churn"})
"""Metrics where a decrease is an improvement."""
RATIO_METRICS: dict[str, tuple[str, str]] = {
    "ctr": ("clicks", "exposures"),
    "rec_view_share": ("rec_plays", "plays"),
}
"""Ratio metrics: (numerator, denominator) columns of the per-user table."""
MEAN_METRICS: dict[str, str] = {
    "plays_per_user": "plays",
    "watch_seconds_per_user": "watch_seconds",
    "churn": "churned",
}
"""Mean metrics: their column of the per-user table."""
USER_COLUMNS = ("arm", "exposures", "clicks", "plays", "rec_plays", "watch_seconds", "churned")
"""Columns of the per-user table (:func:`~recsys.experiments.ab_users.user_metrics`,
:func:`~recsys.experiments.abtest.readout_from_users`)."""
EXPOSURE_COLUMNS = ("user", "arm", "experiment_id", "item_id", "position", "week")
FEEDBACK_COLUMNS = ("user", "item_id", "event", "watch_seconds", "from_recommendation", "week")
ACTIVE_COLUMNS = ("user", "week")
EVENTS = ("click", "play")

_EXPERIMENT_ID = re.compile(r"^[A-Za-z0-9_.-]+$")
_SHARE_TOLERANCE = 1e-9


class ExperimentDataError(RecsysError, ValueError):
    """The exposures, feedback or activity frames cannot be read out as they are (one-line reason)."""


# ---- configuration -------------------------------------------------------------------------------


class ExperimentConfig(BaseModel):
    """One champion-vs-challenger experiment: who gets which arm, and how the readout decides."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    experiment_id: str = Field(
        description="name of the experiment, part of the assignment hash; letters, digits, '_', '.', '-'"
    )
    salt: str = Field(
        description="salt of the assignment hash (not a secret); a new salt reshuffles every user"
    )
    arms: dict[str, float] = Field(
        default_factory=lambda: {CHAMPION: 0.5, CHALLENGER: 0.5},
        description="share of users per arm: 'champion' and 'challenger', optionally 'holdout' "
        "(served popularity); each > 0, summing to 1",
    )
    alpha: float = Field(
        default=0.05, gt=0, lt=1, allow_inf_nan=False, description="significance level (family-wise, Holm)"
    )
    min_users_per_arm: int = Field(
        default=200, ge=2, description="exposed users champion and challenger each need for a decision"
    )
    primary_metric: str = Field(
        default="plays_per_user", description=f"the metric the decision is about, one of {', '.join(METRICS)}"
    )
    srm_alpha: float = Field(
        default=0.001,
        gt=0,
        lt=1,
        allow_inf_nan=False,
        description="the sample-ratio check flags a split whose chi-square p-value is below this",
    )
    churn_weeks: int = Field(
        default=2, ge=1, description="a user has churned with no activity in this many last weeks"
    )
    min_weeks: int = Field(
        default=1,
        ge=1,
        description="weeks a challenger is served before a readout may move an alias (promotion mode ab)",
    )
    max_weeks: int = Field(
        default=4,
        ge=1,
        description="weeks after which a still inconclusive test ends: the challenger is retired, "
        "champion stays (promotion mode ab)",
    )

    @model_validator(mode="after")
    def _weeks_in_order(self) -> ExperimentConfig:
        if self.max_weeks < self.min_weeks:
            raise ValueError(f"max_weeks ({self.max_weeks}) must be >= min_weeks ({self.min_weeks})")
        return self

    @field_validator("experiment_id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        if not value:
            raise ValueError("experiment_id must not be empty")
        if not _EXPERIMENT_ID.match(value):
            raise ValueError(f"experiment_id {value!r} may only contain letters, digits, '_', '.' and '-'")
        return value

    @field_validator("salt")
    @classmethod
    def _non_empty_salt(cls, value: str) -> str:
        if not value:
            raise ValueError("salt must not be empty (it keeps this experiment's split independent)")
        return value

    @field_validator("arms")
    @classmethod
    def _valid_arms(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(ARM_NAMES))
        if unknown:
            raise ValueError(
                f"unknown arm(s) {', '.join(map(repr, unknown))}: arms are {', '.join(ARM_NAMES)}"
            )
        missing = [name for name in (CHAMPION, CHALLENGER) if name not in value]
        if missing:
            raise ValueError(f"arms must contain 'champion' and 'challenger'; missing {', '.join(missing)}")
        bad = {name: share for name, share in value.items() if not (math.isfinite(share) and share > 0)}
        if bad:
            raise ValueError(f"every arm's share must be > 0 and finite; got {bad}")
        total = math.fsum(value.values())
        if abs(total - 1.0) > _SHARE_TOLERANCE:
            raise ValueError(
                f"arm shares must sum to 1 (within {_SHARE_TOLERANCE:g}); {value} sums to {total!r}"
            )
        return value

    @field_validator("primary_metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if value not in METRICS:
            raise ValueError(f"primary_metric {value!r} must be one of {', '.join(METRICS)}")
        return value

    @property
    def arm_order(self) -> tuple[str, ...]:
        """The arms sorted by name: the order they take the intervals of [0, 1) in :func:`assign`."""
        return tuple(sorted(self.arms))

    @property
    def report_order(self) -> tuple[str, ...]:
        """The arms in the order reports list them: champion, challenger, holdout."""
        return tuple(name for name in ARM_NAMES if name in self.arms)

    @property
    def guardrails(self) -> tuple[str, ...]:
        """Every metric other than the primary one."""
        return tuple(name for name in METRICS if name != self.primary_metric)


# ---- assignment ----------------------------------------------------------------------------------


def bucket(users: Sequence[str], config: ExperimentConfig) -> np.ndarray:
    """Each user's position in [0, 1): the first 8 bytes (big-endian) of
    ``sha256(f"{experiment_id}:{salt}:{user}")`` divided by 2**64 (see the module docstring)."""
    prefix = f"{config.experiment_id}:{config.salt}:".encode()
    hashes = np.fromiter(
        (int.from_bytes(hashlib.sha256(prefix + user.encode()).digest()[:8], "big") for user in users),
        dtype=np.uint64,
        count=len(users),
    )
    # float64 keeps 53 bits: the very largest hashes round to 1.0, which assign() puts in the last arm
    return hashes.astype(np.float64) / 2.0**64


def assign(users: Iterable[str], config: ExperimentConfig) -> pd.Series:
    """Each distinct user's arm: a Series indexed by user (first-seen order), values arm names.

    Deterministic: see the module docstring for the hash. Raises TypeError on a non-string user.
    """
    distinct = list(dict.fromkeys(users))
    for user in distinct:
        if not isinstance(user, str):
            raise TypeError(f"users must be strings (pseudonyms); got {user!r} of type {type(user).__name__}")
    order = config.arm_order
    bounds = np.cumsum([config.arms[name] for name in order])
    position = np.searchsorted(bounds, bucket(distinct, config), side="right")
    position = np.minimum(position, len(order) - 1)  # u = 1.0 (rounding) or shares summing to 1 - 1e-12
    arms = np.asarray(order, dtype=object)[position] if distinct else np.asarray([], dtype=object)
    return pd.Series(arms, index=pd.Index(distinct, name="user", dtype=object), name="arm", dtype=object)
