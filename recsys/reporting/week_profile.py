"""The weekly data profile's figures: exploratory analysis of one week as a product.

It reads the **anonymized** layer only (users are pseudonyms there) and never shows a pseudonym:
users are counted, never named. Titles and genres are catalogue data and may be shown.

:func:`profile_week` turns the week's events, the catalogue and (optionally) the earlier weeks'
events into a :class:`WeekProfile`: plain figures, no user identifiers, ``to_dict()`` JSON-safe.
:mod:`recsys.reporting.data_profile` draws it as a page.

Definitions used throughout:

* an *event* is one row of the events table, whatever its type;
* a *play* is an event that is not a ``browse`` (a title shown but not watched): a ``view`` or a
  ``rating``; without an ``event_type`` column every event is a play;
* a title belongs to every genre of its catalogue ``genres`` (``|``-joined), so genre figures add
  up to more than the week's totals;
* hours and weekdays are UTC; weekdays are listed Sunday first, like the lake's weeks.

Nothing here raises on a data problem (missing columns, empty frames, unparseable values): the
figure is left empty and the page shows a short note instead of the plot.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any

import numpy as np
import pandas as pd

from recsys.core.schemas import GENRE_SEPARATOR
from recsys.io.storage import json_safe

log = logging.getLogger(__name__)

WEEKDAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")
EVENT_TYPE_ORDER = ("view", "rating", "browse")
NOT_PLAYS = frozenset({"browse"})
NO_GENRE = "(no genre)"
MISSING = "(missing)"
TOP_TITLES = 10
CURVE_POINTS = 101  # share of plays at 0%, 1%, .., 100% of titles


@dataclass(frozen=True)
class GenreStat:
    genre: str
    users: int  # distinct users with at least one play of a title of the genre
    plays: int
    user_share: float  # users / users with any play this week


@dataclass(frozen=True)
class Bin:
    lo: float  # inclusive
    hi: float  # inclusive for integer counts (events per user), exclusive for minutes
    count: int


@dataclass(frozen=True)
class TitleStat:
    item_id: str
    title: str
    plays: int
    users: int


@dataclass(frozen=True)
class WeekProfile:
    """The figures of one week. Counts are ints, shares fractions in [0, 1]; None = not computable."""

    week_start: str
    week_end: str
    events: int = 0
    users: int = 0  # distinct users with any event
    plays: int = 0
    titles_played: int = 0
    catalogue_titles: int = 0
    event_columns: tuple[str, ...] = ()
    item_columns: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # data problems found while profiling
    # genres
    genres: tuple[GenreStat, ...] = ()  # most plays first
    plays_not_in_catalogue: int = 0
    # time of day and week (UTC)
    hours: tuple[int, ...] = ()  # 24 counts of events, hour 0 first; empty without timestamps
    weekdays: tuple[int, ...] = ()  # 7 counts of events, Sunday first
    hour_by_weekday: tuple[tuple[int, ...], ...] = ()  # 7 rows (Sunday first) of 24 hours
    peak_hour: int | None = None
    peak_weekday: str | None = None
    events_outside_week: int = 0
    # user activity (events per user)
    events_per_user_median: float | None = None
    events_per_user_p90: float | None = None
    events_per_user_mean: float | None = None
    events_per_user_max: int | None = None
    activity_bins: tuple[Bin, ...] = ()  # powers of two: 1, 2-3, 4-7, ...
    # item popularity (plays per title, over the catalogue and every title played)
    titles_considered: int = 0
    top1_share: float | None = None  # share of plays of the most played 1% of titles (at least one)
    top10_share: float | None = None
    popularity_gini: float | None = None
    popularity_curve: tuple[float, ...] = ()  # share of plays of the top 0%, 1%, .., 100% of titles
    top_titles: tuple[TitleStat, ...] = ()
    # new versus returning
    earlier_weeks: tuple[str, ...] = ()
    earlier_events: int | None = None  # None: no earlier events given
    users_new: int | None = None
    users_returning: int | None = None
    plays_by_new_users: int | None = None
    titles_new: int | None = None  # played this week, never played in the earlier events
    titles_returning: int | None = None
    catalogue_added: int | None = None  # ``added_at`` inside the week; None without the column
    catalogue_added_titles: tuple[str, ...] = ()
    # event types, ratings, watch time
    event_types: tuple[tuple[str, int], ...] = ()
    ratings: tuple[tuple[float, int], ...] = ()  # (rating, events), lowest first
    rating_mean: float | None = None
    rating_median: float | None = None
    watched_views: int = 0  # events with watch_seconds > 0
    watch_minutes_median: float | None = None
    watch_minutes_p90: float | None = None
    watch_minutes_mean: float | None = None
    watch_hours_total: float | None = None
    watch_bins: tuple[Bin, ...] = ()  # minutes
    section_notes: tuple[tuple[str, str], ...] = field(default=())  # (section, why a figure is missing)

    def to_dict(self) -> dict[str, Any]:
        """Strict-JSON dict (tuples as lists, NaN as None)."""
        return json_safe(dataclasses.asdict(self))

    def why(self, section: str) -> list[str]:
        return [text for name, text in self.section_notes if name == section]


# ---- computing the figures ---------------------------------------------------------------------
def frame_or_empty(value: Any) -> pd.DataFrame:
    """``value`` when it is a DataFrame, else an empty one (a missing input profiles as empty)."""
    return value if isinstance(value, pd.DataFrame) else pd.DataFrame()


def _utc(moment: datetime | date | str) -> pd.Timestamp:
    if isinstance(moment, date) and not isinstance(moment, datetime):
        moment = datetime.combine(moment, time(0, 0), tzinfo=UTC)
    stamp = pd.Timestamp(moment)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _times(events: pd.DataFrame) -> pd.Series | None:
    column = "ts" if "ts" in events else "timestamp" if "timestamp" in events else None
    if column is None:
        return None
    values = events[column]
    if not isinstance(values.dtype, pd.DatetimeTZDtype):
        with warnings.catch_warnings():  # "could not infer format": unreadable values become NaT, noted
            warnings.simplefilter("ignore", UserWarning)
            values = pd.to_datetime(values, utc=True, errors="coerce")
    return values.dt.tz_convert("UTC")


def _percentile(values: np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def gini(values: np.ndarray) -> float | None:
    """Gini coefficient of non-negative values (0: all equal, towards 1: one takes everything)."""
    total = float(values.sum())
    n = len(values)
    if n == 0 or total <= 0:
        return None
    ordered = np.sort(values.astype(float))
    ranks = np.arange(1, n + 1)
    return float(2.0 * (ranks * ordered).sum() / (n * total) - (n + 1) / n)


def top_share(ordered_desc: np.ndarray, fraction: float) -> float | None:
    total = float(ordered_desc.sum())
    if len(ordered_desc) == 0 or total <= 0:
        return None
    k = max(1, math.ceil(fraction * len(ordered_desc) - 1e-9))
    return float(ordered_desc[:k].sum() / total)


def _power_bins(counts: np.ndarray) -> tuple[Bin, ...]:
    if len(counts) == 0:
        return ()
    top = int(counts.max())
    bins = []
    lo = 1
    while lo <= top:
        hi = lo * 2 - 1
        bins.append(Bin(lo, hi, int(((counts >= lo) & (counts <= hi)).sum())))
        lo *= 2
    return tuple(bins)


def _nice_width(span: float, max_bins: int = 24) -> float:
    for width in (1, 2, 5, 10, 15, 20, 30, 60, 120, 240, 480, 960):
        if span / width <= max_bins:
            return float(width)
    return float(math.ceil(span / max_bins))


def _minute_bins(minutes: np.ndarray) -> tuple[Bin, ...]:
    if len(minutes) == 0:
        return ()
    width = _nice_width(float(minutes.max()))
    edges = np.arange(0.0, float(minutes.max()) + width, width)
    if len(edges) < 2:
        edges = np.array([0.0, width])
    counts, edges = np.histogram(minutes, bins=edges)
    return tuple(
        Bin(float(lo), float(hi), int(c)) for lo, hi, c in zip(edges[:-1], edges[1:], counts, strict=True)
    )


class _Collector:
    """Figures and notes, filled part by part; a part that fails leaves a note, not an exception."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.notes: list[str] = []
        self.section_notes: list[tuple[str, str]] = []

    def why(self, section: str, text: str) -> None:
        self.section_notes.append((section, text))

    def run(self, section: str, part: Callable[[], None]) -> None:
        try:
            part()
        except Exception as exc:  # noqa: BLE001 - a data problem must not fail the profile
            log.warning("data profile: %s could not be computed: %s", section, exc, exc_info=True)
            self.why(section, f"could not be computed ({exc.__class__.__name__}: {exc})")


