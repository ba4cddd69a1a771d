"""Weekly partitions derived from Airflow data intervals.

A partition is one calendar week starting on Sunday 00:00 UTC (the boundary of Airflow's ``@weekly``
cron). Every run works on *the last complete week that ends at or before its data interval end*:

* a scheduled run of ``@weekly`` at Sunday 2026-11-22 00:00 has the interval
  [2026-11-15, 2026-11-22) and works on week 2026-11-15;
* a manual run or ``airflow dags test weekly_retrain 2026-11-25`` (a Wednesday) works on the last
  complete week, 2026-11-15 .. 2026-11-22, again week 2026-11-15;
* a backfill run gets the same answer as the scheduled run it replaces.

The same helper is used whether or not the timetable gives a real interval (``CronTriggerTimetable``
without ``interval`` sets start == end == logical date), because only the end is read.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

WEEK = timedelta(weeks=1)
#: ``start_date`` of every recsys DAG. Airflow creates no task for a logical date before a DAG's start
#: and marks such a run successful, so the DAGs start at the first Sunday of 1970: any week of a
#: user's history can be run, backfilled or tested, and whether it *can* be worked on is decided by
#: the lake (the ingest stage fails with one line naming the lake's first and last raw weeks).
DAG_START = datetime(1970, 1, 4, tzinfo=UTC)
# 1970-01-04 was a Sunday: weeks are counted from there.
_EPOCH_SUNDAY = date(1970, 1, 4)


def _as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def week_start_of(moment: datetime | date) -> date:
    """The Sunday (UTC) that starts the week containing ``moment``."""
    if isinstance(moment, datetime):
        day = _as_utc(moment).date()
    else:
        day = moment
    offset = (day - _EPOCH_SUNDAY).days % 7
    return day - timedelta(days=offset)


def partition_week(data_interval_end: datetime) -> date:
    """The week a run works on: the last complete week ending at or before ``data_interval_end``."""
    return week_start_of(_as_utc(data_interval_end)) - WEEK


def week_bounds(week: date) -> tuple[datetime, datetime]:
    """[start, end) of a week partition as aware UTC datetimes."""
    if week != week_start_of(week):
        raise ValueError(f"{week.isoformat()} is not a week start (weeks start on Sunday UTC)")
    start = datetime.combine(week, time(0, 0), tzinfo=UTC)
    return start, start + WEEK


def week_key(week: date) -> str:
    """Directory name of a week partition, e.g. ``week=2026-11-15``."""
    return f"week={week.isoformat()}"


def parse_week(text: str) -> date:
    """Parse ``YYYY-MM-DD`` (any day: it is floored to its week's Sunday) or ``week=YYYY-MM-DD``."""
    raw = text.strip().removeprefix("week=")
    try:
        day = date.fromisoformat(raw)
    except ValueError:
        raise ValueError(f"not a date: {text!r} (expected YYYY-MM-DD)") from None
    return week_start_of(day)


def weeks_back(week: date, count: int) -> list[date]:
    """``count`` week starts ending with ``week``, oldest first."""
    return [week - WEEK * i for i in range(count - 1, -1, -1)]


def serving_week(training_week: date) -> date:
    """The week the lists trained on ``training_week`` are shown to users in: the next one (a run
    for week W starts when W has ended). Exposures and their feedback carry this week."""
    return training_week + timedelta(weeks=1)
