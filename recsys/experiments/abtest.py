"""Champion-vs-challenger A/B tests: assignment, the sample-ratio check and the statistical readout.

The online counterpart of the offline gate (:mod:`recsys.promotion.gates`): users (pseudonyms, opaque hex
strings) are split deterministically between the ``champion`` model, the ``challenger`` model and
optionally a ``holdout`` served the popularity list; after some weeks :func:`readout` compares the
challenger with the champion on what the users did and returns a :class:`Readout` whose
``decision`` is ``"ship"``, ``"keep"`` or ``"inconclusive"``, with one reason per check.

Assignment (:func:`assign`)
    ``u = int.from_bytes(sha256(f"{experiment_id}:{salt}:{user}")[:8], "big") / 2**64``, uniform in
    [0, 1); the arms, **sorted by name** (so the order of ``arms`` in the config never matters), take
    consecutive intervals of [0, 1) as long as their shares, and the user gets the arm whose interval
    holds ``u``. No state, no randomness: the same user gets the same arm on every call, every week
    and on every machine for as long as the experiment id and salt stay the same; a new salt (or a
    new experiment id) reshuffles everyone independently of the old split. Changing the shares of a
    running experiment moves users between arms: start a new experiment (or salt) instead.

Metrics (per arm, over **exposed users**: users with at least one exposure in the experiment)
    =========================== =================================================== ==========
    metric                      definition                                          better
    =========================== =================================================== ==========
    ``ctr``                     clicked exposures / exposures (ratio metric)        higher
    ``plays_per_user``          play events per exposed user                        higher
    ``watch_seconds_per_user``  watch seconds of play events per exposed user       higher
    ``rec_view_share``          plays from recommendations / all plays (ratio)      higher
    ``churn``                   share of exposed users with no activity in the last lower
                                ``churn_weeks`` weeks of the readout window
    =========================== =================================================== ==========

    An *exposure* is a distinct (user, item, week) in the exposures (an item shown twice to a user in
    a week counts once; ``position`` is informational); it is *clicked* when the feedback has a
    ``click`` by that user on that item in that week. Plays and watch seconds count the user's
    ``play`` events from the week of their first exposure on (earlier behaviour cannot be an effect
    of the treatment); missing watch seconds count as 0. The *readout window* is the weeks from the
    experiment's first exposure week to the latest week in any of the three frames; its last
    ``churn_weeks`` weeks are the latest ``churn_weeks`` distinct week values present in the frames,
    and a user has churned when the ``active`` frame has no row for them in those weeks.

Statistics
    The unit of analysis is the user (the unit of randomisation), never the exposure or the event:
    events of one user are correlated, and treating them as independent understates the variance.
    Mean metrics (plays, watch seconds, churn) use Welch's t-test on the per-user values (unequal
    variances, Satterthwaite degrees of freedom). Ratio metrics (ctr, rec_view_share) are ratios of
    two per-user sums, ``R = sum(y) / sum(x)``; their variance comes from the **delta method** on
    the per-user (x, y) pairs, ``Var(R) ~ (s_y^2 - 2 R s_xy + R^2 s_x^2) / (n * mean(x)^2)``, and the
    test is a normal (z) test. The confidence interval of the difference (challenger minus champion)
    is the matching (1 - alpha) t / normal interval; the relative lift is ``difference / champion``
    and its interval is the delta-method interval of the ratio challenger / champion (both arms'
    uncertainty). Intervals are per metric, not corrected for multiplicity.

    The p-values of the five metrics are one family, corrected with Holm-Bonferroni (:func:`holm`);
    a metric is *significantly better / worse* when its corrected p-value is below ``alpha``.

Decision (:func:`readout`; the holdout arm is reported but never part of it)
    * ``inconclusive`` when the sample-ratio check (chi-square on exposed users per arm against the
      configured shares, :func:`srm_check`) is flagged or exposed users are logged in another arm
      than :func:`assign` gives: the assignment is broken and no effect can be trusted;
    * ``inconclusive`` when the champion or the challenger has fewer than ``min_users_per_arm``
      exposed users (too few for the normal approximations, in either direction);
    * ``keep`` when the primary metric or any guardrail (every other metric) is significantly worse;
    * ``ship`` when the primary metric is significantly better and every guardrail could be computed;
    * ``inconclusive`` otherwise.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from scipy import stats

from recsys.core.errors import RecsysError
from recsys.io.storage import json_safe

CHAMPION = "champion"
CHALLENGER = "challenger"
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
"""Columns of the per-user table (:func:`user_metrics`, :func:`readout_from_users`)."""
DECISIONS = ("ship", "keep", "inconclusive")

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


# ---- sample ratio mismatch -----------------------------------------------------------------------


@dataclass(frozen=True)
class SRMResult:
    """The sample-ratio check: observed vs expected users per arm, chi-square test, verdict."""

    observed: dict[str, int]
    expected: dict[str, float]
    statistic: float
    p_value: float
    alpha: float
    flagged: bool
    message: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (NaN becomes None)."""
        return {
            "observed": {arm: int(n) for arm, n in self.observed.items()},
            "expected": json_safe(dict(self.expected)),
            "statistic": json_safe(self.statistic),
            "p_value": json_safe(self.p_value),
            "alpha": self.alpha,
            "flagged": bool(self.flagged),
            "message": self.message,
        }


