"""A/B test statistics: assignment, sample-ratio check, per-user metrics, the readout and its decision."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from recsys.experiments.ab_config import METRICS, ExperimentConfig, ExperimentDataError, assign
from recsys.experiments.ab_statistics import holm, srm_check
from recsys.experiments.ab_users import user_metrics
from recsys.experiments.abtest import plot_readout, readout, readout_from_users

CONFIG = ExperimentConfig(experiment_id="top-picks.2026-w02", salt="pepper")
WEEKS = pd.to_datetime(["2026-01-04", "2026-01-11", "2026-01-18", "2026-01-25"])


def pseudonyms(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct opaque hex pseudonyms (like the anonymize stage's)."""
    rng = np.random.default_rng(seed)
    return [hashlib.sha256(f"{seed}:{i}:{rng.random()}".encode()).hexdigest()[:32] for i in range(n)]


def simulate(
    config: ExperimentConfig,
    n_users: int,
    seed: int,
    plays_lift: float = 0.0,
    churn_lift: float = 0.0,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(exposures, feedback, active) of ``n_users`` users split by :func:`assign`, over four weeks.

    Per user: 1 + Poisson(12) exposures in the first two weeks, a user-level click propensity
    Beta(0.5, 4.5) (strongly heterogeneous: exposures of one user are correlated), plays ~ negative
    binomial (gamma-Poisson, mean 3, 5% watch seconds missing, lognormal otherwise), a user-level
    share of plays from recommendations Beta(4, 3), churn (no activity in the last two weeks) 20%.
    The challenger's play rate is multiplied by ``1 + plays_lift`` and its churn probability by
    ``1 + churn_lift``; everything else is the same distribution in both arms.
    """
    rng = np.random.default_rng(seed)
    users = np.array([f"{x:016x}" for x in rng.integers(0, 2**63, n_users)], dtype=object)
    arm = assign(users, config).reindex(users).to_numpy()
    treated = arm == "challenger"
    n_exposures = 1 + rng.poisson(12, n_users)
    at = np.repeat(np.arange(n_users), n_exposures)
    item = rng.integers(0, 5_000, len(at))
    week = WEEKS[rng.integers(0, 2, len(at))]
    exposures = pd.DataFrame(
        {
            "user": users[at],
            "arm": arm[at],
            "experiment_id": config.experiment_id,
            "item_id": item,
            "position": rng.integers(1, 11, len(at)),
            "week": week,
        }
    )
    clicked = rng.random(len(at)) < rng.beta(0.5, 4.5, n_users)[at]
    clicks = pd.DataFrame(
        {
            "user": users[at][clicked],
            "item_id": item[clicked],
            "event": "click",
            "watch_seconds": np.nan,
            "from_recommendation": True,
            "week": week[clicked],
        }
    )
    rate = rng.gamma(1.5, 3.0 / 1.5, n_users) * np.where(treated, 1 + plays_lift, 1.0)
    by = np.repeat(np.arange(n_users), rng.poisson(rate))
    seconds = rng.lognormal(np.log(900), 1.0, len(by))
    seconds[rng.random(len(by)) < 0.05] = np.nan
    plays = pd.DataFrame(
        {
            "user": users[by],
            "item_id": rng.integers(0, 5_000, len(by)),
            "event": "play",
            "watch_seconds": seconds,
            "from_recommendation": rng.random(len(by)) < rng.beta(4, 3, n_users)[by],
            "week": WEEKS[rng.integers(0, 4, len(by))],
        }
    )
    churned = rng.random(n_users) < 0.2 * np.where(treated, 1 + churn_lift, 1.0)
    late = WEEKS[2 + rng.integers(0, 2, n_users)]
    active = pd.concat(
        [
            pd.DataFrame({"user": users, "week": WEEKS[0]}),
            pd.DataFrame({"user": users[~churned], "week": late[~churned]}),
        ],
        ignore_index=True,
    )
    return exposures, pd.concat([clicks, plays], ignore_index=True), active


# ---- assignment ----------------------------------------------------------------------------------


def test_assignment_follows_the_documented_hash():
    users = pseudonyms(50, seed=3)
    arms = assign(users, CONFIG)
    for user in users:
        digest = hashlib.sha256(f"{CONFIG.experiment_id}:{CONFIG.salt}:{user}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2**64
        # sorted arm names: challenger takes [0, 0.5), champion [0.5, 1)
        assert arms[user] == ("challenger" if u < 0.5 else "champion")


def test_assignment_is_deterministic_and_balanced():
    users = pseudonyms(100_000)
    arms = assign(users, CONFIG)
    assert len(arms) == len(users) and list(arms.index) == users
    assert arms.equals(assign(users, CONFIG))
    shares = arms.value_counts(normalize=True)
    for arm, share in CONFIG.arms.items():
        assert abs(shares[arm] - share) < 0.01
    srm = srm_check(arms.value_counts().to_dict(), CONFIG)
    assert not srm.flagged and srm.p_value >= CONFIG.srm_alpha


def test_assignment_is_stable_across_input_order_duplicates_and_arm_order():
    users = pseudonyms(5_000, seed=1)
    arms = assign(users, CONFIG)
    shuffled = list(np.random.default_rng(9).permutation(users))
    assert assign(shuffled, CONFIG).reindex(users).equals(arms)
    assert assign(users[::-1] + users[:100], CONFIG).reindex(users).equals(arms)  # repeats: one row each
    assert len(assign(users + users[:100], CONFIG)) == len(users)
    reordered = CONFIG.model_copy(update={"arms": {"challenger": 0.5, "champion": 0.5}})
    assert assign(users, reordered).equals(arms)  # dict order never matters
    assert assign([], CONFIG).empty


def test_new_salt_or_experiment_reshuffles_about_half_of_the_users():
    users = pseudonyms(20_000, seed=2)
    arms = assign(users, CONFIG)
    for update in ({"salt": "pepper-2"}, {"experiment_id": "top-picks.2026-w03"}):
        moved = (assign(users, CONFIG.model_copy(update=update)) != arms).mean()
        assert 0.47 < moved < 0.53, update  # independent splits: half the users change arm


def test_three_arm_shares_are_respected():
    config = ExperimentConfig(
        experiment_id="exp-3", salt="s", arms={"holdout": 0.1, "champion": 0.45, "challenger": 0.45}
    )
    arms = assign(pseudonyms(100_000, seed=4), config)
    shares = arms.value_counts(normalize=True)
    assert set(shares.index) == {"champion", "challenger", "holdout"}
    for arm, share in config.arms.items():
        assert abs(shares[arm] - share) < 0.01
    assert not srm_check(arms.value_counts().to_dict(), config).flagged


def test_assign_refuses_non_string_users():
    with pytest.raises(TypeError, match="users must be strings"):
        assign(["ab12", 7], CONFIG)


# ---- sample ratio mismatch -----------------------------------------------------------------------


def test_srm_flags_a_52_48_split_but_not_a_fair_one():
    skewed = srm_check({"champion": 52_000, "challenger": 48_000}, CONFIG)
    assert skewed.flagged and skewed.p_value < 1e-10
    assert "52,000" in skewed.message and "50,000.0" in skewed.message and "mismatch" in skewed.message
    fair = srm_check({"champion": 50_120, "challenger": 49_880}, CONFIG)
    assert not fair.flagged and fair.p_value > 0.4
    assert fair.expected == {"champion": 50_000.0, "challenger": 50_000.0}
    json.dumps(skewed.to_dict(), allow_nan=False)


def test_srm_check_refuses_unknown_arms_and_bad_counts():
    with pytest.raises(ExperimentDataError, match="unknown arm.*'treatment'"):
        srm_check({"champion": 10, "treatment": 10}, CONFIG)
    with pytest.raises(ExperimentDataError, match="non-negative integer"):
        srm_check({"champion": -1, "challenger": 10}, CONFIG)
    empty = srm_check({}, CONFIG)
    assert not empty.flagged and math.isnan(empty.p_value)


# ---- Holm ----------------------------------------------------------------------------------------


def test_holm_matches_the_textbook_example():
    # Holm-Bonferroni on Wikipedia: p1..p4 = 0.01, 0.04, 0.03, 0.005 at alpha 0.05 rejects H1 and H4;
    # adjusted: 4 * 0.005 = 0.02, 3 * 0.01 = 0.03, 2 * 0.03 = 0.06, max(0.06, 1 * 0.04) = 0.06
    adjusted = holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert [p < 0.05 for p in adjusted] == [True, False, False, True]
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    nan_kept = holm([0.01, math.nan, 0.02])  # NaN is not part of the family: m = 2
    assert (
        nan_kept[0] == pytest.approx(0.02) and math.isnan(nan_kept[1]) and nan_kept[2] == pytest.approx(0.02)
    )
    with pytest.raises(ValueError, match="within"):
        holm([1.5])


# ---- per-user metrics ----------------------------------------------------------------------------


def test_user_metrics_follow_the_definitions():
    w1, w2, w3 = "2026-01-04", "2026-01-11", "2026-01-18"
    exposures = pd.DataFrame(
        [
            ("a", "champion", "exp", 1, 1, w1),
            ("a", "champion", "exp", 1, 2, w1),  # same item, same week: one exposure
            ("a", "champion", "exp", 2, 3, w2),
            ("b", "challenger", "exp", 1, 1, w2),
            ("c", "challenger", "other-exp", 1, 1, w1),  # another experiment: ignored
        ],
        columns=["user", "arm", "experiment_id", "item_id", "position", "week"],
    )
    feedback = pd.DataFrame(
        [
            ("a", 1, "click", np.nan, True, w1),  # clicks the exposure (a, 1, w1)
            ("a", 2, "click", np.nan, True, w3),  # item 2 was shown in w2, not w3: not a click on it
            ("a", 5, "play", 100.0, True, w1),
            ("a", 6, "play", np.nan, False, w2),  # missing watch seconds count 0
            ("b", 1, "click", np.nan, True, w2),
            ("b", 7, "play", 50.0, True, w1),  # before b's first exposure (w2): not counted
            ("b", 8, "play", 30.0, False, w3),
            ("z", 1, "play", 10.0, True, w2),  # never exposed
        ],
        columns=["user", "item_id", "event", "watch_seconds", "from_recommendation", "week"],
    )
    active = pd.DataFrame({"user": ["a", "b", "b"], "week": [w1, w1, w3]})  # churn weeks: w2, w3
    config = ExperimentConfig(experiment_id="exp", salt="s", churn_weeks=2)
    table = user_metrics(exposures, feedback, active, config)
    assert list(table.index) == ["a", "b"]
    a, b = table.loc["a"], table.loc["b"]
    assert (a["arm"], a["exposures"], a["clicks"], a["plays"], a["rec_plays"]) == ("champion", 2, 1, 2, 1)
    assert a["watch_seconds"] == 100.0 and a["churned"] == 1.0
    assert (b["arm"], b["exposures"], b["clicks"], b["plays"], b["rec_plays"]) == ("challenger", 1, 1, 1, 0)
    assert b["watch_seconds"] == 30.0 and b["churned"] == 0.0

    result = readout(exposures, feedback, active, config)
    assert result.window == {"first_week": w1, "last_week": w3, "churn_weeks": [w2, w3]}
    assert result.users == {"champion": 1, "challenger": 1}
    assert result.arm_metrics["champion"]["ctr"] == 0.5 and result.arm_metrics["challenger"]["ctr"] == 1.0
    assert result.arm_metrics["champion"]["rec_view_share"] == 0.5
    assert result.decision == "inconclusive"


def test_bad_frames_are_refused_with_the_reason():
    exposures, feedback, active = simulate(CONFIG, 300, seed=1)
    with pytest.raises(ExperimentDataError, match="exposures lacks column.*position"):
        readout(exposures.drop(columns="position"), feedback, active, CONFIG)
    with pytest.raises(ExperimentDataError, match="arm.*'treatment'"):
        readout(exposures.assign(arm="treatment"), feedback, active, CONFIG)
    crossed = pd.concat([exposures, exposures.head(1).assign(arm=lambda f: f["arm"].map(_other))])
    with pytest.raises(ExperimentDataError, match="1 user.*more than one arm"):
        readout(crossed, feedback, active, CONFIG)
    with pytest.raises(ExperimentDataError, match="unknown value.*'view'"):
        readout(exposures, feedback.assign(event="view"), active, CONFIG)
    with pytest.raises(ExperimentDataError, match="mix dates and integers"):
        readout(exposures, feedback, active.assign(week=3), CONFIG)


def _other(arm: str) -> str:
    return "challenger" if arm == "champion" else "champion"


# ---- the readout ---------------------------------------------------------------------------------


def test_a_true_plays_effect_ships():
    exposures, feedback, active = simulate(CONFIG, 10_000, seed=11, plays_lift=0.10)
    result = readout(exposures, feedback, active, CONFIG)
    assert result.decision == "ship", result.reasons
    assert 4_500 < result.users["champion"] < 5_500 and 4_500 < result.users["challenger"] < 5_500
    primary = result.primary
    assert primary.verdict == "better" and primary.p_adjusted < CONFIG.alpha
    half_width = (primary.lift_ci_high - primary.lift_ci_low) / 2  # about 2 standard errors
    assert abs(primary.relative_lift - 0.10) < 2 * half_width  # within ~4 standard errors of the truth
    assert primary.ci_low < primary.difference < primary.ci_high
    assert all(result.comparisons[m].verdict != "worse" for m in CONFIG.guardrails)
    assert any(r.startswith("PASS: primary plays_per_user") for r in result.reasons)
    assert result.assignment_mismatches == 0 and not result.srm.flagged
    json.dumps(result.to_dict(), allow_nan=False)
    assert plot_readout(result)[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_aa_test_rarely_ships():
    """Same distribution in both arms (200 seeds, 1,000 users per arm): "ship", and each metric's
    unadjusted rejection, at most about alpha.

    The click propensity is strongly user-specific, so a test treating exposures (not users) as
    independent would reject ctr far more often than alpha."""
    seeds, alpha = 200, CONFIG.alpha
    ships = 0
    rejected = dict.fromkeys(METRICS, 0)
    for seed in range(seeds):
        result = readout(*simulate(CONFIG, 2_000, seed=1_000 + seed), CONFIG)
        ships += result.decision == "ship"
        for metric, comparison in result.comparisons.items():
            rejected[metric] += comparison.p_value < alpha
    assert ships / seeds <= alpha + 0.02
    for metric, count in rejected.items():  # expected ~alpha; a naive exposure-level ctr test: ~25%
        assert count / seeds <= alpha + 0.06, (metric, count)


def test_ratio_metric_variance_agrees_with_a_user_level_bootstrap():
    table = user_metrics(*simulate(CONFIG, 4_000, seed=5), CONFIG)
    result = readout_from_users(table, CONFIG)
    rng = np.random.default_rng(0)
    for metric, (num, den) in {
        "ctr": ("clicks", "exposures"),
        "rec_view_share": ("rec_plays", "plays"),
    }.items():
        c = result.comparisons[metric]
        se_delta = (c.ci_high - c.ci_low) / (2 * 1.959964)
        diffs = []
        arms = {arm: table[table["arm"] == arm][[num, den]].to_numpy() for arm in ("champion", "challenger")}
        for _ in range(400):
            ratio = {}
            for arm, values in arms.items():
                sample = values[rng.integers(0, len(values), len(values))]
                ratio[arm] = sample[:, 0].sum() / sample[:, 1].sum()
            diffs.append(ratio["challenger"] - ratio["champion"])
        assert se_delta == pytest.approx(float(np.std(diffs, ddof=1)), rel=0.15), metric


def test_too_few_users_is_inconclusive_even_with_a_large_effect():
    exposures, feedback, active = simulate(CONFIG, 300, seed=3, plays_lift=1.0)
    result = readout(exposures, feedback, active, CONFIG)
    assert result.primary.verdict == "better"  # significant, yet too few users to act on
    assert result.decision == "inconclusive"
    assert any("too few exposed users" in r and ">= 200" in r for r in result.reasons)


def test_a_harmful_challenger_is_kept_out():
    exposures, feedback, active = simulate(CONFIG, 10_000, seed=12, plays_lift=-0.15)
    result = readout(exposures, feedback, active, CONFIG)
    assert result.decision == "keep", result.reasons
    assert any(r.startswith("FAIL: primary") and "significantly worse" in r for r in result.reasons)


def test_a_guardrail_harm_blocks_an_otherwise_winning_challenger():
    exposures, feedback, active = simulate(CONFIG, 10_000, seed=13, plays_lift=0.15, churn_lift=0.5)
    result = readout(exposures, feedback, active, CONFIG)
    assert result.primary.verdict == "better"
    assert result.comparisons["churn"].verdict == "worse"
    assert result.decision == "keep"
    assert any(r.startswith("FAIL: guardrail churn") and "lower is better" in r for r in result.reasons)


def test_a_sample_ratio_mismatch_makes_it_inconclusive():
    exposures, feedback, active = simulate(CONFIG, 10_000, seed=14, plays_lift=0.15)
    challenger_users = exposures.loc[exposures["arm"] == "challenger", "user"].unique()
    lost = set(challenger_users[: len(challenger_users) // 8])  # exposure logging lost 1/8 of them
    result = readout(exposures[~exposures["user"].isin(lost)], feedback, active, CONFIG)
    assert result.primary.verdict == "better"
    assert result.srm.flagged and result.decision == "inconclusive"
    assert any("assignment is broken" in r for r in result.reasons)


def test_users_logged_in_the_wrong_arm_make_it_inconclusive():
    exposures, feedback, active = simulate(CONFIG, 10_000, seed=15, plays_lift=0.15)
    users = exposures.drop_duplicates("user").set_index("user")["arm"]
    swapped = set(users[users == "champion"].index[:100]) | set(users[users == "challenger"].index[:100])
    flip = exposures["user"].isin(swapped)
    exposures.loc[flip, "arm"] = exposures.loc[flip, "arm"].map(_other)
    result = readout(exposures, feedback, active, CONFIG)
    assert not result.srm.flagged  # the counts still look fine
    assert result.assignment_mismatches == 200 and result.decision == "inconclusive"
    assert any("200 of" in r and "assignment is broken" in r for r in result.reasons)


def test_lower_churn_is_an_improvement_when_churn_is_the_primary_metric():
    config = CONFIG.model_copy(update={"primary_metric": "churn"})
    exposures, feedback, active = simulate(config, 10_000, seed=18, churn_lift=-0.4)
    result = readout(exposures, feedback, active, config)
    assert result.primary.difference < 0 and result.primary.verdict == "better"
    assert result.decision == "ship", result.reasons
    assert "plays_per_user" in config.guardrails and "churn" not in config.guardrails


def test_the_per_user_table_must_hold_finite_counts():
    table = user_metrics(*simulate(CONFIG, 500, seed=19), CONFIG)
    assert readout_from_users(table, CONFIG).users == table["arm"].value_counts().to_dict()
    table.iloc[0, table.columns.get_loc("plays")] = np.nan
    with pytest.raises(ExperimentDataError, match="finite and non-negative"):
        readout_from_users(table, CONFIG)


def test_the_holdout_is_reported_but_not_decided_on():
    config = ExperimentConfig(
        experiment_id="exp-h", salt="s", arms={"champion": 0.45, "challenger": 0.45, "holdout": 0.1}
    )
    exposures, feedback, active = simulate(config, 12_000, seed=16, plays_lift=0.10)
    result = readout(exposures, feedback, active, config)
    assert result.users["holdout"] > 900 and set(result.arm_metrics) == {"champion", "challenger", "holdout"}
    assert result.decision == "ship"
    assert any(r.startswith("INFO: holdout") for r in result.reasons)


def test_uncomputable_metrics_do_not_break_the_readout_or_the_plot():
    exposures, feedback, active = simulate(CONFIG, 1_000, seed=17)
    result = readout(exposures, feedback[feedback["event"] == "click"], active, CONFIG)  # no plays at all
    assert result.comparisons["rec_view_share"].verdict == "not computable"
    assert result.decision == "inconclusive"
    json.dumps(result.to_dict(), allow_nan=False)
    assert plot_readout(result)[:4] == b"\x89PNG"


# ---- configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"experiment_id": ""}, "must not be empty"),
        ({"experiment_id": "top picks/1"}, "may only contain"),
        ({"salt": ""}, "salt must not be empty"),
        ({"arms": {"champion": 1.0}}, "missing challenger"),
        ({"arms": {"champion": 0.5, "treatment": 0.5}}, "unknown arm"),
        ({"arms": {"champion": 0.6, "challenger": 0.6}}, "sum to 1"),
        ({"arms": {"champion": 1.0, "challenger": 0.0}}, "must be > 0"),
        ({"arms": {"champion": 0.5, "challenger": 0.5, "holdout": -0.0}}, "must be > 0"),
        ({"primary_metric": "ndcg@10"}, "must be one of ctr"),
        ({"alpha": 0}, "greater than 0"),
        ({"min_users_per_arm": 1}, "greater than or equal to 2"),
        ({"churn_weeks": 0}, "greater than or equal to 1"),
        ({"power": 0.8}, "Extra inputs are not permitted"),
    ],
)
def test_bad_configs_are_refused_with_a_clear_message(change, message):
    with pytest.raises(ValidationError, match=message):
        ExperimentConfig(**{"experiment_id": "exp", "salt": "s", **change})
