"""The synthetic log generator: contract, determinism, realism, injected bad rows."""

from __future__ import annotations

import csv
import json
import re
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from recsys.core.errors import ConfigError
from recsys.core.intervals import week_bounds, weeks_back
from recsys.core.schemas import (
    DEVICE_TYPES,
    EVENT_TYPES,
    RAW_EVENT_COLUMNS,
    RAW_ITEM_COLUMNS,
    RAW_USER_COLUMNS,
)
from recsys.data.synthetic import (
    BAD_ROW_KINDS,
    GENRES,
    GenerationResult,
    GeneratorConfig,
    config_from,
    generate,
)
from recsys.io.storage import Lake

END_WEEK = date(2026, 11, 15)  # a Sunday
ISO_SECONDS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
IPV4 = re.compile(r"(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}")
HALF_STARS = {f"{v / 2:.1f}" for v in range(1, 11)}


def read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")


class Generated:
    def __init__(self, root: Path, config: GeneratorConfig, result: GenerationResult) -> None:
        self.lake = Lake(root)
        self.config = config
        self.result = result

    def frame(self, kind: str, week: date) -> pd.DataFrame:
        files = self.lake.raw_files(kind, week)
        assert len(files) == 1, files
        return read(files[0])

    def events(self) -> pd.DataFrame:
        return pd.concat(
            [self.frame("events", w).assign(week=w) for w in self.result.weeks], ignore_index=True
        )


@pytest.fixture(scope="module")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> Generated:
    root = tmp_path_factory.mktemp("lake")
    config = GeneratorConfig()
    return Generated(root, config, generate(Lake(root), config, END_WEEK))


def bad_row_kinds(events: pd.DataFrame, items: pd.DataFrame, week: date) -> pd.Series:
    """What is wrong with each row, detected from the files alone ("" = nothing)."""
    start, end = week_bounds(week)
    moment = pd.to_datetime(events["timestamp"], format="%Y-%m-%dT%H:%M:%SZ", utc=True, errors="coerce")
    problems = pd.Series("", index=events.index)
    checks = [
        ("missing_user_id", events["user_id"].eq("")),
        ("rating_out_of_range", events["event_type"].eq("rating") & ~events["rating"].isin(HALF_STARS)),
        ("unknown_event_type", ~events["event_type"].isin(EVENT_TYPES)),
        ("unknown_item_id", ~events["item_id"].isin(items["item_id"])),
        ("duplicate_line", events.duplicated(keep="first")),
        ("timestamp_outside_week", moment.isna() | (moment < start) | (moment >= end)),
    ]
    for kind, mask in checks:
        problems = problems.where(~(mask & problems.eq("")), kind)
        assert not (mask & problems.ne(kind)).any(), f"a row has more than one problem ({kind})"
    return problems


# ---- files and contract ----------------------------------------------------------------------


def test_writes_three_csv_files_per_week(default_run: Generated) -> None:
    result = default_run.result
    assert result.weeks == weeks_back(END_WEEK, 4)
    assert len(result.files) == 3 * 4
    for week in result.weeks:
        for kind in ("events", "items", "users"):
            path = default_run.lake.partition("raw", week, kind) / f"{kind}.csv"
            assert path in result.files and path.is_file()
        # no temporary files left behind
        assert [p.name for p in default_run.lake.partition("raw", week, "events").iterdir()] == ["events.csv"]
        assert result.rows_per_week[week.isoformat()] == len(default_run.frame("events", week))
    info = json.loads(json.dumps(result.to_dict()))
    assert info["weeks"][-1] == END_WEEK.isoformat()
    assert info["injected_bad_rows"] == result.injected_bad_rows > 0
    assert sum(info["bad_rows_by_kind"].values()) == result.injected_bad_rows


