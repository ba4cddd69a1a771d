"""What one ``weekly_retrain`` run works on, and why: the week, the processing time, the trigger.

Airflow gives a run its type (``scheduled``, ``manual``, ``backfill``, ``asset_triggered``), its data
interval and an optional ``conf``. :func:`plan_run` turns them into a :class:`RunPlan`:

* **scheduled** and **backfill** runs work on the last complete week before their data interval end
  (:func:`recsys.core.intervals.partition_week`), so a backfill of a week gives what its scheduled run gave;
* a run whose conf names a ``week`` works on that week (any day of it; re-running an old week);
* an **early retrain** (the ``drift_monitor`` triggers one with ``{"trigger": "drift", "week": ...,
  "through": ...}``) works on the week in progress, with the data landed up to ``through``: that is
  the processing time validation checks timestamps against, and the share of the week that has
  elapsed scales the volume checks. The scheduled run at the end of the week processes the full
  week again (a new training digest, so a new model version).

Backfills do not move the ``champion`` alias unless ``backfill_promotion`` says so (default
``never``), and do not publish recommendations.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from recsys.core.errors import ConfigError
from recsys.core.intervals import parse_week, partition_week, week_bounds, week_start_of

BACKFILL = "backfill"


@dataclass(frozen=True)
class RunPlan:
    week: date
    trigger: str  # schedule | backfill | manual | drift | asset | ...
    run_type: str
    through: datetime | None = None  # processing time of a week in progress; None: the week is complete
    reasons: list[str] = field(default_factory=list)

    @property
    def backfill(self) -> bool:
        return self.run_type == BACKFILL

    @property
    def in_progress(self) -> bool:
        return self.through is not None

    def describe(self) -> str:
        what = f"week {self.week.isoformat()}"
        if self.through is not None:
            what += f" (in progress, data through {self.through.isoformat()})"
        why = f"{self.trigger} run" + (f": {'; '.join(self.reasons)}" if self.reasons else "")
        return f"{what}, {why}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "week": self.week.isoformat(),
            "trigger": self.trigger,
            "run_type": self.run_type,
            "through": self.through.isoformat() if self.through else None,
            "reasons": list(self.reasons),
        }


def _as_utc(moment: datetime) -> datetime:
    """A plain aware UTC ``datetime`` (Airflow hands out pendulum DateTimes, which pandas and Great
    Expectations do not compare with their timestamps)."""
    plain = datetime.fromisoformat(moment.isoformat())
    return plain.replace(tzinfo=UTC) if plain.tzinfo is None else plain.astimezone(UTC)


def parse_moment(value: Any, what: str) -> datetime:
    if isinstance(value, datetime):
        return _as_utc(value)
    try:
        return _as_utc(datetime.fromisoformat(str(value)))
    except ValueError:
        raise ConfigError(
            f"{what}: not an ISO date-time: {value!r} (e.g. 2026-11-25T12:00:00+00:00)"
        ) from None


def plan_run(
    run_type: str,
    data_interval_end: datetime | None,
    conf: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> RunPlan:
    """The plan of a run from what Airflow knows about it (see the module docstring).

    Raises :class:`ConfigError` for a conf that names a week in the future, a ``through`` outside its
    week, or values that do not parse.
    """
    conf = dict(conf or {})
    now = _as_utc(now or datetime.now(tz=UTC))
    run_type = str(getattr(run_type, "value", run_type) or "manual").lower()  # a DagRunType or its value
    through = parse_moment(conf["through"], "conf 'through'") if conf.get("through") else None
    if conf.get("week"):
        try:
            week = parse_week(str(conf["week"]))
        except ValueError as exc:
            raise ConfigError(f"conf 'week': {exc}") from None
    elif through is not None:
        week = week_start_of(through)
    else:
        week = partition_week(data_interval_end or now)
    if week > week_start_of(now):
        source = "conf 'week'" if conf.get("week") else "week"
        raise ConfigError(
            f"{source} {week.isoformat()} is in the future (now is {now.isoformat()}): nothing to work on yet"
        )
    if through is not None:
        start, end = week_bounds(week)
        if through <= start:
            raise ConfigError(
                f"conf 'through' {through.isoformat()} is not after week {week.isoformat()} starts"
            )
        if through >= end:
            through = None  # the week has ended: a complete week
    reasons = conf.get("reasons") or conf.get("reason") or []
    if isinstance(reasons, str):
        reasons = [reasons]
    default_trigger = {"scheduled": "schedule", "asset_triggered": "asset"}.get(run_type, run_type)
    return RunPlan(
        week=week,
        trigger=str(conf.get("trigger") or default_trigger),
        run_type=run_type,
        through=through,
        reasons=[str(r) for r in reasons],
    )