def srm_check(observed: Mapping[str, int], config: ExperimentConfig) -> SRMResult:
    """Chi-square goodness of fit of users per arm against the configured shares.

    ``observed`` maps arm names to user counts; configured arms it lacks count 0. Flagged when the
    p-value is below ``config.srm_alpha``. With no users at all nothing can be checked: not flagged,
    p-value NaN. Raises ExperimentDataError on an unknown arm or a negative / non-integer count.
    """
    unknown = sorted(set(observed) - set(config.arms))
    if unknown:
        raise ExperimentDataError(
            f"unknown arm(s) {', '.join(map(repr, unknown))} in the observed counts; "
            f"the experiment's arms are {', '.join(config.arm_order)}"
        )
    counts: dict[str, int] = {}
    for arm in config.report_order:
        raw = observed.get(arm, 0)
        if isinstance(raw, bool) or not float(raw).is_integer() or raw < 0:
            raise ExperimentDataError(
                f"observed count of arm {arm!r} must be a non-negative integer, got {raw!r}"
            )
        counts[arm] = int(raw)
    total = sum(counts.values())
    expected = {arm: total * config.arms[arm] for arm in config.report_order}
    seen = " / ".join(f"{arm} {counts[arm]:,}" for arm in config.report_order)
    wanted = " / ".join(f"{arm} {expected[arm]:,.1f}" for arm in config.report_order)
    if total == 0:
        return SRMResult(counts, expected, math.nan, math.nan, config.srm_alpha, False, "no users to check")
    result = stats.chisquare(
        np.asarray([counts[arm] for arm in config.report_order], dtype=float),
        np.asarray([expected[arm] for arm in config.report_order], dtype=float),
    )
    statistic, p_value = float(result.statistic), float(result.pvalue)
    flagged = p_value < config.srm_alpha
    if flagged:
        message = (
            f"sample ratio mismatch: observed {seen} vs expected {wanted} (chi-square {statistic:.2f}, "
            f"p = {p_value:.3g} < {config.srm_alpha:g}): the assignment or the exposure logging is broken"
        )
    else:
        message = (
            f"no sample ratio mismatch: observed {seen} vs expected {wanted} (chi-square {statistic:.2f}, "
            f"p = {p_value:.3g} >= {config.srm_alpha:g})"
        )
    return SRMResult(counts, expected, statistic, p_value, config.srm_alpha, flagged, message)


