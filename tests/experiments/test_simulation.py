"""Simulated feedback to shown recommendations: determinism, taste, position, skipping, the log's contract."""

from __future__ import annotations

import re
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from recsys.core.intervals import week_bounds
from recsys.data.synthetic import GeneratorConfig, World, build_world, generate
from recsys.experiments.simulation import (
    EXPOSURE_COLUMNS,
    FEEDBACK_COLUMNS,
    SKIP_REASONS,
    FeedbackConfig,
    activity,
    simulate_feedback,
)
from recsys.io.storage import Lake
from recsys.privacy.anonymize import pseudonymize

END_WEEK = date(2026, 11, 15)  # last generated week (a Sunday)
WEEK = END_WEEK + timedelta(weeks=1)  # the experiment's week: right after training
KEY = b"feedback-test-key-0123456789abcdef"
N_USERS = 400
LIST_LENGTH = 10
ISO_SECONDS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")


@pytest.fixture(scope="module")
def world() -> World:
    return build_world(GeneratorConfig(seed=11), END_WEEK)


def fit_of(world: World, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """The world's match of each item for the better of the user's groups (items: catalogue indices)."""
    clusters = world.user_clusters[users]
    return np.maximum(world.match[clusters[:, 0], items], world.match[clusters[:, 1], items])


def exposures_for(world: World, lists: dict[int, np.ndarray], arm: str, positions=None) -> pd.DataFrame:
    """Exposure rows: user index -> item indices in list order (positions 1.. unless given)."""
    users = sorted(lists)
    pseudonyms = dict(zip(users, pseudonymize(world.user_ids[users].tolist(), KEY), strict=True))
    rows = []
    for u in users:
        for rank, i in enumerate(lists[u], start=1):
            position = rank if positions is None else positions
            rows.append((pseudonyms[u], arm, "exp-1", world.item_ids[i], position, WEEK))
    return pd.DataFrame(rows, columns=list(EXPOSURE_COLUMNS))


def best_lists(world: World, users: np.ndarray, length: int) -> dict[int, np.ndarray]:
    """A "better model": each user's highest-match items for their groups."""
    all_items = np.arange(len(world.item_ids))
    return {
        int(u): np.argsort(-fit_of(world, np.full(len(all_items), u), all_items), kind="stable")[:length]
        for u in users
    }


def random_lists(world: World, users: np.ndarray, length: int) -> dict[int, np.ndarray]:
    """A "worse model": random items."""
    rng = np.random.default_rng(5)
    return {int(u): rng.choice(len(world.item_ids), size=length, replace=False) for u in users}


@pytest.fixture(scope="module")
def users(world: World) -> np.ndarray:
    return np.random.default_rng(3).choice(len(world.user_ids), size=N_USERS, replace=False)


@pytest.fixture(scope="module")
def better(world: World, users: np.ndarray) -> pd.DataFrame:
    return exposures_for(world, best_lists(world, users, LIST_LENGTH), "better")


@pytest.fixture(scope="module")
def worse(world: World, users: np.ndarray) -> pd.DataFrame:
    return exposures_for(world, random_lists(world, users, LIST_LENGTH), "worse")


@pytest.fixture(scope="module")
def config() -> FeedbackConfig:
    return FeedbackConfig(seed=7)


@pytest.fixture(scope="module")
def better_feedback(world: World, better: pd.DataFrame, config: FeedbackConfig) -> pd.DataFrame:
    return simulate_feedback(world, better, KEY, config, WEEK)


@pytest.fixture(scope="module")
def worse_feedback(world: World, worse: pd.DataFrame, config: FeedbackConfig) -> pd.DataFrame:
    return simulate_feedback(world, worse, KEY, config, WEEK)


def per_user(feedback: pd.DataFrame, users: list[str]) -> pd.DataFrame:
    """Recommendation clicks, plays and watch seconds per exposed user (zeros included)."""
    rec = feedback[feedback["from_recommendation"]]
    totals = pd.DataFrame(
        {
            "clicks": rec["event"].eq("click").groupby(rec["user_id"]).sum(),
            "plays": rec["event"].eq("play").groupby(rec["user_id"]).sum(),
            "watch": rec["watch_seconds"].fillna(0).groupby(rec["user_id"]).sum(),
        }
    )
    return totals.reindex(pd.Index(users, dtype="string"), fill_value=0).astype(float)


# ---- determinism -----------------------------------------------------------------------------


def test_same_inputs_and_seed_give_the_same_log_whatever_the_row_order(
    world, better, config, better_feedback
):
    again = simulate_feedback(world, better, KEY, config, WEEK)
    pd.testing.assert_frame_equal(again, better_feedback)
    shuffled = better.sample(frac=1.0, random_state=1).reset_index(drop=True)
    pd.testing.assert_frame_equal(simulate_feedback(world, shuffled, KEY, config, WEEK), better_feedback)

    other_seed = simulate_feedback(world, better, KEY, config.model_copy(update={"seed": 8}), WEEK)
    assert len(better_feedback) > 100
    assert not other_seed.equals(better_feedback)
    next_week = better.assign(week=WEEK + timedelta(weeks=1))
    assert not simulate_feedback(world, next_week, KEY, config, WEEK + timedelta(weeks=1)).equals(
        better_feedback
    )


# ---- taste -------------------------------------------------------------------------------------


def test_better_model_earns_clearly_more_clicks_plays_and_watch_time(
    world, users, better_feedback, worse_feedback
):
    raw = world.user_ids[users].tolist()
    good, bad = per_user(better_feedback, raw), per_user(worse_feedback, raw)
    for column in ("clicks", "plays", "watch"):
        assert good[column].mean() > 1.5 * bad[column].mean() > 0, column
        # not a handful of users: the better lists win for many users one by one
        assert (good[column] > bad[column]).sum() > 2 * (good[column] < bad[column]).sum(), column


def test_poor_matches_are_abandoned_more_and_watched_less(world, better_feedback, worse_feedback):
    plays = pd.concat([better_feedback, worse_feedback], ignore_index=True)
    plays = plays[plays["event"].eq("play")]
    user_index = {u: i for i, u in enumerate(world.user_ids)}
    u = plays["user_id"].map(user_index).to_numpy(dtype=int)
    i = plays["item_id"].astype(int).to_numpy() - 1  # item_id i + 1 is catalogue index i
    share = plays["watch_seconds"].to_numpy(dtype=float) / world.item_runtime[i]
    fit = fit_of(world, u, i)
    poor, good = share[fit <= 0.25], share[fit > 0.75]
    assert len(poor) >= 50 and len(good) >= 50
    assert good.mean() > poor.mean() + 0.1
    assert (poor < 0.7).mean() > (good < 0.7).mean() + 0.1  # the abandoned ones


# ---- position ------------------------------------------------------------------------------------


@pytest.mark.parametrize("decay", ["log", "geometric"])
def test_position_one_gets_more_clicks_than_position_ten_for_the_same_items(world, users, decay):
    config = FeedbackConfig(seed=3, position_decay=decay)
    lists = best_lists(world, users, 3)
    top = simulate_feedback(world, exposures_for(world, lists, "a", positions=1), KEY, config, WEEK)
    low = simulate_feedback(world, exposures_for(world, lists, "a", positions=10), KEY, config, WEEK)
    top_clicks = top[top["event"].eq("click")]
    low_clicks = low[low["event"].eq("click")]
    assert len(top_clicks) > 2 * len(low_clicks) > 0
    # the same (user, item) draws at any position: whoever clicks at position 10 clicks at 1 too
    pairs = set(zip(top_clicks["user_id"], top_clicks["item_id"], strict=True))
    assert set(zip(low_clicks["user_id"], low_clicks["item_id"], strict=True)) <= pairs


def test_examination_falls_with_position_within_one_list(better_feedback):
    clicks = better_feedback[better_feedback["event"].eq("click")]["position"].astype(int)
    by_position = clicks.value_counts().reindex(range(1, LIST_LENGTH + 1), fill_value=0)
    assert by_position[1] > 1.5 * by_position[LIST_LENGTH]
    assert by_position[1:3].sum() > by_position[8:10].sum()


# ---- skipped rows ------------------------------------------------------------------------------


def test_unknown_pseudonyms_items_and_other_weeks_are_skipped_and_counted(
    world, better, config, better_feedback
):
    strangers = better.head(7).assign(user=pseudonymize(["u999999"] * 7, KEY))
    wrong_key = better.iloc[7:12].assign(user=pseudonymize(world.user_ids[:5].tolist(), b"another key"))
    no_item = better.iloc[12:15].assign(item_id="99999")
    other_week = better.iloc[15:17].assign(week=WEEK - timedelta(weeks=1))
    noisy = pd.concat([better, strangers, wrong_key, no_item, other_week], ignore_index=True)
    noisy = noisy.sample(frac=1.0, random_state=2)

    result = simulate_feedback(world, noisy, KEY, config, WEEK, population=["not-a-pseudonym"])
    assert result.attrs["skipped"] == {
        "other_week": 2,
        "unknown_user": 12,
        "unknown_item": 3,
        "unknown_population_user": 1,
    }
    assert set(result.attrs["skipped"]) == set(SKIP_REASONS)
    assert better_feedback.attrs["skipped"] == dict.fromkeys(SKIP_REASONS, 0)
    # skipping leaves everything else exactly as it was
    pd.testing.assert_frame_equal(result, better_feedback, check_flags=False)


def test_bad_exposures_and_bad_weeks_are_refused(world, better, config):
    with pytest.raises(ValueError, match="lack columns"):
        simulate_feedback(world, better.drop(columns=["arm"]), KEY, config, WEEK)
    with pytest.raises(ValueError, match="positions"):
        simulate_feedback(world, better.assign(position=0), KEY, config, WEEK)
    with pytest.raises(ValueError, match="not a week start"):
        simulate_feedback(world, better, KEY, config, WEEK + timedelta(days=2))


def test_config_is_checked():
    with pytest.raises(ValidationError):
        FeedbackConfig(click_rate=0.1)  # extra="forbid"
    with pytest.raises(ValidationError):
        FeedbackConfig(base_click_rate=1.5)
    with pytest.raises(ValidationError):
        FeedbackConfig(abandoned_fraction=(0.7, 0.2))
    with pytest.raises(ValidationError):
        FeedbackConfig(position_decay="linear")


# ---- the log's contract --------------------------------------------------------------------------


def test_output_columns_types_and_raw_user_ids(world, better, better_feedback):
    fb = better_feedback
    assert list(fb.columns) == list(FEEDBACK_COLUMNS)
    for column in ("user_id", "item_id", "ts", "event", "experiment_id", "arm"):
        assert fb[column].dtype == "string", column
    assert fb["watch_seconds"].dtype == "Int64" and fb["position"].dtype == "Int64"
    assert fb["from_recommendation"].dtype == bool
    assert set(fb["event"]) == {"click", "play"}

    # RAW ids, never the pseudonyms the exposures carry
    assert fb["user_id"].isin(world.user_ids).all()
    assert not fb["user_id"].isin(better["user"]).any()
    assert fb["item_id"].isin(world.item_ids).all()

    rec, organic = fb[fb["from_recommendation"]], fb[~fb["from_recommendation"]]
    assert rec[["position", "experiment_id", "arm"]].notna().all().all()
    assert organic[["position", "experiment_id", "arm"]].isna().all().all()
    assert organic["event"].eq("play").all()
    assert fb.loc[fb["event"].eq("click"), "watch_seconds"].isna().all()
    assert fb.loc[fb["event"].eq("play"), "watch_seconds"].notna().all()
    assert fb["ts"].is_monotonic_increasing

    # every recommended play follows its click
    key = ["user_id", "item_id", "experiment_id", "arm"]
    clicks = rec[rec["event"].eq("click")].set_index(key)["ts"]
    plays = rec[rec["event"].eq("play")].set_index(key)["ts"]
    assert len(plays) > 0 and plays.index.isin(clicks.index).all()
    assert (plays >= clicks.reindex(plays.index)).all()


def test_watch_seconds_never_exceed_the_runtime(world, better_feedback, worse_feedback):
    plays = pd.concat([better_feedback, worse_feedback], ignore_index=True)
    plays = plays[plays["event"].eq("play")]
    runtime = world.item_runtime[plays["item_id"].astype(int).to_numpy() - 1]
    watched = plays["watch_seconds"].to_numpy(dtype=int)
    assert len(watched) > 100
    assert (watched >= 1).all() and (watched <= runtime).all()
    assert (watched == runtime).any() or (watched > 0.95 * runtime).any()  # some watch to the end


def test_timestamps_fall_inside_the_week(better_feedback, worse_feedback):
    start, end = week_bounds(WEEK)
    for fb in (better_feedback, worse_feedback):
        assert fb["ts"].str.fullmatch(ISO_SECONDS.pattern).all()
        moments = pd.to_datetime(fb["ts"], format="%Y-%m-%dT%H:%M:%SZ", utc=True)
        assert (moments >= start).all() and (moments < end).all()
        assert moments.dt.dayofweek.nunique() == 7  # spread over the week, not piled up


def test_share_of_views_from_recommendations(world, better, better_feedback, worse_feedback):
    def share(fb: pd.DataFrame) -> float:
        plays = fb[fb["event"].eq("play")]
        return float(plays["from_recommendation"].mean())

    assert 0.05 < share(worse_feedback) < share(better_feedback) < 0.95
    # what an arm shows changes only the recommendation rows: the users' own plays are the same
    organic = [
        fb[~fb["from_recommendation"]].reset_index(drop=True) for fb in (better_feedback, worse_feedback)
    ]
    assert len(organic[0]) > 100
    pd.testing.assert_frame_equal(organic[0], organic[1])

    only_recs = simulate_feedback(world, better, KEY, FeedbackConfig(seed=7, organic_plays_per_visit=0), WEEK)
    assert len(only_recs) > 0 and share(only_recs) == 1.0
    more_organic = simulate_feedback(
        world, better, KEY, FeedbackConfig(seed=7, organic_plays_per_visit=3), WEEK
    )
    assert share(more_organic) < share(better_feedback) - 0.1


def test_organic_plays_follow_the_users_taste(world, better_feedback):
    organic = better_feedback[~better_feedback["from_recommendation"]]
    user_index = {u: i for i, u in enumerate(world.user_ids)}
    u = organic["user_id"].map(user_index).to_numpy(dtype=int)
    i = organic["item_id"].astype(int).to_numpy() - 1
    baseline = fit_of(
        world, np.repeat(u, 20), np.random.default_rng(0).integers(0, len(world.item_ids), len(u) * 20)
    )
    assert fit_of(world, u, i).mean() > baseline.mean() + 0.2


# ---- activity --------------------------------------------------------------------------------


def test_activity_lists_active_users_and_follows_user_activity(world, users, better_feedback):
    active = activity(better_feedback)
    assert list(active.columns) == ["user_id", "week"]
    assert not active.duplicated().any()
    assert set(active["week"]) == {WEEK.isoformat()}
    assert set(active["user_id"]) == set(better_feedback["user_id"])
    assert list(activity(better_feedback.iloc[:0]).columns) == ["user_id", "week"]

    is_active = pd.Series(world.user_ids[users]).isin(active["user_id"]).to_numpy()
    level = world.user_activity[users]
    low, high = level <= np.quantile(level, 1 / 3), level >= np.quantile(level, 2 / 3)
    assert 0 < is_active[low].mean() < is_active[high].mean() - 0.15
    assert not is_active.all()


def test_holdout_population_gets_organic_plays_only(world, users, better, config):
    holdout = np.setdiff1d(np.arange(len(world.user_ids)), users)[:150]
    pseudonyms = pseudonymize(world.user_ids[holdout].tolist(), KEY)
    fb = simulate_feedback(world, better.iloc[:0], KEY, config, WEEK, population=pseudonyms)
    assert len(fb) > 20
    assert fb["user_id"].isin(world.user_ids[holdout]).all()
    assert not fb["from_recommendation"].any()


def test_users_do_not_act_before_they_sign_up():
    config = GeneratorConfig(n_users=500, n_items=100, weeks=3, new_user_share=0.4, seed=4)
    world = build_world(config, END_WEEK)
    first = world.first_week
    everyone = pseudonymize(world.user_ids.tolist(), KEY)
    fb = simulate_feedback(
        world, pd.DataFrame(columns=list(EXPOSURE_COLUMNS)), KEY, FeedbackConfig(), first, everyone
    )
    index = fb["user_id"].map({u: i for i, u in enumerate(world.user_ids)}).to_numpy(dtype=int)
    signup_week = world.user_signup_week[index]
    assert (signup_week <= 0).all()
    joined = signup_week == 0
    assert joined.sum() > 0
    day = pd.to_datetime(fb["ts"], utc=True).dt.dayofweek.to_numpy()
    day = (day + 1) % 7  # Sunday first, like the generator
    assert (day[joined] >= world.user_signup_day[index[joined]]).all()
    # organic plays come from the catalogue of the week: no title added later
    assert (world.item_added_week[fb["item_id"].astype(int).to_numpy() - 1] < 0).all()


def test_build_world_is_the_world_generate_samples(tmp_path):
    config = GeneratorConfig(n_users=60, n_items=40, weeks=2, seed=9)
    generate(Lake(tmp_path), config, END_WEEK)
    world = build_world(config, END_WEEK)
    assert world.first_week == END_WEEK - timedelta(weeks=1)
    users = pd.read_csv(
        Lake(tmp_path).raw_files("users", END_WEEK)[0], dtype=str, keep_default_na=False, encoding="utf-8"
    )
    pd.testing.assert_frame_equal(users, world.users_frame.astype(str), check_dtype=False)
    events = pd.concat(
        pd.read_csv(f, dtype=str, keep_default_na=False)
        for w in (world.first_week, END_WEEK)
        for f in Lake(tmp_path).raw_files("events", w)
    )
    assert events["user_id"].isin(world.user_ids).mean() > 0.99  # all but injected bad rows
