"""The A/B readout's statistics: the sample-ratio check (:func:`srm_check`), Holm's correction
(:func:`holm`), each arm's estimate of a metric (:func:`estimate`) and the challenger-vs-champion
comparison (:func:`compare`, :class:`MetricComparison`).

Statistics
    The unit of analysis is the user (the unit of randomisation), never the exposure or the event:
    events of one user are correlated, and treating them as independent understates the variance.
    Mean metrics (plays, watch seconds, churn) use Welch's t-test on the per-user values (unequal
    variances, Satterthwaite degrees of freedom). Ratio metrics (ctr, rec_view_share) are ratios of
    two per-user sums, ``R = sum(y) / sum(x)``; their variance comes from the **delta method** on
    the per-user (x, y) pairs, ``Var(R) ~ (s_y^2 - 2 R s_xy + R^2 s_x^2) / (n * mean(x)^2)``, and the
    test is a normal (z) test. The confidence interval of the difference (challenger minus champion)
    is the matching (1 - alpha) t / normal interval; the relative lift is ``difference / champion``
    and its interval is the delta-method interval of the ratio challenger / champion (both arms'
    uncertainty). Intervals are per metric, not corrected for multiplicity.

    The p-values of the five metrics are one family, corrected with Holm-Bonferroni (:func:`holm`);
    a metric is *significantly better / worse* when its corrected p-value is below ``alpha``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from recsys.experiments.ab_config import (
    LOWER_IS_BETTER,
    MEAN_METRICS,
    RATIO_METRICS,
    ExperimentConfig,
    ExperimentDataError,
)
from recsys.io.storage import json_safe

# ---- sample ratio mismatch -----------------------------------------------------------------------


@dataclass(frozen=True)
class SRMResult:
    """The sample-ratio check: observed vs expected users per arm, chi-square test, verdict."""

    observed: dict[str, int]
    expected: dict[str, float]
    statistic: float
    p_value: float
    alpha: float
    flagged: bool
    message: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (NaN becomes None)."""
        return {
            "observed": {arm: int(n) for arm, n in self.observed.items()},
            "expected": json_safe(dict(self.expected)),
            "statistic": json_safe(self.statistic),
            "p_value": json_safe(self.p_value),
            "alpha": self.alpha,
            "flagged": bool(self.flagged),
            "message": self.message,
        }


def srm_check(observed: Mapping[str, int], config: ExperimentConfig) -> SRMResult:
    """Chi-square goodness of fit of users per arm against the configured shares.

    ``observed`` maps arm names to user counts; configured arms it lacks count 0. Flagged when the
    p-value is below ``config.srm_alpha``. With no users at all nothing can be checked: not flagged,
    p-value NaN. Raises ExperimentDataError on an unknown arm or a negative / non-integer count.
    """
    unknown = sorted(set(observed) - set(config.arms))
    if unknown:
        raise ExperimentDataError(
            f"unknown arm(s) {', '.join(map(repr, unknown))} in the observed counts; "
            f"the experiment's arms are {', '.join(config.arm_order)}"
        )
    counts: dict[str, int] = {}
    for arm in config.report_order:
        raw = observed.get(arm, 0)
        if isinstance(raw, bool) or not float(raw).is_integer() or raw < 0:
            raise ExperimentDataError(
                f"observed count of arm {arm!r} must be a non-negative integer, got {raw!r}"
            )
        counts[arm] = int(raw)
    total = sum(counts.values())
    expected = {arm: total * config.arms[arm] for arm in config.report_order}
    seen = " / ".join(f"{arm} {counts[arm]:,}" for arm in config.report_order)
    wanted = " / ".join(f"{arm} {expected[arm]:,.1f}" for arm in config.report_order)
    if total == 0:
        return SRMResult(counts, expected, math.nan, math.nan, config.srm_alpha, False, "no users to check")
    result = stats.chisquare(
        np.asarray([counts[arm] for arm in config.report_order], dtype=float),
        np.asarray([expected[arm] for arm in config.report_order], dtype=float),
    )
    statistic, p_value = float(result.statistic), float(result.pvalue)
    flagged = p_value < config.srm_alpha
    if flagged:
        message = (
            f"sample ratio mismatch: observed {seen} vs expected {wanted} (chi-square {statistic:.2f}, "
            f"p = {p_value:.3g} < {config.srm_alpha:g}): the assignment or the exposure logging is broken"
        )
    else:
        message = (
            f"no sample ratio mismatch: observed {seen} vs expected {wanted} (chi-square {statistic:.2f}, "
            f"p = {p_value:.3g} >= {config.srm_alpha:g})"
        )
    return SRMResult(counts, expected, statistic, p_value, config.srm_alpha, flagged, message)


# ---- multiple testing ----------------------------------------------------------------------------


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order.

    With the m finite p-values sorted ascending, p_(1) <= ... <= p_(m), the adjusted value of the
    i-th is ``max over j <= i of min(1, (m - j + 1) * p_(j))``; rejecting every hypothesis whose
    adjusted p-value is below alpha controls the family-wise error rate at alpha (Holm 1979), and is
    never less powerful than plain Bonferroni. NaN p-values (a metric that cannot be computed) are
    not part of the family (m counts finite values only) and stay NaN. Ties keep input order.
    """
    values = [float(p) for p in p_values]
    for p in values:
        if not math.isnan(p) and not 0.0 <= p <= 1.0:
            raise ValueError(f"p-values must be within [0, 1] (or NaN); got {p}")
    finite = sorted((p, i) for i, p in enumerate(values) if not math.isnan(p))
    m = len(finite)
    adjusted = [math.nan] * len(values)
    running = 0.0
    for rank, (p, index) in enumerate(finite):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[index] = running
    return adjusted


# ---- statistics ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """One arm's estimate of one metric: the value, the variance of that estimate, the users."""

    value: float  # the arm's metric value
    variance: float  # variance of that estimate
    n: int  # exposed users


