"""Prepare: from anonymized events to model input.

* reads the anonymized event partitions of the training window (the run's week and up to
  ``window_weeks - 1`` weeks before it that exist; :func:`plan_window` says which weeks of the window
  are anonymized, which have raw data but are not anonymized yet, and which have no data at all: the
  pipeline's ``window`` stage brings the second kind up to ``anonymized`` before training, as
  ``window_fill`` says);
* drops exact duplicates of (user, item, ts, event_type) (counted);
* turns events into one implicit-feedback strength per (user, item):
  ``view`` = 1 + min(watch_seconds / 3600, 1); ``rating`` = rating / 2.5; ``browse`` = 0
  (shown but not watched is not a sign of preference); pairs whose strength is 0 are kept out of
  training and counted;
* splits per user by time: each user's most recent ``holdout_fraction`` of pairs (by their last
  event) form the holdout, for users with at least ``min_user_pairs`` pairs; everything else
  trains. The holdout is thus always later than the same user's training data.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from recsys.core.errors import ConfigError, DataNotFoundError
from recsys.core.intervals import weeks_back
from recsys.io.storage import Lake, read_parquet

VIEW_HOURS_CAP = 1.0
RATING_SCALE = 2.5


class PrepareConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    window_weeks: int = Field(12, ge=1, le=520, description="weeks of history the model trains on")
    holdout_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    min_user_pairs: int = Field(5, ge=2, description="users with fewer pairs are not held out")
    relevance_min_rating: float = Field(
        3.5, description="a holdout pair with only a rating below this is not counted as relevant"
    )
    window_fill: Literal["process", "warn", "refuse"] = Field(
        "process",
        description="window weeks with raw data that are not anonymized yet: process (ingest, validate "
        "and anonymize them before training, each recorded like a normal run), warn (train on the "
        "anonymized weeks only and say how many are missing) or refuse (fail the run naming them)",
    )


@dataclass(frozen=True)
class Window:
    """The training window of ``week``: its ``size`` weeks, oldest first, by what the lake holds."""

    week: date
    size: int
    ready: tuple[date, ...]  # anonymized events: trained on
    unprocessed: tuple[date, ...]  # raw events, not anonymized (yet)
    no_data: tuple[date, ...]  # no raw events at all (before the lake's history, or a gap)
    failed: dict[str, str] = field(default_factory=dict)  # week -> why it could not be processed

    @property
    def weeks(self) -> list[date]:
        return weeks_back(self.week, self.size)

    def describe(self) -> str:
        """One line, e.g. ``window: 11 of 12 weeks (1997-09-21 .. 1997-11-30); 1 week has no raw data``."""
        n = len(self.ready)
        text = f"window: {n} of {self.size} weeks"
        if self.ready:
            text += f" ({self.ready[0].isoformat()} .. {self.ready[-1].isoformat()})"
        notes = []
        pending = [w for w in self.unprocessed if w.isoformat() not in self.failed]
        if pending:
            notes.append(f"{_weeks(len(pending))} with raw data not anonymized ({_listed(pending)})")
        if self.failed:
            failed = [date.fromisoformat(w) for w in sorted(self.failed)]
            notes.append(f"{_weeks(len(failed))} left out, failed to process ({_listed(failed)})")
        if self.no_data:
            notes.append(f"{_weeks(len(self.no_data))} without raw data")
        return text + ("; " + "; ".join(notes) if notes else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "weeks": len(self.ready),
            "first": self.ready[0].isoformat() if self.ready else None,
            "last": self.ready[-1].isoformat() if self.ready else None,
            "unprocessed": [w.isoformat() for w in self.unprocessed],
            "no_data": [w.isoformat() for w in self.no_data],
            "failed": dict(self.failed),
            "text": self.describe(),
        }


def _listed(weeks: list[date], most: int = 4) -> str:
    more = ", ..." if len(weeks) > most else ""
    return ", ".join(w.isoformat() for w in weeks[:most]) + more


def _weeks(n: int) -> str:
    return f"{n} week{'s' if n != 1 else ''}"


def plan_window(lake: Lake, week: date, size: int, failed: dict[str, str] | None = None) -> Window:
    """Which weeks of ``week``'s training window are anonymized, processable or without data."""
    ready, unprocessed, no_data = [], [], []
    for w in weeks_back(week, size):
        if lake.data_file("anonymized", "events", w).exists():
            ready.append(w)
        elif lake.raw_files("events", w):
            unprocessed.append(w)
        else:
            no_data.append(w)
    failed = {w: why for w, why in (failed or {}).items() if date.fromisoformat(w) in unprocessed}
    return Window(week, size, tuple(ready), tuple(unprocessed), tuple(no_data), failed)


