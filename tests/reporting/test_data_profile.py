"""The weekly data profile: figures of a hand-built week, the HTML page, robustness, the lake, MLflow."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pytest

from recsys.io.storage import Lake, write_parquet
from recsys.reporting.data_profile import log_profile, profile_from_lake, render_profile
from recsys.reporting.week_profile import WEEKDAYS, profile_week

START = datetime(2026, 11, 15, tzinfo=UTC)  # a Sunday
END = START + timedelta(days=7)
SATURDAY_8PM = datetime(2026, 11, 21, 20, 0, tzinfo=UTC)
# pseudonyms as the anonymized layer has them: they must never reach the page or the figures
ALICE = "9f1c0e7d4b2a5f6e8c3d1a0b9e7f6c5d"
BOB = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
CAROL = "fedcba98765432100123456789abcdef"
PSEUDONYMS = (ALICE, BOB, CAROL)
PNG_IMG = re.compile(r'<img alt="plot" src="data:image/png;base64,([A-Za-z0-9+/=]+)">')
SECTION_TITLES = (
    "Most-watched genres",
    "Activity by hour of day and weekday (UTC)",
    "User activity",
    "Title popularity",
    "New and returning users and titles",
    "Event types, ratings and watch time",
)


def week_events() -> pd.DataFrame:
    """Alice 5 events (one browse, one rating), Bob 2, Carol 1; all on Saturday 20:00-20:07 UTC."""
    rows = [
        # user, item, type, rating, watch seconds
        (ALICE, 1, "view", None, 3600),
        (ALICE, 2, "view", None, 1800),
        (ALICE, 1, "rating", 4.5, None),
        (ALICE, 3, "view", None, 600),
        (ALICE, 3, "browse", None, None),
        (BOB, 1, "view", None, 1200),
        (BOB, 2, "view", None, 2400),
        (CAROL, 1, "view", None, 3000),
    ]
    return pd.DataFrame(
        {
            "user": pd.array([r[0] for r in rows], dtype="string"),
            "item_id": [r[1] for r in rows],
            "ts": pd.to_datetime([SATURDAY_8PM + timedelta(minutes=i) for i in range(len(rows))], utc=True),
            "event_type": [r[2] for r in rows],
            "rating": [r[3] if r[3] is not None else float("nan") for r in rows],
            "watch_seconds": [float(r[4]) if r[4] is not None else float("nan") for r in rows],
            "device_type": ["tv"] * len(rows),
        }
    )


def catalogue() -> pd.DataFrame:
    old = pd.Timestamp("2025-01-01", tz="UTC")
    return pd.DataFrame(
        {
            "item_id": [1, 2, 3, 4],
            "title": ["Night Terror", "Laugh Scream", "Quiet <Drama> & Co", "Fresh Fright"],
            "genres": ["Horror", "Horror|Comedy", "Drama", "Horror"],
            "release_year": pd.array([2001, 2002, 2003, 2026], dtype="Int64"),
            "added_at": [old, old, old, pd.Timestamp("2026-11-18 09:00", tz="UTC")],
        }
    )


def earlier() -> pd.DataFrame:
    """Alice and Bob were seen before the week (titles 1 and 3); Carol's row is inside the week
    (a window that overlaps it), so it must not make her a returning user."""
    return pd.DataFrame(
        {
            "user": [ALICE, BOB, CAROL],
            "item_id": [1, 3, 2],
            "ts": pd.to_datetime(["2026-11-08 10:00", "2026-11-10 11:00", "2026-11-16 12:00"], utc=True),
        }
    )


@pytest.fixture(scope="module")
def profile():
    return profile_week(week_events(), catalogue(), START, END, earlier_events=earlier())


def test_totals_and_genres(profile):
    assert (profile.events, profile.users, profile.plays) == (8, 3, 7)  # the browse is not a play
    assert (profile.titles_played, profile.catalogue_titles) == (3, 4)
    top = profile.genres[0]
    assert (top.genre, top.users, top.plays) == ("Horror", 3, 6)
    by_name = {g.genre: (g.users, g.plays) for g in profile.genres}
    assert by_name == {"Horror": (3, 6), "Comedy": (2, 2), "Drama": (1, 1)}
    assert profile.plays_not_in_catalogue == 0
    assert profile.notes == ()


def test_time_of_day_and_weekday(profile):
    assert len(profile.hours) == 24 and profile.hours[20] == 8 and sum(profile.hours) == 8
    assert len(profile.weekdays) == 7 and profile.weekdays[WEEKDAYS.index("Sat")] == 8
    assert profile.peak_hour == 20 and profile.peak_weekday == "Sat"
    assert profile.hour_by_weekday[WEEKDAYS.index("Sat")][20] == 8
    assert profile.events_outside_week == 0


def test_user_activity_and_title_popularity(profile):
    # events per user 1, 2, 5: median 2; p90 by linear interpolation 2 + 0.8 * (5 - 2)
    assert profile.events_per_user_median == 2
    assert profile.events_per_user_p90 == pytest.approx(4.4)
    assert profile.events_per_user_max == 5
    assert [(b.lo, b.hi, b.count) for b in profile.activity_bins] == [(1, 1, 1), (2, 3, 1), (4, 7, 1)]
    # plays per title over the catalogue: title 1: 4, title 2: 2, title 3: 1, title 4: 0
    plays = [4, 2, 1, 0]
    assert profile.titles_considered == 4
    assert profile.top1_share == pytest.approx(4 / 7)  # one title (at least one) of four
    assert profile.top10_share == pytest.approx(4 / 7)
    pairwise = sum(abs(a - b) for a in plays for b in plays)
    assert profile.popularity_gini == pytest.approx(pairwise / (2 * len(plays) ** 2 * (sum(plays) / 4)))
    curve = profile.popularity_curve
    assert curve[0] == 0 and curve[-1] == pytest.approx(1.0)
    assert curve[25] == pytest.approx(4 / 7)  # the top quarter of the titles is title 1
    assert [(t.item_id, t.title, t.plays, t.users) for t in profile.top_titles[:2]] == [
        ("1", "Night Terror", 4, 3),
        ("2", "Laugh Scream", 2, 2),
    ]


def test_new_and_returning(profile):
    assert (profile.users_new, profile.users_returning) == (1, 2)
    assert profile.plays_by_new_users == 1
    assert (profile.titles_new, profile.titles_returning) == (1, 2)  # title 2 was never played before
    assert profile.earlier_events == 2  # Carol's row inside the week is not "earlier"
    assert profile.catalogue_added == 1 and profile.catalogue_added_titles == ("Fresh Fright",)
    # added on the last second of the week counts; at the next week's start it does not
    items = catalogue()
    items.loc[len(items)] = [5, "Late Arrival", "Drama", 2026, END - timedelta(seconds=1)]
    items.loc[len(items)] = [6, "Next Week", "Drama", 2026, END]
    later = profile_week(week_events(), items, START, END, earlier_events=earlier())
    assert later.catalogue_added == 2 and "Next Week" not in later.catalogue_added_titles


def test_event_types_ratings_and_watch_time(profile):
    assert dict(profile.event_types) == {"view": 6, "rating": 1, "browse": 1}
    assert profile.ratings == ((4.5, 1),) and profile.rating_mean == 4.5
    assert profile.watched_views == 6
    assert profile.watch_minutes_median == pytest.approx(35.0)  # 10 20 30 | 40 50 60 minutes
    assert profile.watch_hours_total == pytest.approx(3.5)
    assert sum(b.count for b in profile.watch_bins) == 6


def test_to_dict_is_strict_json_without_pseudonyms(profile):
    text = json.dumps(profile.to_dict(), allow_nan=False)
    assert json.loads(text)["genres"][0]["genre"] == "Horror"
    assert not any(p in text for p in PSEUDONYMS)
    without_history = profile_week(week_events(), catalogue(), START, END)
    data = without_history.to_dict()
    assert data["users_new"] is None and data["earlier_events"] is None
    json.dumps(data, allow_nan=False)


def test_page_has_every_section_plots_and_no_pseudonym(profile):
    page = render_profile(profile)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    for title in SECTION_TITLES:
        assert f"<h2>{title}</h2>" in page
    images = PNG_IMG.findall(page)
    # genres 1, time 2 (by hour, weekday x hour), activity 1, popularity 1, new 1, types+ratings+watch 3
    assert len(images) == 9
    assert all(base64.b64decode(img)[:8] == b"\x89PNG\r\n\x1a\n" for img in images)
    assert not any(p in page for p in PSEUDONYMS)
    assert "Quiet &lt;Drama&gt; &amp; Co" in page and "<Drama>" not in page
    assert "could not be rendered" not in page
    assert "<script" not in page.lower() and "http" not in page  # self-contained


def test_values_from_data_are_escaped():
    items = catalogue()
    items.loc[0, "genres"] = "<b>Horror</b>|$x$"
    events = week_events()
    events.loc[4, "event_type"] = "<img src=x>"
    page = render_profile(profile_week(events, items, START, END))
    assert "<b>Horror</b>" not in page and "&lt;b&gt;Horror&lt;/b&gt;" in page
    assert "<img src=x>" not in page and "&lt;img src=x&gt;" in page


def test_empty_events_give_notes_not_errors():
    for empty in (pd.DataFrame(), week_events().iloc[0:0]):
        profile = profile_week(empty, catalogue(), START, END, earlier_events=earlier())
        assert profile.events == 0 and profile.users == 0 and profile.genres == () and profile.hours == ()
        page = render_profile(profile)
        assert PNG_IMG.findall(page) == []
        assert "No events this week." in page and "could not be rendered" not in page
        for title in SECTION_TITLES:
            assert f"<h2>{title}</h2>" in page
        assert page.count('class="note"') >= len(SECTION_TITLES)
        # the catalogue is still profiled: one title added this week
        assert profile.catalogue_added == 1
    nothing = profile_week(pd.DataFrame(), pd.DataFrame(), START, END)
    assert nothing.catalogue_titles == 0 and nothing.catalogue_added is None
    assert "<h1>" in render_profile(nothing)


def test_missing_columns_give_notes_not_errors():
    events = week_events()[["user", "item_id"]]
    items = catalogue()[["item_id", "title"]]
    profile = profile_week(events, items, START, END, earlier_events=pd.DataFrame({"item_id": [1]}))
    assert profile.plays == 8  # without event types every event is a play
    assert profile.hours == () and profile.event_types == () and profile.ratings == ()
    assert profile.genres == () and profile.catalogue_added is None
    assert profile.users_new == 3  # the earlier events carry no users
    assert profile.events_per_user_max == 5 and profile.top1_share is not None
    page = render_profile(profile)
    for column in ("ts", "event_type", "rating", "watch_seconds", "genres", "added_at"):
        assert f"no &#x27;{column}&#x27; column" in page, column
    assert len(PNG_IMG.findall(page)) == 3  # activity, popularity, new versus returning


def test_bad_values_are_noted_not_raised():
    events = week_events()
    events["ts"] = ["not a time"] * 7 + ["2026-11-30T10:00:00Z"]
    events["rating"] = "five"
    events["watch_seconds"] = None
    items = pd.concat([catalogue(), catalogue().tail(1)])  # a duplicated catalogue row
    events.loc[7, "item_id"] = 999  # not in the catalogue
    profile = profile_week(events, items, START, END)
    assert any("7 events have a missing or unreadable timestamp" in n for n in profile.notes)
    assert profile.events_outside_week == 1
    assert profile.ratings == () and profile.watch_bins == ()
    assert profile.catalogue_titles == 4 and profile.plays_not_in_catalogue == 1
    render_profile(profile)


def test_a_broken_figure_costs_only_its_section(profile):
    broken = dataclasses.replace(profile, hour_by_weekday=(("x", None),))
    page = render_profile(broken)
    assert page.count("could not be rendered") == 1
    time_section = page.split("<h2>Activity by hour of day and weekday (UTC)</h2>")[1].split("<h2>")[0]
    assert "could not be rendered" in time_section
    assert len(PNG_IMG.findall(page)) == 9 - 2


def test_profile_from_lake(tmp_path):
    lake = Lake(tmp_path / "lake")
    week = date(2026, 11, 15)
    write_parquet(week_events(), lake.data_file("anonymized", "events", week))
    write_parquet(catalogue(), lake.data_file("anonymized", "items", week))
    one_back, two_back = week - timedelta(days=7), week - timedelta(days=14)
    # Alice one week back, Bob two weeks back; Carol never
    write_parquet(earlier().iloc[[0]], lake.data_file("anonymized", "events", one_back))
    write_parquet(
        earlier().iloc[[1]].assign(ts=pd.Timestamp("2026-11-03", tz="UTC")),
        lake.data_file("anonymized", "events", two_back),
    )

    profile, page = profile_from_lake(lake, week, history_weeks=1)
    assert profile.earlier_weeks == (one_back.isoformat(),)
    assert (profile.users_new, profile.users_returning) == (2, 1)
    assert profile.genres[0].genre == "Horror" and profile.events == 8
    assert "<h2>Most-watched genres</h2>" in page and not any(p in page for p in PSEUDONYMS)

    profile, _ = profile_from_lake(lake, week + timedelta(days=3), history_weeks=4)  # any day of the week
    assert profile.week_start.startswith("2026-11-15")
    assert profile.earlier_weeks == (two_back.isoformat(), one_back.isoformat())
    assert (profile.users_new, profile.users_returning) == (1, 2)

    profile, _ = profile_from_lake(lake, week, history_weeks=0)
    assert profile.users_new is None and profile.earlier_weeks == ()

    missing, page = profile_from_lake(lake, week + timedelta(days=7))
    assert missing.events == 0
    assert any("No anonymized events for week 2026-11-22" in n for n in missing.notes)
    assert "No anonymized events for week 2026-11-22" in page

    lake.data_file("anonymized", "events", one_back).write_text("not parquet")
    damaged, _ = profile_from_lake(lake, week, history_weeks=1)
    assert any("could not be read" in n for n in damaged.notes) and damaged.users_new is None


def test_log_profile_to_a_run(settings, tmp_path):
    import mlflow

    from recsys.io.tracking import configure

    client = configure(settings)
    page = render_profile(profile_week(week_events(), catalogue(), START, END))
    with pytest.raises(ValueError, match="no MLflow run"):
        log_profile(page)
    with mlflow.start_run() as run:
        assert log_profile(page) == "profile/week_profile.html"
    with mlflow.start_run() as other:
        pass
    log_profile("<html>other</html>", run_id=other.info.run_id)
    local = client.download_artifacts(run.info.run_id, "profile/week_profile.html", str(tmp_path / "a"))
    assert open(local, encoding="utf-8").read() == page
    second = client.download_artifacts(other.info.run_id, "profile/week_profile.html", str(tmp_path / "b"))
    assert open(second, encoding="utf-8").read() == "<html>other</html>"


def test_history_built_a_week_at_a_time_gives_the_figures_of_all_earlier_events_at_once():
    """The lake's profile reads the earlier weeks one at a time into a History (distinct users and
    titles, and a count); the new-versus-returning figures equal those of the concatenated events,
    with a week lacking the user column, float item ids, missing values and a row inside the week."""
    import numpy as np

    from recsys.reporting.week_profile import History

    rng = np.random.default_rng(7)
    weeks = []
    for w in range(3):
        n = 400
        frame = pd.DataFrame(
            {
                "user": pd.Series(rng.integers(0, 120, n).astype(str), dtype=object),
                "item_id": rng.integers(0, 60, n).astype(float),
                "ts": pd.Timestamp(START)
                - pd.Timedelta(days=7 * (3 - w))
                + pd.to_timedelta(rng.integers(0, 86400 * 7, n), unit="s"),
            }
        )
        frame.loc[::37, "user"] = None
        frame.loc[::41, "item_id"] = np.nan
        weeks.append(frame)
    weeks[1] = weeks[1].drop(columns="user")  # this week's file has no users
    weeks[2].loc[5, "ts"] = pd.Timestamp(START) + pd.Timedelta(hours=2)  # inside the week: not earlier
    events = pd.DataFrame(
        {
            "user": rng.integers(0, 200, 300).astype(str),
            "item_id": rng.integers(0, 90, 300),
            "ts": pd.Timestamp(START) + pd.to_timedelta(rng.integers(0, 86400 * 7, 300), unit="s"),
            "event_type": rng.choice(["view", "rating", "browse"], 300),
        }
    )
    history = History.of(weeks[0], START)
    for frame in weeks[1:]:
        history = history.merge(History.of(frame, START))
    by_history = profile_week(events, catalogue(), START, END, history)
    at_once = profile_week(events, catalogue(), START, END, pd.concat(weeks, ignore_index=True))
    figures = (
        "earlier_events",
        "users_new",
        "users_returning",
        "plays_by_new_users",
        "titles_new",
        "titles_returning",
    )
    assert [getattr(by_history, f) for f in figures] == [getattr(at_once, f) for f in figures]
    assert by_history.earlier_events == 1199 and 0 < by_history.users_new < by_history.users_returning + 200
    assert by_history.titles_new > 0 and by_history.titles_returning > 0