@dataclass(frozen=True)
class History:
    """What the profile needs of the earlier weeks' events: how many there were (before the week
    starts) and their distinct users and titles (ids as text). Built a week at a time
    (:meth:`of`, :meth:`merge`), so no more than one earlier week's events is in memory at once."""

    events: int
    users: pd.Index | None  # None: the earlier events have no 'user' column
    item_ids: pd.Index | None  # None: no 'item_id' column

    @classmethod
    def of(cls, earlier: pd.DataFrame, start: datetime) -> History:
        """The history in ``earlier`` events (rows at or after ``start`` are left out; rows whose time
        cannot be read count as earlier)."""
        earlier = frame_or_empty(earlier)
        times = _times(earlier)
        if times is not None:
            earlier = earlier[(~(times >= _utc(start))).to_numpy()]
        users = pd.Index(earlier["user"].dropna().unique()) if "user" in earlier else None
        item_ids = _distinct_ids(earlier["item_id"]) if "item_id" in earlier else None
        return cls(len(earlier), users, item_ids)

    def merge(self, other: History) -> History:
        def union(a: pd.Index | None, b: pd.Index | None) -> pd.Index | None:
            # a column missing from one week's file is missing from the history (as with pd.concat,
            # where that week's rows would hold no value): the values the other weeks hold still count
            if a is None or b is None:
                return a if b is None else b
            return a.append(b).unique()

        return History(
            self.events + other.events, union(self.users, other.users), union(self.item_ids, other.item_ids)
        )


