import json
import math

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from recsys.evaluation.drift import (
    CHECKS,
    DriftReport,
    DriftThresholds,
    detect_drift,
    item_popularity_psi,
    jensen_shannon,
    population_stability_index,
    rating_ks,
    unseen_share,
    user_activity_psi,
)

N_USERS = 400
N_ITEMS = 500


def synthetic_events(
    seed: int,
    n_users: int = N_USERS,
    mean_events: float = 10.0,
    activity_factor: np.ndarray | None = None,
    rating_shift: float = 0.0,
) -> pd.DataFrame:
    """A week of events: Zipf item popularity, lognormal user activity, 25% rating events."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, N_ITEMS + 1) ** 1.1
    popularity /= popularity.sum()
    # user activity levels are a property of the population (fixed), the week's draw is random
    levels = np.random.default_rng(12345).lognormal(0.0, 0.6, n_users)
    rates = mean_events * levels / levels.mean()
    if activity_factor is not None:
        rates = rates * activity_factor
    per_user = rng.poisson(rates)
    n = int(per_user.sum())
    users = np.repeat([f"u{i}" for i in range(n_users)], per_user)
    kinds = np.where(rng.random(n) < 0.25, "rating", "view")
    stars = np.clip(np.round(rng.normal(3.6, 0.9, n) * 2) / 2, 0.5, 5.0)
    stars = np.clip(stars - rating_shift, 0.5, 5.0)
    return pd.DataFrame(
        {
            "user": users,
            "item_id": rng.choice(N_ITEMS, size=n, p=popularity),
            "ts": pd.Timestamp("2026-11-16", tz="UTC")
            + pd.to_timedelta(rng.integers(0, 7 * 86400, n), unit="s"),
            "event_type": kinds,
            "rating": np.where(kinds == "rating", stars, np.nan),
            "watch_seconds": np.where(kinds == "view", rng.integers(60, 3600, n), np.nan),
        }
    )


def run(reference: pd.DataFrame, recent: pd.DataFrame, **kwargs) -> DriftReport:
    return detect_drift(
        reference,
        recent,
        DriftThresholds(),
        known_items=set(reference["item_id"]),
        known_users=set(reference["user"]),
        **kwargs,
    )


# ---- known answers ---------------------------------------------------------------------------
def test_psi_of_identical_distributions_is_zero():
    assert population_stability_index([10, 20, 30], [1, 2, 3]) == pytest.approx(0.0, abs=1e-12)


def test_psi_of_a_two_bin_shift_matches_hand_computation():
    # (0.8 - 0.5) ln(0.8 / 0.5) + (0.2 - 0.5) ln(0.2 / 0.5) = 0.3 ln 4
    assert population_stability_index([0.5, 0.5], [0.8, 0.2]) == pytest.approx(0.3 * math.log(4.0))


def test_psi_smooths_empty_bins_with_epsilon():
    value = population_stability_index([1, 0], [0.5, 0.5], epsilon=1e-6)
    expected = (0.5 - 1.0) * math.log(0.5 / 1.0) + (0.5 - 1e-6) * math.log(0.5 / 1e-6)
    assert value == pytest.approx(expected)
    assert math.isfinite(value)


@pytest.mark.parametrize(
    "expected, actual",
    [([1, 2], [1, 2, 3]), ([0, 0], [1, 1]), ([1, -1], [1, 1]), ([1, np.nan], [1, 1]), ([], [])],
)
def test_psi_rejects_bad_input(expected, actual):
    with pytest.raises(ValueError):
        population_stability_index(expected, actual)


def _views(items: list[int]) -> pd.DataFrame:
    n = len(items)
    return pd.DataFrame(
        {
            "user": [f"u{i % 7}" for i in range(n)],
            "item_id": items,
            "ts": pd.Timestamp("2026-11-16", tz="UTC"),
            "event_type": "view",
            "rating": np.nan,
            "watch_seconds": 600.0,
        }
    )


def test_jensen_shannon_identical_is_zero_and_disjoint_is_one():
    a = _views([1, 1, 2, 3, 3, 3])
    assert jensen_shannon(a, a) == pytest.approx(0.0, abs=1e-9)
    assert jensen_shannon(a, _views([7, 8, 8, 9])) == pytest.approx(1.0)


def test_browse_events_are_not_interactions():
    a = _views([1, 2, 3])
    browsed = _views([4, 5, 6]).assign(event_type="browse", watch_seconds=np.nan)
    assert jensen_shannon(a, pd.concat([a, browsed], ignore_index=True)) == pytest.approx(0.0, abs=1e-9)


def test_rating_ks_needs_twenty_ratings_per_side():
    ref = synthetic_events(1)
    few = ref[ref["event_type"] == "rating"].head(19)
    stat, pvalue = rating_ks(ref, few)
    assert math.isnan(stat) and math.isnan(pvalue)


def test_unseen_share_counts_interactions():
    recent = _views([1, 1, 2, 9])  # users u0..u3
    items_share, users_share = unseen_share(recent, known_items={1, 2}, known_users={"u0", "u1"})
    assert items_share == pytest.approx(0.25)
    assert users_share == pytest.approx(0.5)


# ---- no false alarm --------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_same_distribution_does_not_drift(seed):
    reference, recent = synthetic_events(100 + seed), synthetic_events(200 + seed)
    report = run(reference, recent, quality_now=0.2, quality_at_training=0.21)
    assert report.skipped is None
    assert set(report.checks) == set(CHECKS)
    assert not report.drifted, report.reasons
    assert report.reasons == []


# ---- shifts ----------------------------------------------------------------------------------
def test_new_items_taking_40_percent_drift_on_popularity_and_unseen_items():
    reference, recent = synthetic_events(1), synthetic_events(2)
    rng = np.random.default_rng(3)
    takeover = rng.random(len(recent)) < 0.4
    recent.loc[takeover, "item_id"] = 10_000 + rng.integers(0, 50, int(takeover.sum()))
    report = run(reference, recent)
    assert report.drifted
    assert report.checks["item_popularity"] and report.checks["unseen_items"] and report.checks["item_js"]
    assert not report.checks["rating_ks"] and not report.checks["user_activity"]
    assert any(r.startswith("item popularity PSI") for r in report.reasons)
    assert any("unseen items 0.4" in r for r in report.reasons)


def test_ratings_shifted_down_drift_on_rating_ks_only():
    report = run(synthetic_events(1), synthetic_events(2, rating_shift=1.5))
    assert report.checks["rating_ks"]
    assert [name for name, drifted in report.checks.items() if drifted] == ["rating_ks"]
    assert any(r.startswith("rating distribution KS statistic") for r in report.reasons)


def test_activity_tripled_for_half_the_users_drifts_on_user_activity():
    factor = np.where(np.arange(N_USERS) % 2 == 0, 3.0, 1.0)
    report = run(synthetic_events(1), synthetic_events(2, activity_factor=factor))
    assert report.checks["user_activity"]
    assert not report.checks["rating_ks"] and not report.checks["unseen_users"]
    assert any(r.startswith("user activity PSI") for r in report.reasons)
    assert user_activity_psi(synthetic_events(1), synthetic_events(2)) < 0.1


def test_quality_drop_beyond_threshold_drifts():
    report = run(synthetic_events(1), synthetic_events(2), quality_now=0.1, quality_at_training=0.2)
    assert report.metrics["quality_drop"] == pytest.approx(0.5)
    assert report.checks["quality"]
    assert any(r.startswith("NDCG@10 dropped 50.0%") for r in report.reasons)


def test_missing_inputs_leave_checks_not_run():
    reference = synthetic_events(1)
    recent = synthetic_events(2)
    recent = recent[recent["event_type"] == "view"]
    report = detect_drift(reference, recent, DriftThresholds(), quality_at_training=0.0, quality_now=0.1)
    assert set(report.not_run) == {"rating_ks", "unseen_items", "unseen_users", "quality"}
    assert set(report.checks) == {"item_popularity", "user_activity", "item_js"}
    assert not report.drifted


# ---- edge cases ------------------------------------------------------------------------------
def test_too_few_events_is_skipped_not_drifted():
    reference = synthetic_events(1)
    recent = _views([10_000 + i for i in range(50)])  # all new items, but only 50 events
    report = run(reference, recent)
    assert report.skipped == "too few recent events: 50 < 1000"
    assert not report.drifted and report.checks == {} and report.reasons == []


def test_empty_reference_is_skipped():
    reference = synthetic_events(1).head(0)
    report = detect_drift(reference, synthetic_events(2), DriftThresholds())
    assert report.skipped == "no reference events" and not report.drifted
    assert math.isnan(item_popularity_psi(reference, synthetic_events(2)))


@pytest.mark.parametrize(
    "bad",
    [
        {"psi_max": 0},
        {"activity_psi_max": -0.1},
        {"js_max": 1.5},
        {"ks_pvalue_min": 0},
        {"ks_pvalue_min": 1},
        {"ks_statistic_min": 1.1},
        {"unseen_items_share_max": -0.1},
        {"unseen_users_share_max": 2},
        {"quality_drop_max": 0},
        {"min_events": 0},
        {"no_such_threshold": 1},
    ],
)
def test_thresholds_are_validated(bad):
    with pytest.raises(ValidationError):
        DriftThresholds(**bad)


def test_default_thresholds():
    t = DriftThresholds()
    assert (t.psi_max, t.js_max, t.ks_pvalue_min, t.ks_statistic_min, t.min_events) == (
        0.25,
        0.1,
        0.001,
        0.1,
        1000,
    )


def test_to_dict_is_json_safe_without_nan():
    reference = synthetic_events(1)
    recent = synthetic_events(2)
    recent = recent[recent["event_type"] == "view"]  # rating KS and quality are NaN
    data = detect_drift(reference, recent, DriftThresholds()).to_dict()
    text = json.dumps(data, allow_nan=False)
    assert "NaN" not in text
    assert data["metrics"]["rating_ks_pvalue"] is None and data["metrics"]["quality_drop"] is None
    assert data["drifted"] is False


def test_js_noise_explains_same_distribution_windows_and_grows_as_they_shrink():
    from recsys.evaluation.drift import jensen_shannon_noise

    big_a, big_b = synthetic_events(1), synthetic_events(2)
    small_a, small_b = synthetic_events(3, n_users=80), synthetic_events(4, n_users=80)
    for a, b in ((big_a, big_b), (small_a, small_b)):
        excess = jensen_shannon(a, b) - jensen_shannon_noise(a, b)
        assert abs(excess) < 0.05, excess  # same distribution: the distance is sampling noise
    assert jensen_shannon_noise(small_a, small_b) > jensen_shannon_noise(big_a, big_b) + 0.05
    assert jensen_shannon_noise(big_a, big_b) == jensen_shannon_noise(big_a, big_b)  # deterministic
    # a real shift stands out above the noise
    shifted = big_b.assign(item_id=big_b["item_id"] + 7)
    assert jensen_shannon(big_a, shifted) - jensen_shannon_noise(big_a, shifted) > 0.3
