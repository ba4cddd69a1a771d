"""Injected drift in the synthetic generator, seen by the drift statistics; stable weeks raise no alarm."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from recsys.data.synthetic import GeneratorConfig, generate
from recsys.evaluation.drift import DriftThresholds, detect_drift
from recsys.io.storage import Lake

END = date(2026, 11, 15)
WEEKS = [date(2026, 10, 18), date(2026, 10, 25), date(2026, 11, 1), date(2026, 11, 8), END]


def week_events(lake: Lake, week: date) -> pd.DataFrame:
    raw = pd.read_csv(lake.partition("raw", week, "events") / "events.csv", dtype=str, keep_default_na=False)
    raw = raw[raw["user_id"].ne("") & raw["event_type"].isin(["view", "rating", "browse"])]
    item = pd.to_numeric(raw["item_id"], errors="coerce")
    rating = pd.to_numeric(raw["rating"], errors="coerce")
    frame = pd.DataFrame(
        {
            "user": raw["user_id"],
            "item_id": item,
            "ts": pd.to_datetime(raw["timestamp"], utc=True, errors="coerce"),
            "event_type": raw["event_type"],
            "rating": rating,
            "watch_seconds": pd.to_numeric(raw["watch_seconds"], errors="coerce"),
        }
    )
    return frame[frame["item_id"].notna() & (frame["rating"].isna() | frame["rating"].between(0.5, 5))]


def build(tmp_path, **drift) -> Lake:
    lake = Lake(tmp_path)
    generate(lake, GeneratorConfig(n_users=800, n_items=300, weeks=len(WEEKS), seed=11, **drift), END)
    return lake


def test_stable_weeks_raise_no_alarm(tmp_path):
    lake = build(tmp_path)
    thresholds = DriftThresholds()
    for previous, current in zip(WEEKS, WEEKS[1:], strict=False):
        report = detect_drift(week_events(lake, previous), week_events(lake, current), thresholds)
        assert not report.drifted, (current, report.reasons)


@pytest.mark.parametrize(
    ("kind", "reason"),
    [("popular_genre", "item popularity"), ("activity", "user activity"), ("catalogue", "item popularity")],
)
def test_injected_drift_is_detected_from_its_week_only(tmp_path, kind, reason):
    stable = build(tmp_path / "stable")
    lake = build(tmp_path / "drift", drift_from=END, drift_kind=kind)
    # weeks before the drift are byte-identical to the stable world
    for week in WEEKS[:-1]:
        path = ("raw", week, "events")
        assert (lake.partition(*path) / "events.csv").read_bytes() == (
            stable.partition(*path) / "events.csv"
        ).read_bytes()
    report = detect_drift(week_events(lake, WEEKS[-2]), week_events(lake, END), DriftThresholds())
    assert report.drifted and any(reason in r for r in report.reasons), report.reasons


def test_unknown_drift_genre_is_refused():
    with pytest.raises(ValueError, match="drift_genre"):
        GeneratorConfig(drift_from=END, drift_genre="Polka")
