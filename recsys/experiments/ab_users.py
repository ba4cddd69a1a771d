"""The A/B readout's per-user table: what each exposed user of an experiment was shown and did,
from the exposures, feedback and activity frames (:func:`user_metrics`).

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
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from recsys.experiments.ab_config import (
    ACTIVE_COLUMNS,
    EVENTS,
    EXPOSURE_COLUMNS,
    FEEDBACK_COLUMNS,
    USER_COLUMNS,
    ExperimentConfig,
    ExperimentDataError,
)


def require_columns(frame: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    """Raise ExperimentDataError unless ``frame`` is a DataFrame with every one of ``columns``."""
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
    return user_table(exposures, feedback, active, config)[0]


def user_table(
    exposures: pd.DataFrame, feedback: pd.DataFrame, active: pd.DataFrame, config: ExperimentConfig
) -> tuple[pd.DataFrame, dict[str, Any] | None]:
    """(:func:`user_metrics`, the readout window: first and last week and the churn weeks, as
    strings; None without exposures)."""
    require_columns(exposures, EXPOSURE_COLUMNS, "exposures")
    require_columns(feedback, FEEDBACK_COLUMNS, "feedback")
    require_columns(active, ACTIVE_COLUMNS, "active")

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