def require_window(window: Window, mode: str) -> None:
    """Refuse (``mode`` refuse) a window with weeks that have raw data but are not anonymized."""
    if mode == "refuse" and window.unprocessed:
        raise ConfigError(
            f"training window of week {window.week.isoformat()}: {window.describe()}; "
            "prepare.window_fill is 'refuse': run those weeks first, or set it to 'process'"
        )


@dataclass
class Prepared:
    train: pd.DataFrame
    holdout: pd.DataFrame
    stats: dict[str, int | str | list[str]]


def read_window(lake: Lake, window: Window) -> tuple[pd.DataFrame, list[date]]:
    """The anonymized events of the window's ready weeks (:func:`plan_window`), which must include its week."""
    week, weeks = window.week, list(window.ready)
    if week not in weeks:
        raise DataNotFoundError(
            f"no anonymized events for week {week.isoformat()} at "
            f"{lake.data_file('anonymized', 'events', week)}: run the anonymize stage first"
        )
    frames = [read_parquet(lake.data_file("anonymized", "events", w)) for w in weeks]
    return pd.concat(frames, ignore_index=True), weeks


def event_strength(events: pd.DataFrame) -> pd.Series:
    kind = events["event_type"].astype("string")
    watch = pd.to_numeric(events["watch_seconds"], errors="coerce").fillna(0.0).clip(lower=0.0)
    rating = pd.to_numeric(events["rating"], errors="coerce").fillna(0.0)
    strength = np.select(
        [kind == "view", kind == "rating"],
        [1.0 + np.minimum(watch / 3600.0, VIEW_HOURS_CAP), rating / RATING_SCALE],
        default=0.0,
    )
    return pd.Series(strength, index=events.index, dtype="float64")


def to_pairs(events: pd.DataFrame) -> pd.DataFrame:
    """One row per (user, item): summed strength, latest rating, last event time."""
    df = events.assign(strength=event_strength(events))
    df["is_view"] = df["event_type"].astype("string") == "view"
    ratings = df[df["event_type"].astype("string") == "rating"].sort_values("ts")
    last_rating = ratings.groupby(["user", "item_id"])["rating"].last()
    pairs = df.groupby(["user", "item_id"], as_index=False).agg(
        strength=("strength", "sum"), last_ts=("ts", "max"), viewed=("is_view", "any")
    )
    pairs = pairs.merge(last_rating.rename("rating").reset_index(), on=["user", "item_id"], how="left")
    return pairs


