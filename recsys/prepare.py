"""Prepare: from anonymized events to model input.

* reads the anonymized event partitions of the training window (the run's week and up to
  ``window_weeks - 1`` weeks before it that exist);
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
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from recsys.errors import DataNotFoundError
from recsys.intervals import weeks_back
from recsys.storage import Lake

VIEW_HOURS_CAP = 1.0
RATING_SCALE = 2.5


class PrepareConfig(BaseModel):
    window_weeks: int = Field(12, ge=1, le=520, description="weeks of history the model trains on")
    holdout_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    min_user_pairs: int = Field(5, ge=2, description="users with fewer pairs are not held out")
    relevance_min_rating: float = Field(
        3.5, description="a holdout pair with only a rating below this is not counted as relevant"
    )


@dataclass
class Prepared:
    train: pd.DataFrame
    holdout: pd.DataFrame
    stats: dict[str, int | str | list[str]]


def read_window(lake: Lake, week: date, window_weeks: int) -> tuple[pd.DataFrame, list[date]]:
    weeks = [w for w in weeks_back(week, window_weeks) if lake.data_file("anonymized", "events", w).exists()]
    if week not in weeks:
        raise DataNotFoundError(
            f"no anonymized events for week {week.isoformat()} at "
            f"{lake.data_file('anonymized', 'events', week)}: run the anonymize stage first"
        )
    frames = [pd.read_parquet(lake.data_file("anonymized", "events", w)) for w in weeks]
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


def prepare(events: pd.DataFrame, config: PrepareConfig) -> Prepared:
    before = len(events)
    deduped = events.drop_duplicates(subset=["user", "item_id", "ts", "event_type"])
    pairs = to_pairs(deduped)
    positive = pairs[pairs["strength"] > 0]
    train, holdout = split_by_time(positive, config)
    holdout = relevant_holdout(holdout, config)
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