def estimate(table: pd.DataFrame, metric: str) -> Estimate:
    """The metric over the per-user ``table`` of one arm (ratio: delta-method variance; mean: s^2 / n)."""
    n = len(table)
    if metric in RATIO_METRICS:
        num, den = RATIO_METRICS[metric]
        y = table[num].to_numpy(float)
        x = table[den].to_numpy(float)
        if n == 0 or x.sum() <= 0:
            return Estimate(math.nan, math.nan, n)
        ratio = float(y.sum() / x.sum())
        if n < 2:
            return Estimate(ratio, math.nan, n)
        mean_x = float(x.mean())
        cov = np.cov(np.vstack([y, x]), ddof=1)
        var_y, var_x, cov_xy = float(cov[0, 0]), float(cov[1, 1]), float(cov[0, 1])
        variance = (var_y - 2 * ratio * cov_xy + ratio**2 * var_x) / (n * mean_x**2)
        return Estimate(ratio, max(variance, 0.0), n)
    values = table[MEAN_METRICS[metric]].to_numpy(float)
    if n == 0:
        return Estimate(math.nan, math.nan, 0)
    mean = float(values.mean())
    if n < 2:
        return Estimate(mean, math.nan, n)
    return Estimate(mean, float(values.var(ddof=1)) / n, n)


@dataclass(frozen=True)
class MetricComparison:
    """Challenger minus champion on one metric.

    ``difference`` = challenger - champion with its (1 - alpha) interval ``ci_low`` .. ``ci_high``;
    ``relative_lift`` = difference / champion with its interval ``lift_ci_low`` .. ``lift_ci_high``;
    ``p_value`` of the two-sided test (Welch t for mean metrics, delta-method z for ratio metrics),
    ``p_adjusted`` after Holm across the readout's metrics; ``significant`` = p_adjusted < alpha;
    ``verdict`` is ``better``, ``worse`` (with the metric's direction), ``no significant difference``
    or ``not computable``. NaN where a value cannot be computed.
    """

    metric: str
    test: str
    lower_is_better: bool
    champion: float
    challenger: float
    difference: float
    ci_low: float
    ci_high: float
    relative_lift: float
    lift_ci_low: float
    lift_ci_high: float
    p_value: float
    p_adjusted: float
    significant: bool
    verdict: str

    @property
    def computable(self) -> bool:
        return not math.isnan(self.p_value)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (NaN becomes None)."""
        return {
            "metric": self.metric,
            "test": self.test,
            "lower_is_better": self.lower_is_better,
            "champion": json_safe(self.champion),
            "challenger": json_safe(self.challenger),
            "difference": json_safe(self.difference),
            "ci": [json_safe(self.ci_low), json_safe(self.ci_high)],
            "relative_lift": json_safe(self.relative_lift),
            "lift_ci": [json_safe(self.lift_ci_low), json_safe(self.lift_ci_high)],
            "p_value": json_safe(self.p_value),
            "p_adjusted": json_safe(self.p_adjusted),
            "significant": bool(self.significant),
            "verdict": self.verdict,
        }


def compare(metric: str, champion: Estimate, challenger: Estimate, alpha: float) -> dict[str, Any]:
    """The unadjusted comparison of one metric (everything but p_adjusted / significant / verdict)."""
    ratio = metric in RATIO_METRICS
    test = "delta-method z" if ratio else "Welch t"
    a, b = champion.value, challenger.value
    difference = b - a
    va, vb = champion.variance, challenger.variance
    nan = math.nan
    out: dict[str, Any] = {
        "metric": metric,
        "test": test,
        "lower_is_better": metric in LOWER_IS_BETTER,
        "champion": a,
        "challenger": b,
        "difference": difference,
        "ci_low": nan,
        "ci_high": nan,
        "relative_lift": difference / a if a else nan,
        "lift_ci_low": nan,
        "lift_ci_high": nan,
        "p_value": nan,
    }
    if any(math.isnan(v) for v in (a, b, va, vb)):
        return out
    se = math.sqrt(va + vb)
    if ratio or se == 0:
        df = math.inf
    else:  # Welch-Satterthwaite
        df = (va + vb) ** 2 / (va**2 / (champion.n - 1) + vb**2 / (challenger.n - 1))
    normal = math.isinf(df)
    quantile = float(stats.norm.ppf(1 - alpha / 2) if normal else stats.t.ppf(1 - alpha / 2, df))
    if se == 0:  # no variance in either arm: equal or certainly different
        p_value = 1.0 if difference == 0 else 0.0
    else:
        z = abs(difference) / se
        p_value = float(2 * (stats.norm.sf(z) if normal else stats.t.sf(z, df)))
    out.update(ci_low=difference - quantile * se, ci_high=difference + quantile * se, p_value=p_value)
    if a:
        lift = difference / a
        se_lift = math.sqrt(vb / a**2 + b**2 * va / a**4)
        out.update(lift_ci_low=lift - quantile * se_lift, lift_ci_high=lift + quantile * se_lift)
    return out
