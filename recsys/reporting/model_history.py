"""The model-history page's data: every registered version with its evidence, and the latest drift
checks, read from MLflow (the registry and the drift experiment).

Plain dataclasses (:class:`ModelHistory`, :class:`VersionRow`, :class:`DriftCheck`), built by
:func:`version_row` and :func:`drift_check` from what MLflow holds and read by
:func:`load_model_history` (MLflow only inside it); :mod:`recsys.reporting.ui_pages` draws them.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recsys.core.aliases import CHALLENGER, CHAMPION
from recsys.core.formatting import finite_number
from recsys.reporting.mlflow_links import RUN_ID_PATTERN

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from recsys.core.settings import Settings

#: ranking metrics tagged on every version (``<metric>_at_<k>``), in the order the page shows them
KEY_METRICS = ("ndcg", "precision", "recall", "map", "hit_rate")

_METRIC_TAG = re.compile(r"^(baseline_)?([a-z_]+)_at_([0-9]+)$")
_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")


# ---- the model-history page: data --------------------------------------------------------------
@dataclass(frozen=True)
class VersionRow:
    """One registered version: the candidate of a week, with its evidence (version tags)."""

    version: str
    week: str
    trigger: str
    status: str  # passed / rejected / "" (no gate decision recorded)
    reasons: list[str]
    metrics: dict[str, float | None]  # "ndcg@10" -> value (the candidate's, on its week's holdout)
    baseline: dict[str, float | None]  # "ndcg@10" -> the popularity baseline's on the same holdout
    aliases: list[str]
    run_id: str | None
    experiment_id: str | None = None
    created: datetime | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def primary(self) -> str | None:
        """The first key metric present (``ndcg@k``)."""
        return next(iter(self.metrics), None)


@dataclass(frozen=True)
class DriftStat:
    label: str
    metric: str
    value: float | None
    threshold: float | None
    drifted: bool | None  # None: the check did not run (or the statistic is no check)
    lower_is_drift: bool = False
    check: str | None = None

    @property
    def verdict(self) -> str:
        if self.drifted is not None:
            return "drift" if self.drifted else "ok"
        if self.check is not None:
            return "not run"
        below = self.value is not None and self.threshold is not None and self.value < self.threshold
        return "below the minimum: checks skipped" if below else "ok"


@dataclass(frozen=True)
class DriftCheck:
    """One drift check (a run of the ``<experiment>_drift`` experiment)."""

    run_id: str
    experiment_id: str | None
    checked_at: datetime | None
    decision: str
    message: str
    champion_version: str
    recent_week: str
    reference_week: str
    stats: list[DriftStat]


@dataclass(frozen=True)
class ModelHistory:
    model_name: str
    tracking_uri: str
    mlflow_url: str
    drift_experiment: str = ""
    versions: list[VersionRow] = field(default_factory=list)  # newest first
    checks: list[DriftCheck] = field(default_factory=list)  # newest first
    model_exists: bool = False
    experiment_id: str | None = None  # of the training runs
    drift_experiment_id: str | None = None
    error: str | None = None  # MLflow could not be read: why
    generated_at: datetime = field(default_factory=lambda: datetime.now(tz=UTC))

    def with_alias(self, alias: str) -> VersionRow | None:
        return next((v for v in self.versions if alias in v.aliases), None)

    @property
    def champion(self) -> VersionRow | None:
        return self.with_alias(CHAMPION)

    @property
    def challenger(self) -> VersionRow | None:
        return self.with_alias(CHALLENGER)

    @property
    def last_check(self) -> DriftCheck | None:
        return self.checks[0] if self.checks else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (datetimes as ISO strings, NaN as None)."""
        return _json_ready(
            {
                **asdict(self),
                "champion": self.champion.version if self.champion else None,
                "challenger": self.challenger.version if self.challenger else None,
            }
        )


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _float(value: Any) -> float | None:
    """A finite number from a tag value (tags say "" or "n/a" for none), else None."""
    return None if value in ("", "n/a") else finite_number(value)


def _reasons(raw: str | None) -> list[str]:
    if not raw:
        return []
    try:
        parsed = json.loads(raw)
    except ValueError:
        return [raw]
    if isinstance(parsed, list):
        return [str(r) for r in parsed]
    return [str(parsed)]


def _from_millis(ms: Any) -> datetime | None:
    number = _float(ms)
    return datetime.fromtimestamp(number / 1000, tz=UTC) if number is not None else None


