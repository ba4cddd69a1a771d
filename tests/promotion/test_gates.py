"""Tests for the evaluation gate: each check failing alone, missing values, JSON round trip."""

from __future__ import annotations

import json
import math

import pytest
from pydantic import ValidationError

from recsys.core.errors import GateRejected, RecsysError
from recsys.promotion.gates import (
    CHECKS,
    CORE_CHECKS,
    FLOOR_CHECKS,
    WINDOW_CHECKS,
    GateDecision,
    GateThresholds,
    evaluate_gate,
    require_passed,
)

T = GateThresholds()  # ndcg@10, floor 0.02, 100 users, +5 % over baseline, -2 % vs champion


def metrics(ndcg: float | None, users: int | None = 500) -> dict:
    out: dict = {"precision@10": 0.01}
    if ndcg is not None:
        out["ndcg@10"] = ndcg
    if users is not None:
        out["users_evaluated"] = users
    return out


GOOD = metrics(0.0500)
BASELINE = metrics(0.0300)  # needs >= 0.0315
CHAMPION = metrics(0.0500)  # allows >= 0.0490


def failed(decision: GateDecision) -> list[str]:
    return [name for name, ok in decision.checks.items() if not ok]


# ---- thresholds ------------------------------------------------------------------------------
def test_threshold_defaults():
    assert T.primary_metric == "ndcg@10"
    assert T.min_primary == 0.02
    assert T.min_users_evaluated == 100
    assert T.baseline_margin == 0.05
    assert T.max_regression == 0.02


@pytest.mark.parametrize(
    "kwargs",
    [
        {"baseline_margin": 1.0},
        {"baseline_margin": -0.01},
        {"max_regression": 1.0},
        {"max_regression": -0.1},
        {"min_primary": -0.001},
        {"min_primary": float("nan")},
        {"min_users_evaluated": -1},
        {"primary_metric": "rmse"},
        {"primary_metric": "ndcg"},
        {"primary_metric": "ndcg@0"},
        {"unknown_field": 1},
    ],
)
def test_threshold_validation(kwargs):
    with pytest.raises(ValidationError):
        GateThresholds(**kwargs)


def test_thresholds_accept_edges_and_other_metrics():
    t = GateThresholds(primary_metric="map@20", min_primary=0, baseline_margin=0, max_regression=0.5)
    assert t.primary_metric == "map@20"


# ---- all pass ----------------------------------------------------------------------------------
def test_everything_passes():
    decision = evaluate_gate(GOOD, CHAMPION, BASELINE, T)
    assert decision.passed
    assert list(decision.checks) == list(CORE_CHECKS)  # floors unset: only the core checks run
    assert all(decision.checks.values())
    assert len(decision.reasons) == len(CORE_CHECKS)
    assert all(reason.startswith("PASS: ") for reason in decision.reasons)
    assert decision.metrics == {
        "primary_metric": "ndcg@10",
        "candidate": 0.05,
        "champion": 0.05,
        "baseline": 0.03,
        "users_evaluated": 500,
    }
    assert require_passed(decision) is decision


# ---- each check failing alone ------------------------------------------------------------------
def test_floor_fails_alone():
    t = GateThresholds(min_primary=0.06)
    decision = evaluate_gate(GOOD, CHAMPION, BASELINE, t)
    assert not decision.passed
    assert failed(decision) == ["primary_floor"]
    assert "FAIL: ndcg@10 0.0500 < floor 0.0600" in decision.reasons


def test_floor_reason_format_from_the_brief():
    decision = evaluate_gate(metrics(0.0123), None, metrics(0.001), T)
    assert decision.reasons[0] == "FAIL: ndcg@10 0.0123 < floor 0.0200"
    assert decision.checks["primary_floor"] is False


def test_users_evaluated_fails_alone():
    decision = evaluate_gate(metrics(0.05, users=12), CHAMPION, BASELINE, T)
    assert failed(decision) == ["users_evaluated"]
    assert "FAIL: users_evaluated 12 < minimum 100" in decision.reasons


def test_users_evaluated_missing_fails():
    decision = evaluate_gate(metrics(0.05, users=None), CHAMPION, BASELINE, T)
    assert failed(decision) == ["users_evaluated"]
    assert "FAIL: candidate users_evaluated is missing" in decision.reasons


def test_baseline_margin_fails_alone():
    # 0.0310 beats the baseline 0.0300 but not by 5 % (0.0315); floor and champion are fine
    decision = evaluate_gate(metrics(0.0310), metrics(0.0310), BASELINE, T)
    assert failed(decision) == ["beats_baseline"]
    assert "FAIL: ndcg@10 0.0310 < baseline 0.0300 +5% = 0.0315" in decision.reasons