def profile_week(
    events: pd.DataFrame,
    items: pd.DataFrame,
    week_start: datetime,
    week_end: datetime,
    earlier_events: pd.DataFrame | History | None = None,
) -> WeekProfile:
    """The figures of the week [``week_start``, ``week_end``) (naive datetimes are UTC).

    ``events``: anonymized events (``user``, ``item_id``, ``ts``, ``event_type``, ``rating``,
    ``watch_seconds``; any may be missing). ``items``: the catalogue (``item_id``, ``title``,
    ``genres``, ``added_at``). ``earlier_events``: events of earlier weeks (``user``, ``item_id``,
    ``ts``) or their :class:`History`; rows at or after ``week_start`` are ignored; None = new versus
    returning is unknown.
    """
    start, end = _utc(week_start), _utc(week_end)
    events, items = frame_or_empty(events).copy(), frame_or_empty(items)
    c = _Collector()
    c.values.update(
        week_start=start.isoformat(),
        week_end=end.isoformat(),
        events=len(events),
        event_columns=tuple(str(col) for col in events.columns),
        item_columns=tuple(str(col) for col in items.columns),
    )
    if events.empty:
        c.notes.append("No events this week.")

    # plays and the catalogue's view of each event
    if "event_type" in events:
        types = events["event_type"].astype("object").where(events["event_type"].notna(), MISSING).astype(str)
        is_play = ~types.isin(NOT_PLAYS)
    else:
        types = None
        is_play = pd.Series(True, index=events.index)
    c.values["plays"] = int(is_play.sum())
    has_user = "user" in events
    if has_user:
        c.values["users"] = int(events["user"].nunique())
        missing_users = int(events["user"].isna().sum())
        if missing_users:
            c.notes.append(f"{missing_users:,} events have no user.")
    elif not events.empty:
        c.notes.append("The events have no 'user' column: user figures are left out.")
    has_item = "item_id" in events
    if not has_item and not events.empty:
        c.notes.append("The events have no 'item_id' column: title and genre figures are left out.")

    catalogue = _catalogue(items, c)
    c.values["catalogue_titles"] = len(catalogue)
    if has_item:
        c.values["titles_played"] = int(events.loc[is_play, "item_id"].nunique())

    c.run("genres", lambda: _genres(events, is_play, catalogue, c))
    c.run("time", lambda: _time(events, start, end, c))
    c.run("activity", lambda: _activity(events, c))
    c.run("popularity", lambda: _popularity(events, is_play, catalogue, c))
    c.run("new", lambda: _new_returning(events, is_play, catalogue, earlier_events, start, end, c))
    c.run("types", lambda: _types(events, types, c))
    c.run("ratings", lambda: _ratings(events, c))
    c.run("watch", lambda: _watch(events, c))
    return WeekProfile(**c.values, notes=tuple(c.notes), section_notes=tuple(c.section_notes))