def split_by_time(pairs: pd.DataFrame, config: PrepareConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    ordered = pairs.sort_values(["user", "last_ts", "item_id"], kind="mergesort").reset_index(drop=True)
    sizes = ordered.groupby("user")["item_id"].transform("size")
    position = ordered.groupby("user").cumcount()
    n_holdout = np.floor(sizes * config.holdout_fraction).clip(lower=1).astype(int)
    eligible = sizes >= config.min_user_pairs
    is_holdout = eligible & (position >= sizes - n_holdout)
    return ordered[~is_holdout].reset_index(drop=True), ordered[is_holdout].reset_index(drop=True)


def relevant_holdout(holdout: pd.DataFrame, config: PrepareConfig) -> pd.DataFrame:
    """Holdout pairs that count as relevant: watched, or rated at least ``relevance_min_rating``."""
    rated_ok = holdout["rating"].fillna(-1.0) >= config.relevance_min_rating
    return holdout[holdout["viewed"] | rated_ok]


def digest(train: pd.DataFrame) -> str:
    keyed = train[["user", "item_id", "strength"]].sort_values(["user", "item_id"])
    hashed = pd.util.hash_pandas_object(keyed, index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()[:16]


#: events with the same values of these are one event: the first (in input order) is kept
DEDUP_KEY = ["user", "item_id", "ts", "event_type"]
#: the kinds of :func:`tagged_block`'s rows
TRAIN, HOLDOUT, NOT_RELEVANT, NO_PREFERENCE, BLOCK = 0, 1, 2, 3, 4


#: the columns :func:`tagged_block` adds: the row's kind, and the block's deduplicated events
KIND_COLUMN, EVENTS_COLUMN = "_kind", "_events"


@dataclass
class _Steps:
    deduped: pd.DataFrame
    pairs: pd.DataFrame
    train: pd.DataFrame
    held: pd.DataFrame  # every held-out pair
    holdout: pd.DataFrame  # the relevant ones


def _steps(events: pd.DataFrame, config: PrepareConfig) -> _Steps:
    """Prepare's steps, shared by the whole window (:func:`prepare`) and a block of users
    (:func:`tagged_block`): dedupe, pairs, time split of the pairs with a preference, relevance."""
    deduped = events.drop_duplicates(subset=DEDUP_KEY)
    pairs = to_pairs(deduped)
    train, held = split_by_time(pairs[pairs["strength"] > 0], config)
    return _Steps(deduped, pairs, train, held, relevant_holdout(held, config))


def prepare(events: pd.DataFrame, config: PrepareConfig) -> Prepared:
    before = len(events)
    steps = _steps(events, config)
    deduped, pairs, train, holdout = steps.deduped, steps.pairs, steps.train, steps.holdout
    stats = {
        "events_in": before,
        "duplicates_dropped": before - len(deduped),
        "pairs": len(pairs),
        "pairs_without_preference": int((pairs["strength"] <= 0).sum()),
        "train_pairs": len(train),
        "holdout_pairs": len(holdout),
        "users": int(train["user"].nunique()),
        "items": int(train["item_id"].nunique()),
        "holdout_users": int(holdout["user"].nunique()),
        "train_digest": digest(train),
    }
    return Prepared(train=train, holdout=holdout, stats=stats)


def tagged_block(events: pd.DataFrame, config: PrepareConfig, columns: list[str]) -> pd.DataFrame:
    """What :func:`prepare` makes of a block of users' events (every event of each of its users, in
    input order): its pairs (``columns``), ``_kind`` :data:`TRAIN`, :data:`HOLDOUT`,
    :data:`NOT_RELEVANT` (held out, not relevant) or :data:`NO_PREFERENCE`, and one :data:`BLOCK` row
    whose ``_events`` is the block's deduplicated events (0 on the others). Prepare depends on a user's
    events only, so the blocks' rows together are the whole window's (the Spark path's unit of work)."""
    steps = _steps(events, config)
    pairs, held, holdout = steps.pairs, steps.held, steps.holdout
    parts = [
        steps.train[columns].assign(**{KIND_COLUMN: TRAIN}),
        holdout[columns].assign(**{KIND_COLUMN: HOLDOUT}),
        held.drop(index=holdout.index)[columns].assign(**{KIND_COLUMN: NOT_RELEVANT}),
        pairs[pairs["strength"] <= 0][columns].assign(**{KIND_COLUMN: NO_PREFERENCE}),
    ]
    out = pd.concat(parts, ignore_index=True)
    out[EVENTS_COLUMN] = 0
    block = pd.DataFrame(
        {c: [None] for c in columns} | {KIND_COLUMN: [BLOCK], EVENTS_COLUMN: [len(steps.deduped)]}
    )
    block = block.assign(item_id=0, strength=0.0, last_ts=0, viewed=False, rating=float("nan"))
    return pd.concat([out, block[out.columns]], ignore_index=True)
