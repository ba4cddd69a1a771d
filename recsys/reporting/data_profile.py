"""The weekly data profile: exploratory analysis of one week as a product, one HTML page per week.

It reads the **anonymized** layer only (users are pseudonyms there) and never shows a pseudonym:
users are counted, never named. Titles and genres are catalogue data and may be shown.

* :func:`~recsys.reporting.week_profile.profile_week` turns the week's events, the catalogue and
  (optionally) the earlier weeks' events into a :class:`~recsys.reporting.week_profile.WeekProfile`:
  plain figures, no user identifiers, ``to_dict()`` JSON-safe (:mod:`recsys.reporting.week_profile`).
* :func:`render_profile` draws it as one self-contained HTML document (the helpers and style of
  :mod:`recsys.core.html`: inline CSS, base64 PNGs, every value from data HTML-escaped).
* :func:`profile_from_lake` reads a week and up to ``history_weeks`` earlier weeks from the lake;
  :func:`log_profile` attaches the page to an MLflow run as ``profile/week_profile.html``.

The definitions used throughout (event, play, genre, UTC weekdays) are in
:mod:`recsys.reporting.week_profile`.

Nothing here raises on a data problem (missing columns, empty frames, unparseable values): the
figure is left empty and the page shows a short note instead of the plot.

``python -m recsys.reporting.data_profile 2026-11-15 [--lake DIR] [--out FILE] [--history-weeks N]`` writes the
page of a week to a file.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys.core.html import (
    REPORT_CSS,
    escape,
    html_page,
    html_table,
    metric_cell,
    mpl_text,
    note,
    percent_cell,
    png_img,
)
from recsys.core.intervals import WEEK, parse_week, week_bounds, week_start_of
from recsys.core.settings import Settings
from recsys.io.storage import Lake, parquet_columns, read_parquet
from recsys.reporting.model_report import log_html
from recsys.reporting.week_profile import WEEKDAYS, History, WeekProfile, frame_or_empty, profile_week

log = logging.getLogger(__name__)

PROFILE_ARTIFACT = "profile/week_profile.html"
_BLUE = "#1565c0"
_ORANGE = "#ef6c00"
_GREY = "#9e9e9e"


# ---- rendering ---------------------------------------------------------------------------------
def _num(value: Any, digits: int = 2) -> str:
    if isinstance(value, float) and math.isfinite(value) and not value.is_integer():
        return f"{value:,.{digits}f}"
    return metric_cell(value)


def _why(profile: WeekProfile, section: str, fallback: str) -> str:
    reasons = profile.why(section)
    return note(f"{fallback}: {'; '.join(reasons)}." if reasons else f"{fallback}.")


def _header(profile: WeekProfile, title: str) -> str:
    start, end = profile.week_start[:16].replace("T", " "), profile.week_end[:16].replace("T", " ")
    facts = [
        f"{escape(start)} &rarr; {escape(end)} UTC",
        f"{metric_cell(profile.events)} events",
        f"{metric_cell(profile.plays)} plays",
        f"{metric_cell(profile.users)} users",
        f"{metric_cell(profile.titles_played)} titles played of {metric_cell(profile.catalogue_titles)} "
        "in the catalogue",
    ]
    out = f"<h1>{escape(title)} &mdash; week {escape(profile.week_start[:10])}</h1>"
    out += f"<p class='sub'>{' &middot; '.join(facts)}</p>"
    out += note(
        "From the anonymized layer: users are counted, never named. A play is a view or a rating "
        "(a browse is a title shown but not watched). Times are UTC."
    )
    if profile.notes:
        items = "".join(f"<li>{escape(n)}</li>" for n in profile.notes)
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
        ax.set_yticks(ys, [mpl_text(g.genre) for g in shown], fontsize=8)
        ax.set_xlabel("plays / users this week")
        ax.legend(fontsize=8, loc="lower right")

    rows = [
        (
            "",
            [
                escape(g.genre),
                metric_cell(g.users),
                percent_cell(g.user_share),
                metric_cell(g.plays),
                percent_cell(g.plays / p.plays if p.plays else None),
            ],
        )
        for g in p.genres[:20]
    ]
    out = png_img(draw, size=(8.0, max(2.6, 0.32 * len(shown) + 0.8)))
    out += html_table(["genre", "users", "share of users", "plays", "share of plays"], rows)
    notes = ["A title counts for each of its genres, so the shares add up to more than 100%."]
    if len(p.genres) > 20:
        notes.append(f"{len(p.genres) - 20} more genres are left out of the table.")
    if p.plays_not_in_catalogue:
        notes.append(f"{p.plays_not_in_catalogue:,} plays are of titles not in the catalogue.")
    notes += p.why("genres")
    return out + note(" ".join(notes))


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
        ("best" if name == p.peak_weekday else "", [escape(name), metric_cell(n), percent_cell(n / total)])
        for name, n in zip(WEEKDAYS, p.weekdays, strict=True)
    ]
    summary = f"Busiest hour {p.peak_hour:02d}:00&ndash;{p.peak_hour:02d}:59 UTC ({metric_cell(p.hours[p.peak_hour])} events); busiest day {escape(p.peak_weekday)}."
    return (
        png_img(hours, size=(8.0, 2.6))
        + png_img(heat, size=(8.0, 2.8))
        + f"<p class='sub'>{summary}</p>"
        + html_table(["weekday", "events", "share"], rows)
    )


def _activity_section(p: WeekProfile) -> str:
    if not p.activity_bins:
        return _why(p, "activity", "No user activity figures")
    bins = p.activity_bins

    from matplotlib.ticker import FuncFormatter  # deferred: matplotlib is heavy

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

    stats = html_table(
        ["users", "median", "p90", "mean", "max"],
        [
            (
                "",
                [
                    metric_cell(p.users),
                    _num(p.events_per_user_median),
                    _num(p.events_per_user_p90),
                    _num(p.events_per_user_mean),
                    metric_cell(p.events_per_user_max),
                ],
            )
        ],
        left=0,
    )
    rows = [
        ("", [escape(f"{b.lo:g}" if b.lo == b.hi else f"{b.lo:g}–{b.hi:g}"), metric_cell(b.count)])
        for b in bins
    ]
    return (
        png_img(draw, size=(8.0, 2.8))
        + "<p class='sub'>Events per user</p>"
        + stats
        + "<p class='sub'>Users per activity band</p>"
        + html_table(["events per user", "users"], rows)
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

    summary = html_table(
        ["titles", "played", "top 1% of titles", "top 10% of titles", "Gini"],
        [
            (
                "",
                [
                    metric_cell(p.titles_considered),
                    metric_cell(p.titles_played),
                    percent_cell(p.top1_share),
                    percent_cell(p.top10_share),
                    _num(p.popularity_gini, 3),
                ],
            )
        ],
        left=0,
    )
    top = html_table(
        ["item", "title", "plays", "users"],
        [
            ("", [escape(t.item_id), escape(t.title), metric_cell(t.plays), metric_cell(t.users)])
            for t in p.top_titles
        ],
        left=2,
    )
    return (
        png_img(draw, size=(8.0, 3.0))
        + summary
        + note(
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
            out += png_img(draw, size=(8.0, 2.2))
        rows = []
        for label, new, back in groups:
            total = new + back
            share = new / total if total else None
            rows.append(("", [escape(label), metric_cell(new), metric_cell(back), percent_cell(share)]))
        if p.plays_by_new_users is not None:
            share = p.plays_by_new_users / p.plays if p.plays else None
            cells = ["plays by new users", metric_cell(p.plays_by_new_users), "&ndash;", percent_cell(share)]
            rows.append(("", cells))
        out += html_table(["", "new", "returning", "new share"], rows)
        weeks = ", ".join(p.earlier_weeks) if p.earlier_weeks else "the earlier events given"
        out += note(f"New: not seen in {weeks} ({p.earlier_events or 0:,} events).")
    for reason in p.why("new"):
        out += note(reason[:1].upper() + reason[1:] + ".")
    if p.catalogue_added is not None:
        out += f"<p class='sub'>Titles added to the catalogue this week: {metric_cell(p.catalogue_added)}</p>"
        if p.catalogue_added_titles:
            out += html_table(["title"], [("", [escape(t)]) for t in p.catalogue_added_titles])
    return out or note("No new versus returning figures.")


def _types_section(p: WeekProfile) -> str:
    out = ""
    if p.event_types:
        total = sum(n for _, n in p.event_types) or 1

        def draw(ax: Any) -> None:
            labels = [mpl_text(t) for t, _ in p.event_types]
            ax.bar(labels, [n / total * 100 for _, n in p.event_types], color=_BLUE)
            ax.set_ylabel("% of events")

        out += png_img(draw, size=(8.0, 2.4))
        out += html_table(
            ["event type", "events", "share"],
            [("", [escape(t), metric_cell(n), percent_cell(n / total)]) for t, n in p.event_types],
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
        out += png_img(ratings, size=(8.0, 2.4))
        out += html_table(
            ["ratings", "mean", "median"],
            [("", [metric_cell(count), _num(p.rating_mean), _num(p.rating_median)])],
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

        out += png_img(watch, size=(8.0, 2.4))
        out += html_table(
            ["views with watch time", "median min", "p90 min", "mean min", "hours in total"],
            [
                (
                    "",
                    [
                        metric_cell(p.watched_views),
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
        body = note(f"This section could not be rendered ({exc.__class__.__name__}: {exc}).")
    return f"<h2>{escape(title)}</h2>{body}"


def render_profile(profile: WeekProfile, title: str = "Weekly data profile") -> str:
    """The profile as one self-contained HTML document; never raises on odd figures."""
    try:
        header = _header(profile, title)
    except Exception as exc:  # noqa: BLE001
        header = f"<h1>{escape(title)}</h1>{note(f'header could not be rendered: {exc}')}"
    sections = [_section(name, lambda fn=fn: fn(profile)) for name, fn in SECTIONS]
    week = getattr(profile, "week_start", "")[:10]
    css = REPORT_CSS + "h3{font-size:14px;margin:18px 0 6px}table{margin:6px 0}"
    return html_page(f"{title} {week}", header + "".join(sections), css)


# ---- lake and MLflow ---------------------------------------------------------------------------
def _read(
    path: Path, what: str, notes: list[str], columns: tuple[str, ...] | None = None
) -> pd.DataFrame | None:
    if not path.exists():
        return None
    try:
        if columns is not None:
            present = set(parquet_columns(path))
            return read_parquet(path, columns=[c for c in columns if c in present])
        return read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - an unreadable file is a note, not a failed pipeline
        notes.append(f"{what} could not be read ({exc.__class__.__name__}: {exc}).")
        return None


def profile_from_lake(lake: Lake, week: date, history_weeks: int = 4) -> tuple[WeekProfile, str]:
    """The profile and HTML of ``week`` (floored to its Sunday) from the anonymized layer.

    New versus returning compares with the up to ``history_weeks`` weeks before it that exist in
    the lake (none: unknown). Missing or unreadable partitions give notes, never an exception.
    """
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
    history: History | None = None  # a week at a time: never every earlier week's events at once
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
            seen = History.of(frame, start)
            history = seen if history is None else history.merge(seen)
    profile = profile_week(frame_or_empty(events), frame_or_empty(items), start, end, history)
    profile = dataclasses.replace(
        profile,
        earlier_weeks=tuple(w.isoformat() for w in earlier_weeks),
        notes=tuple(notes) + profile.notes,
    )
    return profile, render_profile(profile)


def log_profile(html: str, run_id: str | None = None) -> str:
    """Log the page as ``profile/week_profile.html`` (see :func:`recsys.reporting.model_report.log_html`)."""
    return log_html(html, PROFILE_ARTIFACT, "the data profile", run_id)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m recsys.reporting.data_profile", description="weekly data profile"
    )
    parser.add_argument("week", help="YYYY-MM-DD (any day of the week)")
    parser.add_argument("--lake", type=Path, help="lake directory (default: the settings' lake)")
    parser.add_argument("--out", type=Path, default=Path("week_profile.html"))
    parser.add_argument("--history-weeks", type=int, default=4)
    args = parser.parse_args(argv)
    if args.lake is None:
        args.lake = Settings.from_env().lake_dir
    _, page = profile_from_lake(Lake(args.lake), parse_week(args.week), args.history_weeks)
    args.out.write_text(page, encoding="utf-8")
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