def test_columns_are_exactly_the_raw_contract(default_run: Generated) -> None:
    expected = {"events": RAW_EVENT_COLUMNS, "items": RAW_ITEM_COLUMNS, "users": RAW_USER_COLUMNS}
    for week in default_run.result.weeks:
        for kind, columns in expected.items():
            path = default_run.lake.raw_files(kind, week)[0]
            with path.open(encoding="utf-8", newline="") as fh:
                rows = list(csv.reader(fh))
            assert tuple(rows[0]) == columns
            assert all(len(row) == len(columns) for row in rows[1:]), f"ragged rows in {path}"
            assert b"\r" not in path.read_bytes()


def test_end_week_is_floored_to_its_sunday(tmp_path: Path) -> None:
    config = GeneratorConfig(n_users=20, n_items=30, weeks=1)
    result = generate(Lake(tmp_path), config, END_WEEK + timedelta(days=3))
    assert result.weeks == [END_WEEK]


def test_progress_reports_each_week(tmp_path: Path) -> None:
    messages: list[str] = []
    generate(
        Lake(tmp_path), GeneratorConfig(n_users=30, n_items=40, weeks=3), END_WEEK, progress=messages.append
    )
    assert len(messages) == 3 and all("week" in m for m in messages)


# ---- determinism -------------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path: Path) -> None:
    config = GeneratorConfig(n_users=150, n_items=120, weeks=2, seed=7)
    first = generate(Lake(tmp_path / "a"), config, END_WEEK)
    second = generate(Lake(tmp_path / "b"), config, END_WEEK)
    other = generate(Lake(tmp_path / "c"), config.model_copy(update={"seed": 8}), END_WEEK)
    assert first.to_dict()["rows_per_week"] == second.to_dict()["rows_per_week"]
    for a, b, c in zip(first.files, second.files, other.files, strict=True):
        assert a.relative_to(tmp_path / "a") == b.relative_to(tmp_path / "b")
        assert a.read_bytes() == b.read_bytes(), a.name
        assert a.read_bytes() != c.read_bytes(), a.name


# ---- clean rows valid, bad rows counted -------------------------------------------------------


def test_injected_bad_rows_match_what_a_validator_finds(default_run: Generated) -> None:
    found = dict.fromkeys(BAD_ROW_KINDS, 0)
    for week in default_run.result.weeks:
        events = default_run.frame("events", week)
        problems = bad_row_kinds(events, default_run.frame("items", week), week)
        for kind, count in problems[problems.ne("")].value_counts().items():
            found[str(kind)] += int(count)
    assert found == default_run.result.bad_rows_by_kind
    assert sum(found.values()) == default_run.result.injected_bad_rows
    assert all(count > 0 for count in found.values()), found
    # about dirty_fraction of the lines
    share = default_run.result.injected_bad_rows / sum(default_run.result.rows_per_week.values())
    assert share == pytest.approx(default_run.config.dirty_fraction, rel=0.2)


def test_clean_rows_are_valid(default_run: Generated) -> None:
    for week in default_run.result.weeks:
        events = default_run.frame("events", week)
        users = default_run.frame("users", week)
        clean = events[bad_row_kinds(events, default_run.frame("items", week), week).eq("")]
        assert len(clean) > 1000
        start, end = week_bounds(week)
        assert clean["timestamp"].str.fullmatch(ISO_SECONDS.pattern).all()
        moment = pd.to_datetime(clean["timestamp"], format="%Y-%m-%dT%H:%M:%SZ", utc=True)
        assert ((moment >= start) & (moment < end)).all()
        assert clean["event_id"].is_unique and clean["event_id"].str.fullmatch(r"e[0-9a-f]{16}").all()
        assert clean["user_id"].isin(users["user_id"]).all()
        assert clean["device_type"].isin([d for d in DEVICE_TYPES if d != "unknown"]).all()
        assert clean["ip_address"].str.fullmatch(IPV4.pattern).all()
        assert (
            clean["device_id"]
            .str.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
            .all()
        )
        kind = clean["event_type"]
        assert set(kind) == set(EVENT_TYPES)
        assert clean.loc[kind.eq("rating"), "rating"].isin(HALF_STARS).all()
        assert clean.loc[kind.ne("rating"), "rating"].eq("").all()
        watched = clean.loc[kind.eq("view"), "watch_seconds"]
        assert watched.str.fullmatch(r"[1-9]\d*").all()
        assert clean.loc[kind.ne("view"), "watch_seconds"].eq("").all()
    # event ids are unique across weeks too (duplicates are only the injected duplicate lines)
    all_events = default_run.events()
    assert (
        all_events["event_id"].nunique()
        == len(all_events) - default_run.result.bad_rows_by_kind["duplicate_line"]
    )


