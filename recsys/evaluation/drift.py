"""Drift statistics: is the recent data (or the champion's quality) far from its training reference?

Pure functions on pandas frames of anonymized events (columns ``user``, ``item_id``, ``ts``,
``event_type``, ``rating``, ``watch_seconds``); no Airflow, no MLflow, no I/O. The drift DAG reads
the frames, calls :func:`detect_drift` and acts on the returned :class:`DriftReport`.

Which events count
------------------
* **Interactions** (item popularity, user activity, unseen shares, ``min_events``) are the events
  with a positive :func:`recsys.data.prepare.event_strength`: views and non-zero ratings, the events the
  model trains on. ``browse`` events (shown, not watched) say what we displayed, not what users
  like, and are left out.
* **Ratings** (KS test) are the non-NaN ``rating`` values of ``event_type == "rating"`` events.

Checks (each compares a metric with a :class:`DriftThresholds` field; "drifted" when it exceeds it)
----------------------------------------------------------------------------------------------------
=================== ================================================================================
check               drifted when
=================== ================================================================================
``item_popularity`` :func:`item_popularity_psi` > ``psi_max``
``user_activity``   :func:`user_activity_psi` > ``activity_psi_max``
``item_js``         :func:`jensen_shannon` - its sampling noise (:func:`jensen_shannon_noise`) > ``js_max``
``rating_ks``       KS p-value < ``ks_pvalue_min`` **and** KS statistic >= ``ks_statistic_min``
``unseen_items``    share of recent interactions on unknown items > ``unseen_items_share_max``
``unseen_users``    share of recent interactions by unknown users > ``unseen_users_share_max``
``quality``         (at_training - now) / at_training > ``quality_drop_max``
=================== ================================================================================

Edge cases
----------
* Fewer than ``min_events`` recent interactions, or no reference interaction: no check runs, the
  report is ``skipped`` with the reason and is **not** drifted (too little data to judge).
* A check whose inputs are missing is not run and is listed in ``DriftReport.not_run`` with why:
  fewer than :data:`MIN_RATINGS` ratings on either side (``rating_ks``), ``known_items`` /
  ``known_users`` not given, quality values missing, non-finite or ``quality_at_training <= 0``.
* :func:`user_activity_psi` compares events-per-user counts: the reference and recent windows must
  cover the same length of time (e.g. the last week of the training window against the most recent
  week), otherwise the counts differ by the window ratio and the check alarms on every run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from scipy.spatial.distance import jensenshannon
from scipy.stats import ks_2samp

from recsys.data.prepare import event_strength
from recsys.io.storage import json_safe

#: Fewer ratings than this on either side and :func:`rating_ks` returns NaN (test not run).
MIN_RATINGS = 20

CHECKS = (
    "item_popularity",
    "user_activity",
    "item_js",
    "rating_ks",
    "unseen_items",
    "unseen_users",
    "quality",
)


class DriftThresholds(BaseModel):
    model_config = ConfigDict(extra="forbid")

    psi_max: float = Field(0.25, gt=0.0, description="item popularity PSI above this is drift")
    activity_psi_max: float = Field(0.25, gt=0.0, description="user activity PSI above this is drift")
    js_max: float = Field(
        0.1,
        gt=0.0,
        le=1.0,
        description="Jensen-Shannon distance (base 2) of item shares, above what sampling noise alone "
        "gives at these window sizes, above this is drift",
    )
    ks_pvalue_min: float = Field(
        0.001, gt=0.0, lt=1.0, description="rating KS p-value below this (with the statistic) is drift"
    )
    ks_statistic_min: float = Field(
        0.1, ge=0.0, le=1.0, description="rating KS statistic must also reach this (large samples)"
    )
    unseen_items_share_max: float = Field(0.2, ge=0.0, le=1.0)
    unseen_users_share_max: float = Field(0.5, ge=0.0, le=1.0)
    quality_drop_max: float = Field(
        0.4, gt=0.0, le=1.0, description="relative NDCG@10 drop vs training time above this is drift"
    )
    min_events: int = Field(1000, ge=1, description="fewer recent interactions and checks are skipped")


# ---- distributions ---------------------------------------------------------------------------
def interactions(events: pd.DataFrame) -> pd.DataFrame:
    """The events that carry preference (positive :func:`~recsys.data.prepare.event_strength`)."""
    if events.empty:
        return events
    return events[event_strength(events).to_numpy() > 0]


def _shares(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-d sequence")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"{name} must hold finite non-negative counts or shares")
    total = arr.sum()
    if total <= 0:
        raise ValueError(f"{name} sums to 0: no distribution to compare")
    return arr / total


def population_stability_index(
    expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray, epsilon: float = 1e-6
) -> float:
    """PSI = sum over bins of (a - e) * ln(a / e), with ``e`` / ``a`` the bin shares.

    ``expected`` and ``actual`` are counts or shares on the same, aligned bins; each is normalised
    to shares. A bin that is empty on one side would make the log infinite, so every share is
    floored at ``epsilon`` (no renormalisation: the total moves by at most ``bins * epsilon``).
    A bin empty on both sides contributes 0. Identical distributions give 0; PSI is >= 0.
    Raises ``ValueError`` on different lengths, negative or non-finite values, or a zero total.
    """
    if epsilon <= 0:
        raise ValueError(f"epsilon must be positive, got {epsilon!r}")
    e = _shares(expected, "expected")
    a = _shares(actual, "actual")
    if e.shape != a.shape:
        raise ValueError(f"expected and actual must have the same bins, got {e.size} and {a.size}")
    e = np.maximum(e, epsilon)
    a = np.maximum(a, epsilon)
    return float(max(np.sum((a - e) * np.log(a / e)), 0.0))


def item_counts(events: pd.DataFrame) -> pd.Series:
    """Interactions per item (index item_id)."""
    return interactions(events)["item_id"].value_counts()


def item_popularity_bins(reference_counts: pd.Series, items: pd.Index, bins: int) -> np.ndarray:
    """Bin index (0 = most popular) for each of ``items``, by reference popularity rank.

    Reference items are ranked by reference interaction count (ties by item id) and cut into
    ``bins`` groups of (nearly) equal item counts: deciles for ``bins=10``. Items absent from the
    reference have popularity 0 and go to the last (least popular) bin, so a block of new items
    taking over shows up as the tail bin swelling.
    """
    ranked = reference_counts.rename("n").rename_axis("item_id").reset_index()
    ranked = ranked.sort_values(["n", "item_id"], ascending=[False, True], kind="mergesort")
    n_bins = max(1, min(bins, len(ranked)))
    rank_bin = pd.Series(
        (np.arange(len(ranked)) * n_bins) // max(len(ranked), 1), index=ranked["item_id"].to_numpy()
    )
    return rank_bin.reindex(items).fillna(n_bins - 1).to_numpy(dtype=int)


def item_popularity_psi(reference_events: pd.DataFrame, recent_events: pd.DataFrame, bins: int = 10) -> float:
    """PSI of item popularity, binned by reference-popularity deciles (see :func:`item_popularity_bins`).

    Binning (rather than one bin per item) keeps the statistic stable with a long tail of items seen
    a handful of times: per-item PSI on a few thousand events is dominated by sampling noise and
    epsilon terms. Shares per bin are shares of interactions. NaN if either side has no interaction.
    """
    if bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    ref = item_counts(reference_events)
    rec = item_counts(recent_events)
    if ref.empty or rec.empty:
        return math.nan
    n_bins = max(1, min(bins, len(ref)))
    expected = np.bincount(
        item_popularity_bins(ref, ref.index, bins), weights=ref.to_numpy(), minlength=n_bins
    )
    actual = np.bincount(item_popularity_bins(ref, rec.index, bins), weights=rec.to_numpy(), minlength=n_bins)
    return population_stability_index(expected, actual)


def user_activity_psi(reference: pd.DataFrame, recent: pd.DataFrame, bins: int = 10) -> float:
    """PSI of the events-per-user distribution (interactions per active user).

    Bin edges are the inner quantiles of the reference counts (duplicates dropped: counts are
    integers, so a low-activity population may give fewer than ``bins`` bins); bins are
    ``(-inf, q1], (q1, q2], ..., (q_last, inf)``. NaN if either side has no interaction. Windows must
    be of equal length (see the module docstring).
    """
    if bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    ref = interactions(reference)["user"].value_counts().to_numpy(dtype=float)
    rec = interactions(recent)["user"].value_counts().to_numpy(dtype=float)
    if ref.size == 0 or rec.size == 0:
        return math.nan
    edges = np.unique(np.quantile(ref, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    n_bins = edges.size + 1
    expected = np.bincount(np.searchsorted(edges, ref, side="left"), minlength=n_bins)
    actual = np.bincount(np.searchsorted(edges, rec, side="left"), minlength=n_bins)
    return population_stability_index(expected, actual)


def aligned_item_counts(
    reference: pd.DataFrame, recent: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray] | None:
    """Interactions per item of both windows over the union of their items (None: a side is empty)."""
    ref = item_counts(reference)
    rec = item_counts(recent)
    if ref.empty or rec.empty:
        return None
    union = ref.index.union(rec.index)
    return (
        ref.reindex(union, fill_value=0).to_numpy(dtype=float),
        rec.reindex(union, fill_value=0).to_numpy(dtype=float),
    )


def jensen_shannon(reference: pd.DataFrame, recent: pd.DataFrame) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) of item interaction shares over the union of items.

    0 for identical shares, 1 for disjoint item sets. NaN if either side has no interaction.
    Per-item shares make this sample-size dependent: two samples of ~4,000 events from the same Zipf
    distribution over 500 items are already ~0.22 apart (sampling noise in the tail), which is why
    the ``item_js`` check compares its excess over :func:`jensen_shannon_noise` with ``js_max``.
    """
    counts = aligned_item_counts(reference, recent)
    if counts is None:
        return math.nan
    p, q = counts
    value = float(jensenshannon(p, q, base=2))
    return 0.0 if math.isnan(value) else min(max(value, 0.0), 1.0)  # NaN only from sqrt(-0.0 rounding)