def version_row(
    version: str | int,
    tags: Mapping[str, str] | None,
    aliases: Iterable[str] = (),
    run_id: str | None = None,
    experiment_id: str | None = None,
    created_ms: int | float | None = None,
) -> VersionRow:
    """A :class:`VersionRow` from what the registry holds: the version's tags (as ``register``
    writes them: ``week``, ``trigger``, ``validation_status``, ``gate_reasons``, ``ndcg_at_10``,
    ``baseline_ndcg_at_10``, ...) and the registered model's aliases pointing at it."""
    tags = dict(tags or {})
    found: dict[tuple[str, str], dict[str, float | None]] = {}
    for key, value in tags.items():
        match = _METRIC_TAG.match(key)
        if match and match.group(2) in KEY_METRICS:
            role = "baseline" if match.group(1) else "candidate"
            found.setdefault((role, match.group(3)), {})[match.group(2)] = _float(value)
    ks = sorted({k for _, k in found}, key=int)
    k = "10" if "10" in ks else (ks[0] if ks else "10")

    def ordered(role: str) -> dict[str, float | None]:
        values = found.get((role, k), {})
        return {f"{m}@{k}": values[m] for m in KEY_METRICS if m in values}

    notes = []
    if tags.get("data_through"):
        notes.append(f"data through {tags['data_through']}")
    if tags.get("review"):
        notes.append(f"review: {tags['review']}")
    if tags.get("ab_test"):  # promotion mode ab: under test, queued, shipped or retired by a readout
        notes.append(f"A/B test: {tags['ab_test'][:300]}")
    if tags.get("previous_champion"):
        notes.append(f"replaced champion v{tags['previous_champion']}")
    if tags.get("rolled_back_to"):
        notes.append(f"champion again by rollback: {tags['rolled_back_to']}")
    if tags.get("rolled_back_from"):
        notes.append(f"rolled back from: {tags['rolled_back_from']}")
    return VersionRow(
        version=str(version),
        week=tags.get("week", ""),
        trigger=tags.get("trigger", ""),
        status=tags.get("validation_status", ""),
        reasons=_reasons(tags.get("gate_reasons")),
        metrics=ordered("candidate"),
        baseline=ordered("baseline"),
        aliases=sorted(aliases),
        run_id=run_id or None,
        experiment_id=experiment_id,
        created=_from_millis(created_ms),
        notes=notes,
    )


#: (label, metric of the drift run, threshold field of DriftThresholds, check name, lower is drift)
DRIFT_STATS: tuple[tuple[str, str, str, str | None, bool], ...] = (
    ("item popularity PSI", "item_popularity_psi", "psi_max", "item_popularity", False),
    ("user activity PSI", "user_activity_psi", "activity_psi_max", "user_activity", False),
    ("item JS distance above noise", "item_js_excess", "js_max", "item_js", False),
    ("rating KS p-value", "rating_ks_pvalue", "ks_pvalue_min", "rating_ks", True),
    ("share on unseen items", "unseen_items_share", "unseen_items_share_max", "unseen_items", False),
    ("share by unseen users", "unseen_users_share", "unseen_users_share_max", "unseen_users", False),
    ("NDCG@10 drop vs training", "quality_drop", "quality_drop_max", "quality", False),
    ("recent interactions", "recent_events", "min_events", None, True),
)


def drift_check(
    run_id: str,
    tags: Mapping[str, str] | None,
    metrics: Mapping[str, float] | None,
    params: Mapping[str, str] | None = None,
    experiment_id: str | None = None,
) -> DriftCheck:
    """A :class:`DriftCheck` from a drift run's tags, metrics and params (as :mod:`recsys.pipeline.monitor` logs them)."""
    tags, metrics, params = dict(tags or {}), dict(metrics or {}), dict(params or {})
    checked_at = None
    if tags.get("checked_at"):
        try:
            checked_at = datetime.fromisoformat(tags["checked_at"])
        except ValueError:
            checked_at = None
    if checked_at is None and _float(metrics.get("checked_at")) is not None:
        checked_at = datetime.fromtimestamp(float(metrics["checked_at"]), tz=UTC)
    stats = []
    for label, metric, threshold, check, lower in DRIFT_STATS:
        value = _float(metrics.get(metric))
        flag = metrics.get(f"drift_{check}") if check else None
        if value is None and flag is None:
            continue
        stats.append(
            DriftStat(
                label=label,
                metric=metric,
                value=value,
                threshold=_float(params.get(f"threshold.{threshold}")),
                drifted=None if flag is None else bool(flag),
                lower_is_drift=lower,
                check=check,
            )
        )
    return DriftCheck(
        run_id=run_id,
        experiment_id=experiment_id,
        checked_at=checked_at,
        decision=tags.get("decision", ""),
        message=tags.get("message", ""),
        champion_version=tags.get("champion_version", ""),
        recent_week=tags.get("recent_week", ""),
        reference_week=tags.get("reference_week", ""),
        stats=stats,
    )