def test_no_bad_rows_when_dirty_fraction_is_zero(tmp_path: Path) -> None:
    config = GeneratorConfig(n_users=100, n_items=80, weeks=2, dirty_fraction=0.0)
    result = generate(Lake(tmp_path), config, END_WEEK)
    assert result.injected_bad_rows == 0
    lake = Lake(tmp_path)
    for week in result.weeks:
        events = read(lake.raw_files("events", week)[0])
        assert bad_row_kinds(events, read(lake.raw_files("items", week)[0]), week).eq("").all()


# ---- realism --------------------------------------------------------------------------------------


def test_items_and_users_look_real(default_run: Generated) -> None:
    weeks = default_run.result.weeks
    config = default_run.config
    items = [default_run.frame("items", w) for w in weeks]
    users = [default_run.frame("users", w) for w in weeks]
    # the catalogue grows by new_items_per_week; users sign up over time
    assert [len(i) for i in items] == [
        config.n_items + config.new_items_per_week * (k + 1) for k in range(len(weeks))
    ]
    assert len(users[-1]) == config.n_users and len(users[0]) < config.n_users
    for week, item, user in zip(weeks, items, users, strict=True):
        _, end = week_bounds(week)
        assert pd.to_datetime(item["added_at"], format="%Y-%m-%dT%H:%M:%SZ", utc=True).lt(end).all()
        assert pd.to_datetime(user["signup_date"], format="%Y-%m-%d").dt.date.lt(end.date()).all()
    item = items[-1]
    assert item["item_id"].is_unique
    years = item["release_year"].astype(int)
    assert years.between(1950, 2026).all()
    genres = item["genres"].str.split("|")
    assert genres.map(len).between(1, 3).all()
    assert genres.map(lambda gs: set(gs) <= set(GENRES)).all()
    titles = item["title"]
    assert titles.str.contains(",").any(), "some titles need CSV quoting"
    assert titles.map(lambda t: not t.isascii()).any(), "some titles have accents"
    user = users[-1]
    assert user["user_id"].str.fullmatch(r"u\d{6}").all() and user["user_id"].is_unique
    assert user["zip_code"].str.fullmatch(r"\d{5}").all()
    assert user["zip_code"].str.startswith("0").any(), "leading zeros are kept"
    assert user["age"].astype(int).between(13, 80).all()
    assert set(user["gender"]) == {"M", "F", "X"}
    assert user["email"].str.fullmatch(r"[a-z0-9.]+@example\.(com|org|net)").all()
    assert user["ip_address"].str.fullmatch(IPV4.pattern).all()
    assert user["name"].map(lambda n: not n.isascii()).any()


def test_more_activity_in_the_evening(default_run: Generated) -> None:
    events = default_run.events()
    hour = events["timestamp"].str[11:13].astype(int)
    evening = hour.between(18, 22).mean()
    night = hour.between(2, 6).mean()
    assert evening > 0.3 and evening > 5 * night


