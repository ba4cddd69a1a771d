from datetime import UTC, date, datetime, timedelta

import pytest

from recsys.core.intervals import parse_week, partition_week, week_bounds, week_key, week_start_of, weeks_back


def test_scheduled_weekly_run_works_on_the_week_before_its_end():
    # @weekly fires Sunday 00:00; CronTriggerTimetable(interval=1 week) gives [start, end)
    end = datetime(2026, 11, 22, tzinfo=UTC)
    assert partition_week(end) == date(2026, 11, 15)


def test_manual_run_midweek_uses_last_complete_week():
    assert partition_week(datetime(2026, 11, 25, 13, 30, tzinfo=UTC)) == date(2026, 11, 15)


def test_cron_trigger_without_interval_gives_same_week():
    # start == end == logical date: only the end is read
    logical = datetime(2026, 11, 22, tzinfo=UTC)
    assert partition_week(logical) == partition_week(logical + timedelta(seconds=0))


def test_naive_and_other_timezones_are_treated_as_utc_instants():
    from zoneinfo import ZoneInfo

    # 2026-11-22 01:00 in Berlin is 2026-11-22 00:00 UTC: already the next week boundary
    berlin = datetime(2026, 11, 22, 1, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    assert partition_week(berlin) == date(2026, 11, 15)
    assert partition_week(datetime(2026, 11, 21, 23, 59)) == date(2026, 11, 8)


def test_week_start_is_sunday():
    assert week_start_of(date(2026, 11, 23)) == date(2026, 11, 22)
    assert week_start_of(date(2026, 11, 22)).weekday() == 6


def test_week_bounds_and_key():
    start, end = week_bounds(date(2026, 11, 15))
    assert end - start == timedelta(weeks=1)
    assert start.tzinfo is not None
    assert week_key(date(2026, 11, 15)) == "week=2026-11-15"
    with pytest.raises(ValueError, match="not a week start"):
        week_bounds(date(2026, 11, 16))


def test_parse_week_and_weeks_back():
    assert parse_week("week=2026-11-18") == date(2026, 11, 15)
    with pytest.raises(ValueError, match="not a date"):
        parse_week("yesterday")
    assert weeks_back(date(2026, 11, 15), 3) == [date(2026, 11, 1), date(2026, 11, 8), date(2026, 11, 15)]
