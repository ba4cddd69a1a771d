"""The evaluation gate: an explicit, stored decision on whether a candidate model may be promoted.

Like TFX's "blessing", the gate is an output of its own (:class:`GateDecision`, saved as JSON next
to the run) rather than an ``if`` buried in the promotion code. Promotion calls
:func:`require_passed`, which raises :class:`~recsys.core.errors.GateRejected` unless every check passed.

Checks (the first four on the primary metric, a higher-is-better ranking metric such as ``ndcg@10``,
computed by :func:`recsys.evaluation.metrics.ranking_metrics` on the same holdout for candidate, champion and
baseline; the two optional floors on the candidate's beyond-accuracy metrics at the primary
metric's ``k``, as :mod:`recsys.evaluation.evaluate` names them):

=================== ==============================================================================
check               passes when
=================== ==============================================================================
``primary_floor``   candidate >= ``min_primary``
``users_evaluated`` candidate ``users_evaluated`` >= ``min_users_evaluated``
``beats_baseline``  candidate > baseline and candidate >= baseline * (1 + ``baseline_margin``)
``no_regression``   candidate >= champion * (1 - ``max_regression``); passes, "no champion yet",
                    when there is no champion (``champion=None``)
``window_weeks``    the training window held at least ``min_window_weeks`` weeks of data (run when
                    the caller gives the ``window``: the pipeline always does)
``coverage_floor``  candidate ``coverage@k`` >= ``min_coverage``; only run when ``min_coverage`` is
                    set (default ``None``: no such check, no such reason)
``diversity_floor`` candidate ``diversity@k`` >= ``min_diversity``; only run when ``min_diversity``
                    is set (default ``None``: no such check, no such reason)
=================== ==============================================================================

The gate fails closed: a missing, non-numeric, NaN or infinite value that a check needs makes that
check fail with a reason saying so; it never raises. This includes a champion whose metrics lack
the primary metric (re-evaluate the champion on this week's holdout).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from recsys.core.errors import GateRejected
from recsys.core.formatting import metric_text, percent
from recsys.evaluation.metrics import RANKING_METRICS, USERS_EVALUATED
from recsys.io.storage import json_safe

CORE_CHECKS = ("primary_floor", "users_evaluated", "beats_baseline", "no_regression")
"""The checks every decision runs."""
FLOOR_CHECKS = ("coverage_floor", "diversity_floor")
"""The optional floors, run only when :attr:`GateThresholds.min_coverage` / ``min_diversity`` is set."""
WINDOW_CHECKS = ("window_weeks",)
"""Run when :func:`evaluate_gate` is given the training window (the pipeline always gives it)."""
CHECKS = CORE_CHECKS + WINDOW_CHECKS + FLOOR_CHECKS
"""Every check the gate knows, in the order a decision lists them."""
_PRIMARY_PATTERN = re.compile(rf"^({'|'.join(RANKING_METRICS)})@[1-9][0-9]*$")


MIN_USERS_EVALUATED = 100
"""Default of :attr:`GateThresholds.min_users_evaluated`, from ``bench/gate_users.py`` (docs/benchmarks.md):
on samples of real users (MovieLens ml-100k and ml-latest-small), the ``beats_baseline`` verdict of a
model 1.3x-1.8x better than popularity differs from the all-users verdict in 24-26% of 25-user samples
(the old default was 20), in at most 10% at 100 users and at most 3% at 200. With the 12-week window,
ml-100k weeks evaluate 350-500 users; 100 lets a short window of a small service through while refusing
a verdict on a few dozen users. Set 200 where the cost of a wrong promotion is high."""
MIN_WINDOW_WEEKS = 1
"""Default of :attr:`GateThresholds.min_window_weeks`. The window stage fills the window from every
week the lake has, so a short window only happens at the start of a history, where a first week's model
that beats popularity on enough users is a real model; raise it to hold promotion until the history is
longer (e.g. ``{"gate": {"min_window_weeks": 4}}``)."""


class GateThresholds(BaseModel):
    """Limits the candidate must meet. Margins are relative (0.05 = 5 %)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    primary_metric: str = "ndcg@10"
    min_primary: float = Field(default=0.02, ge=0, allow_inf_nan=False)
    min_users_evaluated: int = Field(
        default=MIN_USERS_EVALUATED,
        ge=0,
        description="holdout users the candidate must be evaluated on (bench/gate_users.py)",
    )
    baseline_margin: float = Field(default=0.05, ge=0, lt=1, allow_inf_nan=False)
    max_regression: float = Field(default=0.02, ge=0, lt=1, allow_inf_nan=False)
    min_window_weeks: int = Field(
        default=MIN_WINDOW_WEEKS,
        ge=1,
        description="weeks of data the training window must hold (of prepare.window_weeks)",
    )
    min_coverage: float | None = Field(
        default=None,
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="floor on the candidate's catalogue coverage@k (k of primary_metric); None: not checked",
    )
    min_diversity: float | None = Field(
        default=None,
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="floor on the candidate's genre diversity@k (k of primary_metric); None: not checked",
    )

    @field_validator("primary_metric")
    @classmethod
    def _higher_is_better_ranking_metric(cls, value: str) -> str:
        if not _PRIMARY_PATTERN.match(value):
            names = ", ".join(f"{name}@k" for name in RANKING_METRICS)
            raise ValueError(f"primary_metric {value!r} must be one of {names} (k a positive integer)")
        return value

    @property
    def k(self) -> int:
        """The cut-off of the primary metric (10 for ``ndcg@10``), also used by the floors."""
        return int(self.primary_metric.rsplit("@", 1)[1])


