"""Champion-vs-challenger A/B tests: assignment, the sample-ratio check and the statistical readout.

The online counterpart of the offline gate (:mod:`recsys.promotion.gates`): users (pseudonyms, opaque hex
strings) are split deterministically between the ``champion`` model, the ``challenger`` model and
optionally a ``holdout`` served the popularity list; after some weeks :func:`readout` compares the
challenger with the champion on what the users did and returns a :class:`Readout` whose
``decision`` is ``"ship"``, ``"keep"`` or ``"inconclusive"``, with one reason per check.

Assignment, metrics and statistics
    :mod:`recsys.experiments.ab_config` (the configuration, and :func:`assign`: which arm a user
    gets), :mod:`recsys.experiments.ab_users` (the per-user values the metrics are computed on)
    and :mod:`recsys.experiments.ab_statistics` (the tests, Holm's correction and the sample-ratio
    check) each describe their part.

Decision (:func:`readout`; the holdout arm is reported but never part of it)
    * ``inconclusive`` when the sample-ratio check (chi-square on exposed users per arm against the
      configured shares, :func:`srm_check`) is flagged or exposed users are logged in another arm
      than :func:`assign` gives: the assignment is broken and no effect can be trusted;
    * ``inconclusive`` when the champion or the challenger has fewer than ``min_users_per_arm``
      exposed users (too few for the normal approximations, in either direction);
    * ``keep`` when the primary metric or any guardrail (every other metric) is significantly worse;
    * ``ship`` when the primary metric is significantly better and every guardrail could be computed;
    * ``inconclusive`` otherwise.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from recsys.core.aliases import CHALLENGER, CHAMPION
from recsys.core.formatting import signed_percent
from recsys.core.html import png_bytes
from recsys.experiments.ab_config import (
    HOLDOUT,
    LOWER_IS_BETTER,
    METRICS,
    USER_COLUMNS,
    ExperimentConfig,
    ExperimentDataError,
    assign,
)
from recsys.experiments.ab_statistics import (
    MetricComparison,
    SRMResult,
    compare,
    estimate,
    holm,
    srm_check,
)
from recsys.experiments.ab_users import require_columns, user_table
from recsys.io.storage import json_safe

DECISIONS = ("ship", "keep", "inconclusive")


# ---- the readout ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Readout:
    """The outcome of :func:`readout`.

    ``users`` has the exposed users of every configured arm, ``arm_metrics`` each arm's metric values
    (the holdout's too, for reference), ``comparisons`` challenger vs champion per metric (in
    :data:`METRICS` order), ``srm`` the sample-ratio check, ``decision`` one of ``ship``, ``keep``,
    ``inconclusive`` and ``reasons`` one line per check (``PASS:`` / ``FAIL:``, ``INFO:`` for
    what is reported but not decided on), ``window`` the readout window's weeks (first, last, and
    the churn weeks) as strings.
    """

    experiment_id: str
    primary_metric: str
    alpha: float
    users: dict[str, int]
    arm_metrics: dict[str, dict[str, float]]
    comparisons: dict[str, MetricComparison]
    srm: SRMResult
    decision: str
    reasons: list[str]
    assignment_mismatches: int | None = None
    window: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.decision not in DECISIONS:
            raise ValueError(f"decision must be one of {', '.join(DECISIONS)}, got {self.decision!r}")

    @property
    def primary(self) -> MetricComparison:
        return self.comparisons[self.primary_metric]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (NaN becomes None)."""
        return {
            "experiment_id": self.experiment_id,
            "primary_metric": self.primary_metric,
            "alpha": self.alpha,
            "decision": self.decision,
            "reasons": list(self.reasons),
            "users": {arm: int(n) for arm, n in self.users.items()},
            "arm_metrics": json_safe({arm: dict(values) for arm, values in self.arm_metrics.items()}),
            "comparisons": {name: comparison.to_dict() for name, comparison in self.comparisons.items()},
            "srm": self.srm.to_dict(),
            "assignment_mismatches": self.assignment_mismatches,
            "window": json_safe(dict(self.window)) if self.window is not None else None,
        }

    def summary(self) -> str:
        """One line, e.g. ``exp-1: SHIP, plays_per_user +10.2% (95% CI +6.1% .. +14.3%), Holm p = 2e-06``."""
        p = self.primary
        level = f"{(1 - self.alpha) * 100:g}%"
        return (
            f"{self.experiment_id}: {self.decision.upper()}, {self.primary_metric} "
            f"{signed_percent(p.relative_lift)} ({level} CI {signed_percent(p.lift_ci_low)} .. "
            f"{signed_percent(p.lift_ci_high)}), Holm p = {_p(p.p_adjusted)}; "
            f"users {', '.join(f'{arm} {n:,}' for arm, n in self.users.items())}"
        )


def _p(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3g}"


def format_number(value: float) -> str:
    """A metric value for people: 4 decimals below 100, 1 above (thousands separated); NaN is n/a."""
    if math.isnan(value):
        return "n/a"
    return f"{value:,.4f}" if abs(value) < 100 else f"{value:,.1f}"


