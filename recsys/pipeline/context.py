"""What every stage works with: the week, settings, config, the lake and why the run happens.

Also the stage names: the automatic sequence of ``weekly_retrain`` (:data:`STAGES`), the A/B test's
(:data:`AB_STAGES`), the ones that need the pseudonymization key (:data:`KEYED_STAGES`) and what the
``window`` stage runs on each earlier week of the window (:data:`WINDOW_STAGES`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TypeVar

from recsys.core.chaos import checkpoint
from recsys.core.errors import DataNotFoundError
from recsys.core.runplan import RunPlan
from recsys.core.settings import Settings, pseudonym_key
from recsys.io.storage import ATTEMPT, Lake, current_attempt, json_safe
from recsys.pipeline.config import PipelineConfig
from recsys.pipeline.results import StageResult

STAGES = (
    "window",
    "ingest",
    "validate",
    "anonymize",
    "prepare",
    "content",
    "train",
    "evaluate",
    "gate",
    "register",
    "recommend",
    "privacy_scan",
)
AB_STAGES = ("feedback", "ab_readout")
"""The A/B test's stages (the ab_readout Dag's tasks), run on the week the lists were shown in."""
KEYED_STAGES = ("window", "anonymize", "feedback")
"""Stages that pseudonymize raw input and so need the key."""
FINAL_STAGES = ("privacy_scan", "ab_readout")
"""The last task of each Dag: an Airflow run gives its week's lease back when it ends."""
WINDOW_STAGES = ("ingest", "validate", "anonymize")
"""What the ``window`` stage runs on each earlier window week that has raw data but no anonymized events."""

R = TypeVar("R", bound=StageResult)


@dataclass(frozen=True)
class StageContext:
    week: date
    settings: Settings
    config: PipelineConfig
    lake: Lake
    # the pseudonymization key when it comes from elsewhere than the environment (an Airflow
    # Variable / secrets backend); never logged, never part of a result
    key: bytes | None = field(default=None, repr=False)
    # why and how this run works on its week (Airflow's run type and conf); None: a plain run
    plan: RunPlan | None = None
    # who works on the week, for its lease (recsys.io.lease): an Airflow run names itself and keeps the
    # week between its tasks (keep_lease); None: this process, which gives the week back after its stage
    holder: str | None = None
    keep_lease: bool = False
    # seconds to wait for another run of the week to finish before failing with who holds it
    lease_wait: float = 0.0

    @classmethod
    def create(
        cls,
        week: date,
        settings: Settings | None = None,
        config: PipelineConfig | None = None,
        key: bytes | None = None,
        plan: RunPlan | None = None,
        holder: str | None = None,
        keep_lease: bool = False,
        lease_wait: float = 0.0,
    ) -> StageContext:
        settings = settings or Settings.from_env()
        config = config or PipelineConfig.load(settings.config_file)
        if plan is not None and plan.backfill:
            # a backfill recomputes history: it moves champion only when configured to
            config = config.model_copy(update={"promotion": config.backfill_promotion})
        return cls(
            week=week,
            settings=settings,
            config=config,
            lake=Lake.from_settings(settings),
            key=key,
            plan=plan,
            holder=holder,
            keep_lease=keep_lease,
            lease_wait=lease_wait,
        )

    @property
    def now(self) -> datetime | None:
        """The processing time of a week in progress (an early retrain); None: the week is complete."""
        return self.plan.through if self.plan is not None else None

    @property
    def trigger(self) -> str:
        return self.plan.trigger if self.plan is not None else "manual"

    def run_tags(self) -> dict[str, str]:
        """Tags every MLflow run and model version of this run carries: what triggered it, on what data."""
        tags = {"trigger": self.trigger}
        if self.now is not None:
            tags["data_through"] = self.now.isoformat()
        return tags

    def pseudonym_key(self) -> bytes:
        return self.key if self.key is not None else pseudonym_key()

    def result(self, kind: type[R]) -> R:
        """What stage ``kind.stage`` recorded for this week; fails when it has not run."""
        found = self.recorded(kind)
        if found is None:
            raise DataNotFoundError(
                f"stage '{kind.stage}' has no result for week {self.week.isoformat()}: run it before this one"
            )
        return found

    def recorded(self, kind: type[R]) -> R | None:
        """What stage ``kind.stage`` recorded for this week, or None when it has not run."""
        found = self.lake.read_stage_result(self.week, kind.stage)
        return None if found is None else kind.from_record(found)

    def record(self, result: R) -> R:
        """Record ``result`` as this week's result of its stage (``runs/week=.../<stage>.json``) and
        return it as recorded: JSON-safe (numpy scalars plain, NaN and infinities None)."""
        recorded = json_safe(result.to_xcom())
        checkpoint(f"record:{result.stage}")
        # the attempt commits the partitions the stage wrote (recsys.io.storage.commit_partition)
        attempt = current_attempt()
        self.lake.write_stage_result(
            self.week, result.stage, recorded if attempt is None else {**recorded, ATTEMPT: attempt}
        )
        return type(result).from_record(recorded)
