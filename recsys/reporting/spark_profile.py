"""The weekly data profile's figures as Spark aggregations, for a week too big for one machine.

:func:`profile_week_spark` gives the :class:`~recsys.reporting.week_profile.WeekProfile` that
:func:`~recsys.reporting.week_profile.profile_week` gives (same definitions: plays, genres, UTC hours
and Sunday-first weekdays, activity bands, popularity over the catalogue and every title played,
new versus returning), from the anonymized partitions read by Spark. What reaches the driver is
small by construction: the catalogue and per-title counts (item-sized), the hour-by-weekday grid,
event types, and value histograms (users per events-per-user count, events per rating and per watch
time): percentiles, means and bins are computed from those histograms. Never a per-user frame.

Counts are exact; means and percentiles agree with the pandas path up to float rounding (sums in
another order). Ties among the most played titles are broken by item id.

The Spark path expects the anonymized events' columns (``user``, ``item_id``, ``ts``, ``event_type``,
``rating``, ``watch_seconds``); a week without them is profiled by the pandas path
(:func:`recsys.reporting.data_profile.profile_from_lake`), as is an empty week.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from datetime import date
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from recsys.core.intervals import WEEK, week_bounds, week_start_of
from recsys.core.schemas import GENRE_SEPARATOR
from recsys.io.spark_lake import read_file
from recsys.io.storage import Lake, read_parquet
from recsys.reporting.data_profile import profile_from_lake, render_profile
from recsys.reporting.week_profile import (
    CURVE_POINTS,
    EVENT_TYPE_ORDER,
    MISSING,
    NO_GENRE,
    NOT_PLAYS,
    TOP_TITLES,
    WEEKDAYS,
    Bin,
    GenreStat,
    TitleStat,
    WeekProfile,
    gini,
    top_share,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

EVENT_COLUMNS = ("user", "item_id", "ts", "event_type", "rating", "watch_seconds")
NANOS_PER_HOUR = 3_600 * 10**9
NANOS_PER_DAY = 24 * NANOS_PER_HOUR


# ---- figures from histograms (value -> how often) ----------------------------------------------
def percentile_of_histogram(values: np.ndarray, counts: np.ndarray, q: float) -> float | None:
    """``np.percentile`` (linear) of the sample holding each ``values[i]`` ``counts[i]`` times."""
    n = int(counts.sum())
    if n == 0:
        return None
    order = np.argsort(values, kind="stable")
    values, ends = values[order].astype(float), np.cumsum(counts[order])
    quantile = q / 100.0
    virtual = n * quantile + (1.0 - quantile) - 1.0
    lo = int(min(max(math.floor(virtual), 0), n - 1))
    hi = min(lo + 1, n - 1)
    a, b = values[np.searchsorted(ends, lo, side="right")], values[np.searchsorted(ends, hi, side="right")]
    gamma = virtual - math.floor(virtual)
    return float(b - (b - a) * (1.0 - gamma) if gamma >= 0.5 else a + (b - a) * gamma)


def power_bins(values: np.ndarray, counts: np.ndarray) -> tuple[Bin, ...]:
    """Users per activity band 1, 2-3, 4-7, ... from (events per user, users) pairs."""
    if len(values) == 0:
        return ()
    bins, lo, top = [], 1, int(values.max())
    while lo <= top:
        hi = lo * 2 - 1
        bins.append(Bin(lo, hi, int(counts[(values >= lo) & (values <= hi)].sum())))
        lo *= 2
    return tuple(bins)


def nice_width(span: float, max_bins: int = 24) -> float:
    for width in (1, 2, 5, 10, 15, 20, 30, 60, 120, 240, 480, 960):
        if span / width <= max_bins:
            return float(width)
    return float(math.ceil(span / max_bins))


def minute_bins(minutes: np.ndarray, counts: np.ndarray) -> tuple[Bin, ...]:
    if len(minutes) == 0:
        return ()
    width = nice_width(float(minutes.max()))
    edges = np.arange(0.0, float(minutes.max()) + width, width)
    if len(edges) < 2:
        edges = np.array([0.0, width])
    totals, edges = np.histogram(minutes, bins=edges, weights=counts)
    return tuple(
        Bin(float(lo), float(hi), int(c)) for lo, hi, c in zip(edges[:-1], edges[1:], totals, strict=True)
    )


def _histogram(frame: DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """(distinct values, how often each) of ``column``: small for counts, ratings and watch seconds."""
    rows = frame.groupBy(column).count().toPandas()
    return rows[column].to_numpy(dtype=float), rows["count"].to_numpy(dtype=np.int64)


# ---- the profile -------------------------------------------------------------------------------
def _catalogue(items: pd.DataFrame) -> pd.DataFrame:
    """One row per item id as text (the last of duplicates), as the pandas profile keys it."""
    catalogue = items.dropna(subset=["item_id"]).copy()
    ids = catalogue["item_id"]
    if pd.api.types.is_float_dtype(ids.dtype):
        ids = ids.map(lambda v: int(v) if isinstance(v, float) and v.is_integer() else v)
    catalogue.index = ids.astype(str)
    return catalogue[~catalogue.index.duplicated(keep="last")]


def profile_week_spark(
    spark: SparkSession,
    events: DataFrame,
    items: pd.DataFrame,
    week: date,
    earlier: DataFrame | None = None,
) -> WeekProfile:
    """The figures of ``week`` from ``events`` (anonymized, ``ts`` as nanoseconds: read inside
    :func:`recsys.io.spark_lake.nanos_as_long`), the catalogue ``items`` and ``earlier`` weeks'
    events (``user``, ``item_id``, ``ts``; None: new versus returning is unknown)."""
    # deferred: pyspark is heavy, loaded only for Spark stages
    from pyspark import StorageLevel
    from pyspark.sql import functions as F  # deferred: pyspark is heavy, loaded only for Spark stages

    start, end = week_bounds(week)
    start_ns, end_ns = int(pd.Timestamp(start).value), int(pd.Timestamp(end).value)
    notes: list[str] = []
    why: list[tuple[str, str]] = []
    values: dict[str, Any] = {
        "week_start": pd.Timestamp(start).isoformat(),
        "week_end": pd.Timestamp(end).isoformat(),
        "event_columns": tuple(events.columns),
        "item_columns": tuple(str(c) for c in items.columns),
    }
    kind = F.coalesce(F.col("event_type"), F.lit(MISSING))
    base = events.select(
        "user",
        F.col("item_id").cast("string").alias("item"),
        "ts",
        kind.alias("kind"),
        (~kind.isin(*NOT_PLAYS)).alias("play"),
        "rating",
        "watch_seconds",
    ).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        totals = base.agg(
            F.count(F.lit(1)),
            F.count(F.when(F.col("play"), 1)),
            F.countDistinct("user"),
            F.count(F.when(F.col("user").isNull(), 1)),
            F.countDistinct(F.when(F.col("play"), F.col("item"))),
            F.count(F.when(F.col("ts").isNull(), 1)),
            F.count(F.when((F.col("ts") < start_ns) | (F.col("ts") >= end_ns), 1)),
        ).first()
        n_events, n_plays, n_users, missing_users, titles_played, bad_ts, outside = (int(v) for v in totals)
        values.update(events=n_events, plays=n_plays, users=n_users, titles_played=titles_played)
        if missing_users:
            notes.append(f"{missing_users:,} events have no user.")
        catalogue = _catalogue(items) if not items.empty and "item_id" in items else pd.DataFrame()
        if items.empty:
            notes.append("The catalogue is empty: genre and catalogue figures are left out.")
        elif "item_id" not in items:
            notes.append("The catalogue has no 'item_id' column: genre and catalogue figures are left out.")
        values["catalogue_titles"] = len(catalogue)
        plays = base.filter(F.col("play"))
        _genres(spark, plays, catalogue, values, why)
        # time of day and week (UTC)
        if bad_ts:
            notes.append(f"{bad_ts:,} events have a missing or unreadable timestamp.")
        values["events_outside_week"] = outside
        if outside:
            notes.append(f"{outside:,} events fall outside the week (they are still counted).")
        timed = base.filter(F.col("ts").isNotNull())
        day_nanos = F.pmod(F.col("ts"), F.lit(NANOS_PER_DAY))
        days = ((F.col("ts") - day_nanos) / F.lit(NANOS_PER_DAY)).cast("long")
        cells = timed.groupBy(
            F.pmod(days + 4, F.lit(7)).alias("weekday"),
            (day_nanos / F.lit(NANOS_PER_HOUR)).cast("int").alias("hour"),
        ).count()
        grid = np.zeros((7, 24), dtype=int)
        for row in cells.collect():
            grid[int(row["weekday"]), int(row["hour"])] = int(row["count"])
        if grid.sum():
            by_hour, by_day = grid.sum(axis=0), grid.sum(axis=1)
            values.update(
                hours=tuple(int(v) for v in by_hour),
                weekdays=tuple(int(v) for v in by_day),
                hour_by_weekday=tuple(tuple(int(v) for v in row) for row in grid),
                peak_hour=int(by_hour.argmax()),
                peak_weekday=WEEKDAYS[int(by_day.argmax())],
            )
        else:
            why.append(("time", "no readable timestamp"))
        # user activity: users per events-per-user count
        per_user = base.filter(F.col("user").isNotNull()).groupBy("user").agg(F.count(F.lit(1)).alias("n"))
        counts, users = _histogram(per_user, "n")
        if users.sum():
            n = users.sum()
            values.update(
                events_per_user_median=percentile_of_histogram(counts, users, 50),
                events_per_user_p90=percentile_of_histogram(counts, users, 90),
                events_per_user_mean=float((counts * users).sum() / n),
                events_per_user_max=int(counts.max()),
                activity_bins=power_bins(counts, users),
            )
        else:
            why.append(("activity", "no event has a user"))
        _popularity(plays, catalogue, values, why)
        _new_returning(base, plays, catalogue, earlier, start_ns, end_ns, values, why)
        # event types
        types = dict(base.groupBy("kind").count().toPandas().itertuples(index=False, name=None))
        order = [t for t in EVENT_TYPE_ORDER if t in types] + sorted(
            t for t in types if t not in EVENT_TYPE_ORDER
        )
        values["event_types"] = tuple((str(t), int(types[t])) for t in order)
        _ratings(base, values, why)
        _watch(base, values, why)
    finally:
        base.unpersist()
    return WeekProfile(**values, notes=tuple(notes), section_notes=tuple(why))


def _genres(
    spark: SparkSession, plays: DataFrame, catalogue: pd.DataFrame, values: dict[str, Any], why: list
) -> None:
    from pyspark.sql import functions as F  # deferred: pyspark is heavy

    if catalogue.empty:
        return why.append(("genres", "no catalogue to look the titles' genres up in"))
    if "genres" not in catalogue:
        return why.append(("genres", "the catalogue has no 'genres' column"))
    text = catalogue["genres"].astype("object").where(catalogue["genres"].notna(), "").astype(str)
    per_item = text.str.split(GENRE_SEPARATOR, regex=False).map(
        lambda gs: sorted({g.strip() for g in gs if g.strip()}) or [NO_GENRE]
    )
    table = pd.DataFrame({"item": per_item.index, "genre": per_item.to_numpy()}).explode("genre")
    genres = spark.createDataFrame(table[["item", "genre"]].astype(str))
    known_ids = spark.createDataFrame(pd.DataFrame({"item": catalogue.index.astype(str)}))
    known = plays.join(F.broadcast(known_ids), on="item", how="left_semi")
    n_known, players = known.agg(F.count(F.lit(1)), F.countDistinct("user")).first()
    values["plays_not_in_catalogue"] = int(values["plays"] - n_known)
    if not n_known:
        return why.append(("genres", "no play of a title in the catalogue this week"))
    stats = (
        known.join(F.broadcast(genres), on="item")
        .groupBy("genre")
        .agg(F.count(F.lit(1)).alias("plays"), F.countDistinct("user").alias("users"))
        .toPandas()
    )
    out = [
        GenreStat(str(r.genre), int(r.users), int(r.plays), (int(r.users) / players) if players else 0.0)
        for r in stats.itertuples(index=False)
    ]
    out.sort(key=lambda s: (-s.plays, -s.users, s.genre))
    values["genres"] = tuple(out)


def _popularity(plays: DataFrame, catalogue: pd.DataFrame, values: dict[str, Any], why: list) -> None:
    from pyspark.sql import functions as F  # deferred: pyspark is heavy

    per_title = (
        plays.filter(F.col("item").isNotNull())
        .groupBy("item")
        .agg(F.count(F.lit(1)).alias("plays"), F.countDistinct("user").alias("users"))
        .toPandas()
        .sort_values(["plays", "item"], ascending=[False, True], kind="mergesort")
    )
    if per_title.empty:
        return why.append(("popularity", "no plays this week"))
    unplayed = catalogue.index.difference(per_title["item"]) if not catalogue.empty else []
    ordered = np.sort(np.concatenate([per_title["plays"].to_numpy(), np.zeros(len(unplayed), dtype=int)]))[
        ::-1
    ]
    cumulative = np.concatenate([[0.0], np.cumsum(ordered) / ordered.sum()])
    curve = np.interp(
        np.linspace(0.0, 1.0, CURVE_POINTS), np.arange(len(ordered) + 1) / len(ordered), cumulative
    )
    titles = catalogue["title"] if "title" in catalogue else pd.Series(dtype=object)
    top = [
        TitleStat(
            item_id=str(r.item),
            title="" if pd.isna(titles.get(r.item)) else str(titles.get(r.item)),
            plays=int(r.plays),
            users=int(r.users),
        )
        for r in per_title.head(TOP_TITLES).itertuples(index=False)
    ]
    values.update(
        titles_considered=len(ordered),
        top1_share=top_share(ordered, 0.01),
        top10_share=top_share(ordered, 0.10),
        popularity_gini=gini(ordered),
        popularity_curve=tuple(float(v) for v in curve),
        top_titles=tuple(top),
    )


def _new_returning(
    base: DataFrame,
    plays: DataFrame,
    catalogue: pd.DataFrame,
    earlier: DataFrame | None,
    start_ns: int,
    end_ns: int,
    values: dict[str, Any],
    why: list,
) -> None:
    from pyspark.sql import functions as F  # deferred: pyspark is heavy

    if catalogue.empty:
        why.append(("new", "no catalogue: titles added this week are unknown"))
    elif "added_at" not in catalogue:
        why.append(("new", "the catalogue has no 'added_at' column: titles added this week are unknown"))
    else:
        added = pd.to_datetime(catalogue["added_at"], utc=True, errors="coerce")
        fresh = catalogue[
            (added >= pd.Timestamp(start_ns, tz="UTC")) & (added < pd.Timestamp(end_ns, tz="UTC"))
        ]
        values["catalogue_added"] = len(fresh)
        if "title" in fresh:
            values["catalogue_added_titles"] = tuple(
                str(t) for t in fresh["title"].head(TOP_TITLES) if pd.notna(t)
            )
    if earlier is None:
        return why.append(("new", "no earlier weeks to compare with: new versus returning is unknown"))
    before = earlier.filter(~F.coalesce(F.col("ts") >= start_ns, F.lit(False)))
    values["earlier_events"] = before.count()
    seen_users = before.select("user").filter(F.col("user").isNotNull()).distinct()
    users = base.select("user").filter(F.col("user").isNotNull()).distinct()
    new_users = users.join(seen_users, on="user", how="left_anti")
    n_new = new_users.count()
    values.update(
        users_new=int(n_new),
        users_returning=int(values["users"] - n_new),
        plays_by_new_users=plays.join(new_users, on="user", how="left_semi").count(),
    )
    seen_items = before.select(F.col("item_id").cast("string").alias("item")).filter(
        F.col("item").isNotNull()
    )
    played = plays.select("item").filter(F.col("item").isNotNull()).distinct()
    n_fresh = played.join(seen_items.distinct(), on="item", how="left_anti").count()
    values.update(titles_new=int(n_fresh), titles_returning=int(values["titles_played"] - n_fresh))


def _finite(column: str) -> Any:
    from pyspark.sql import functions as F  # deferred: pyspark is heavy

    value = F.col(column).cast("double")
    return value.isNotNull() & ~F.isnan(value) & (F.abs(value) != F.lit(float("inf")))


def _ratings(base: DataFrame, values: dict[str, Any], why: list) -> None:
    from pyspark.sql import functions as F  # deferred: pyspark is heavy

    rated = base.filter(_finite("rating")).select(F.col("rating").cast("double").alias("rating"))
    levels, counts = _histogram(rated, "rating")
    if not counts.sum():
        return why.append(("ratings", "no ratings this week"))
    halves = np.round(levels * 2) / 2
    steps = pd.Series(counts).groupby(halves).sum().sort_index()
    values.update(
        ratings=tuple((float(v), int(n)) for v, n in steps.items()),
        rating_mean=float((levels * counts).sum() / counts.sum()),
        rating_median=percentile_of_histogram(levels, counts, 50),
    )


def _watch(base: DataFrame, values: dict[str, Any], why: list) -> None:
    from pyspark.sql import functions as F  # deferred: pyspark is heavy

    watched = base.filter(_finite("watch_seconds") & (F.col("watch_seconds") > 0))
    seconds, counts = _histogram(watched.select(F.col("watch_seconds").cast("double").alias("s")), "s")
    if not counts.sum():
        return why.append(("watch", "no watch time this week"))
    minutes = seconds / 60.0
    values.update(
        watched_views=int(counts.sum()),
        watch_minutes_median=percentile_of_histogram(minutes, counts, 50),
        watch_minutes_p90=percentile_of_histogram(minutes, counts, 90),
        watch_minutes_mean=float((minutes * counts).sum() / counts.sum()),
        watch_hours_total=float((seconds * counts).sum() / 3600.0),
        watch_bins=minute_bins(minutes, counts),
    )


def profile_from_lake_spark(
    spark: SparkSession, lake: Lake, week: date, history_weeks: int = 4
) -> tuple[WeekProfile, str]:
    """:func:`~recsys.reporting.data_profile.profile_from_lake` with the figures computed by Spark
    (read inside :func:`recsys.io.spark_lake.nanos_as_long`); a week the Spark path does not
    cover (see the module doc) goes to the pandas path."""
    week = week_start_of(week)
    events_file = lake.data_file("anonymized", "events", week)
    items_file = lake.data_file("anonymized", "items", week)
    if not events_file.exists() or not items_file.exists():
        return profile_from_lake(lake, week, history_weeks)
    events = read_file(spark, events_file).drop("_order")
    if any(c not in events.columns for c in EVENT_COLUMNS) or events.isEmpty():
        log.info("data profile of week %s: no events or not the standard columns, profiled in pandas", week)
        return profile_from_lake(lake, week, history_weeks)
    earlier_weeks: list[date] = []
    earlier: DataFrame | None = None
    for back in range(max(history_weeks, 0), 0, -1):
        path = lake.data_file("anonymized", "events", week - WEEK * back)
        if path.exists():
            frame = read_file(spark, path).select("user", "item_id", "ts")
            earlier = frame if earlier is None else earlier.unionByName(frame)
            earlier_weeks.append(week - WEEK * back)
    profile = profile_week_spark(spark, events, read_parquet(items_file), week, earlier)
    profile = dataclasses.replace(profile, earlier_weeks=tuple(w.isoformat() for w in earlier_weeks))
    return profile, render_profile(profile)