def _describe(c: MetricComparison, alpha: float) -> str:
    level = f"{(1 - alpha) * 100:g}%"
    return (
        f"{c.metric} {format_number(c.champion)} -> {format_number(c.challenger)} "
        f"({signed_percent(c.relative_lift)}, {level} CI "
        f"{signed_percent(c.lift_ci_low)} .. {signed_percent(c.lift_ci_high)}; {c.test} p = {_p(c.p_value)}, "
        f"Holm p = {_p(c.p_adjusted)})"
    )


def readout_from_users(
    table: pd.DataFrame, config: ExperimentConfig, assignment_mismatches: int | None = None
) -> Readout:
    """The readout of a per-user table (as :func:`~recsys.experiments.ab_users.user_metrics` builds it;
    index ignored).

    :func:`readout` is this on the frames; simulations (the power benchmark) build the table
    directly. ``assignment_mismatches``: exposed users logged in another arm than :func:`assign`
    gives (None: not checked). Raises ExperimentDataError on missing columns, an unknown arm, or a
    negative or non-finite value.
    """
    require_columns(table, USER_COLUMNS, "the per-user table")
    unknown = sorted(set(table["arm"].astype(str)) - set(config.arms))
    if unknown:
        raise ExperimentDataError(
            f"the per-user table names arm(s) {', '.join(map(repr, unknown))} that experiment "
            f"{config.experiment_id!r} does not have ({', '.join(config.arm_order)})"
        )
    numbers = table[[column for column in USER_COLUMNS if column != "arm"]].to_numpy(float)
    if not np.isfinite(numbers).all() or (numbers < 0).any():
        raise ExperimentDataError("the per-user table's counts must be finite and non-negative")
    arms = table["arm"].astype(str).to_numpy()
    groups = {arm: table.loc[arms == arm] for arm in config.report_order}
    users = {arm: len(groups[arm]) for arm in config.report_order}
    estimates = {arm: {metric: estimate(groups[arm], metric) for metric in METRICS} for arm in groups}
    arm_metrics = {arm: {metric: estimates[arm][metric].value for metric in METRICS} for arm in groups}

    raw = [compare(m, estimates[CHAMPION][m], estimates[CHALLENGER][m], config.alpha) for m in METRICS]
    adjusted = holm([row["p_value"] for row in raw])
    comparisons: dict[str, MetricComparison] = {}
    for row, p_adj in zip(raw, adjusted, strict=True):
        significant = not math.isnan(p_adj) and p_adj < config.alpha
        if math.isnan(p_adj):
            verdict = "not computable"
        elif not significant:
            verdict = "no significant difference"
        else:
            verdict = "better" if (row["difference"] > 0) != row["lower_is_better"] else "worse"
        comparisons[row["metric"]] = MetricComparison(
            **row, p_adjusted=p_adj, significant=significant, verdict=verdict
        )

    srm = srm_check(users, config)
    decision, reasons = _decide(config, users, comparisons, srm, assignment_mismatches)
    if HOLDOUT in config.arms:
        values = ", ".join(f"{m} {format_number(arm_metrics[HOLDOUT][m])}" for m in METRICS)
        reasons.append(f"INFO: holdout (popularity, {users[HOLDOUT]:,} users, not decided on): {values}")
    return Readout(
        experiment_id=config.experiment_id,
        primary_metric=config.primary_metric,
        alpha=config.alpha,
        users=users,
        arm_metrics=arm_metrics,
        comparisons=comparisons,
        srm=srm,
        decision=decision,
        reasons=reasons,
        assignment_mismatches=assignment_mismatches,
    )


def _decide(
    config: ExperimentConfig,
    users: Mapping[str, int],
    comparisons: Mapping[str, MetricComparison],
    srm: SRMResult,
    assignment_mismatches: int | None,
) -> tuple[str, list[str]]:
    """(decision, reasons): every check is reported, none short-circuits the reasons."""
    reasons: list[str] = []
    broken = srm.flagged
    reasons.append(f"{'FAIL' if srm.flagged else 'PASS'}: {srm.message}")
    if assignment_mismatches is not None:
        exposed = sum(users.values())
        if assignment_mismatches:
            broken = True
            reasons.append(
                f"FAIL: {assignment_mismatches:,} of {exposed:,} exposed users are logged in another arm "
                "than the assignment gives: the assignment is broken"
            )
        else:
            reasons.append(f"PASS: all {exposed:,} exposed users are in the arm the assignment gives")

    few = {arm: users[arm] for arm in (CHAMPION, CHALLENGER) if users[arm] < config.min_users_per_arm}
    counts = ", ".join(f"{arm} {users[arm]:,}" for arm in (CHAMPION, CHALLENGER))
    if few:
        reasons.append(
            f"FAIL: too few exposed users for a decision: {counts}; each needs >= {config.min_users_per_arm:,}"
        )
    else:
        reasons.append(f"PASS: exposed users {counts}, each >= {config.min_users_per_arm:,}")

    primary = comparisons[config.primary_metric]
    text = _describe(primary, config.alpha)
    if primary.verdict == "better":
        reasons.append(f"PASS: primary {text}: significantly better")
    elif primary.verdict == "worse":
        reasons.append(f"FAIL: primary {text}: significantly worse")
    elif primary.verdict == "not computable":
        reasons.append(f"FAIL: primary {text}: cannot be computed")
    else:
        reasons.append(f"FAIL: primary {text}: no significant difference at alpha {config.alpha:g}")

    harmed = primary.verdict == "worse"
    unknown_guardrail = False
    for name in config.guardrails:
        c = comparisons[name]
        text = _describe(c, config.alpha)
        direction = " (lower is better)" if c.lower_is_better else ""
        if c.verdict == "worse":
            harmed = True
            reasons.append(f"FAIL: guardrail {text}: significantly worse{direction}")
        elif c.verdict == "not computable":
            unknown_guardrail = True
            reasons.append(f"FAIL: guardrail {text}: cannot be computed, harm cannot be ruled out")
        elif c.verdict == "better":
            reasons.append(f"PASS: guardrail {text}: significantly better{direction}")
        else:
            reasons.append(f"PASS: guardrail {text}: not significantly worse{direction}")

    if broken:
        decision = "inconclusive"
        reasons.append(
            "FAIL: the assignment is broken (see above): no effect can be trusted; fix it and restart"
        )
    elif few:
        decision = "inconclusive"
    elif harmed:
        decision = "keep"
    elif primary.verdict == "better" and not unknown_guardrail:
        decision = "ship"
    else:
        decision = "inconclusive"
    return decision, reasons