def test_baseline_margin_boundary_passes():
    decision = evaluate_gate(metrics(0.0315), None, BASELINE, T)
    assert decision.checks["beats_baseline"]


def test_equal_to_baseline_does_not_beat_it_even_with_zero_margin():
    t = GateThresholds(baseline_margin=0)
    decision = evaluate_gate(metrics(0.03), None, BASELINE, t)
    assert failed(decision) == ["beats_baseline"]
    assert "FAIL: ndcg@10 0.0300 is not above baseline 0.0300" in decision.reasons
    # a zero baseline: the candidate must still be above it
    assert not evaluate_gate(metrics(0.0), None, metrics(0.0), GateThresholds(min_primary=0)).passed
    assert evaluate_gate(metrics(0.001), None, metrics(0.0), GateThresholds(min_primary=0)).passed


def test_regression_fails_alone():
    # champion 0.0500 allows 0.0490; 0.0480 is above floor and baseline but regresses 4 %
    decision = evaluate_gate(metrics(0.0480), CHAMPION, BASELINE, T)
    assert failed(decision) == ["no_regression"]
    assert "FAIL: ndcg@10 0.0480 < champion 0.0500 -2% = 0.0490" in decision.reasons


def test_small_regression_within_tolerance_passes():
    decision = evaluate_gate(metrics(0.0495), CHAMPION, BASELINE, T)
    assert decision.passed
    assert "PASS: ndcg@10 0.0495 >= champion 0.0500 -2% = 0.0490" in decision.reasons


# ---- champion None -----------------------------------------------------------------------------
def test_no_champion_skips_regression_and_passes():
    decision = evaluate_gate(GOOD, None, BASELINE, T)
    assert decision.passed
    assert decision.checks["no_regression"] is True
    assert "PASS: no champion yet: regression check skipped" in decision.reasons
    assert decision.metrics["champion"] is None


def test_champion_without_primary_metric_fails_closed():
    decision = evaluate_gate(GOOD, {"ndcg@5": 0.9}, BASELINE, T)
    assert failed(decision) == ["no_regression"]
    assert any("champion ndcg@10 is missing" in reason for reason in decision.reasons)


# ---- NaN / missing / garbage metrics: failed checks, never exceptions --------------------------
@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (None, "is missing"),
        (float("nan"), "is NaN"),
        (float("inf"), "is infinite"),
        ("abc", "is not a number"),
    ],
)
def test_bad_candidate_primary_fails_with_reason(value, problem):
    candidate = {"users_evaluated": 500}
    if value is not None:
        candidate["ndcg@10"] = value
    decision = evaluate_gate(candidate, CHAMPION, BASELINE, T)
    assert not decision.passed
    assert failed(decision) == ["primary_floor", "beats_baseline", "no_regression"]
    assert decision.reasons[0].startswith(f"FAIL: candidate ndcg@10 {problem}")
    assert decision.metrics["candidate"] is None


def test_nan_candidate_without_champion_still_fails():
    decision = evaluate_gate(metrics(math.nan), None, BASELINE, T)
    assert not decision.passed
    assert failed(decision) == ["primary_floor", "beats_baseline"]


def test_nan_baseline_fails_baseline_check():
    decision = evaluate_gate(GOOD, None, metrics(math.nan), T)
    assert failed(decision) == ["beats_baseline"]
    assert "FAIL: baseline ndcg@10 is NaN: cannot compare with the baseline" in decision.reasons


def test_empty_metric_dicts():
    decision = evaluate_gate({}, {}, {}, T)
    assert not decision.passed
    assert failed(decision) == list(CORE_CHECKS)


# ---- decision object ---------------------------------------------------------------------------
def test_json_round_trip():
    for decision in (
        evaluate_gate(GOOD, CHAMPION, BASELINE, T),
        evaluate_gate(metrics(math.nan, users=3), CHAMPION, metrics(math.nan), T),
    ):
        text = json.dumps(decision.to_dict(), allow_nan=False)  # strict JSON: no NaN inside
        restored = GateDecision.from_dict(json.loads(text))
        assert restored == decision
        assert restored.summary() == decision.summary()


def test_from_dict_rejects_malformed_or_inconsistent():
    with pytest.raises(ValueError, match="missing"):
        GateDecision.from_dict({"passed": True})
    data = evaluate_gate(metrics(0.001), None, BASELINE, T).to_dict()
    data["passed"] = True  # hand-edited to claim a pass
    with pytest.raises(ValueError, match="inconsistent"):
        GateDecision.from_dict(data)
    with pytest.raises(ValueError, match="inconsistent"):
        GateDecision(passed=True, reasons=[], checks={}, metrics={})


