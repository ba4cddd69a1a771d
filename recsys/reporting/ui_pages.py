"""What the Airflow UI shows of MLflow: links from tasks to their runs and model versions, and the
model-history page.

Plain, typed functions on plain data (no Airflow import, MLflow only inside
:func:`load_model_history`), so they are unit-tested without a web server; ``plugins/recsys_plugin.py``
only wires them into Airflow.

MLflow UI addresses (MLflow 3, hash routes of its single-page app; ``base`` is
:attr:`~recsys.core.settings.Settings.mlflow_public_url`):

=================== =========================================================================
what                URL
=================== =========================================================================
run                 ``<base>/#/experiments/<experiment_id>/runs/<run_id>``
run, experiment     ``<base>/#/runs/<run_id>``: MLflow looks the run up and redirects to the
unknown             form above (so a task link needs no MLflow call)
run artifact        ``<base>/#/experiments/<experiment_id>/runs/<run_id>/artifacts/<path>``
experiment          ``<base>/#/experiments/<experiment_id>``
registered model    ``<base>/#/models/<name>``
model version       ``<base>/#/models/<name>/versions/<version>``
=================== =========================================================================
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from recsys.reporting.model_report import _CSS, _e, _fmt, _note, _number

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from recsys.core.settings import Settings

#: names of the Airflow extra links (buttons on a task instance)
RUN_LINK_NAME = "MLflow run"
MODEL_VERSION_LINK_NAME = "Model version"

#: keys of a task's result (XCom ``return_value``) that hold an MLflow run id, in order of preference
RUN_ID_KEYS = ("mlflow_run_id", "run_id")
#: tasks whose result has no run id but that work on another task's run (same DAG run)
RUN_FROM_TASK = {"evaluate": "train", "gate": "train"}
#: keys of a task's result that hold a model version number, in order of preference
VERSION_KEYS = ("version", "model_version", "champion")
#: the task whose result names the registered model when a result has a version but no name
NAME_FROM_TASK = "register"

CHAMPION = "champion"
CHALLENGER = "challenger"
REPORT_ARTIFACT = "report/model_report.html"
DRIFT_HISTORY_ARTIFACT = "drift/history.html"
#: ranking metrics tagged on every version (``<metric>_at_<k>``), in the order the page shows them
KEY_METRICS = ("ndcg", "precision", "recall", "map", "hit_rate")

_RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_VERSION = re.compile(r"^[0-9]{1,9}$")
_METRIC_TAG = re.compile(r"^(baseline_)?([a-z_]+)_at_([0-9]+)$")
_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")


# ---- MLflow UI URLs ----------------------------------------------------------------------------
def mlflow_base(url: str) -> str:
    """The MLflow UI root a link starts from: no trailing slash, no fragment."""
    return url.split("#", 1)[0].rstrip("/")


def _segment(value: Any) -> str:
    return quote(str(value), safe="")


def run_url(base: str, run_id: str, experiment_id: str | None = None, artifact: str | None = None) -> str:
    """A run's page; ``artifact`` (a path inside the run) needs ``experiment_id``."""
    root = mlflow_base(base)
    if not experiment_id:
        return f"{root}/#/runs/{_segment(run_id)}"
    url = f"{root}/#/experiments/{_segment(experiment_id)}/runs/{_segment(run_id)}"
    if artifact:
        url += "/artifacts/" + "/".join(_segment(part) for part in artifact.split("/"))
    return url


def experiment_url(base: str, experiment_id: str) -> str:
    return f"{mlflow_base(base)}/#/experiments/{_segment(experiment_id)}"


def model_url(base: str, name: str) -> str:
    return f"{mlflow_base(base)}/#/models/{_segment(name)}"


def model_version_url(base: str, name: str, version: str | int) -> str:
    return f"{mlflow_base(base)}/#/models/{_segment(name)}/versions/{_segment(version)}"


# ---- task results -> links ---------------------------------------------------------------------
def run_id_of(result: Any) -> str | None:
    """The MLflow run id a task result (XCom ``return_value``) names, or None."""
    if not isinstance(result, Mapping):
        return None
    for key in RUN_ID_KEYS:
        value = result.get(key)
        if isinstance(value, str) and _RUN_ID.match(value):
            return value
    return None