def _catalogue(items: pd.DataFrame, c: _Collector) -> pd.DataFrame:
    """One row per item id, indexed by the id as text (ids compare as text between frames)."""
    if items.empty:
        c.notes.append("The catalogue is empty: genre and catalogue figures are left out.")
        return pd.DataFrame()
    if "item_id" not in items:
        c.notes.append("The catalogue has no 'item_id' column: genre and catalogue figures are left out.")
        return pd.DataFrame()
    catalogue = items.dropna(subset=["item_id"]).copy()
    catalogue.index = _ids(catalogue["item_id"])
    return catalogue[~catalogue.index.duplicated(keep="last")]


def _ids(series: pd.Series) -> pd.Series:
    """Item ids as text, so ids compare between frames whatever their dtype (204, 204.0, "204")."""
    if pd.api.types.is_float_dtype(series.dtype):
        series = series.map(lambda v: int(v) if isinstance(v, float) and v.is_integer() else v)
    return series.astype(str).where(series.notna(), None)


def _distinct_ids(series: pd.Series) -> pd.Index:
    """The distinct item ids of ``series`` as text (:func:`_ids`), missing ones left out; each
    distinct value is converted once."""
    present = series.dropna()
    return pd.Index(_ids(pd.Series(present.unique(), dtype=present.dtype))).dropna().unique()


def _text(value: Any) -> str:
    return (
        ""
        if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA
        else str(value)
    )


def _genres(events: pd.DataFrame, is_play: pd.Series, catalogue: pd.DataFrame, c: _Collector) -> None:
    if events.empty:
        return c.why("genres", "no events this week")
    if "item_id" not in events:
        return c.why("genres", "the events have no 'item_id' column")
    if catalogue.empty:
        return c.why("genres", "no catalogue to look the titles' genres up in")
    if "genres" not in catalogue:
        return c.why("genres", "the catalogue has no 'genres' column")
    plays = events.loc[is_play]
    ids = _ids(plays["item_id"])
    known = ids.isin(catalogue.index)
    c.values["plays_not_in_catalogue"] = int((~known).sum())
    genre_text = catalogue["genres"].astype("object").where(catalogue["genres"].notna(), "")
    per_item = genre_text.astype(str).str.split(GENRE_SEPARATOR, regex=False)
    per_item = per_item.map(lambda gs: sorted({g.strip() for g in gs if g.strip()}) or [NO_GENRE])
    frame = pd.DataFrame(
        {
            "item": ids[known].to_numpy(),
            "user": plays.loc[known, "user"].to_numpy() if "user" in plays else np.nan,
        }
    )
    if frame.empty:
        return c.why("genres", "no play of a title in the catalogue this week")
    frame["genre"] = frame["item"].map(per_item)
    frame = frame.explode("genre")
    grouped = frame.groupby("genre", sort=False)
    plays_per = grouped.size()
    users_per = grouped["user"].nunique() if "user" in plays else pd.Series(0, index=plays_per.index)
    players = int(plays.loc[known, "user"].nunique()) if "user" in plays else 0
    stats = [
        GenreStat(
            str(g), int(users_per[g]), int(plays_per[g]), (int(users_per[g]) / players) if players else 0.0
        )
        for g in plays_per.index
    ]
    stats.sort(key=lambda s: (-s.plays, -s.users, s.genre))
    c.values["genres"] = tuple(stats)
    if "user" not in plays:
        c.why("genres", "the events have no 'user' column: distinct users per genre are 0")