def test_decision_is_frozen():
    decision = evaluate_gate(GOOD, None, BASELINE, T)
    with pytest.raises(AttributeError):
        decision.passed = False  # type: ignore[misc]


def test_summary_is_one_line():
    ok = evaluate_gate(GOOD, None, BASELINE, T).summary()
    assert ok == "gate PASSED (4/4 checks): ndcg@10 candidate 0.0500, baseline 0.0300, champion none"
    bad = evaluate_gate(metrics(0.0310), metrics(0.0400), BASELINE, T).summary()
    assert "\n" not in bad
    assert bad.startswith("gate FAILED (2/4 checks; failed: beats_baseline, no_regression)")


# ---- require_passed ----------------------------------------------------------------------------
def test_require_passed_raises_gate_rejected_with_reasons():
    decision = evaluate_gate(metrics(0.0123, users=5), None, BASELINE, T)
    with pytest.raises(GateRejected) as info:
        require_passed(decision)
    assert isinstance(info.value, RecsysError)
    message = str(info.value)
    assert "ndcg@10 0.0123 < floor 0.0200" in message
    assert "users_evaluated 5 < minimum 100" in message
    assert "PASS" not in message
    assert "\n" not in message


def test_boundaries_forgive_float_rounding():
    assert 0.1 * 1.05 > 0.105  # the product rounds up: a strict >= would reject 0.105
    decision = evaluate_gate(metrics(0.105), None, metrics(0.1), T)
    assert decision.checks["beats_baseline"]
    assert 0.07 * (1 - 0.02) > 0.0686
    assert evaluate_gate(metrics(0.0686), metrics(0.07), metrics(0.01), T).checks["no_regression"]


# ---- coverage / diversity floors ---------------------------------------------------------------
def beyond(coverage: float | None = 0.25, diversity: float | None = 0.60, ndcg: float = 0.05) -> dict:
    out = metrics(ndcg)
    if coverage is not None:
        out["coverage@10"] = coverage
    if diversity is not None:
        out["diversity@10"] = diversity
    return out


FLOORS = GateThresholds(min_coverage=0.05, min_diversity=0.30)


def test_floor_checks_follow_the_core_checks():
    assert CHECKS == CORE_CHECKS + WINDOW_CHECKS + FLOOR_CHECKS
    assert FLOOR_CHECKS == ("coverage_floor", "diversity_floor")
    assert T.min_coverage is None and T.min_diversity is None


def test_floors_met_pass():
    decision = evaluate_gate(beyond(), CHAMPION, BASELINE, FLOORS)
    assert decision.passed
    assert list(decision.checks) == list(CORE_CHECKS + FLOOR_CHECKS)
    assert "PASS: coverage@10 0.2500 >= floor 0.0500" in decision.reasons
    assert "PASS: diversity@10 0.6000 >= floor 0.3000" in decision.reasons
    assert decision.metrics["coverage@10"] == 0.25
    assert decision.metrics["diversity@10"] == 0.60
    assert decision.summary().startswith("gate PASSED (6/6 checks)")


def test_floor_boundary_passes():
    decision = evaluate_gate(beyond(coverage=0.05, diversity=0.3), None, BASELINE, FLOORS)
    assert decision.checks["coverage_floor"] and decision.checks["diversity_floor"]


def test_coverage_floor_missed_fails_the_gate():
    decision = evaluate_gate(beyond(coverage=0.012), CHAMPION, BASELINE, FLOORS)
    assert decision.passed is False
    assert failed(decision) == ["coverage_floor"]
    assert (
        "FAIL: coverage@10 0.0120 < floor 0.0500: the candidate collapses onto a few items"
        in decision.reasons
    )
    with pytest.raises(GateRejected, match="coverage@10 0.0120 < floor 0.0500"):
        require_passed(decision)


def test_diversity_floor_missed_fails_the_gate():
    decision = evaluate_gate(beyond(diversity=0.1), CHAMPION, BASELINE, FLOORS)
    assert decision.passed is False
    assert failed(decision) == ["diversity_floor"]
    assert any(r.startswith("FAIL: diversity@10 0.1000 < floor 0.3000") for r in decision.reasons)


def test_floors_use_the_k_of_the_primary_metric():
    t = GateThresholds(primary_metric="ndcg@5", min_coverage=0.05)
    candidate = {"ndcg@5": 0.05, "users_evaluated": 500, "coverage@10": 0.9, "coverage@5": 0.01}
    decision = evaluate_gate(candidate, None, {"ndcg@5": 0.01}, t)
    assert failed(decision) == ["coverage_floor"]
    assert "coverage@5 0.0100 < floor 0.0500" in decision.reasons[-1]
    assert "coverage@5" in decision.metrics and "coverage@10" not in decision.metrics