def model_version_of(result: Any) -> tuple[str | None, str] | None:
    """``(name or None, version)`` of the model version a task result names, or None."""
    if not isinstance(result, Mapping):
        return None
    for key in VERSION_KEYS:
        value = result.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str) and _VERSION.match(value):
            name = result.get("name")
            return (name if isinstance(name, str) and name else None), value
    return None


#: reads the ``return_value`` XCom of a task (by task id) of the same DAG run; None when there is none
ResultReader = Callable[[str], Any]


def task_run_link(base: str, task_id: str, read_result: ResultReader) -> str:
    """The "MLflow run" link of a task: its result's run, or the run of the task it works on
    (:data:`RUN_FROM_TASK`); "" when there is none."""
    run_id = run_id_of(read_result(task_id))
    if run_id is None and task_id in RUN_FROM_TASK:
        run_id = run_id_of(read_result(RUN_FROM_TASK[task_id]))
    return run_url(base, run_id) if run_id else ""


def task_model_version_link(base: str, task_id: str, read_result: ResultReader, default_name: str) -> str:
    """The "Model version" link of a task whose result names a version; "" when it names none.

    The model's name comes from the result, else from the run's ``register`` result, else
    ``default_name`` (the configured model name).
    """
    found = model_version_of(read_result(task_id))
    if found is None:
        return ""
    name, version = found
    if name is None and task_id != NAME_FROM_TASK:
        registered = read_result(NAME_FROM_TASK)
        if isinstance(registered, Mapping) and isinstance(registered.get("name"), str):
            name = registered["name"] or None
    return model_version_url(base, name or default_name, version)


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
    return None if value in ("", "n/a") else _number(value)


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
            from mlflow import MlflowClient

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
    from dataclasses import replace

    return replace(history, **changes)


def _read(
    base: ModelHistory, client: MlflowClient, settings: Settings, max_versions: int, max_checks: int
) -> ModelHistory:
    from mlflow.exceptions import MlflowException

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
        listed = ", ".join(f"'{r}'" for r in chunk if _RUN_ID.match(r))
        if not listed:
            continue
        runs = client.search_runs(
            [training.experiment_id],
            filter_string=f"attributes.run_id IN ({listed})",
            max_results=len(chunk),
        )
        found.update({r.info.run_id: r.info.experiment_id for r in runs})
    return found


# ---- the model-history page: HTML --------------------------------------------------------------
_PAGE_CSS = """
body{max-width:1300px}
.cards{display:flex;gap:16px;flex-wrap:wrap;margin:8px 0 4px}
.card{border:1px solid #ddd;border-radius:6px;padding:10px 14px;min-width:260px;background:#fafafa}
.card h3{margin:0 0 6px;font-size:14px;color:#616161;text-transform:uppercase;letter-spacing:.04em}
.card .big{font-size:20px;font-weight:600}
.alias{display:inline-block;padding:1px 7px;border-radius:10px;font-size:12px;color:#fff;margin-right:4px}
.alias.champion{background:#6a1b9a}.alias.challenger{background:#ef6c00}
.decision{font-weight:600}.decision.retrain{color:#c62828}.decision.no_drift{color:#2e7d32}
details summary{cursor:pointer;color:#1565c0}
#versions td:last-child{font-size:12px;color:#616161;max-width:320px}
.error{border:1px solid #c62828;background:#ffebee;padding:10px 14px;border-radius:6px}
a{color:#1565c0}
"""


def _grid(header: list[str], rows: list[tuple[str, list[str]]], left: set[int], table_id: str) -> str:
    """A table; ``header`` cells are raw text (escaped here), row cells HTML already; columns in
    ``left`` are left-aligned."""

    def align(i: int) -> str:
        return ' class="l"' if i in left else ""

    head = "".join(f"<th{align(i)}>{_e(h)}</th>" for i, h in enumerate(header))
    body = "".join(
        f'<tr class="{css}">' + "".join(f"<td{align(i)}>{c}</td>" for i, c in enumerate(cells)) + "</tr>"
        for css, cells in rows
    )
    return f'<table id="{_e(table_id)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _link(url: str, text: str) -> str:
    return f'<a href="{_e(url)}" target="_blank" rel="noopener noreferrer">{_e(text)}</a>'