def jensen_shannon_noise(
    reference: pd.DataFrame, recent: pd.DataFrame, draws: int = 40, seed: int = 0
) -> float:
    """The Jensen-Shannon distance two windows of these sizes show with **no** drift.

    Per-item shares of a few thousand events are noisy (see :func:`jensen_shannon`), and the noise
    grows as the windows shrink. A parametric bootstrap under "no drift" measures it: both windows
    are redrawn ``draws`` times from the pooled item shares (multinomial, same sizes as the real
    windows) and the mean distance of the redrawn pairs is returned. Deterministic for a ``seed``.
    NaN if either side has no interaction.
    """
    counts = aligned_item_counts(reference, recent)
    if counts is None:
        return math.nan
    p, q = counts
    pooled = (p + q) / (p.sum() + q.sum())
    rng = np.random.default_rng(seed)
    a = rng.multinomial(int(p.sum()), pooled, size=draws).astype(float)
    b = rng.multinomial(int(q.sum()), pooled, size=draws).astype(float)
    values = jensenshannon(a, b, base=2, axis=1)
    return float(np.nanmean(values))


def ratings(events: pd.DataFrame) -> np.ndarray:
    if events.empty:
        return np.empty(0)
    rated = events[events["event_type"].astype("string") == "rating"]
    values = pd.to_numeric(rated["rating"], errors="coerce").to_numpy(dtype=float)
    return values[np.isfinite(values)]