@pytest.mark.parametrize(
    ("coverage", "diversity", "check", "reason"),
    [
        (None, 0.6, "coverage_floor", "FAIL: candidate coverage@10 is missing"),
        (math.nan, 0.6, "coverage_floor", "FAIL: candidate coverage@10 is NaN"),
        (0.25, None, "diversity_floor", "FAIL: candidate diversity@10 is missing"),
        (0.25, math.nan, "diversity_floor", "FAIL: candidate diversity@10 is NaN"),
        (0.25, "abc", "diversity_floor", "FAIL: candidate diversity@10 is not a number"),
    ],
)
def test_missing_or_bad_floor_metric_fails_closed(coverage, diversity, check, reason):
    decision = evaluate_gate(beyond(coverage, diversity), CHAMPION, BASELINE, FLOORS)
    assert not decision.passed
    assert failed(decision) == [check]
    assert any(r.startswith(reason) for r in decision.reasons)
    text = json.dumps(decision.to_dict(), allow_nan=False)  # missing values stored as null
    assert GateDecision.from_dict(json.loads(text)) == decision


def test_only_the_floor_that_is_set_runs():
    decision = evaluate_gate(beyond(coverage=None), None, BASELINE, GateThresholds(min_diversity=0.3))
    assert list(decision.checks) == [*CORE_CHECKS, "diversity_floor"]
    assert decision.passed  # the missing coverage is not looked at


def test_floors_none_leave_the_decision_unchanged():
    # a candidate with terrible coverage and diversity: without floors nobody looks at them
    for candidate, champion in ((beyond(0.0001, 0.0), CHAMPION), (beyond(None, None, ndcg=0.001), None)):
        with_extras = evaluate_gate(candidate, champion, BASELINE, T)
        plain = evaluate_gate(metrics(candidate["ndcg@10"]), champion, BASELINE, T)
        assert with_extras == plain
        assert list(with_extras.checks) == list(CORE_CHECKS)
        assert not any("coverage" in r or "diversity" in r for r in with_extras.reasons)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_coverage": 1.5},
        {"min_coverage": -0.1},
        {"min_coverage": float("nan")},
        {"min_diversity": 1.01},
        {"min_diversity": -0.1},
        {"min_diversity": float("inf")},
        {"min_diversity": "lots"},
    ],
)
def test_invalid_floors_are_refused(kwargs):
    with pytest.raises(ValidationError):
        GateThresholds(**kwargs)


def test_floor_edges_are_accepted():
    t = GateThresholds(min_coverage=0, min_diversity=1)
    assert (t.min_coverage, t.min_diversity, t.k) == (0, 1, 10)


# ---- training window ---------------------------------------------------------------------------
def test_window_check_runs_only_when_the_window_is_given():
    assert T.min_window_weeks == 1
    assert "window_weeks" not in evaluate_gate(GOOD, None, BASELINE, T).checks
    decision = evaluate_gate(GOOD, None, BASELINE, T, window={"weeks": 3, "size": 12})
    assert list(decision.checks) == [*CORE_CHECKS, "window_weeks"]
    assert decision.passed
    assert "PASS: window 3 of 12 weeks >= minimum 1" in decision.reasons


def test_a_window_shorter_than_the_minimum_fails_the_gate():
    t = GateThresholds(min_window_weeks=4)
    decision = evaluate_gate(GOOD, None, BASELINE, t, window={"weeks": 3, "size": 12})
    assert not decision.passed
    assert failed(decision) == ["window_weeks"]
    assert "FAIL: window 3 of 12 weeks < minimum 4" in decision.reasons
    assert evaluate_gate(GOOD, None, BASELINE, t, window={"weeks": 4, "size": 12}).passed


def test_a_window_without_its_week_count_fails_closed():
    decision = evaluate_gate(GOOD, None, BASELINE, T, window={"size": 12})
    assert failed(decision) == ["window_weeks"]
    assert "FAIL: training window weeks is missing" in decision.reasons
    with pytest.raises(ValidationError):
        GateThresholds(min_window_weeks=0)


def test_the_issue_scenario_a_verdict_on_25_users_is_refused_by_default():
    """ml-100k with one anonymized week of twelve: 25 evaluated users, and the gate passed (default 20).
    bench/gate_users.py: at 25 users a clearly better model's verdict flips in a quarter of samples."""
    decision = evaluate_gate(metrics(0.13, users=25), None, metrics(0.07), T)
    assert failed(decision) == ["users_evaluated"]
    assert evaluate_gate(metrics(0.13, users=357), None, metrics(0.07), T).passed  # a full window