def _status_badge(status: str) -> str:
    css = status if status in ("passed", "rejected") else "pending"
    return f'<span class="badge {css}">{_e((status or "no gate").upper())}</span>'


def _aliases(aliases: list[str]) -> str:
    return "".join(f'<span class="alias {_e(a)}">{_e(a)}</span>' for a in aliases)


def _when(moment: datetime | None) -> str:
    return _e(moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")) if moment else "&ndash;"


def _version_links(h: ModelHistory, row: VersionRow) -> list[str]:
    links = [_link(model_version_url(h.mlflow_url, h.model_name, row.version), f"version {row.version}")]
    if row.run_id:
        links.append(_link(run_url(h.mlflow_url, row.run_id, row.experiment_id), "run"))
        if row.experiment_id:
            links.append(
                _link(run_url(h.mlflow_url, row.run_id, row.experiment_id, REPORT_ARTIFACT), "report")
            )
    return links


def _card(title: str, h: ModelHistory, row: VersionRow | None, empty: str) -> str:
    if row is None:
        return f'<div class="card" id="{_e(title)}"><h3>{_e(title)}</h3>{_note(empty)}</div>'
    primary = row.primary
    value = row.metrics.get(primary) if primary else None
    facts = [f"week {_e(row.week or '?')}", f"trigger {_e(row.trigger or '?')}"]
    if primary:
        facts.append(f"{_e(primary)} {_fmt(value)}")
    return (
        f'<div class="card" id="{_e(title)}"><h3>{_e(title)}</h3>'
        f'<div class="big">version {_e(row.version)} {_status_badge(row.status)}</div>'
        f"<div>{' &middot; '.join(facts)}</div>"
        f"<div>{' &middot; '.join(_version_links(h, row))}</div></div>"
    )


def _gate_cell(row: VersionRow) -> str:
    badge = _status_badge(row.status)
    if not row.reasons:
        return badge
    items = "".join(
        f'<li class="{"pass" if r.startswith("PASS") else "fail" if r.startswith("FAIL") else ""}">{_e(r)}</li>'
        for r in row.reasons
    )
    failed = sum(1 for r in row.reasons if r.startswith("FAIL"))
    summary = f"{failed} failed" if failed else f"{len(row.reasons)} checks"
    return f'{badge} <details><summary>{summary}</summary><ul class="reasons">{items}</ul></details>'


def _versions_table(h: ModelHistory) -> str:
    metric_names: list[str] = []
    for row in h.versions:
        metric_names.extend(m for m in row.metrics if m not in metric_names)
    primary = metric_names[0] if metric_names else None
    header = ["version", "aliases", "week", "trigger", "gate", *metric_names]
    if primary:
        header.append(f"baseline {primary}")
    header += ["registered", "MLflow", "notes"]
    rows = []
    for row in h.versions:
        cells = [
            _link(model_version_url(h.mlflow_url, h.model_name, row.version), row.version),
            _aliases(row.aliases),
            _e(row.week) or "&ndash;",
            _e(row.trigger) or "&ndash;",
            _gate_cell(row),
            *[_fmt(row.metrics.get(m)) for m in metric_names],
        ]
        if primary:
            cells.append(_fmt(row.baseline.get(primary)))
        cells += [
            _when(row.created),
            " &middot; ".join(_version_links(h, row)[1:]) or "&ndash;",
            "<br>".join(_e(n) for n in row.notes),
        ]
        css = "best" if CHAMPION in row.aliases else ""
        rows.append((css, cells))
    return _grid(header, rows, left={0, 1, 2, 3, 4, len(header) - 2, len(header) - 1}, table_id="versions")


def _drift_section(h: ModelHistory) -> str:
    check = h.last_check
    if check is None:
        return _note(
            "No drift check yet: the drift_monitor DAG logs one MLflow run per check "
            f"(experiment {h.drift_experiment})."
        )
    decision = f'<span class="decision {_e(check.decision)}">{_e(check.decision or "?")}</span>'
    links = [_link(run_url(h.mlflow_url, check.run_id, check.experiment_id), "check run")]
    if check.experiment_id:
        links.append(
            _link(
                run_url(h.mlflow_url, check.run_id, check.experiment_id, DRIFT_HISTORY_ARTIFACT),
                "history chart",
            )
        )
        links.append(_link(experiment_url(h.mlflow_url, check.experiment_id), "all checks"))
    facts = (
        f"<p>Last check {_when(check.checked_at)}: {decision} &mdash; {_e(check.message) or '&ndash;'}</p>"
        f"<p class='sub'>champion version {_e(check.champion_version or '?')}, recent week "
        f"{_e(check.recent_week or '?')} against its training week {_e(check.reference_week or '?')} "
        f"&middot; {' &middot; '.join(links)}</p>"
    )
    rows = []
    for stat in check.stats:
        limit = "&ndash;" if stat.threshold is None else ("&ge; " if stat.lower_is_drift else "&le; ")
        if stat.threshold is not None:
            limit += _fmt(stat.threshold)
        verdict = '<span class="down">drift</span>' if stat.drifted else _e(stat.verdict)
        rows.append(("primary" if stat.drifted else "", [_e(stat.label), _fmt(stat.value), limit, verdict]))
    stats = (
        _grid(["statistic", "value", "allowed", "verdict"], rows, left={0}, table_id="drift-stats")
        if rows
        else _note("This check computed no statistic (it was skipped).")
    )
    recent = ""
    if len(h.checks) > 1:
        recent_rows = [
            (
                "",
                [
                    _when(c.checked_at),
                    f'<span class="decision {_e(c.decision)}">{_e(c.decision)}</span>',
                    _e(c.message[:160]),
                    _link(run_url(h.mlflow_url, c.run_id, c.experiment_id), "run"),
                ],
            )
            for c in h.checks
        ]
        recent = "<h3>Recent checks</h3>" + _grid(
            ["checked at", "decision", "message", ""], recent_rows, left={0, 1, 2}, table_id="drift-checks"
        )
    return facts + stats + recent


def render_model_history(h: ModelHistory) -> str:
    """The model-history page: one self-contained HTML document (inline CSS, no script)."""
    title = f"{h.model_name}: model history"
    head = (
        f"<h1>{_e(title)}</h1><p class='sub'>MLflow {_link(h.mlflow_url, h.mlflow_url)} "
        f"(tracking {_e(h.tracking_uri)}) &middot; read {_when(h.generated_at)}</p>"
    )
    if h.error:
        body = (
            f'<div class="error" id="mlflow-error"><b>MLflow is not reachable.</b> {_e(h.error)}<br>'
            "The Airflow UI and the DAGs are not affected; reload this page when MLflow is back.</div>"
        )
    else:
        if not h.model_exists or not h.versions:
            intro = _note(
                f"No version of {h.model_name} is registered yet: the weekly_retrain DAG registers "
                "one candidate per week (trigger it, or run `make run`)."
            )
            cards = ""
        else:
            intro = ""
            cards = (
                '<div class="cards">'
                + _card(CHAMPION, h, h.champion, "No version holds the champion alias yet.")
                + _card(
                    CHALLENGER, h, h.challenger, "No challenger (none waits for review or is under A/B test)."
                )
                + "</div>"
            )
        versions = (
            f"<h2>Candidates by week ({len(h.versions)} version{'s' if len(h.versions) != 1 else ''}, "
            "newest first)</h2>"
            + _versions_table(h)
            + _note(
                "Each weekly_retrain run registers its candidate with the gate's decision and its "
                "metrics on that week's holdout (tags of the version); champion moves only on a "
                "passed gate."
            )
            if h.versions
            else ""
        )
        drift = "<h2>Drift monitor</h2>" + _drift_section(h)
        links = ""
        if h.model_exists:
            links = f"<p>{_link(model_url(h.mlflow_url, h.model_name), 'registered model in MLflow')}"
            if h.experiment_id:
                links += " &middot; " + _link(
                    experiment_url(h.mlflow_url, h.experiment_id), "training runs in MLflow"
                )
            links += "</p>"
        body = intro + cards + links + versions + drift
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_e(title)}</title><style>{_CSS}{_PAGE_CSS}</style></head><body>"
        + head
        + body
        + "</body></html>"
    )