def rating_ks(reference: pd.DataFrame, recent: pd.DataFrame) -> tuple[float, float]:
    """Two-sample KS test (statistic, p-value) of the rating values of rating events.

    ``(nan, nan)`` when either side has fewer than :data:`MIN_RATINGS` ratings. Ratings are discrete
    (half stars), which makes the test conservative (p-values too large), never trigger-happy.
    """
    ref, rec = ratings(reference), ratings(recent)
    if ref.size < MIN_RATINGS or rec.size < MIN_RATINGS:
        return math.nan, math.nan
    result = ks_2samp(ref, rec)
    return float(result.statistic), float(result.pvalue)


def unseen_share(recent: pd.DataFrame, known_items: set, known_users: set) -> tuple[float, float]:
    """(share of recent interactions on items not in ``known_items``, share by users not in ``known_users``).

    ``known_*`` are the champion's training items / users. NaN, NaN when there is no recent interaction.
    """
    inter = interactions(recent)
    if inter.empty:
        return math.nan, math.nan
    items_share = float((~inter["item_id"].isin(known_items)).mean())
    users_share = float((~inter["user"].isin(known_users)).mean())
    return items_share, users_share


# ---- report ----------------------------------------------------------------------------------
@dataclass
class DriftReport:
    """Outcome of :func:`detect_drift`.

    ``metrics``: every statistic computed (NaN when not computable). ``checks``: name -> drifted,
    for the checks that ran. ``reasons``: one line per drifted check, with the numbers.
    ``not_run``: check -> why it did not run. ``skipped``: why no check ran at all (or ``None``).
    """

    metrics: dict[str, float] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    not_run: dict[str, str] = field(default_factory=dict)
    skipped: str | None = None

    @property
    def drifted(self) -> bool:
        return any(self.checks.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: NaN and infinities become ``None``, numpy scalars plain Python numbers."""
        return json_safe(
            {
                "drifted": self.drifted,
                "skipped": self.skipped,
                "metrics": self.metrics,
                "checks": self.checks,
                "reasons": self.reasons,
                "not_run": self.not_run,
            }
        )

    def _check(self, name: str, drifted: bool, reason: str) -> None:
        self.checks[name] = bool(drifted)
        if drifted:
            self.reasons.append(reason)


def _finite(*values: float | None) -> bool:
    return all(v is not None and isinstance(v, int | float) and math.isfinite(v) for v in values)


def quality_drop(quality_now: float | None, quality_at_training: float | None) -> float:
    """(at_training - now) / at_training; NaN when either is missing/non-finite or at_training <= 0."""
    if not _finite(quality_now, quality_at_training) or quality_at_training <= 0:  # type: ignore[operator]
        return math.nan
    return (float(quality_at_training) - float(quality_now)) / float(quality_at_training)  # type: ignore[arg-type]


def detect_drift(
    reference: pd.DataFrame,
    recent: pd.DataFrame,
    thresholds: DriftThresholds,
    known_items: set | None = None,
    known_users: set | None = None,
    quality_now: float | None = None,
    quality_at_training: float | None = None,
) -> DriftReport:
    """Run every check whose inputs are available (see the module docstring)."""
    t = thresholds
    report = DriftReport()
    n_recent = len(interactions(recent))
    n_reference = len(interactions(reference))
    report.metrics.update({"recent_events": float(n_recent), "reference_events": float(n_reference)})

    drop = quality_drop(quality_now, quality_at_training)
    report.metrics["quality_drop"] = drop

    if n_recent < t.min_events:
        report.skipped = f"too few recent events: {n_recent} < {t.min_events}"
    elif n_reference == 0:
        report.skipped = "no reference events"
    if report.skipped:
        return report

    psi = item_popularity_psi(reference, recent)
    report.metrics["item_popularity_psi"] = psi
    report._check("item_popularity", psi > t.psi_max, f"item popularity PSI {psi:.3f} > {t.psi_max:g}")

    act = user_activity_psi(reference, recent)
    report.metrics["user_activity_psi"] = act
    report._check(
        "user_activity", act > t.activity_psi_max, f"user activity PSI {act:.3f} > {t.activity_psi_max:g}"
    )

    js = jensen_shannon(reference, recent)
    noise = jensen_shannon_noise(reference, recent)
    excess = js - noise
    report.metrics.update({"item_js": js, "item_js_noise": noise, "item_js_excess": excess})
    report._check(
        "item_js",
        excess > t.js_max,
        f"item popularity Jensen-Shannon distance {js:.3f} is {excess:.3f} above its sampling noise "
        f"{noise:.3f} (> {t.js_max:g})",
    )

    stat, pvalue = rating_ks(reference, recent)
    report.metrics.update({"rating_ks_statistic": stat, "rating_ks_pvalue": pvalue})
    if math.isnan(stat):
        report.not_run["rating_ks"] = f"fewer than {MIN_RATINGS} ratings on one side"
    else:
        report._check(
            "rating_ks",
            pvalue < t.ks_pvalue_min and stat >= t.ks_statistic_min,
            f"rating distribution KS statistic {stat:.3f} >= {t.ks_statistic_min:g} "
            f"with p-value {pvalue:.2g} < {t.ks_pvalue_min:g}",
        )

    items_share, users_share = unseen_share(recent, known_items or set(), known_users or set())
    items_share = math.nan if known_items is None else items_share
    users_share = math.nan if known_users is None else users_share
    report.metrics.update({"unseen_items_share": items_share, "unseen_users_share": users_share})
    if known_items is None:
        report.not_run["unseen_items"] = "known_items not given"
    else:
        report._check(
            "unseen_items",
            items_share > t.unseen_items_share_max,
            f"share of interactions on unseen items {items_share:.3f} > {t.unseen_items_share_max:g}",
        )
    if known_users is None:
        report.not_run["unseen_users"] = "known_users not given"
    else:
        report._check(
            "unseen_users",
            users_share > t.unseen_users_share_max,
            f"share of interactions by unseen users {users_share:.3f} > {t.unseen_users_share_max:g}",
        )

    if math.isnan(drop):
        report.not_run["quality"] = (
            "quality_now / quality_at_training missing, non-finite or at_training <= 0"
        )
    else:
        report._check(
            "quality",
            drop > t.quality_drop_max,
            f"NDCG@10 dropped {drop:.1%} ({quality_at_training:.4f} -> {quality_now:.4f}) "
            f"> {t.quality_drop_max:.0%}",
        )
    return report


class DriftConfig(BaseModel):
    """Settings of the drift monitor (``drift`` in the pipeline config file)."""

    model_config = ConfigDict(extra="forbid")

    thresholds: DriftThresholds = Field(default_factory=DriftThresholds)
    trigger_retrain: bool = Field(True, description="false: drift is logged and reported, never acted on")
    cooldown_hours: float = Field(
        168.0, gt=0.0, description="at most one early retrain within this many hours"
    )
    refresh: bool = Field(
        True, description="ingest, validate and anonymize the week in progress before each check"
    )