def readout(
    exposures: pd.DataFrame, feedback: pd.DataFrame, active: pd.DataFrame, config: ExperimentConfig
) -> Readout:
    """Read out the experiment: per-arm metrics, challenger vs champion tests, Holm, SRM, decision.

    ``exposures``: user, arm, experiment_id, item_id, position, week (what each user was shown;
    rows of other experiments are ignored). ``feedback``: user, item_id, event ("click" | "play"),
    watch_seconds (NaN counts as 0), from_recommendation, week. ``active``: user, week (a row per
    week a user was active). Weeks are week start dates (or ISO strings) or integers, one kind in
    all three frames. See the module docstring for the metrics, the tests and the decision (and the
    modules it points to).
    Raises ExperimentDataError on malformed frames (see :func:`~recsys.experiments.ab_users.user_metrics`).
    """
    table, window = user_table(exposures, feedback, active, config)
    mismatches = 0
    if len(table):
        expected = assign(table.index.tolist(), config)
        mismatches = int((expected.reindex(table.index).to_numpy() != table["arm"].to_numpy()).sum())
    result = readout_from_users(table, config, assignment_mismatches=mismatches)
    return dataclasses.replace(result, window=window)


# ---- the picture ---------------------------------------------------------------------------------

_COLOURS = {"better": "#2e7d32", "worse": "#c62828"}
_NEUTRAL = "#616161"


def plot_readout(result: Readout) -> bytes:
    """A PNG: per metric the challenger's relative lift over the champion (%) with its (1 - alpha)
    interval as error bars, a zero line, colour by the Holm-corrected verdict (green better, red
    worse, grey neither), the primary metric marked. Matplotlib's Agg canvas, no pyplot state."""
    names = list(result.comparisons)

    def draw(ax: Any) -> None:
        for row, name in enumerate(reversed(names)):
            c = result.comparisons[name]
            colour = _COLOURS.get(c.verdict, _NEUTRAL)
            y = float(row)
            if math.isnan(c.relative_lift):
                ax.text(0, y, "not computable", va="center", ha="center", color=_NEUTRAL, fontsize=9)
                continue
            lift = c.relative_lift * 100
            if not (math.isnan(c.lift_ci_low) or math.isnan(c.lift_ci_high)):
                err = [[lift - c.lift_ci_low * 100], [c.lift_ci_high * 100 - lift]]
                ax.errorbar([lift], [y], xerr=err, fmt="o", color=colour, capsize=4, markersize=6)
            else:
                ax.plot([lift], [y], "o", color=colour)
            ax.annotate(
                f"{lift:+.1f}%  (Holm p {_p(c.p_adjusted)})",
                (lift, y),
                textcoords="offset points",
                xytext=(0, 8),
                ha="center",
                fontsize=8,
                color=colour,
            )
        labels = []
        for name in reversed(names):
            label = f"{name} (primary)" if name == result.primary_metric else name
            labels.append(label + (" [lower is better]" if name in LOWER_IS_BETTER else ""))
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(labels, fontsize=9)
        ax.set_ylim(-0.7, len(names) - 0.3)
        ax.axvline(0.0, color="#212121", linewidth=1)
        level = f"{(1 - result.alpha) * 100:g}%"
        ax.set_xlabel(f"challenger vs champion: relative lift (%), {level} CI")
        users = ", ".join(f"{arm} {n:,}" for arm, n in result.users.items())
        ax.set_title(f"{result.experiment_id}: {result.decision} ({users})", fontsize=10)
        ax.grid(axis="x", color="#e0e0e0")

    return png_bytes(draw, (8.0, 0.6 * len(names) + 1.6))
