"""History: the recent weeks a batch is compared with.

Read from ``reports/week=W/accounting.json`` of up to ``history_weeks`` earlier weeks whose
validation of that kind passed; with fewer than ``history_min_weeks`` of them, the history checks
are recorded as not checked, with the reason.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from datetime import date

from recsys.io.storage import Lake
from recsys.validation.config import ValidationConfig
from recsys.validation.suites import Bounds, num


@dataclass
class History:
    """Stats of ``kind`` in up to ``history_weeks`` earlier weeks whose validation of it passed.

    ``points[metric]``: ``(week, value)`` newest first, for ``rows`` (staged rows) and, for events,
    ``rating_share`` and ``distinct_users``.
    """

    kind: str
    points: dict[str, list[tuple[date, float]]] = field(default_factory=dict)
    source: str = ""  # where it was read, or why there is none

    def _enough(self, metric: str, config: ValidationConfig) -> tuple[list[float], str] | str:
        """The values and a description of where they come from, or why there are not enough."""
        points = self.points.get(metric, [])
        n = len(points)
        weeks = f"{n} earlier week{'s' if n != 1 else ''}"
        if config.history_weeks == 0:
            return "history checks are off (history_weeks = 0)"
        if n < config.history_min_weeks:
            return f"{weeks} with a passed validation {self.source}, need {config.history_min_weeks}"
        return [v for _, v in points], f"{weeks} ({points[-1][0].isoformat()} .. {points[0][0].isoformat()})"

    def _ratio_bounds(self, metric: str, ratio: float, config: ValidationConfig, upper: bool) -> Bounds:
        found = self._enough(metric, config)
        if isinstance(found, str):
            return Bounds(skipped=found)
        values, where = found
        median = statistics.median(values)
        return Bounds(
            low=math.floor(median / ratio),
            high=math.ceil(median * ratio) if upper else None,
            rule=(f"within {ratio:g}x" if upper else f"at least 1/{ratio:g}")
            + f" of the median {num(median)} of {where}",
        )

    def volume(self, config: ValidationConfig) -> Bounds:
        # snapshots (items, users) grow: only a fall far below the recent size is suspicious
        return self._ratio_bounds("rows", config.volume_ratio, config, upper=self.kind == "events")

    def users(self, config: ValidationConfig) -> Bounds:
        return self._ratio_bounds("distinct_users", config.distinct_users_ratio, config, upper=True)

    def share(self, config: ValidationConfig) -> Bounds:
        if config.rating_share_min is not None or config.rating_share_max is not None:
            return Bounds(config.rating_share_min, config.rating_share_max, rule="configured")
        found = self._enough("rating_share", config)
        if isinstance(found, str):
            return Bounds(skipped=found)
        values, where = found
        median = statistics.median(values)
        tol = config.rating_share_tolerance
        return Bounds(
            low=max(0.0, round(median - tol, 6)),
            high=min(1.0, round(median + tol, 6)),
            rule=f"median {median:.3f} +- {tol:g} of {where}",
        )


def load_history(lake: Lake | None, week: date, kind: str, config: ValidationConfig) -> History:
    """The recent weeks' accounting of ``kind`` before ``week``, newest first."""
    history = History(kind=kind)
    if lake is None:
        history.source = "(no lake to read history from)"
        return history
    history.source = f"in {lake.root / 'reports'}"
    weeks = 0
    for earlier in sorted((w for w in lake.weeks("reports") if w < week), reverse=True):
        if weeks >= config.history_weeks:
            break
        path = lake.partition("reports", earlier) / "accounting.json"
        try:
            acc = json.loads(path.read_text(encoding="utf-8")).get(kind)
        except (OSError, ValueError, AttributeError):
            continue
        if not isinstance(acc, dict) or not acc.get("passed") or "rows_staged" not in acc:
            continue
        weeks += 1
        history.points.setdefault("rows", []).append((earlier, int(acc["rows_staged"])))
        for metric, value in (acc.get("stats") or {}).items():
            if metric in ("rating_share", "distinct_users") and value is not None:
                history.points.setdefault(metric, []).append((earlier, float(value)))
    return history
