"""The weekly data profile: exploratory analysis of one week as a product, one HTML page per week.

It reads the **anonymized** layer only (users are pseudonyms there) and never shows a pseudonym:
users are counted, never named. Titles and genres are catalogue data and may be shown.

* :func:`profile_week` turns the week's events, the catalogue and (optionally) the earlier weeks'
  events into a :class:`WeekProfile`: plain figures, no user identifiers, ``to_dict()`` JSON-safe.
* :func:`render_profile` draws it as one self-contained HTML document (the helpers and style of
  :mod:`recsys.reporting.model_report`: inline CSS, base64 PNGs, every value from data HTML-escaped).
* :func:`profile_from_lake` reads a week and up to ``history_weeks`` earlier weeks from the lake;
  :func:`log_profile` attaches the page to an MLflow run as ``profile/week_profile.html``.

Definitions used throughout:

* an *event* is one row of the events table, whatever its type;
* a *play* is an event that is not a ``browse`` (a title shown but not watched): a ``view`` or a
  ``rating``; without an ``event_type`` column every event is a play;
* a title belongs to every genre of its catalogue ``genres`` (``|``-joined), so genre figures add
  up to more than the week's totals;
* hours and weekdays are UTC; weekdays are listed Sunday first, like the lake's weeks.

Nothing here raises on a data problem (missing columns, empty frames, unparseable values): the
figure is left empty and the page shows a short note instead of the plot.

``python -m recsys.reporting.data_profile 2026-11-15 [--lake DIR] [--out FILE] [--history-weeks N]`` writes the
page of a week to a file.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys.core.schemas import GENRE_SEPARATOR
from recsys.io.storage import Lake, json_safe
from recsys.reporting.model_report import _CSS, _e, _fmt, _mpl_text, _note, _png, _table

log = logging.getLogger(__name__)

PROFILE_ARTIFACT = "profile/week_profile.html"
WEEKDAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")
EVENT_TYPE_ORDER = ("view", "rating", "browse")
NOT_PLAYS = frozenset({"browse"})
NO_GENRE = "(no genre)"
MISSING = "(missing)"
TOP_TITLES = 10
CURVE_POINTS = 101  # share of plays at 0%, 1%, .., 100% of titles
_BLUE = "#1565c0"
_ORANGE = "#ef6c00"
_GREY = "#9e9e9e"


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
def _frame(value: Any) -> pd.DataFrame:
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


def _gini(values: np.ndarray) -> float | None:
    """Gini coefficient of non-negative values (0: all equal, towards 1: one takes everything)."""
    total = float(values.sum())
    n = len(values)
    if n == 0 or total <= 0:
        return None
    ordered = np.sort(values.astype(float))
    ranks = np.arange(1, n + 1)
    return float(2.0 * (ranks * ordered).sum() / (n * total) - (n + 1) / n)


def _top_share(ordered_desc: np.ndarray, fraction: float) -> float | None:
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


def profile_week(
    events: pd.DataFrame,
    items: pd.DataFrame,
    week_start: datetime,
    week_end: datetime,
    earlier_events: pd.DataFrame | None = None,
) -> WeekProfile:
    """The figures of the week [``week_start``, ``week_end``) (naive datetimes are UTC).

    ``events``: anonymized events (``user``, ``item_id``, ``ts``, ``event_type``, ``rating``,
    ``watch_seconds``; any may be missing). ``items``: the catalogue (``item_id``, ``title``,
    ``genres``, ``added_at``). ``earlier_events``: events of earlier weeks (``user``, ``item_id``,
    ``ts``); rows at or after ``week_start`` are ignored; None = new versus returning is unknown.
    """
    start, end = _utc(week_start), _utc(week_end)
    events, items = _frame(events).copy(), _frame(items)
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
        top1_share=_top_share(ordered, 0.01),
        top10_share=_top_share(ordered, 0.10),
        popularity_gini=_gini(ordered),
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
    earlier = _frame(earlier)
    times = _times(earlier)
    if times is not None:
        earlier = earlier[(~(times >= start)).to_numpy()]  # unreadable times count as earlier
    c.values["earlier_events"] = len(earlier)
    if events.empty:
        return c.why("new", "no events this week")
    if "user" in events:
        seen = set(earlier["user"].dropna()) if "user" in earlier else set()
        if "user" not in earlier:
            c.why("new", "the earlier events have no 'user' column: every user counts as new")
        users = events["user"].dropna().unique()
        new_users = {u for u in users if u not in seen}
        c.values.update(
            users_new=len(new_users),
            users_returning=len(users) - len(new_users),
            plays_by_new_users=int((is_play & events["user"].isin(new_users)).sum()),
        )
    else:
        c.why("new", "the events have no 'user' column: new versus returning users is unknown")
    if "item_id" in events:
        seen_items = set(_ids(earlier["item_id"]).dropna()) if "item_id" in earlier else set()
        played = set(_ids(events.loc[is_play, "item_id"]).dropna())
        fresh_titles = played - seen_items
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


# ---- rendering ---------------------------------------------------------------------------------
def _pct(value: float | None) -> str:
    return "&ndash;" if value is None else f"{value:.1%}"


def _num(value: Any, digits: int = 2) -> str:
    if isinstance(value, float) and math.isfinite(value) and not value.is_integer():
        return f"{value:,.{digits}f}"
    return _fmt(value)


def _why(profile: WeekProfile, section: str, fallback: str) -> str:
    reasons = profile.why(section)
    return _note(f"{fallback}: {'; '.join(reasons)}." if reasons else f"{fallback}.")


def _header(profile: WeekProfile, title: str) -> str:
    start, end = profile.week_start[:16].replace("T", " "), profile.week_end[:16].replace("T", " ")
    facts = [
        f"{_e(start)} &rarr; {_e(end)} UTC",
        f"{_fmt(profile.events)} events",
        f"{_fmt(profile.plays)} plays",
        f"{_fmt(profile.users)} users",
        f"{_fmt(profile.titles_played)} titles played of {_fmt(profile.catalogue_titles)} in the catalogue",
    ]
    out = f"<h1>{_e(title)} &mdash; week {_e(profile.week_start[:10])}</h1>"
    out += f"<p class='sub'>{' &middot; '.join(facts)}</p>"
    out += _note(
        "From the anonymized layer: users are counted, never named. A play is a view or a rating "
        "(a browse is a title shown but not watched). Times are UTC."
    )
    if profile.notes:
        items = "".join(f"<li>{_e(n)}</li>" for n in profile.notes)
        out += f"<p><b>Data notes</b></p><ul class='reasons'>{items}</ul>"
    return out


def _genre_section(p: WeekProfile) -> str:
    if not p.genres:
        return _why(p, "genres", "No genre figures")
    shown = p.genres[:15]

    def draw(ax: Any) -> None:
        ys = np.arange(len(shown))[::-1]
        ax.barh(ys + 0.2, [g.plays for g in shown], 0.4, color=_BLUE, label="plays")
        ax.barh(ys - 0.2, [g.users for g in shown], 0.4, color=_ORANGE, label="distinct users")
        ax.set_yticks(ys, [_mpl_text(g.genre) for g in shown], fontsize=8)
        ax.set_xlabel("plays / users this week")
        ax.legend(fontsize=8, loc="lower right")

    rows = [
        (
            "",
            [
                _e(g.genre),
                _fmt(g.users),
                _pct(g.user_share),
                _fmt(g.plays),
                _pct(g.plays / p.plays if p.plays else None),
            ],
        )
        for g in p.genres[:20]
    ]
    out = _png(draw, size=(8.0, max(2.6, 0.32 * len(shown) + 0.8)))
    out += _table(["genre", "users", "share of users", "plays", "share of plays"], rows)
    notes = ["A title counts for each of its genres, so the shares add up to more than 100%."]
    if len(p.genres) > 20:
        notes.append(f"{len(p.genres) - 20} more genres are left out of the table.")
    if p.plays_not_in_catalogue:
        notes.append(f"{p.plays_not_in_catalogue:,} plays are of titles not in the catalogue.")
    notes += p.why("genres")
    return out + _note(" ".join(notes))


def _time_section(p: WeekProfile) -> str:
    if not p.hours:
        return _why(p, "time", "No activity by time")

    def hours(ax: Any) -> None:
        ax.bar(range(24), p.hours, color=_BLUE)
        ax.set_xticks(range(0, 24, 2))
        ax.set_xlabel("hour of day (UTC)")
        ax.set_ylabel("events")

    def heat(ax: Any) -> None:
        grid = np.array(p.hour_by_weekday, dtype=float)
        image = ax.imshow(grid, aspect="auto", cmap="Blues", interpolation="nearest")
        ax.set_yticks(range(7), WEEKDAYS)
        ax.set_xticks(range(0, 24, 2))
        ax.set_xlabel("hour of day (UTC)")
        ax.figure.colorbar(image, ax=ax, label="events")

    total = sum(p.weekdays) or 1
    rows = [
        ("best" if name == p.peak_weekday else "", [_e(name), _fmt(n), _pct(n / total)])
        for name, n in zip(WEEKDAYS, p.weekdays, strict=True)
    ]
    summary = f"Busiest hour {p.peak_hour:02d}:00&ndash;{p.peak_hour:02d}:59 UTC ({_fmt(p.hours[p.peak_hour])} events); busiest day {_e(p.peak_weekday)}."
    return (
        _png(hours, size=(8.0, 2.6))
        + _png(heat, size=(8.0, 2.8))
        + f"<p class='sub'>{summary}</p>"
        + _table(["weekday", "events", "share"], rows)
    )


def _activity_section(p: WeekProfile) -> str:
    if not p.activity_bins:
        return _why(p, "activity", "No user activity figures")
    bins = p.activity_bins

    from matplotlib.ticker import FuncFormatter

    def draw(ax: Any) -> None:
        ax.bar(
            [b.lo for b in bins],
            [b.count for b in bins],
            width=[b.hi + 1 - b.lo for b in bins],
            align="edge",
            color=_BLUE,
            edgecolor="white",
        )
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.set_xlabel("events per user (log scale)")
        ax.set_ylabel("users")
        for value, label, style in (
            (p.events_per_user_median, "median", "--"),
            (p.events_per_user_p90, "p90", ":"),
        ):
            if value is not None:
                ax.axvline(value, color=_ORANGE, linestyle=style, label=f"{label} {value:g}")
        ax.legend(fontsize=8)

    stats = _table(
        ["users", "median", "p90", "mean", "max"],
        [
            (
                "",
                [
                    _fmt(p.users),
                    _num(p.events_per_user_median),
                    _num(p.events_per_user_p90),
                    _num(p.events_per_user_mean),
                    _fmt(p.events_per_user_max),
                ],
            )
        ],
        left=0,
    )
    rows = [("", [_e(f"{b.lo:g}" if b.lo == b.hi else f"{b.lo:g}–{b.hi:g}"), _fmt(b.count)]) for b in bins]
    return (
        _png(draw, size=(8.0, 2.8))
        + "<p class='sub'>Events per user</p>"
        + stats
        + "<p class='sub'>Users per activity band</p>"
        + _table(["events per user", "users"], rows)
    )


def _popularity_section(p: WeekProfile) -> str:
    if not p.popularity_curve:
        return _why(p, "popularity", "No popularity figures")

    def draw(ax: Any) -> None:
        xs = np.linspace(0, 100, len(p.popularity_curve))
        ax.plot(xs, [v * 100 for v in p.popularity_curve], color=_BLUE, label="this week")
        ax.plot([0, 100], [0, 100], color=_GREY, linestyle="--", label="every title equally played")
        for share, frac in ((p.top1_share, 1), (p.top10_share, 10)):
            if share is not None:
                ax.scatter([frac], [share * 100], color=_ORANGE, zorder=3)
                ax.annotate(
                    f"top {frac}%: {share:.0%}",
                    (frac, share * 100),
                    textcoords="offset points",
                    xytext=(8, -12),
                    fontsize=8,
                )
        ax.set_xlabel("% of titles, most played first")
        ax.set_ylabel("% of plays")
        ax.set_xlim(0, 100)
        ax.set_ylim(0, 102)
        ax.legend(fontsize=8, loc="lower right")

    summary = _table(
        ["titles", "played", "top 1% of titles", "top 10% of titles", "Gini"],
        [
            (
                "",
                [
                    _fmt(p.titles_considered),
                    _fmt(p.titles_played),
                    _pct(p.top1_share),
                    _pct(p.top10_share),
                    _num(p.popularity_gini, 3),
                ],
            )
        ],
        left=0,
    )
    top = _table(
        ["item", "title", "plays", "users"],
        [("", [_e(t.item_id), _e(t.title), _fmt(t.plays), _fmt(t.users)]) for t in p.top_titles],
        left=2,
    )
    return (
        _png(draw, size=(8.0, 3.0))
        + summary
        + _note(
            "Titles: the catalogue and every title played this week (unplayed titles count with 0 plays). "
            "Top x%: the share of plays of the most played x% of titles (at least one)."
        )
        + f"<p class='sub'>Most played titles</p>{top}"
    )


def _new_section(p: WeekProfile) -> str:
    out = ""
    if p.users_new is not None or p.titles_new is not None:
        groups = [
            (label, new, back)
            for label, new, back in (
                ("users", p.users_new, p.users_returning),
                ("titles played", p.titles_new, p.titles_returning),
            )
            if new is not None and back is not None
        ]

        def draw(ax: Any) -> None:
            ys = np.arange(len(groups))[::-1]
            totals = [max(new + back, 1) for _, new, back in groups]
            news = [new / t for (_, new, _), t in zip(groups, totals, strict=True)]
            backs = [back / t for (_, _, back), t in zip(groups, totals, strict=True)]
            ax.barh(ys, news, color=_ORANGE, label="new (first seen this week)")
            ax.barh(ys, backs, left=news, color=_BLUE, label="returning")
            for y, (_, new, back), share in zip(ys, groups, news, strict=True):
                text = f"{new:,} new / {back:,} returning"
                if share < 0.5:  # on the returning (blue) part, just right of the new part
                    ax.text(share + 0.01, y, text, va="center", fontsize=8, color="white")
                else:
                    ax.text(0.01, y, text, va="center", fontsize=8, color="white")
            ax.set_yticks(ys, [label for label, _, _ in groups])
            ax.set_xlim(0, 1)
            ax.set_xlabel("share")
            ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=2)

        if groups:
            out += _png(draw, size=(8.0, 2.2))
        rows = []
        for label, new, back in groups:
            total = new + back
            rows.append(("", [_e(label), _fmt(new), _fmt(back), _pct(new / total if total else None)]))
        if p.plays_by_new_users is not None:
            share = p.plays_by_new_users / p.plays if p.plays else None
            rows.append(("", ["plays by new users", _fmt(p.plays_by_new_users), "&ndash;", _pct(share)]))
        out += _table(["", "new", "returning", "new share"], rows)
        weeks = ", ".join(p.earlier_weeks) if p.earlier_weeks else "the earlier events given"
        out += _note(f"New: not seen in {weeks} ({p.earlier_events or 0:,} events).")
    for reason in p.why("new"):
        out += _note(reason[:1].upper() + reason[1:] + ".")
    if p.catalogue_added is not None:
        out += f"<p class='sub'>Titles added to the catalogue this week: {_fmt(p.catalogue_added)}</p>"
        if p.catalogue_added_titles:
            out += _table(["title"], [("", [_e(t)]) for t in p.catalogue_added_titles])
    return out or _note("No new versus returning figures.")


def _types_section(p: WeekProfile) -> str:
    out = ""
    if p.event_types:
        total = sum(n for _, n in p.event_types) or 1

        def draw(ax: Any) -> None:
            labels = [_mpl_text(t) for t, _ in p.event_types]
            ax.bar(labels, [n / total * 100 for _, n in p.event_types], color=_BLUE)
            ax.set_ylabel("% of events")

        out += _png(draw, size=(8.0, 2.4))
        out += _table(
            ["event type", "events", "share"],
            [("", [_e(t), _fmt(n), _pct(n / total)]) for t, n in p.event_types],
        )
    else:
        out += _why(p, "types", "No event types")
    out += "<h3>Ratings</h3>"
    if p.ratings:

        def ratings(ax: Any) -> None:
            ax.bar([v for v, _ in p.ratings], [n for _, n in p.ratings], width=0.4, color=_ORANGE)
            ax.set_xticks([v for v, _ in p.ratings])
            ax.set_xlabel("rating")
            ax.set_ylabel("events")

        count = sum(n for _, n in p.ratings)
        out += _png(ratings, size=(8.0, 2.4))
        out += _table(
            ["ratings", "mean", "median"],
            [("", [_fmt(count), _num(p.rating_mean), _num(p.rating_median)])],
            left=0,
        )
    else:
        out += _why(p, "ratings", "No rating distribution")
    out += "<h3>Watch time</h3>"
    if p.watch_bins:

        def watch(ax: Any) -> None:
            ax.bar(
                [b.lo for b in p.watch_bins],
                [b.count for b in p.watch_bins],
                width=[b.hi - b.lo for b in p.watch_bins],
                align="edge",
                color=_BLUE,
                edgecolor="white",
            )
            if p.watch_minutes_median is not None:
                ax.axvline(
                    p.watch_minutes_median,
                    color=_ORANGE,
                    linestyle="--",
                    label=f"median {p.watch_minutes_median:.0f} min",
                )
                ax.legend(fontsize=8)
            ax.set_xlabel("minutes watched per view")
            ax.set_ylabel("views")

        out += _png(watch, size=(8.0, 2.4))
        out += _table(
            ["views with watch time", "median min", "p90 min", "mean min", "hours in total"],
            [
                (
                    "",
                    [
                        _fmt(p.watched_views),
                        _num(p.watch_minutes_median, 1),
                        _num(p.watch_minutes_p90, 1),
                        _num(p.watch_minutes_mean, 1),
                        _num(p.watch_hours_total, 1),
                    ],
                )
            ],
            left=0,
        )
    else:
        out += _why(p, "watch", "No watch-time distribution")
    return out


SECTIONS: tuple[tuple[str, Callable[[WeekProfile], str]], ...] = (
    ("Most-watched genres", _genre_section),
    ("Activity by hour of day and weekday (UTC)", _time_section),
    ("User activity", _activity_section),
    ("Title popularity", _popularity_section),
    ("New and returning users and titles", _new_section),
    ("Event types, ratings and watch time", _types_section),
)


def _section(title: str, render: Callable[[], str]) -> str:
    try:
        body = render()
    except Exception as exc:  # noqa: BLE001 - one broken section must not cost the page
        log.warning("data profile: section %r could not be rendered: %s", title, exc, exc_info=True)
        body = _note(f"This section could not be rendered ({exc.__class__.__name__}: {exc}).")
    return f"<h2>{_e(title)}</h2>{body}"


def render_profile(profile: WeekProfile, title: str = "Weekly data profile") -> str:
    """The profile as one self-contained HTML document; never raises on odd figures."""
    try:
        header = _header(profile, title)
    except Exception as exc:  # noqa: BLE001
        header = f"<h1>{_e(title)}</h1>{_note(f'header could not be rendered: {exc}')}"
    sections = [_section(name, lambda fn=fn: fn(profile)) for name, fn in SECTIONS]
    week = getattr(profile, "week_start", "")[:10]
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_e(title)} {_e(week)}</title><style>{_CSS}h3{{font-size:14px;margin:18px 0 6px}}"
        "table{margin:6px 0}</style></head><body>" + header + "".join(sections) + "</body></html>"
    )


# ---- lake and MLflow ---------------------------------------------------------------------------
def _read(
    path: Path, what: str, notes: list[str], columns: tuple[str, ...] | None = None
) -> pd.DataFrame | None:
    if not path.exists():
        return None
    try:
        if columns is not None:
            import pyarrow.parquet as pq

            present = set(pq.read_schema(path).names)
            return pd.read_parquet(path, columns=[c for c in columns if c in present])
        return pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - an unreadable file is a note, not a failed pipeline
        notes.append(f"{what} could not be read ({exc.__class__.__name__}: {exc}).")
        return None


def profile_from_lake(lake: Lake, week: date, history_weeks: int = 4) -> tuple[WeekProfile, str]:
    """The profile and HTML of ``week`` (floored to its Sunday) from the anonymized layer.

    New versus returning compares with the up to ``history_weeks`` weeks before it that exist in
    the lake (none: unknown). Missing or unreadable partitions give notes, never an exception.
    """
    from recsys.core.intervals import WEEK, week_bounds, week_start_of

    week = week_start_of(week)
    start, end = week_bounds(week)
    notes: list[str] = []
    events = _read(lake.data_file("anonymized", "events", week), "The week's events", notes)
    if events is None:
        notes.append(f"No anonymized events for week {week.isoformat()} in the lake.")
    items = _read(lake.data_file("anonymized", "items", week), "The week's catalogue", notes)
    if items is None:
        notes.append(f"No anonymized catalogue for week {week.isoformat()} in the lake.")
    earlier_weeks: list[date] = []
    frames: list[pd.DataFrame] = []
    for back in range(max(history_weeks, 0), 0, -1):
        earlier = week - WEEK * back
        frame = _read(
            lake.data_file("anonymized", "events", earlier),
            f"Events of week {earlier.isoformat()}",
            notes,
            columns=("user", "item_id", "ts"),
        )
        if frame is not None:
            earlier_weeks.append(earlier)
            frames.append(frame)
    earlier_events = pd.concat(frames, ignore_index=True) if frames else None
    profile = profile_week(_frame(events), _frame(items), start, end, earlier_events)
    profile = dataclasses.replace(
        profile,
        earlier_weeks=tuple(w.isoformat() for w in earlier_weeks),
        notes=tuple(notes) + profile.notes,
    )
    return profile, render_profile(profile)


def log_profile(html: str, run_id: str | None = None) -> str:
    """Log the page as ``profile/week_profile.html`` (see :func:`recsys.reporting.model_report.log_html`)."""
    from recsys.reporting.model_report import log_html

    return log_html(html, PROFILE_ARTIFACT, "the data profile", run_id)


def main(argv: list[str] | None = None) -> int:
    import argparse

    from recsys.core.intervals import parse_week

    parser = argparse.ArgumentParser(prog="python -m recsys.reporting.data_profile", description="weekly data profile")
    parser.add_argument("week", help="YYYY-MM-DD (any day of the week)")
    parser.add_argument("--lake", type=Path, help="lake directory (default: the settings' lake)")
    parser.add_argument("--out", type=Path, default=Path("week_profile.html"))
    parser.add_argument("--history-weeks", type=int, default=4)
    args = parser.parse_args(argv)
    if args.lake is None:
        from recsys.core.settings import Settings

        args.lake = Settings.from_env().lake_dir
    _, page = profile_from_lake(Lake(args.lake), parse_week(args.week), args.history_weeks)
    args.out.write_text(page, encoding="utf-8")
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
