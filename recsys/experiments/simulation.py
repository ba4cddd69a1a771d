"""Simulated responses of the synthetic world's users to what an A/B test SHOWED them.

``simulate_feedback(world, exposures, key, config, week)`` stands in for real people using the app
during one week. ``world`` is the generator's world (``recsys.data.synthetic.build_world``): its
latent taste groups, per-item ``match`` (0..1) and Zipf popularity decide what users like. The
exposures are what each arm showed: one row per (user pseudonym, arm, experiment_id, item_id,
position [1-based], week). Pseudonyms are mapped back to the world's raw users by pseudonymizing
the world's raw user ids with ``key`` (``recsys.privacy.anonymize.pseudonymize``). Exposure rows of another
week, of an unknown pseudonym or of an item not in the world's catalogue are skipped; the counts are
in ``result.attrs["skipped"]`` (``other_week``, ``unknown_user``, ``unknown_item``,
``unknown_population_user``; a row is counted once, under the first reason in that order) and are
logged as a warning.

**Response model.** All chances are per user and week:

* *Visits.* A user visits the app at most once a day; day ``d`` has a visit with chance
  ``1 - exp(-visits_per_week / 7 * user_activity * day_weight[d])`` (more at the weekend, the
  generator's day weights), so ``user_activity`` drives who is active. A user who signed up after
  the week does not visit; one who signed up during it visits from the signup day on. Each visit
  starts at an evening-heavy hour (the generator's hour weights).
* *Recommendations.* A user who visits sees the list once, at one of the visits. Position ``p`` is
  examined with chance ``1 / log2(p + 1)`` (``position_decay="log"``) or ``geometric_decay ** (p - 1)``
  (``"geometric"``). An examined item is clicked with chance
  ``sigmoid(logit(base_click_rate) + taste_weight * fit + popularity_weight * z)``, where ``fit`` is
  the world's ``match`` of the item for the better of the user's (one or two) taste groups and ``z``
  is the item's log popularity standardized over the catalogue. A click is followed by a play with
  chance ``play_given_click + play_taste_boost * fit`` (capped at 1).
* *Watching.* A play is abandoned early with chance ``abandon_rate - abandon_taste_drop * fit``
  (floored at 0): it then watches a fraction of the runtime uniform in ``abandoned_fraction``,
  otherwise one uniform in ``finished_fraction``. ``watch_seconds`` is that fraction of the item's
  runtime, rounded, at least 1 and never more than the runtime.
* *Organic plays.* Each visit also holds ``Poisson(organic_plays_per_visit)`` plays the user found
  alone, chosen the way the generator chooses: with chance ``organic_taste_strength`` by popularity
  x affinity of one of the user's groups (the second with chance ``user_second_weight``), otherwise
  by popularity alone, among the items in the catalogue before the week; watched as above.
  Recommendations add plays on top of these (no substitution), so what an arm shows changes only
  the recommendation rows.
* *Times.* A click comes 5 s .. 30 min into its visit and its play 2 .. 61 s after the click; an
  organic play within the visit's first hour. Times are clipped to the week's last second.

**Output.** The realistic upstream log, one row per event, sorted by time: ``user_id`` (the RAW user
id), ``item_id``, ``ts`` (ISO UTC, ``YYYY-MM-DDTHH:MM:SSZ``, inside the week), ``event``
(``"click"`` or ``"play"``), ``watch_seconds`` (plays only), ``position``, ``experiment_id``, ``arm``
and ``from_recommendation``. A recommended item that is played gives a ``click`` row and a ``play``
row; organic plays are ``play`` rows with ``from_recommendation=False`` and no position, experiment
or arm. The share of views from recommendations is the share of ``play`` rows with
``from_recommendation``. Text columns are pandas ``string``, ``watch_seconds`` / ``position`` are
``Int64`` (missing values are ``pd.NA``).

**The output holds RAW user ids.** It is an upstream log, like ``raw/events``: the pipeline's
anonymize step must pseudonymize it before anything else reads it, and it must not be written
anywhere that is read without that step.

**Determinism.** Every random draw is a hash of (``config.seed``, the week, the draw's purpose and
the user / day / item it belongs to), not a shared random stream. So the same world, exposures,
key, config and week give the same frame, whatever the order of the exposure rows; a user's visits,
visit times and organic plays do not depend on which arm or which other users are in the frame
(common random numbers across arms); and a (user, item) exposure gets the same draws at any
position, arm or experiment (its n-th repeat for the same user gets the n-th set). Adding or removing
skipped rows changes nothing else. Another seed gives another week of behaviour.

``activity(feedback)`` lists the active users: those with at least one event, per week.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from datetime import date
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from recsys.core.intervals import week_bounds
from recsys.core.schemas import FEEDBACK_EVENTS, RAW_FEEDBACK_COLUMNS
from recsys.data.synthetic import DAY_WEIGHTS, HOUR_WEIGHTS, World
from recsys.privacy.anonymize import pseudonymize, week_of

log = logging.getLogger(__name__)

EXPOSURE_COLUMNS: tuple[str, ...] = ("user", "arm", "experiment_id", "item_id", "position", "week")
FEEDBACK_COLUMNS: tuple[str, ...] = RAW_FEEDBACK_COLUMNS  # the upstream log's contract
SKIP_REASONS: tuple[str, ...] = ("other_week", "unknown_user", "unknown_item", "unknown_population_user")

_SECONDS_PER_DAY = 86400
_SECONDS_PER_WEEK = 7 * _SECONDS_PER_DAY
_MASK64 = (1 << 64) - 1

# purposes of the hashed draws (any distinct numbers; changing one changes the simulated behaviour)
_VISIT, _HOUR, _SECOND = 1, 2, 3
_WHICH_VISIT, _EXAMINE, _CLICK, _PLAY, _ABANDON, _FRACTION, _CLICK_DELAY, _PLAY_DELAY = range(10, 18)
_ORGANIC_COUNT, _ORGANIC_GROUP, _ORGANIC_TASTE, _ORGANIC_ITEM = range(20, 24)
_ORGANIC_ABANDON, _ORGANIC_FRACTION, _ORGANIC_DELAY = range(24, 27)


class FeedbackConfig(BaseModel):
    """How simulated users respond to what they are shown (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    visits_per_week: float = Field(
        2.0, gt=0, le=50, description="visit rate of a user with user_activity 1 (at most one visit a day)"
    )
    base_click_rate: float = Field(
        0.03, gt=0, lt=1, description="click chance of an examined item with match 0 and typical popularity"
    )
    taste_weight: float = Field(
        3.0, ge=0, le=20, description="log-odds a click gains from match 1 for the user's groups"
    )
    popularity_weight: float = Field(
        0.3, ge=0, le=5, description="log-odds a click gains per standard deviation of log popularity"
    )
    position_decay: Literal["log", "geometric"] = Field(
        "log", description="examination chance of position p: 1/log2(p+1) or geometric_decay**(p-1)"
    )
    geometric_decay: float = Field(0.85, gt=0, le=1, description="examination ratio of successive positions")
    play_given_click: float = Field(0.6, ge=0, le=1, description="play chance after a click, at match 0")
    play_taste_boost: float = Field(0.3, ge=0, le=1, description="play chance added at match 1 (capped at 1)")
    abandon_rate: float = Field(0.5, ge=0, le=1, description="chance a play at match 0 is abandoned early")
    abandon_taste_drop: float = Field(
        0.35, ge=0, le=1, description="abandonment chance removed at match 1 (floored at 0)"
    )
    abandoned_fraction: tuple[float, float] = Field(
        (0.02, 0.6), description="runtime share watched by an abandoned play (uniform in the range)"
    )
    finished_fraction: tuple[float, float] = Field(
        (0.85, 1.0), description="runtime share watched by a play that is not abandoned"
    )
    organic_plays_per_visit: float = Field(
        0.8, ge=0, le=20, description="mean plays per visit the user finds without recommendations"
    )
    organic_taste_strength: float = Field(
        0.85, ge=0, le=1, description="share of organic choices driven by taste (else popularity alone)"
    )
    seed: int = Field(0, ge=0, description="same seed and inputs, same feedback")

    @model_validator(mode="after")
    def _fraction_ranges(self) -> FeedbackConfig:
        for name in ("abandoned_fraction", "finished_fraction"):
            low, high = getattr(self, name)
            if not 0 < low <= high <= 1:
                raise ValueError(f"{name} must be 0 < low <= high <= 1, got ({low}, {high})")
        return self


# ---- hashed draws ------------------------------------------------------------------------------


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: a well-mixed bijection on uint64 (arrays wrap silently)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class _Draws:
    """Uniform numbers in [0, 1) that are a pure function of (seed, week, purpose, *keys)."""

    def __init__(self, seed: int, week: date) -> None:
        self._base = (seed & _MASK64, week.toordinal())

    def uniform(self, n: int, purpose: int, *keys: np.ndarray) -> np.ndarray:
        h = np.zeros(n, dtype=np.uint64)
        for part in (*self._base, purpose, *keys):
            value = (
                np.uint64(part)
                if isinstance(part, int)
                else np.asarray(part, dtype=np.int64).astype(np.uint64)
            )
            h = _mix(h ^ value)
        return (h >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _poisson(mean: float, u: np.ndarray) -> np.ndarray:
    """Poisson(mean) by inverting its CDF at ``u``."""
    out = np.zeros(len(u), dtype=np.int64)
    if mean <= 0 or not len(u):
        return out
    p = math.exp(-mean)
    cdf = p
    for k in range(1, int(mean + 12 * math.sqrt(mean) + 30)):
        more = u >= cdf
        if not more.any():
            break
        out += more
        p *= mean / k
        cdf += p
    return out


def _pick(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, u * cdf[-1], side="right"), len(cdf) - 1)


def _iso(start_second: int, seconds: np.ndarray) -> np.ndarray:
    moments = np.datetime64(start_second, "s") + seconds.astype("timedelta64[s]")
    return np.datetime_as_string(moments, unit="s").astype(object) + "Z"


# ---- the model ------------------------------------------------------------------------------------


def _fit(world: World, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Match of each item for the better of the user's taste groups."""
    clusters = world.user_clusters[users]
    return np.maximum(world.match[clusters[:, 0], items], world.match[clusters[:, 1], items])


def _popularity_z(world: World) -> np.ndarray:
    logpop = np.log(world.item_popularity)
    spread = logpop.std()
    return (logpop - logpop.mean()) / spread if spread > 0 else np.zeros_like(logpop)


def _examined_chance(config: FeedbackConfig, position: np.ndarray) -> np.ndarray:
    if config.position_decay == "log":
        return 1.0 / np.log2(position + 1.0)
    return config.geometric_decay ** (position - 1.0)


def _watch_seconds(
    config: FeedbackConfig,
    world: World,
    items: np.ndarray,
    fit: np.ndarray,
    u_abandon: np.ndarray,
    u_fraction: np.ndarray,
) -> np.ndarray:
    abandoned = u_abandon < np.maximum(0.0, config.abandon_rate - config.abandon_taste_drop * fit)
    low = np.where(abandoned, config.abandoned_fraction[0], config.finished_fraction[0])
    high = np.where(abandoned, config.abandoned_fraction[1], config.finished_fraction[1])
    runtime = world.item_runtime[items]
    watched = np.round(runtime * (low + u_fraction * (high - low))).astype(np.int64)
    return np.clip(watched, 1, runtime)


def _visits(
    world: World, config: FeedbackConfig, draws: _Draws, users: np.ndarray, index: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user, day, start second in the week) of every visit, ordered by user then day."""
    n = len(users)
    user = np.repeat(users, 7)
    day = np.tile(np.arange(7), n)
    weights = DAY_WEIGHTS / DAY_WEIGHTS.mean()
    hazard = config.visits_per_week / 7 * world.user_activity[user] * weights[day]
    signup_week = world.user_signup_week[user]
    can_visit = (signup_week < index) | ((signup_week == index) & (day >= world.user_signup_day[user]))
    visited = can_visit & (draws.uniform(len(user), _VISIT, user, day) < -np.expm1(-hazard))
    user, day = user[visited], day[visited]
    hour_cdf = np.cumsum(HOUR_WEIGHTS) / HOUR_WEIGHTS.sum()
    hour = np.minimum(np.searchsorted(hour_cdf, draws.uniform(len(user), _HOUR, user, day), side="right"), 23)
    second = np.floor(draws.uniform(len(user), _SECOND, user, day) * 3600).astype(np.int64)
    return user, day, day * _SECONDS_PER_DAY + hour * 3600 + second


def _eligible_items(world: World, index: int) -> np.ndarray:
    """Items in the catalogue before the week (the initial catalogue for weeks before the first)."""
    return np.flatnonzero(world.item_added_week < max(index, 0))


def _organic(
    world: World,
    config: FeedbackConfig,
    draws: _Draws,
    index: int,
    visit_user: np.ndarray,
    visit_day: np.ndarray,
    visit_start: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(user, item, second in the week, watch seconds) of the organic plays."""
    counts = _poisson(
        config.organic_plays_per_visit, draws.uniform(len(visit_user), _ORGANIC_COUNT, visit_user, visit_day)
    )
    eligible = _eligible_items(world, index)
    if not counts.sum() or not len(eligible):
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, empty
    user = np.repeat(visit_user, counts)
    day = np.repeat(visit_day, counts)
    start = np.repeat(visit_start, counts)
    slot = np.arange(len(user)) - np.repeat(np.cumsum(counts) - counts, counts)  # n-th play of its visit
    n = len(user)
    keys = (user, day, slot)
    second_group = draws.uniform(n, _ORGANIC_GROUP, *keys) < world.user_second_weight[user]
    group = np.where(second_group, world.user_clusters[user, 1], world.user_clusters[user, 0])
    by_taste = draws.uniform(n, _ORGANIC_TASTE, *keys) < config.organic_taste_strength
    u_item = draws.uniform(n, _ORGANIC_ITEM, *keys)
    pop = world.item_popularity[eligible]
    choice = np.empty(n, dtype=np.intp)
    choice[~by_taste] = _pick(np.cumsum(pop), u_item[~by_taste])
    for c in np.unique(group[by_taste]):
        sel = by_taste & (group == c)
        choice[sel] = _pick(np.cumsum(pop * world.affinity[c, eligible]), u_item[sel])
    item = eligible[choice]
    watch = _watch_seconds(
        config,
        world,
        item,
        _fit(world, user, item),
        draws.uniform(n, _ORGANIC_ABANDON, *keys),
        draws.uniform(n, _ORGANIC_FRACTION, *keys),
    )
    seconds = start + np.floor(draws.uniform(n, _ORGANIC_DELAY, *keys) * 3600).astype(np.int64)
    return user, item, np.minimum(seconds, _SECONDS_PER_WEEK - 1), watch


def _prepared_exposures(
    world: World, exposures: pd.DataFrame, key: bytes, week: date
) -> tuple[pd.DataFrame, dict[str, int], dict[str, int]]:
    """Known exposure rows of the week with world indices, in a canonical order; skip counts."""
    missing = [c for c in EXPOSURE_COLUMNS if c not in exposures.columns]
    if missing:
        raise ValueError(f"exposures lack columns {missing} (expected {list(EXPOSURE_COLUMNS)})")
    position = pd.to_numeric(exposures["position"], errors="coerce")
    bad = position.isna() | (position < 1) | (position != np.floor(position))
    if bad.any():
        raise ValueError(
            f"exposure positions must be whole numbers >= 1; bad values: {exposures['position'][bad].unique()[:5].tolist()}"
        )
    pseudonyms = pseudonymize(world.user_ids.tolist(), key)
    user_index = {p: u for u, p in enumerate(pseudonyms)}
    item_index = {str(item): i for i, item in enumerate(world.item_ids)}

    day = pd.to_datetime(
        exposures["week"].astype(str), errors="coerce", utc=True, format="ISO8601"
    ).dt.normalize()
    exposure_week = day - pd.to_timedelta((day.dt.dayofweek + 1) % 7, unit="D")
    of_week = (exposure_week.dt.date == week).to_numpy()
    user = exposures["user"].map(user_index).to_numpy(dtype=float, na_value=np.nan)
    item = exposures["item_id"].astype(str).map(item_index).to_numpy(dtype=float, na_value=np.nan)
    unknown_user = of_week & np.isnan(user)
    unknown_item = of_week & ~np.isnan(user) & np.isnan(item)
    skipped = {
        "other_week": int((~of_week).sum()),
        "unknown_user": int(unknown_user.sum()),
        "unknown_item": int(unknown_item.sum()),
    }
    keep = of_week & ~unknown_user & ~unknown_item
    frame = pd.DataFrame(
        {
            "user": user[keep].astype(np.int64),
            "item": item[keep].astype(np.int64),
            "position": position[keep].to_numpy().astype(np.int64),
            "experiment_id": exposures["experiment_id"][keep].astype(str).to_numpy(),
            "arm": exposures["arm"][keep].astype(str).to_numpy(),
        }
    )
    frame = frame.sort_values(["user", "item", "experiment_id", "arm", "position"], kind="mergesort")
    frame["repeat"] = frame.groupby(["user", "item"]).cumcount().to_numpy()
    return frame.reset_index(drop=True), skipped, user_index


def simulate_feedback(
    world: World,
    exposures: pd.DataFrame,
    key: bytes,
    config: FeedbackConfig,
    week: date,
    population: Iterable[str] | None = None,
) -> pd.DataFrame:
    """One week of clicks and plays of the users in ``exposures`` (see the module docstring).

    ``population``: pseudonyms of further users to simulate, e.g. a holdout arm that was shown
    nothing (they get organic plays only). The returned frame holds RAW user ids; its
    ``attrs["skipped"]`` counts the exposure rows that were left out, by reason.
    """
    start, _ = week_bounds(week)  # raises unless week is a week start
    index = (week - world.first_week).days // 7
    draws = _Draws(config.seed, week)
    shown, skipped, user_index = _prepared_exposures(world, exposures, key, week)
    extra = [] if population is None else list(population)
    extra_known = [user_index[p] for p in extra if p in user_index]
    skipped["unknown_population_user"] = len(extra) - len(extra_known)
    if any(skipped.values()):
        log.warning("simulate_feedback: skipped %s", {k: v for k, v in skipped.items() if v})

    users = np.unique(np.concatenate([shown["user"].to_numpy(), np.array(extra_known, dtype=np.int64)]))
    visit_user, visit_day, visit_start = _visits(world, config, draws, users, index)

    # recommendations: seen at one of the user's visits, examined by position, clicked by taste
    n = len(shown)
    user = shown["user"].to_numpy()
    item = shown["item"].to_numpy()
    position = shown["position"].to_numpy()
    keys = (user, item, shown["repeat"].to_numpy())
    first = np.searchsorted(visit_user, user, side="left")
    n_visits = np.searchsorted(visit_user, user, side="right") - first
    which = first + np.floor(draws.uniform(n, _WHICH_VISIT, *keys) * n_visits).astype(np.int64)
    fit = _fit(world, user, item)
    logit = (
        math.log(config.base_click_rate / (1 - config.base_click_rate))
        + config.taste_weight * fit
        + config.popularity_weight * _popularity_z(world)[item]
    )
    examined = (n_visits > 0) & (draws.uniform(n, _EXAMINE, *keys) < _examined_chance(config, position))
    click = examined & (draws.uniform(n, _CLICK, *keys) < 1.0 / (1.0 + np.exp(-logit)))
    play_chance = np.minimum(1.0, config.play_given_click + config.play_taste_boost * fit)
    play = click & (draws.uniform(n, _PLAY, *keys) < play_chance)
    watch = _watch_seconds(
        config, world, item, fit, draws.uniform(n, _ABANDON, *keys), draws.uniform(n, _FRACTION, *keys)
    )
    last = _SECONDS_PER_WEEK - 1
    seen_at = visit_start[np.where(n_visits > 0, which, 0)] if len(visit_start) else np.zeros(n, np.int64)
    click_delay = 5 + np.floor(draws.uniform(n, _CLICK_DELAY, *keys) * 1795).astype(np.int64)
    click_at = np.minimum(seen_at + click_delay, last)
    play_delay = 2 + np.floor(draws.uniform(n, _PLAY_DELAY, *keys) * 60).astype(np.int64)
    play_at = np.minimum(click_at + play_delay, last)

    o_user, o_item, o_at, o_watch = _organic(world, config, draws, index, visit_user, visit_day, visit_start)

    experiment = shown["experiment_id"].to_numpy(dtype=object)
    arm = shown["arm"].to_numpy(dtype=object)
    n_click, n_play, n_organic = int(click.sum()), int(play.sum()), len(o_user)
    no_text = np.full(n_organic, None, dtype=object)
    out = pd.DataFrame(
        {
            "user_id": np.concatenate(
                [world.user_ids[user[click]], world.user_ids[user[play]], world.user_ids[o_user]]
            ),
            "item_id": np.concatenate(
                [world.item_ids[item[click]], world.item_ids[item[play]], world.item_ids[o_item]]
            ),
            "ts": _iso(int(start.timestamp()), np.concatenate([click_at[click], play_at[play], o_at])),
            "event": np.array(["click"] * n_click + ["play"] * (n_play + n_organic), dtype=object),
            "watch_seconds": pd.array(
                [None] * n_click + watch[play].tolist() + o_watch.tolist(), dtype="Int64"
            ),
            "position": pd.array(
                position[click].tolist() + position[play].tolist() + [None] * n_organic, dtype="Int64"
            ),
            "experiment_id": np.concatenate([experiment[click], experiment[play], no_text]),
            "arm": np.concatenate([arm[click], arm[play], no_text]),
            "from_recommendation": np.array([True] * (n_click + n_play) + [False] * n_organic, dtype=bool),
        },
        columns=list(FEEDBACK_COLUMNS),
    )
    for column in ("user_id", "item_id", "ts", "event", "experiment_id", "arm"):
        out[column] = out[column].astype("string")
    out = out.sort_values(
        ["ts", "user_id", "event", "item_id", "experiment_id", "arm", "position"],
        kind="mergesort",
        na_position="first",
    ).reset_index(drop=True)
    out.attrs["skipped"] = skipped
    return out


def activity(feedback: pd.DataFrame) -> pd.DataFrame:
    """Active users: one row per (user_id, week) with at least one event; ``week`` is the ISO date
    of the week's Sunday. Sorted by week, then user."""
    frame = pd.DataFrame(
        {
            "user_id": feedback["user_id"].astype("string"),
            "week": week_of(feedback["ts"]) if len(feedback) else pd.Series(dtype="string"),
        }
    )
    return frame.drop_duplicates().sort_values(["week", "user_id"]).reset_index(drop=True)


__all__ = [
    "EXPOSURE_COLUMNS",
    "FEEDBACK_COLUMNS",
    "FEEDBACK_EVENTS",
    "SKIP_REASONS",
    "FeedbackConfig",
    "activity",
    "simulate_feedback",
]