def _time(events: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp, c: _Collector) -> None:
    if events.empty:
        return c.why("time", "no events this week")
    times = _times(events)
    if times is None:
        return c.why("time", "the events have no 'ts' column")
    bad = int(times.isna().sum())
    if bad:
        c.notes.append(f"{bad:,} events have a missing or unreadable timestamp.")
    times = times.dropna()
    outside = int(((times < start) | (times >= end)).sum())
    c.values["events_outside_week"] = outside
    if outside:
        c.notes.append(f"{outside:,} events fall outside the week (they are still counted).")
    if times.empty:
        return c.why("time", "no readable timestamp")
    hours = times.dt.hour.to_numpy()
    weekdays = ((times.dt.dayofweek + 1) % 7).to_numpy()  # pandas: Monday 0; here Sunday 0
    grid = np.zeros((7, 24), dtype=int)
    np.add.at(grid, (weekdays, hours), 1)
    by_hour, by_day = grid.sum(axis=0), grid.sum(axis=1)
    c.values.update(
        hours=tuple(int(v) for v in by_hour),
        weekdays=tuple(int(v) for v in by_day),
        hour_by_weekday=tuple(tuple(int(v) for v in row) for row in grid),
        peak_hour=int(by_hour.argmax()),
        peak_weekday=WEEKDAYS[int(by_day.argmax())],
    )


def _activity(events: pd.DataFrame, c: _Collector) -> None:
    if events.empty:
        return c.why("activity", "no events this week")
    if "user" not in events:
        return c.why("activity", "the events have no 'user' column")
    counts = events.groupby("user", dropna=True).size().to_numpy()
    if len(counts) == 0:
        return c.why("activity", "no event has a user")
    c.values.update(
        events_per_user_median=_percentile(counts, 50),
        events_per_user_p90=_percentile(counts, 90),
        events_per_user_mean=float(counts.mean()),
        events_per_user_max=int(counts.max()),
        activity_bins=_power_bins(counts),
    )


def _popularity(events: pd.DataFrame, is_play: pd.Series, catalogue: pd.DataFrame, c: _Collector) -> None:
    if events.empty:
        return c.why("popularity", "no events this week")
    if "item_id" not in events:
        return c.why("popularity", "the events have no 'item_id' column")
    plays = events.loc[is_play]
    ids = _ids(plays["item_id"]).dropna()
    if ids.empty:
        return c.why("popularity", "no plays this week")
    per_title = ids.value_counts()
    unplayed = catalogue.index.difference(per_title.index) if not catalogue.empty else []
    ordered = np.concatenate([per_title.to_numpy(), np.zeros(len(unplayed), dtype=int)])
    ordered = np.sort(ordered)[::-1]
    cumulative = np.concatenate([[0.0], np.cumsum(ordered) / ordered.sum()])
    grid = np.linspace(0.0, 1.0, CURVE_POINTS)
    curve = np.interp(grid, np.arange(len(ordered) + 1) / len(ordered), cumulative)
    users = (
        plays.assign(_item=_ids(plays["item_id"])).groupby("_item")["user"].nunique()
        if "user" in plays
        else pd.Series(dtype=int)
    )
    titles = catalogue["title"] if "title" in catalogue else pd.Series(dtype=object)
    top = [
        TitleStat(
            item_id=str(item),
            title=_text(titles.get(item)),
            plays=int(n),
            users=int(users.get(item, 0)),
        )
        for item, n in per_title.head(TOP_TITLES).items()
    ]
    c.values.update(
        titles_considered=len(ordered),
        top1_share=top_share(ordered, 0.01),
        top10_share=top_share(ordered, 0.10),
        popularity_gini=gini(ordered),
        popularity_curve=tuple(float(v) for v in curve),
        top_titles=tuple(top),
    )