# ---- the model-history page: reading MLflow ----------------------------------------------------
def redact(text: str) -> str:
    """``text`` with the credentials of any URL in it (``scheme://user:password@host``) masked."""
    return _USERINFO.sub("***@", text)


def missing_sqlite_store(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI when it does not exist (reading it would
    create an empty store), else None."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    path = Path(tracking_uri.removeprefix("sqlite:///").split("?", 1)[0])
    return None if path.exists() else path


def load_model_history(
    settings: Settings,
    client: MlflowClient | None = None,
    max_versions: int = 200,
    max_checks: int = 10,
) -> ModelHistory:
    """Everything the page shows, read from MLflow (the registry and the drift experiment).

    Never raises for MLflow trouble: an unreachable or broken store gives a history whose ``error``
    says what went wrong. Reads only (never creates a store, an experiment or a model).
    """
    base = ModelHistory(
        model_name=settings.model_name,
        tracking_uri=redact(settings.mlflow_tracking_uri),
        mlflow_url=settings.mlflow_public_url,
        drift_experiment=f"{settings.mlflow_experiment}_drift",
    )
    missing = missing_sqlite_store(settings.mlflow_tracking_uri)
    if missing is not None:
        return _replace(base, error=f"no MLflow store at {missing}: nothing has been tracked yet")
    try:
        if client is None:
            from mlflow import MlflowClient  # deferred: mlflow is heavy

            client = MlflowClient(
                tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri
            )
        return _read(base, client, settings, max_versions, max_checks)
    except Exception as exc:  # noqa: BLE001 - any MLflow or connection failure is shown, not raised
        detail = " ".join(str(exc).split())[:300]
        return _replace(
            base,
            error=redact(f"cannot read MLflow at {base.tracking_uri}: {exc.__class__.__name__}: {detail}"),
        )


def _replace(history: ModelHistory, **changes: Any) -> ModelHistory:
    return replace(history, **changes)


def _read(
    base: ModelHistory, client: MlflowClient, settings: Settings, max_versions: int, max_checks: int
) -> ModelHistory:
    from mlflow.exceptions import MlflowException  # deferred: mlflow is heavy

    name = settings.model_name
    training = client.get_experiment_by_name(settings.mlflow_experiment)
    drift = client.get_experiment_by_name(base.drift_experiment)
    try:
        model = client.get_registered_model(name)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") != "RESOURCE_DOES_NOT_EXIST":
            raise
        model = None
    versions: list[Any] = []
    if model is not None:
        token = None
        while len(versions) < max_versions:
            page = client.search_model_versions(
                f"name = '{name}'", max_results=min(200, max_versions), page_token=token
            )
            versions.extend(page)
            token = getattr(page, "token", None)
            if not token:
                break
    versions = sorted(versions, key=lambda mv: int(mv.version), reverse=True)[:max_versions]
    by_version: dict[str, list[str]] = {}
    for alias, number in ((model.aliases or {}) if model is not None else {}).items():
        by_version.setdefault(str(number), []).append(alias)
    experiments = _experiments_of(client, training, [mv.run_id for mv in versions if mv.run_id])
    rows = [
        version_row(
            mv.version,
            mv.tags,
            by_version.get(str(mv.version), []),
            run_id=mv.run_id,
            experiment_id=experiments.get(mv.run_id or ""),
            created_ms=mv.creation_timestamp,
        )
        for mv in versions
    ]
    checks = []
    if drift is not None:
        runs = client.search_runs(
            [drift.experiment_id],
            order_by=["metrics.checked_at DESC", "attributes.start_time DESC"],
            max_results=max_checks,
        )
        checks = [
            drift_check(r.info.run_id, r.data.tags, r.data.metrics, r.data.params, drift.experiment_id)
            for r in runs
        ]
        checks.sort(key=lambda c: c.checked_at or datetime.min.replace(tzinfo=UTC), reverse=True)
    return _replace(
        base,
        versions=rows,
        checks=checks,
        model_exists=model is not None,
        experiment_id=training.experiment_id if training is not None else None,
        drift_experiment_id=drift.experiment_id if drift is not None else None,
    )


def _experiments_of(client: MlflowClient, training: Any, run_ids: list[str]) -> dict[str, str]:
    """run id -> experiment id for the runs found in the training experiment (one search per 100)."""
    if training is None or not run_ids:
        return {}
    found: dict[str, str] = {}
    unique = sorted(set(run_ids))
    for start in range(0, len(unique), 100):
        chunk = unique[start : start + 100]
        listed = ", ".join(f"'{r}'" for r in chunk if RUN_ID_PATTERN.match(r))
        if not listed:
            continue
        runs = client.search_runs(
            [training.experiment_id],
            filter_string=f"attributes.run_id IN ({listed})",
            max_results=len(chunk),
        )
        found.update({r.info.run_id: r.info.experiment_id for r in runs})
    return found