# ---- multiple testing ----------------------------------------------------------------------------


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order.

    With the m finite p-values sorted ascending, p_(1) <= ... <= p_(m), the adjusted value of the
    i-th is ``max over j <= i of min(1, (m - j + 1) * p_(j))``; rejecting every hypothesis whose
    adjusted p-value is below alpha controls the family-wise error rate at alpha (Holm 1979), and is
    never less powerful than plain Bonferroni. NaN p-values (a metric that cannot be computed) are
    not part of the family (m counts finite values only) and stay NaN. Ties keep input order.
    """
    values = [float(p) for p in p_values]
    for p in values:
        if not math.isnan(p) and not 0.0 <= p <= 1.0:
            raise ValueError(f"p-values must be within [0, 1] (or NaN); got {p}")
    finite = sorted((p, i) for i, p in enumerate(values) if not math.isnan(p))
    m = len(finite)
    adjusted = [math.nan] * len(values)
    running = 0.0
    for rank, (p, index) in enumerate(finite):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[index] = running
    return adjusted


# ---- per-user values -----------------------------------------------------------------------------


def _require_columns(frame: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise ExperimentDataError(f"{name} must be a pandas DataFrame, got {type(frame).__name__}")
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ExperimentDataError(f"{name} lacks column(s) {', '.join(missing)} (needs {', '.join(columns)})")


def _weeks(values: pd.Series, name: str) -> tuple[pd.Series, str]:
    """(comparable week values, their kind): integers stay integers, anything else must parse as dates."""
    if values.isna().any():
        raise ExperimentDataError(f"{name}.week has {int(values.isna().sum())} missing value(s)")
    if pd.api.types.is_bool_dtype(values):
        raise ExperimentDataError(f"{name}.week must hold week start dates or integers, not booleans")
    if pd.api.types.is_integer_dtype(values):
        return values.astype(np.int64), "integer"
    if pd.api.types.is_datetime64_any_dtype(values):
        return values, "date"
    try:
        return pd.to_datetime(values), "date"
    except (TypeError, ValueError) as exc:
        raise ExperimentDataError(
            f"{name}.week must hold week start dates (e.g. 2026-11-08) or integers: {exc}"
        ) from None


def user_metrics(
    exposures: pd.DataFrame, feedback: pd.DataFrame, active: pd.DataFrame, config: ExperimentConfig
) -> pd.DataFrame:
    """The per-user table of the experiment's exposed users (see the module docstring).

    Index ``user``; columns :data:`USER_COLUMNS`: ``arm``, ``exposures`` (distinct (item, week)
    shown), ``clicks`` (of those, clicked), ``plays``, ``rec_plays`` (plays from recommendations),
    ``watch_seconds`` (of the plays) and ``churned`` (1.0 / 0.0). Exposures of other experiments
    are ignored. Raises ExperimentDataError on missing columns, unparseable weeks, an arm the
    config does not have, unknown feedback events, negative watch seconds, or a user exposed in
    more than one arm.
    """
    return _user_table(exposures, feedback, active, config)[0]


def _user_table(
    exposures: pd.DataFrame, feedback: pd.DataFrame, active: pd.DataFrame, config: ExperimentConfig
) -> tuple[pd.DataFrame, dict[str, Any] | None]:
    """(:func:`user_metrics`, the readout window: first and last week and the churn weeks, as
    strings; None without exposures)."""
    _require_columns(exposures, EXPOSURE_COLUMNS, "exposures")
    _require_columns(feedback, FEEDBACK_COLUMNS, "feedback")
    _require_columns(active, ACTIVE_COLUMNS, "active")

    shown = exposures.loc[
        exposures["experiment_id"].astype(str) == config.experiment_id, list(EXPOSURE_COLUMNS)
    ]
    shown_user = shown["user"].astype(str).to_numpy()
    shown_arm = shown["arm"].astype(str).to_numpy()
    unknown_arms = sorted(set(shown_arm) - set(config.arms))
    if unknown_arms:
        raise ExperimentDataError(
            f"exposures name arm(s) {', '.join(map(repr, unknown_arms))} that experiment "
            f"{config.experiment_id!r} does not have ({', '.join(config.arm_order)})"
        )
    event = feedback["event"].astype(str).to_numpy()
    unknown_events = sorted(set(event) - set(EVENTS))
    if unknown_events:
        raise ExperimentDataError(
            f"feedback.event has unknown value(s) {', '.join(map(repr, unknown_events))} (allowed: click, play)"
        )
    seconds = pd.to_numeric(feedback["watch_seconds"], errors="coerce").fillna(0.0).to_numpy(float)
    if (seconds < 0).any():
        raise ExperimentDataError(f"feedback.watch_seconds has {int((seconds < 0).sum())} negative value(s)")
    from_rec = feedback["from_recommendation"].fillna(False).astype(bool).to_numpy()

    shown_week, kind = _weeks(shown["week"], "exposures")
    event_week, event_kind = _weeks(feedback["week"], "feedback")
    active_week, active_kind = _weeks(active["week"], "active")
    frames = ((kind, shown), (event_kind, feedback), (active_kind, active))
    if len({k for k, frame in frames if len(frame)}) > 1:
        raise ExperimentDataError(
            f"week columns mix dates and integers (exposures {kind}, feedback {event_kind}, active "
            f"{active_kind}): use one kind of week in all three frames"
        )

    if len(shown) == 0:
        empty = {column: pd.Series(dtype=float) for column in USER_COLUMNS}
        empty["arm"] = pd.Series(dtype=object)
        return pd.DataFrame(empty, index=pd.Index([], name="user", dtype=object)), None

    # integer codes: users (sorted), items and weeks (sorted, so week codes compare like weeks)
    users = pd.Index(np.sort(pd.unique(shown_user)), name="user", dtype=object)
    n_users = len(users)
    u_shown = users.get_indexer(shown_user)
    u_event = users.get_indexer(feedback["user"].astype(str).to_numpy())  # -1: never exposed
    u_active = users.get_indexer(active["user"].astype(str).to_numpy())
    n_shown, n_event = len(shown), len(feedback)
    week_codes, week_values = pd.factorize(
        pd.concat([shown_week, event_week, active_week], ignore_index=True), sort=True
    )
    w_shown = week_codes[:n_shown]
    w_event = week_codes[n_shown : n_shown + n_event]
    w_active = week_codes[n_shown + n_event :]
    item_codes, item_values = pd.factorize(
        pd.concat([shown["item_id"], feedback["item_id"]], ignore_index=True)
    )
    i_shown, i_event = item_codes[:n_shown], item_codes[n_shown:]
    n_weeks, n_items = len(week_values), max(len(item_values), 1)

    arm_codes, arm_values = pd.factorize(shown_arm)
    pairs = np.unique(u_shown.astype(np.int64) * len(arm_values) + arm_codes)
    crossed = np.flatnonzero(np.bincount(pairs // len(arm_values), minlength=n_users) > 1)
    if len(crossed):
        raise ExperimentDataError(
            f"{len(crossed)} user(s) were exposed in more than one arm (e.g. {users[crossed[0]]!r}): "
            "every user must see one arm; check the assignment and the exposure logging"
        )
    arm = np.empty(n_users, dtype=object)
    arm[u_shown] = shown_arm

    # exposures: distinct (user, item, week); clicked when the user clicked the item that week
    def key(u: np.ndarray, i: np.ndarray, w: np.ndarray) -> np.ndarray:
        return (u.astype(np.int64) * n_items + i) * n_weeks + w

    exposed = np.unique(key(u_shown, i_shown, w_shown))
    is_click = (event == "click") & (u_event >= 0) & (i_event >= 0)
    clicked = np.isin(exposed, key(u_event[is_click], i_event[is_click], w_event[is_click]))
    exposed_user = exposed // (n_items * n_weeks)
    n_exposures = np.bincount(exposed_user, minlength=n_users).astype(float)
    n_clicks = np.bincount(exposed_user, weights=clicked.astype(float), minlength=n_users)

    # plays from each user's first exposure week on
    first_week = np.full(n_users, n_weeks, dtype=np.int64)
    np.minimum.at(first_week, u_shown, w_shown)
    is_play = (event == "play") & (u_event >= 0)
    is_play[is_play] = w_event[is_play] >= first_week[u_event[is_play]]
    u_play = u_event[is_play]
    n_plays = np.bincount(u_play, minlength=n_users).astype(float)
    n_rec = np.bincount(u_play, weights=from_rec[is_play].astype(float), minlength=n_users)
    watched = np.bincount(u_play, weights=seconds[is_play], minlength=n_users)

    # churn: no activity in the last churn_weeks weeks of the window (first exposure week .. last week)
    start = int(first_week.min())
    window = np.unique(week_codes[week_codes >= start])
    last = window[-config.churn_weeks :]
    recent = np.zeros(n_users, dtype=bool)
    recent[u_active[(u_active >= 0) & np.isin(w_active, last)]] = True

    table = pd.DataFrame(
        {
            "arm": arm,
            "exposures": n_exposures,
            "clicks": n_clicks,
            "plays": n_plays,
            "rec_plays": n_rec,
            "watch_seconds": watched,
            "churned": (~recent).astype(float),
        },
        index=users,
    )
    span = {
        "first_week": _week_text(week_values[window[0]]),
        "last_week": _week_text(week_values[window[-1]]),
        "churn_weeks": [_week_text(week_values[code]) for code in last],
    }
    return table, span


def _week_text(value: Any) -> str:
    if isinstance(value, np.datetime64 | pd.Timestamp):
        return pd.Timestamp(value).date().isoformat()
    return str(value)


# ---- statistics ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Estimate:
    value: float  # the arm's metric value
    variance: float  # variance of that estimate
    n: int  # exposed users


def _estimate(table: pd.DataFrame, metric: str) -> _Estimate:
    n = len(table)
    if metric in RATIO_METRICS:
        num, den = RATIO_METRICS[metric]
        y = table[num].to_numpy(float)
        x = table[den].to_numpy(float)
        if n == 0 or x.sum() <= 0:
            return _Estimate(math.nan, math.nan, n)
        ratio = float(y.sum() / x.sum())
        if n < 2:
            return _Estimate(ratio, math.nan, n)
        mean_x = float(x.mean())
        cov = np.cov(np.vstack([y, x]), ddof=1)
        var_y, var_x, cov_xy = float(cov[0, 0]), float(cov[1, 1]), float(cov[0, 1])
        variance = (var_y - 2 * ratio * cov_xy + ratio**2 * var_x) / (n * mean_x**2)
        return _Estimate(ratio, max(variance, 0.0), n)
    values = table[MEAN_METRICS[metric]].to_numpy(float)
    if n == 0:
        return _Estimate(math.nan, math.nan, 0)
    mean = float(values.mean())
    if n < 2:
        return _Estimate(mean, math.nan, n)
    return _Estimate(mean, float(values.var(ddof=1)) / n, n)


@dataclass(frozen=True)
class MetricComparison:
    """Challenger minus champion on one metric.

    ``difference`` = challenger - champion with its (1 - alpha) interval ``ci_low`` .. ``ci_high``;
    ``relative_lift`` = difference / champion with its interval ``lift_ci_low`` .. ``lift_ci_high``;
    ``p_value`` of the two-sided test (Welch t for mean metrics, delta-method z for ratio metrics),
    ``p_adjusted`` after Holm across the readout's metrics; ``significant`` = p_adjusted < alpha;
    ``verdict`` is ``better``, ``worse`` (with the metric's direction), ``no significant difference``
    or ``not computable``. NaN where a value cannot be computed.
    """

    metric: str
    test: str
    lower_is_better: bool
    champion: float
    challenger: float
    difference: float
    ci_low: float
    ci_high: float
    relative_lift: float
    lift_ci_low: float
    lift_ci_high: float
    p_value: float
    p_adjusted: float
    significant: bool
    verdict: str

    @property
    def computable(self) -> bool:
        return not math.isnan(self.p_value)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (NaN becomes None)."""
        return {
            "metric": self.metric,
            "test": self.test,
            "lower_is_better": self.lower_is_better,
            "champion": json_safe(self.champion),
            "challenger": json_safe(self.challenger),
            "difference": json_safe(self.difference),
            "ci": [json_safe(self.ci_low), json_safe(self.ci_high)],
            "relative_lift": json_safe(self.relative_lift),
            "lift_ci": [json_safe(self.lift_ci_low), json_safe(self.lift_ci_high)],
            "p_value": json_safe(self.p_value),
            "p_adjusted": json_safe(self.p_adjusted),
            "significant": bool(self.significant),
            "verdict": self.verdict,
        }


def _compare(metric: str, champion: _Estimate, challenger: _Estimate, alpha: float) -> dict[str, Any]:
    """The unadjusted comparison of one metric (everything but p_adjusted / significant / verdict)."""
    ratio = metric in RATIO_METRICS
    test = "delta-method z" if ratio else "Welch t"
    a, b = champion.value, challenger.value
    difference = b - a
    va, vb = champion.variance, challenger.variance
    nan = math.nan
    out: dict[str, Any] = {
        "metric": metric,
        "test": test,
        "lower_is_better": metric in LOWER_IS_BETTER,
        "champion": a,
        "challenger": b,
        "difference": difference,
        "ci_low": nan,
        "ci_high": nan,
        "relative_lift": difference / a if a else nan,
        "lift_ci_low": nan,
        "lift_ci_high": nan,
        "p_value": nan,
    }
    if any(math.isnan(v) for v in (a, b, va, vb)):
        return out
    se = math.sqrt(va + vb)
    if ratio or se == 0:
        df = math.inf
    else:  # Welch-Satterthwaite
        df = (va + vb) ** 2 / (va**2 / (champion.n - 1) + vb**2 / (challenger.n - 1))
    normal = math.isinf(df)
    quantile = float(stats.norm.ppf(1 - alpha / 2) if normal else stats.t.ppf(1 - alpha / 2, df))
    if se == 0:  # no variance in either arm: equal or certainly different
        p_value = 1.0 if difference == 0 else 0.0
    else:
        z = abs(difference) / se
        p_value = float(2 * (stats.norm.sf(z) if normal else stats.t.sf(z, df)))
    out.update(ci_low=difference - quantile * se, ci_high=difference + quantile * se, p_value=p_value)
    if a:
        lift = difference / a
        se_lift = math.sqrt(vb / a**2 + b**2 * va / a**4)
        out.update(lift_ci_low=lift - quantile * se_lift, lift_ci_high=lift + quantile * se_lift)
    return out


# ---- the readout ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Readout:
    """The outcome of :func:`readout`.

    ``users`` has the exposed users of every configured arm, ``arm_metrics`` each arm's metric values
    (the holdout's too, for reference), ``comparisons`` challenger vs champion per metric (in
    :data:`METRICS` order), ``srm`` the sample-ratio check, ``decision`` one of ``ship``, ``keep``,
    ``inconclusive`` and ``reasons`` one line per check (``PASS:`` / ``FAIL:``, ``INFO:`` for
    what is reported but not decided on), ``window`` the readout window's weeks (first, last, and
    the churn weeks) as strings.
    """

    experiment_id: str
    primary_metric: str
    alpha: float
    users: dict[str, int]
    arm_metrics: dict[str, dict[str, float]]
    comparisons: dict[str, MetricComparison]
    srm: SRMResult
    decision: str
    reasons: list[str]
    assignment_mismatches: int | None = None
    window: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.decision not in DECISIONS:
            raise ValueError(f"decision must be one of {', '.join(DECISIONS)}, got {self.decision!r}")

    @property
    def primary(self) -> MetricComparison:
        return self.comparisons[self.primary_metric]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (NaN becomes None)."""
        return {
            "experiment_id": self.experiment_id,
            "primary_metric": self.primary_metric,
            "alpha": self.alpha,
            "decision": self.decision,
            "reasons": list(self.reasons),
            "users": {arm: int(n) for arm, n in self.users.items()},
            "arm_metrics": json_safe({arm: dict(values) for arm, values in self.arm_metrics.items()}),
            "comparisons": {name: comparison.to_dict() for name, comparison in self.comparisons.items()},
            "srm": self.srm.to_dict(),
            "assignment_mismatches": self.assignment_mismatches,
            "window": json_safe(dict(self.window)) if self.window is not None else None,
        }

    def summary(self) -> str:
        """One line, e.g. ``exp-1: SHIP, plays_per_user +10.2% (95% CI +6.1% .. +14.3%), Holm p = 2e-06``."""
        p = self.primary
        level = f"{(1 - self.alpha) * 100:g}%"
        return (
            f"{self.experiment_id}: {self.decision.upper()}, {self.primary_metric} {_pct(p.relative_lift)} "
            f"({level} CI {_pct(p.lift_ci_low)} .. {_pct(p.lift_ci_high)}), Holm p = {_p(p.p_adjusted)}; "
            f"users {', '.join(f'{arm} {n:,}' for arm, n in self.users.items())}"
        )


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value * 100:+.2f}%"


def _p(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3g}"


def format_number(value: float) -> str:
    """A metric value for people: 4 decimals below 100, 1 above (thousands separated); NaN is n/a."""
    if math.isnan(value):
        return "n/a"
    return f"{value:,.4f}" if abs(value) < 100 else f"{value:,.1f}"


def _describe(c: MetricComparison, alpha: float) -> str:
    level = f"{(1 - alpha) * 100:g}%"
    return (
        f"{c.metric} {format_number(c.champion)} -> {format_number(c.challenger)} ({_pct(c.relative_lift)}, {level} CI "
        f"{_pct(c.lift_ci_low)} .. {_pct(c.lift_ci_high)}; {c.test} p = {_p(c.p_value)}, "
        f"Holm p = {_p(c.p_adjusted)})"
    )


def readout_from_users(
    table: pd.DataFrame, config: ExperimentConfig, assignment_mismatches: int | None = None
) -> Readout:
    """The readout of a per-user table (as :func:`user_metrics` builds it; index ignored).

    :func:`readout` is this on the frames; simulations (the power benchmark) build the table
    directly. ``assignment_mismatches``: exposed users logged in another arm than :func:`assign`
    gives (None: not checked). Raises ExperimentDataError on missing columns, an unknown arm, or a
    negative or non-finite value.
    """
    _require_columns(table, USER_COLUMNS, "the per-user table")
    unknown = sorted(set(table["arm"].astype(str)) - set(config.arms))
    if unknown:
        raise ExperimentDataError(
            f"the per-user table names arm(s) {', '.join(map(repr, unknown))} that experiment "
            f"{config.experiment_id!r} does not have ({', '.join(config.arm_order)})"
        )
    numbers = table[[column for column in USER_COLUMNS if column != "arm"]].to_numpy(float)
    if not np.isfinite(numbers).all() or (numbers < 0).any():
        raise ExperimentDataError("the per-user table's counts must be finite and non-negative")
    arms = table["arm"].astype(str).to_numpy()
    groups = {arm: table.loc[arms == arm] for arm in config.report_order}
    users = {arm: len(groups[arm]) for arm in config.report_order}
    estimates = {arm: {metric: _estimate(groups[arm], metric) for metric in METRICS} for arm in groups}
    arm_metrics = {arm: {metric: estimates[arm][metric].value for metric in METRICS} for arm in groups}

    raw = [_compare(m, estimates[CHAMPION][m], estimates[CHALLENGER][m], config.alpha) for m in METRICS]
    adjusted = holm([row["p_value"] for row in raw])
    comparisons: dict[str, MetricComparison] = {}
    for row, p_adj in zip(raw, adjusted, strict=True):
        significant = not math.isnan(p_adj) and p_adj < config.alpha
        if math.isnan(p_adj):
            verdict = "not computable"
        elif not significant:
            verdict = "no significant difference"
        else:
            verdict = "better" if (row["difference"] > 0) != row["lower_is_better"] else "worse"
        comparisons[row["metric"]] = MetricComparison(
            **row, p_adjusted=p_adj, significant=significant, verdict=verdict
        )

    srm = srm_check(users, config)
    decision, reasons = _decide(config, users, comparisons, srm, assignment_mismatches)
    if HOLDOUT in config.arms:
        values = ", ".join(f"{m} {format_number(arm_metrics[HOLDOUT][m])}" for m in METRICS)
        reasons.append(f"INFO: holdout (popularity, {users[HOLDOUT]:,} users, not decided on): {values}")
    return Readout(
        experiment_id=config.experiment_id,
        primary_metric=config.primary_metric,
        alpha=config.alpha,
        users=users,
        arm_metrics=arm_metrics,
        comparisons=comparisons,
        srm=srm,
        decision=decision,
        reasons=reasons,
        assignment_mismatches=assignment_mismatches,
    )


def _decide(
    config: ExperimentConfig,
    users: Mapping[str, int],
    comparisons: Mapping[str, MetricComparison],
    srm: SRMResult,
    assignment_mismatches: int | None,
) -> tuple[str, list[str]]:
    """(decision, reasons): every check is reported, none short-circuits the reasons."""
    reasons: list[str] = []
    broken = srm.flagged
    reasons.append(f"{'FAIL' if srm.flagged else 'PASS'}: {srm.message}")
    if assignment_mismatches is not None:
        exposed = sum(users.values())
        if assignment_mismatches:
            broken = True
            reasons.append(
                f"FAIL: {assignment_mismatches:,} of {exposed:,} exposed users are logged in another arm "
                "than the assignment gives: the assignment is broken"
            )
        else:
            reasons.append(f"PASS: all {exposed:,} exposed users are in the arm the assignment gives")

    few = {arm: users[arm] for arm in (CHAMPION, CHALLENGER) if users[arm] < config.min_users_per_arm}
    counts = ", ".join(f"{arm} {users[arm]:,}" for arm in (CHAMPION, CHALLENGER))
    if few:
        reasons.append(
            f"FAIL: too few exposed users for a decision: {counts}; each needs >= {config.min_users_per_arm:,}"
        )
    else:
        reasons.append(f"PASS: exposed users {counts}, each >= {config.min_users_per_arm:,}")

    primary = comparisons[config.primary_metric]
    text = _describe(primary, config.alpha)
    if primary.verdict == "better":
        reasons.append(f"PASS: primary {text}: significantly better")
    elif primary.verdict == "worse":
        reasons.append(f"FAIL: primary {text}: significantly worse")
    elif primary.verdict == "not computable":
        reasons.append(f"FAIL: primary {text}: cannot be computed")
    else:
        reasons.append(f"FAIL: primary {text}: no significant difference at alpha {config.alpha:g}")

    harmed = primary.verdict == "worse"
    unknown_guardrail = False
    for name in config.guardrails:
        c = comparisons[name]
        text = _describe(c, config.alpha)
        direction = " (lower is better)" if c.lower_is_better else ""
        if c.verdict == "worse":
            harmed = True
            reasons.append(f"FAIL: guardrail {text}: significantly worse{direction}")
        elif c.verdict == "not computable":
            unknown_guardrail = True
            reasons.append(f"FAIL: guardrail {text}: cannot be computed, harm cannot be ruled out")
        elif c.verdict == "better":
            reasons.append(f"PASS: guardrail {text}: significantly better{direction}")
        else:
            reasons.append(f"PASS: guardrail {text}: not significantly worse{direction}")

    if broken:
        decision = "inconclusive"
        reasons.append(
            "FAIL: the assignment is broken (see above): no effect can be trusted; fix it and restart"
        )
    elif few:
        decision = "inconclusive"
    elif harmed:
        decision = "keep"
    elif primary.verdict == "better" and not unknown_guardrail:
        decision = "ship"
    else:
        decision = "inconclusive"
    return decision, reasons


def readout(
    exposures: pd.DataFrame, feedback: pd.DataFrame, active: pd.DataFrame, config: ExperimentConfig
) -> Readout:
    """Read out the experiment: per-arm metrics, challenger vs champion tests, Holm, SRM, decision.

    ``exposures``: user, arm, experiment_id, item_id, position, week (what each user was shown;
    rows of other experiments are ignored). ``feedback``: user, item_id, event ("click" | "play"),
    watch_seconds (NaN counts as 0), from_recommendation, week. ``active``: user, week (a row per
    week a user was active). Weeks are week start dates (or ISO strings) or integers, one kind in
    all three frames. See the module docstring for the metrics, the tests and the decision.
    Raises ExperimentDataError on malformed frames (see :func:`user_metrics`).
    """
    table, window = _user_table(exposures, feedback, active, config)
    mismatches = 0
    if len(table):
        expected = assign(table.index.tolist(), config)
        mismatches = int((expected.reindex(table.index).to_numpy() != table["arm"].to_numpy()).sum())
    result = readout_from_users(table, config, assignment_mismatches=mismatches)
    return dataclasses.replace(result, window=window)


# ---- the picture ---------------------------------------------------------------------------------

_COLOURS = {"better": "#2e7d32", "worse": "#c62828"}
_NEUTRAL = "#616161"


def plot_readout(result: Readout) -> bytes:
    """A PNG: per metric the challenger's relative lift over the champion (%) with its (1 - alpha)
    interval as error bars, a zero line, colour by the Holm-corrected verdict (green better, red
    worse, grey neither), the primary metric marked. Matplotlib's Agg canvas, no pyplot state."""
    from recsys.reporting.model_report import png_bytes

    names = list(result.comparisons)

    def draw(ax: Any) -> None:
        for row, name in enumerate(reversed(names)):
            c = result.comparisons[name]
            colour = _COLOURS.get(c.verdict, _NEUTRAL)
            y = float(row)
            if math.isnan(c.relative_lift):
                ax.text(0, y, "not computable", va="center", ha="center", color=_NEUTRAL, fontsize=9)
                continue
            lift = c.relative_lift * 100
            if not (math.isnan(c.lift_ci_low) or math.isnan(c.lift_ci_high)):
                err = [[lift - c.lift_ci_low * 100], [c.lift_ci_high * 100 - lift]]
                ax.errorbar([lift], [y], xerr=err, fmt="o", color=colour, capsize=4, markersize=6)
            else:
                ax.plot([lift], [y], "o", color=colour)
            ax.annotate(
                f"{lift:+.1f}%  (Holm p {_p(c.p_adjusted)})",
                (lift, y),
                textcoords="offset points",
                xytext=(0, 8),
                ha="center",
                fontsize=8,
                color=colour,
            )
        labels = []
        for name in reversed(names):
            label = f"{name} (primary)" if name == result.primary_metric else name
            labels.append(label + (" [lower is better]" if name in LOWER_IS_BETTER else ""))
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(labels, fontsize=9)
        ax.set_ylim(-0.7, len(names) - 0.3)
        ax.axvline(0.0, color="#212121", linewidth=1)
        level = f"{(1 - result.alpha) * 100:g}%"
        ax.set_xlabel(f"challenger vs champion: relative lift (%), {level} CI")
        users = ", ".join(f"{arm} {n:,}" for arm, n in result.users.items())
        ax.set_title(f"{result.experiment_id}: {result.decision} ({users})", fontsize=10)
        ax.grid(axis="x", color="#e0e0e0")

    return png_bytes(draw, (8.0, 0.6 * len(names) + 1.6))
