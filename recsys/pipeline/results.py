"""Typed stage results: what each stage of the weekly run returns and records.

A stage records its result in ``runs/week=.../<stage>.json`` and returns it as one of these frozen
dataclasses. :meth:`StageResult.to_xcom` is that record as a JSON-able dict: what Airflow pushes to
XCom, what ``recsys stage`` prints and what the file holds. :meth:`StageResult.from_record` reads a
record back, so a stage reads what an earlier stage recorded by attribute
(``ctx.result(TrainResult).run_id``), never by key.

The record's keys: ``stage`` and ``week`` first, then one key per field in field order, then
``compute_seconds`` (the stage's own time, added by :func:`recsys.pipeline.runner.run_stage`). A
field declared with :func:`optional` is a key only when it has a value (the ``reason`` of a skipped
stage, the ``experiment`` of lists served in an A/B test); keys of a record that no field names are
kept in ``extra`` and written back unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, Self

from recsys.io.storage import ATTEMPT
from recsys.promotion.gates import GateDecision
from recsys.promotion.registry import Registration

_OPTIONAL = "omit_when_none"
_FRAME = ("week", "compute_seconds", "extra")  # written apart from the stage's own fields


def optional() -> Any:
    """A field that is a key of the record only when it holds a value (not None)."""
    return field(default=None, metadata={_OPTIONAL: True})


@dataclass(frozen=True, kw_only=True)
class StageResult:
    """What one stage did for one week (``week``: the week's Sunday, ISO)."""

    stage: ClassVar[str]

    week: str
    compute_seconds: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def to_xcom(self) -> dict[str, Any]:
        """The result as recorded in ``runs/week=.../<stage>.json`` and pushed to XCom."""
        out: dict[str, Any] = {"stage": self.stage, "week": self.week}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _FRAME or (value is None and f.metadata.get(_OPTIONAL)):
                continue
            out[f.name] = value
        out.update(self.extra)
        if self.compute_seconds is not None:
            out["compute_seconds"] = self.compute_seconds
        return out

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Self:
        """The result a stage recorded (a dict as :meth:`to_xcom` returns it). Raises ValueError on
        the record of another stage or one without a key the result always has."""
        if record.get("stage", cls.stage) != cls.stage:
            raise ValueError(f"not a {cls.stage} result: the record is of stage {record.get('stage')!r}")
        names = {f.name for f in fields(cls) if f.name != "extra"}
        missing = [
            f.name
            for f in fields(cls)
            if f.name in names
            and f.name not in record
            and f.default is MISSING
            and f.default_factory is MISSING
        ]
        if missing:
            raise ValueError(f"not a {cls.stage} result: missing {', '.join(missing)}; re-run the stage")
        return cls(
            **{k: v for k, v in record.items() if k in names},
            extra={k: v for k, v in record.items() if k not in names and k not in ("stage", ATTEMPT)},
        )


@dataclass(frozen=True, kw_only=True)
class WindowResult(StageResult):
    """The training window brought up to ``anonymized`` (``window`` is the plan's ``to_dict()``)."""

    stage: ClassVar[str] = "window"

    mode: str
    processed: list[str]
    failed: dict[str, str]
    window: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class IngestResult(StageResult):
    """Per raw kind, what was staged (:func:`recsys.data.ingest.ingest_week`)."""

    stage: ClassVar[str] = "ingest"

    kinds: dict[str, dict[str, Any]]


@dataclass(frozen=True, kw_only=True)
class ValidateResult(StageResult):
    """The week's validation: per-kind accounting, the reports and the MLflow run it was logged to."""

    stage: ClassVar[str] = "validate"

    accounting: dict[str, Any]
    report_html: str
    report_json: str
    passed: bool
    mlflow_run_id: str | None


@dataclass(frozen=True, kw_only=True)
class AnonymizeResult(StageResult):
    stage: ClassVar[str] = "anonymize"

    events: int
    users: int
    items: int
    k_anonymity: dict[str, Any]
    events_of_erased_users_dropped: int
    columns: dict[str, list[str]]


@dataclass(frozen=True, kw_only=True)
class PrepareResult(StageResult):
    """The training pairs and holdout of the window (:func:`recsys.data.prepare.prepare`'s stats)."""

    stage: ClassVar[str] = "prepare"

    events_in: int
    duplicates_dropped: int
    pairs: int
    pairs_without_preference: int
    train_pairs: int
    holdout_pairs: int
    users: int
    items: int
    holdout_users: int
    train_digest: str
    window_weeks: list[str]
    window_size: int | None = optional()
    window: str | None = optional()  # "window: N of M weeks ..."
    profile: str


@dataclass(frozen=True, kw_only=True)
class ContentResult(StageResult):
    stage: ClassVar[str] = "content"

    run_id: str
    path: str
    items: int
    features: int
    content_digest: str


@dataclass(frozen=True, kw_only=True)
class TrainResult(StageResult):
    """The trained (or reused: ``reused``) model's MLflow run and what it was fitted with."""

    stage: ClassVar[str] = "train"

    run_id: str
    model_uri: str
    fit_seconds: float | None
    rank: int
    users: int
    items: int
    als: dict[str, Any]
    tuning: dict[str, Any] | None
    served_model: str
    hybrid: dict[str, dict[str, float]] | None
    reused: bool


@dataclass(frozen=True, kw_only=True)
class EvaluateResult(StageResult):
    """Candidate, champion and baseline metrics at ``k``, and per-model segment metrics (``models``)."""

    stage: ClassVar[str] = "evaluate"

    k: int
    served_model: str | None = optional()
    candidate: dict[str, Any]
    baseline: dict[str, Any]
    champion: dict[str, Any] | None
    champion_version: str | None
    models: dict[str, Any] | None = optional()
    # the MLflow run holding this evaluation: the train run, or a new run when the train run is a
    # reused one that was already gated (its evidence is immutable: recsys.pipeline.model_stages)
    evaluation_run_id: str | None = optional()


@dataclass(frozen=True, kw_only=True)
class GateResult(StageResult):
    """The gate's decision (:meth:`recsys.promotion.gates.GateDecision.to_dict`)."""

    stage: ClassVar[str] = "gate"

    passed: bool
    reasons: list[str]
    checks: dict[str, bool]
    metrics: dict[str, Any]

    def decision(self) -> GateDecision:
        return GateDecision.from_dict(self.to_xcom())


@dataclass(frozen=True, kw_only=True)
class RegisterResult(StageResult, Registration):
    """The registered model version (the registry's :class:`Registration` fields first), how it was
    promoted, and ``review``: pending, not needed or approved."""

    stage: ClassVar[str] = "register"

    promotion: str
    review: str
    note: str | None


@dataclass(frozen=True, kw_only=True)
class PromoteResult(StageResult):
    stage: ClassVar[str] = "promote"

    version: str
    changed: bool
    approved_by: str | None
    aliases: list[str]


@dataclass(frozen=True, kw_only=True)
class RecommendResult(StageResult):
    """``status`` written (the rest set) or skipped (``reason``); ``experiment``: the A/B test served."""

    stage: ClassVar[str] = "recommend"

    status: str
    reason: str | None = optional()
    path: str | None = optional()
    rows_path: str | None = optional()
    users: int | None = optional()
    rows: int | None = optional()
    page_rows: dict[str, int] | None = optional()
    sources: dict[str, int] | None = optional()
    model_version: str | None = optional()
    experiment: dict[str, Any] | None = optional()


@dataclass(frozen=True, kw_only=True)
class PrivacyScanResult(StageResult):
    """The leak scan's report (:meth:`recsys.privacy.scan.LeakReport.to_dict`)."""

    stage: ClassVar[str] = "privacy_scan"

    clean: bool
    files_scanned: int
    findings: list[dict[str, Any]]
    unscanned: list[dict[str, str]]
    checked: dict[str, int]
    identifiers: dict[str, int]
    identifiers_not_in_text: int


@dataclass(frozen=True, kw_only=True)
class FeedbackResult(StageResult):
    """``status`` ingested (the feedback log's accounting set) or skipped (``reason``)."""

    stage: ClassVar[str] = "feedback"

    status: str
    reason: str | None = optional()
    files: list[str] | None = optional()
    read: int | None = optional()
    used: int | None = optional()
    quarantined: int | None = optional()
    erased: int | None = optional()
    by_reason: dict[str, int] | None = optional()
    path: str | None = optional()
    quarantine_path: str | None = optional()
    blank_lines: int | None = optional()
    bytes: int | None = optional()
    sha256: str | None = optional()


@dataclass(frozen=True, kw_only=True)
class AbReadoutResult(StageResult):
    """``status`` read out (decision, action, readout set) or skipped (``reason``, and as much of the
    test as was known then)."""

    stage: ClassVar[str] = "ab_readout"

    experiment_id: str | None = optional()
    promotion: str | None = optional()
    challenger_version: str | None = optional()
    champion_version: str | None = optional()
    served_weeks: list[str] | None = optional()
    awaiting_feedback: list[str] | None = optional()
    status: str
    reason: str | None = optional()
    weeks: list[str] | None = optional()
    decision: str | None = optional()
    summary: str | None = optional()
    action: str | None = optional()
    mlflow_run_id: str | None = optional()
    report: str | None = optional()
    readout: dict[str, Any] | None = optional()


RESULT_TYPES: dict[str, type[StageResult]] = {
    cls.stage: cls
    for cls in (
        WindowResult,
        IngestResult,
        ValidateResult,
        AnonymizeResult,
        PrepareResult,
        ContentResult,
        TrainResult,
        EvaluateResult,
        GateResult,
        RegisterResult,
        PromoteResult,
        RecommendResult,
        PrivacyScanResult,
        FeedbackResult,
        AbReadoutResult,
    )
}
"""The result type of each stage, by stage name."""