@dataclass(frozen=True)
class GateDecision:
    """The outcome of :func:`evaluate_gate`.

    ``checks`` maps each check name to whether it passed, ``reasons`` has one human-readable line per
    check (starting with ``PASS:`` or ``FAIL:``), ``metrics`` holds the primary metric's name and
    the candidate / champion / baseline values (``None`` where missing or not finite), the
    candidate's ``users_evaluated`` and, for each floor that is set, the candidate's
    ``coverage@k`` / ``diversity@k``. ``passed`` is true iff there is at least one check and all
    passed; construction enforces this, so a hand-edited decision cannot claim a pass.
    """

    passed: bool
    reasons: list[str]
    checks: dict[str, bool]
    metrics: dict[str, Any]

    def __post_init__(self) -> None:
        expected = bool(self.checks) and all(self.checks.values())
        if bool(self.passed) != expected:
            raise ValueError(f"inconsistent gate decision: passed={self.passed} but checks={self.checks}")

    @property
    def failed_checks(self) -> list[str]:
        return [name for name, ok in self.checks.items() if not ok]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (no NaN: missing values are ``None``)."""
        return {
            "passed": bool(self.passed),
            "reasons": list(self.reasons),
            "checks": {name: bool(ok) for name, ok in self.checks.items()},
            "metrics": {name: json_safe(value) for name, value in self.metrics.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GateDecision:
        """Inverse of :meth:`to_dict`. Raises ValueError on a malformed or inconsistent dict."""
        missing = [key for key in ("passed", "reasons", "checks", "metrics") if key not in data]
        if missing:
            raise ValueError(f"not a gate decision: missing {', '.join(missing)}")
        return cls(
            passed=bool(data["passed"]),
            reasons=[str(reason) for reason in data["reasons"]],
            checks={str(name): bool(ok) for name, ok in dict(data["checks"]).items()},
            metrics=dict(data["metrics"]),
        )

    def summary(self) -> str:
        """One line, e.g. ``gate PASSED (4/4 checks): ndcg@10 candidate 0.0456, baseline 0.0300, champion none``."""
        verdict = "PASSED" if self.passed else "FAILED"
        n_ok = sum(1 for ok in self.checks.values() if ok)
        counts = f"{n_ok}/{len(self.checks)} checks"
        if self.failed_checks:
            counts += f"; failed: {', '.join(self.failed_checks)}"
        name = self.metrics.get("primary_metric", "primary")
        values = ", ".join(
            f"{role} {metric_text(self.metrics.get(role))}" for role in ("candidate", "baseline", "champion")
        )
        return f"gate {verdict} ({counts}): {name} {values}"


def _at_least(value: float, limit: float) -> bool:
    """value >= limit, forgiving float rounding (0.03 * 1.05 must not fail a candidate at 0.0315)."""
    return value >= limit or math.isclose(value, limit, rel_tol=1e-9, abs_tol=1e-12)


def _number(metrics: Mapping[str, Any] | None, key: str) -> tuple[float | None, str]:
    """(value, "") for a finite number, else (None, why it cannot be used)."""
    if metrics is None or key not in metrics or metrics[key] is None:
        return None, "is missing"
    raw = metrics[key]
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None, f"is not a number ({raw!r})"
    if math.isnan(value):
        return None, "is NaN"
    if math.isinf(value):
        return None, "is infinite"
    return value, ""


def evaluate_gate(
    candidate: Mapping[str, Any],
    champion: Mapping[str, Any] | None,
    baseline: Mapping[str, Any],
    thresholds: GateThresholds,
    window: Mapping[str, Any] | None = None,
) -> GateDecision:
    """Run every check (none short-circuits) and return the decision; never raises on bad metrics.

    ``candidate``, ``champion`` and ``baseline`` are metric dicts as returned by
    :func:`recsys.evaluation.metrics.ranking_metrics`. ``champion=None`` means no model is in production yet.
    ``window`` (``{"weeks": N, "size": M}``: N weeks of data in a window of M) adds the
    ``window_weeks`` check.
    """
    t = thresholds
    name = t.primary_metric
    cand, cand_problem = _number(candidate, name)
    base, base_problem = _number(baseline, name)
    champ, champ_problem = _number(champion, name) if champion is not None else (None, "")
    users, users_problem = _number(candidate, USERS_EVALUATED)

    checks: dict[str, bool] = {}
    reasons: list[str] = []

    def record(check: str, ok: bool, text: str) -> None:
        checks[check] = ok
        reasons.append(f"{'PASS' if ok else 'FAIL'}: {text}")

    # floor
    if cand is None:
        record("primary_floor", False, f"candidate {name} {cand_problem}")
    else:
        ok = _at_least(cand, t.min_primary)
        record("primary_floor", ok, f"{name} {cand:.4f} {'>=' if ok else '<'} floor {t.min_primary:.4f}")

    def minimum(check: str, value: float | None, problem: str, limit: int, shown: str) -> None:
        """A count that must reach ``limit``; fails closed (``problem``) when it is missing."""
        if value is None:
            record(check, False, problem)
        else:
            ok = value >= limit
            record(check, ok, f"{shown.format(value)} {'>=' if ok else '<'} minimum {limit}")

    # enough users behind the numbers
    minimum(
        "users_evaluated",
        users,
        f"candidate {USERS_EVALUATED} {users_problem}",
        t.min_users_evaluated,
        USERS_EVALUATED + " {:g}",
    )

    # beats the popularity baseline by the margin
    if cand is None or base is None:
        problem = f"candidate {name} {cand_problem}" if cand is None else f"baseline {name} {base_problem}"
        record("beats_baseline", False, f"{problem}: cannot compare with the baseline")
    else:
        required = base * (1 + t.baseline_margin)
        if cand > base or not _at_least(cand, required):
            ok = _at_least(cand, required)
            text = (
                f"{name} {cand:.4f} {'>=' if ok else '<'} baseline {base:.4f}"
                f" +{percent(t.baseline_margin)} = {required:.4f}"
            )
        else:  # reaches the required value without being above the baseline (margin 0 or baseline 0)
            ok = False
            text = f"{name} {cand:.4f} is not above baseline {base:.4f}"
        record("beats_baseline", ok, text)

    # no regression against the champion
    if champion is None:
        record("no_regression", True, "no champion yet: regression check skipped")
    elif cand is None or champ is None:
        problem = f"candidate {name} {cand_problem}" if cand is None else f"champion {name} {champ_problem}"
        record("no_regression", False, f"{problem}: cannot compare with the champion")
    else:
        allowed = champ * (1 - t.max_regression)
        ok = _at_least(cand, allowed)
        record(
            "no_regression",
            ok,
            f"{name} {cand:.4f} {'>=' if ok else '<'} champion {champ:.4f} -{percent(t.max_regression)}"
            f" = {allowed:.4f}",
        )

    # enough weeks of data in the training window
    if window is not None:
        weeks, weeks_problem = _number(window, "weeks")
        size = f" of {window['size']}" if window.get("size") is not None else ""
        minimum(
            "window_weeks",
            weeks,
            f"training window weeks {weeks_problem}",
            t.min_window_weeks,
            "window {:g}" + size + " weeks",
        )

    metrics: dict[str, Any] = {
        "primary_metric": name,
        "candidate": cand,
        "champion": champ,
        "baseline": base,
        USERS_EVALUATED: int(users) if users is not None and users.is_integer() else users,
    }

    # optional beyond-accuracy floors, on the candidate only
    floors = (
        ("coverage_floor", f"coverage@{t.k}", t.min_coverage, "the candidate collapses onto a few items"),
        (
            "diversity_floor",
            f"diversity@{t.k}",
            t.min_diversity,
            "the candidate's lists are too uniform in genre",
        ),
    )
    for check, key, floor, failure in floors:
        if floor is None:
            continue
        value, problem = _number(candidate, key)
        metrics[key] = value
        if value is None:
            record(check, False, f"candidate {key} {problem}: cannot check the floor {floor:.4f}")
        elif _at_least(value, floor):
            record(check, True, f"{key} {value:.4f} >= floor {floor:.4f}")
        else:
            record(check, False, f"{key} {value:.4f} < floor {floor:.4f}: {failure}")
    return GateDecision(passed=all(checks.values()), reasons=reasons, checks=checks, metrics=metrics)


def require_passed(decision: GateDecision) -> GateDecision:
    """Return ``decision`` if it passed; otherwise raise GateRejected naming the failed checks."""
    if decision.passed:
        return decision
    failed = "; ".join(reason for reason in decision.reasons if reason.startswith("FAIL")) or "no checks"
    raise GateRejected(f"promotion refused, evaluation gate failed: {failed}")
