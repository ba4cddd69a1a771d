"""The gate-users benchmark's resampling on synthetic per-user tables (no Spark, no benchmark figures)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from bench.gate_users import (
    Outcome,
    Resampled,
    beats_baseline,
    overall,
    per_user_ndcg,
    ratio,
    resample,
    smallest_trusted,
)


def _table(users: int = 1_000, lift: float = 1.4, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """(candidate, baseline) per-user NDCG-like values in [0, 1], independent per user: zero without a
    hit, uniform with one; the candidate hits ``lift`` times as often (so its mean is ~``lift``x)."""
    rng = np.random.default_rng(seed)
    baseline = np.where(rng.random(users) < 0.4, rng.random(users), 0.0)
    candidate = np.where(rng.random(users) < 0.4 * lift, rng.random(users), 0.0)
    return candidate, baseline


def test_clearly_better_candidate_disagreement_falls_with_n():
    candidate, baseline = _table(lift=1.6)
    assert candidate.mean() > 1.5 * baseline.mean()  # a clear PASS on all users
    results = resample(candidate, baseline, sizes=(5, 25, 100, 400), draws=400, seed=1)
    assert [r.n for r in results] == [5, 25, 100, 400]
    shares = [r.disagreement for r in results]
    assert shares[0] > 0.2  # five users: the verdict often flips
    assert shares == sorted(shares, reverse=True)
    assert shares[-1] == 0.0
    assert smallest_trusted(results) == 100  # 1.8% there with this seed, 13% at 25
    for r in results:  # intervals hold the full-population values and narrow with n
        assert r.ndcg_low <= candidate.mean() <= r.ndcg_high
        assert r.ratio_low <= candidate.mean() / baseline.mean() <= r.ratio_high
    widths = [r.ratio_high - r.ratio_low for r in results]
    assert widths == sorted(widths, reverse=True)


def test_identical_candidate_never_beats_the_baseline():
    _, baseline = _table()
    for replace in (False, True):
        results = resample(baseline.copy(), baseline, sizes=(10, 100), draws=200, replace=replace)
        assert all(r.disagreement == 0.0 for r in results)  # every sample FAILs, as all users do
        assert all(r.ratio_low == r.ratio_high == 1.0 for r in results)
    assert not beats_baseline(float(baseline.mean()), float(baseline.mean()), len(baseline))


def test_weak_candidate_false_passes_vanish():
    candidate, baseline = _table(lift=0.7)
    assert not beats_baseline(float(candidate.mean()), float(baseline.mean()), len(candidate))
    results = resample(candidate, baseline, sizes=(5, 25, 400), draws=400, seed=2)
    shares = [r.disagreement for r in results]
    assert shares[0] > 0.1 and shares == sorted(shares, reverse=True) and shares[-1] == 0.0


def test_sizes_sampling_and_seeds():
    candidate, baseline = _table(users=50)
    no_repeat = resample(candidate, baseline, sizes=(10, 50, 80), draws=50)
    assert [r.n for r in no_repeat] == [10, 50]  # 80 distinct users out of 50 cannot be drawn
    whole = no_repeat[-1]  # every user: exactly the full-population figures
    assert whole.disagreement == 0.0 and math.isclose(whole.ndcg_low, candidate.mean())
    assert math.isclose(whole.ndcg_high, candidate.mean())
    assert [r.n for r in resample(candidate, baseline, sizes=(10, 80), draws=50, replace=True)] == [10, 80]
    assert resample(candidate, baseline, draws=50, seed=3) == resample(candidate, baseline, draws=50, seed=3)
    with pytest.raises(ValueError):
        resample(candidate, baseline[:-1])


def test_ratio_and_smallest_trusted_edge_cases():
    out = ratio(np.array([0.2, 0.1, 0.0]), np.array([0.1, 0.0, 0.0]))
    assert out[0] == pytest.approx(2.0) and out[1] == math.inf and out[2] == 1.0

    def r(n: int, share: float) -> Resampled:
        return Resampled(n, 0.0, 0.0, 0.0, 0.0, share)

    assert smallest_trusted([r(10, 0.2), r(50, 0.04), r(100, 0.06), r(200, 0.0)]) == 200
    assert smallest_trusted([r(10, 0.05), r(50, 0.01)]) == 10
    assert smallest_trusted([r(10, 0.2), r(50, 0.1)]) is None


def test_per_user_ndcg_is_what_the_mean_is_made_of():
    from recsys.evaluation.evaluate import score_model
    from recsys.models.factors import popularity_model

    train = pd.DataFrame(
        {"user": ["a", "a", "b", "b", "c"], "item_id": [1, 2, 1, 3, 2], "strength": 1.0, "rating": 4.0}
    )
    holdout = pd.DataFrame({"user": ["a", "b", "c", "c"], "item_id": [3, 2, 1, 4], "rating": 4.0})
    model = popularity_model(train)  # order 1, 2, 3 (two users each for 1 and 2)
    values = per_user_ndcg(model, train, holdout, k=2)
    assert list(values.index) == ["a", "b", "c"]
    assert values["a"] == pytest.approx(1.0)  # 1 and 2 seen: item 3 first
    assert values["b"] == pytest.approx(1.0)  # 1 and 3 seen: item 2 first
    # 2 seen: [1, 3] against {1, 4}: one hit at the top of an ideal two
    assert values["c"] == pytest.approx(1.0 / (1.0 + 1.0 / math.log2(3)))
    assert values.mean() == pytest.approx(score_model(model, train, holdout, 2, 4)["ndcg@2"])


def test_overall_takes_the_largest_smallest_n():
    def results(*shares: float) -> list[Resampled]:
        return [Resampled(n, 0.0, 0.0, 0.0, 0.0, s) for n, s in zip((25, 100, 200), shares, strict=True)]

    def outcome(name: str, strong: list[Resampled], weak: list[Resampled]) -> Outcome:
        runs = {"strong": strong, "weak": weak}
        return Outcome(name, 300, pd.DataFrame(), runs, runs, 0.0)

    line = overall(
        [
            outcome("a", results(0.3, 0.01, 0.0), results(0.0, 0.0, 0.0)),
            outcome("b", results(0.3, 0.2, 0.04), results(0.02, 0.0, 0.0)),
        ]
    )
    assert "from n = 200 on" in line
    assert "none measured" in overall([outcome("a", results(0.3, 0.2, 0.1), results(0.0, 0.0, 0.0))])