def _new_returning(
    events: pd.DataFrame,
    is_play: pd.Series,
    catalogue: pd.DataFrame,
    earlier: pd.DataFrame | None,
    start: pd.Timestamp,
    end: pd.Timestamp,
    c: _Collector,
) -> None:
    # catalogue additions need no history
    if catalogue.empty:
        c.why("new", "no catalogue: titles added this week are unknown")
    elif "added_at" not in catalogue:
        c.why("new", "the catalogue has no 'added_at' column: titles added this week are unknown")
    else:
        added = pd.to_datetime(catalogue["added_at"], utc=True, errors="coerce")
        fresh = catalogue[(added >= start) & (added < end)]
        c.values["catalogue_added"] = len(fresh)
        if "title" in fresh:
            c.values["catalogue_added_titles"] = tuple(
                str(t) for t in fresh["title"].head(TOP_TITLES) if pd.notna(t)
            )
    if earlier is None:
        return c.why("new", "no earlier weeks to compare with: new versus returning is unknown")
    history = earlier if isinstance(earlier, History) else History.of(earlier, start)
    c.values["earlier_events"] = history.events
    if events.empty:
        return c.why("new", "no events this week")
    if "user" in events:
        if history.users is None:
            c.why("new", "the earlier events have no 'user' column: every user counts as new")
        users = pd.Index(events["user"].dropna().unique())
        new_users = users if history.users is None else users[~users.isin(history.users)]
        c.values.update(
            users_new=len(new_users),
            users_returning=len(users) - len(new_users),
            plays_by_new_users=int((is_play & events["user"].isin(new_users)).sum()),
        )
    else:
        c.why("new", "the events have no 'user' column: new versus returning users is unknown")
    if "item_id" in events:
        played = _distinct_ids(events.loc[is_play, "item_id"])
        seen = history.item_ids
        fresh_titles = played if seen is None else played[~played.isin(seen)]
        c.values.update(titles_new=len(fresh_titles), titles_returning=len(played) - len(fresh_titles))


def _types(events: pd.DataFrame, types: pd.Series | None, c: _Collector) -> None:
    if events.empty:
        return c.why("types", "no events this week")
    if types is None:
        return c.why("types", "the events have no 'event_type' column")
    counts = types.value_counts()
    order = [t for t in EVENT_TYPE_ORDER if t in counts.index] + sorted(
        t for t in counts.index if t not in EVENT_TYPE_ORDER
    )
    c.values["event_types"] = tuple((str(t), int(counts[t])) for t in order)


def _ratings(events: pd.DataFrame, c: _Collector) -> None:
    if "rating" not in events:
        return c.why("ratings", "the events have no 'rating' column")
    values = pd.to_numeric(events["rating"], errors="coerce").dropna().to_numpy(dtype=float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return c.why("ratings", "no ratings this week")
    rounded = np.round(values * 2) / 2  # half-star steps
    levels, counts = np.unique(rounded, return_counts=True)
    c.values.update(
        ratings=tuple((float(v), int(n)) for v, n in zip(levels, counts, strict=True)),
        rating_mean=float(values.mean()),
        rating_median=float(np.median(values)),
    )


def _watch(events: pd.DataFrame, c: _Collector) -> None:
    if "watch_seconds" not in events:
        return c.why("watch", "the events have no 'watch_seconds' column")
    seconds = pd.to_numeric(events["watch_seconds"], errors="coerce").to_numpy(dtype=float)
    seconds = seconds[np.isfinite(seconds) & (seconds > 0)]
    if len(seconds) == 0:
        return c.why("watch", "no watch time this week")
    minutes = seconds / 60.0
    c.values.update(
        watched_views=len(seconds),
        watch_minutes_median=float(np.median(minutes)),
        watch_minutes_p90=float(np.percentile(minutes, 90)),
        watch_minutes_mean=float(minutes.mean()),
        watch_hours_total=float(seconds.sum() / 3600.0),
        watch_bins=_minute_bins(minutes),
    )