def test_popularity_is_skewed(default_run: Generated) -> None:
    events = default_run.events()
    counts = events["item_id"].value_counts()
    top = counts.iloc[: default_run.config.n_items // 10].sum()
    assert top / counts.sum() > 0.4  # uniform would be 0.1


def test_users_concentrate_on_their_tastes(default_run: Generated) -> None:
    """Each user's events fall on their favourite genres far more than the same events shuffled."""
    events = default_run.events()
    items = default_run.frame("items", default_run.result.weeks[-1]).set_index("item_id")["genres"]
    events = events[events["user_id"].ne("") & events["item_id"].isin(items.index)]

    def concentration(frame: pd.DataFrame) -> float:
        exploded = frame.assign(genre=frame["item_id"].map(items).str.split("|")).explode("genre")
        per_user = exploded.groupby(["user_id", "genre"]).size()
        top2 = per_user.groupby(level=0).apply(lambda s: s.nlargest(2).sum())
        return float((top2 / per_user.groupby(level=0).sum()).mean())

    rng = np.random.default_rng(0)
    shuffled = events.assign(item_id=rng.permutation(events["item_id"].to_numpy()))
    real, chance = concentration(events), concentration(shuffled)
    assert real > chance + 0.15, (real, chance)


def test_collaborative_filtering_beats_popularity(default_run: Generated) -> None:
    """An item-item co-occurrence recommender, trained on the first weeks, beats popularity on the last."""
    events = default_run.events()
    items = default_run.frame("items", default_run.result.weeks[-1])["item_id"]
    liked = events["event_type"].eq("view") | events["rating"].isin(["3.5", "4.0", "4.5", "5.0"])
    events = events[liked & events["user_id"].ne("") & events["item_id"].isin(items)]
    user_index = {u: i for i, u in enumerate(sorted(events["user_id"].unique()))}
    item_index = {it: i for i, it in enumerate(items)}
    last = default_run.result.weeks[-1]
    train, test = events[events["week"] != last], events[events["week"] == last]
    x = np.zeros((len(user_index), len(item_index)))
    x[train["user_id"].map(user_index), train["item_id"].map(item_index)] = 1.0
    norms = np.sqrt(x.sum(axis=0)) + 1e-9
    similarity = (x.T @ x) / norms[:, None] / norms[None, :]
    np.fill_diagonal(similarity, 0.0)
    cf_scores = x @ similarity
    popularity = x.sum(axis=0)

    def recall(scores: np.ndarray) -> float:
        values = []
        for user, group in test.groupby("user_id"):
            u = user_index[user]
            seen = x[u] > 0
            truth = {item_index[i] for i in group["item_id"]} - set(np.flatnonzero(seen))
            if not truth or not seen.any():
                continue
            s = np.where(seen, -np.inf, scores[u] if scores.ndim == 2 else scores)
            top = set(np.argsort(-s, kind="stable")[:10])
            values.append(len(top & truth) / min(10, len(truth)))
        return float(np.mean(values))

    cf, pop = recall(cf_scores), recall(popularity)
    assert cf > 1.25 * pop, (cf, pop)


# ---- configuration and speed -------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        {"n_users": 0},
        {"n_items": -5},
        {"weeks": 0},
        {"dirty_fraction": 0.5},
        {"dirty_fraction": -0.1},
        {"active_share": 0},
        {"n_clusters": 0},
        {"n_users": "many"},
        {"unknown_setting": 1},
    ],
)
def test_bad_config_values_fail_clearly(values: dict) -> None:
    with pytest.raises(ValidationError) as info:
        GeneratorConfig(**values)
    assert next(iter(values)) in str(info.value)
    with pytest.raises(ConfigError, match=next(iter(values))):
        config_from(values)


def test_config_defaults() -> None:
    config = config_from({})
    assert (config.n_users, config.n_items, config.n_clusters, config.weeks, config.seed) == (
        600,
        400,
        8,
        4,
        42,
    )
    assert config.dirty_fraction == 0.005


def test_fast_enough(tmp_path: Path) -> None:
    started = time.perf_counter()
    generate(Lake(tmp_path), GeneratorConfig(), END_WEEK)
    assert time.perf_counter() - started < 2.0


def test_timestamps_are_utc_iso(default_run: Generated) -> None:
    first = default_run.frame("events", default_run.result.weeks[0])["timestamp"].iloc[0]
    assert datetime.strptime(first, "%Y-%m-%dT%H:%M:%SZ")
