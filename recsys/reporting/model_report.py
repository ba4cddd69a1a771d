"""The model report a reviewer reads in the MLflow UI: one self-contained HTML file per candidate.

Everything is inline (CSS in a ``<style>`` block, plots as base64 PNGs drawn with matplotlib's Agg
backend, no script, no external URL), so the file renders the same in MLflow's artifact viewer, in
a browser from disk, or attached to a ticket. Every value that comes from data or configuration is
HTML-escaped.

:func:`render_model_report` takes one ``context`` dict; every key is optional and a missing or
malformed piece renders as a short note (a report never fails the pipeline):

=================== ===========================================================================
key                 value
=================== ===========================================================================
``model_name``      registered model name
``version``         the candidate's registered version, or None before registration
``week``            the run's week (ISO date)
``data_interval``   ``{"start": ..., "end": ...}`` or a string
``k``               list length of the metrics (default 10)
``primary_metric``  the metric the gate and the history plot use (default: the gate's, else
                    ``ndcg@<k>``)
``training``        facts about the training data, e.g. the prepare stage's result
                    (``train_pairs``, ``holdout_pairs``, ``users``, ``items``, ``train_digest``,
                    ``window_weeks`` as a list of weeks or a number); other keys are shown as-is
``metrics``         ``{"candidate": {...}, "champion": {...} | None, "baseline": {...}}`` metric
                    dicts (the evaluate stage's result fits, ``champion_version`` included)
``gate``            a :class:`~recsys.promotion.gates.GateDecision` or its ``to_dict()``
``tuning``          a :class:`~recsys.training.tuning.TuningResult`, its ``to_dict()`` or a list of trials
``history``         rows ``{"version", "week", "<primary metric>", "status"}`` of the registered
                    versions (see :func:`history_from_registry`)
``scores``          the candidate's top-k scores (any array-like; NaN fallback scores dropped)
``segments``        ``{model: {segment: {metric: value}}}``: popularity, ALS, content and hybrid
                    scored per segment (the evaluate stage's ``models``); ``served_model`` names
                    the one that is gated and served
=================== ===========================================================================
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from recsys.core.formatting import finite_number
from recsys.core.html import escape, html_page, html_table, metric_cell, mpl_text, note, png_img
from recsys.promotion.registry import TAG_STATUS, TAG_WEEK
from recsys.reporting.mlflow_links import REPORT_ARTIFACT
from recsys.reporting.model_plots import (
    CANDIDATE_COLOUR,
    STATUS_COLOURS,
    finite_scores,
    plot_history,
    plot_scores,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

LOWER_IS_BETTER = frozenset({"rmse", "mae"})
ROLES = ("candidate", "champion", "baseline")


def _as_dict(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    return dict(value) if isinstance(value, Mapping) else None


def _metric_base(name: str) -> str:
    return name.split("@", 1)[0]


# ---- sections ----------------------------------------------------------------------------------
def _header(ctx: Mapping[str, Any]) -> str:
    name = ctx.get("model_name") or "unnamed model"
    version = ctx.get("version")
    version_text = f"version {version}" if version not in (None, "") else "candidate (not registered yet)"
    parts = []
    if ctx.get("week"):
        parts.append(f"week {escape(ctx['week'])}")
    interval = ctx.get("data_interval")
    if isinstance(interval, Mapping):
        start, end = escape(interval.get("start", "?")), escape(interval.get("end", "?"))
        parts.append(f"data interval {start} &rarr; {end}")
    elif interval:
        parts.append(f"data interval {escape(interval)}")
    gate = _as_dict(ctx.get("gate"))
    badge = ""
    if gate is not None and "passed" in gate:
        status = "passed" if gate["passed"] else "rejected"
        badge = f' <span class="badge {status}">gate {status.upper()}</span>'
    sub = " &middot; ".join(parts) or "week not given"
    return f"<h1>{escape(name)} &mdash; {escape(version_text)}{badge}</h1><p class='sub'>{sub}</p>"


_TRAINING_LABELS = {
    "train_pairs": "training pairs",
    "holdout_pairs": "holdout pairs",
    "users": "users",
    "items": "items",
    "holdout_users": "holdout users",
    "train_digest": "dataset digest",
    "window": "window",
    "window_weeks": "window weeks",
    "window_size": "window size (weeks)",
    "events_in": "events read",
    "duplicates_dropped": "duplicate events dropped",
    "pairs_without_preference": "pairs without preference",
}


def _training(ctx: Mapping[str, Any]) -> str:
    training = _as_dict(ctx.get("training"))
    if not training:
        return note("No training data facts were given.")
    keys = [k for k in _TRAINING_LABELS if k in training] + [
        k for k in training if k not in _TRAINING_LABELS and k not in ("stage", "week")
    ]
    rows = []
    for key in keys:
        value = training[key]
        if key == "window_weeks" and isinstance(value, list | tuple):
            first, last = (min(map(str, value)), max(map(str, value))) if value else ("", "")
            cell = f"{len(value)} week(s): {escape(first)} &ndash; {escape(last)}" if value else "no weeks"
        elif isinstance(value, Mapping | list | tuple):
            cell = escape(value)
        else:
            cell = metric_cell(value)
        rows.append(("", [escape(_TRAINING_LABELS.get(key, key)), cell]))
    return html_table(["", "value"], rows)


def _delta(candidate: float | None, other: float | None, metric: str) -> str:
    if candidate is None or other is None:
        return "&ndash;"
    diff = candidate - other
    better = diff < 0 if _metric_base(metric) in LOWER_IS_BETTER else diff > 0
    cls = "" if diff == 0 else ("up" if better else "down")
    relative = f" ({diff / abs(other) * 100:+.1f}%)" if other != 0 else ""
    return f'<span class="{cls}">{diff:+.4f}{relative}</span>'


def _metrics(ctx: Mapping[str, Any], primary: str) -> str:
    metrics = _as_dict(ctx.get("metrics")) or {}
    models = {role: _as_dict(metrics.get(role)) for role in ROLES}
    if models["candidate"] is None:
        return note("No candidate metrics were given.")
    champion_version = metrics.get("champion_version")
    names: list[str] = []
    for role in ROLES:
        for name in models[role] or {}:
            if name not in names:
                names.append(name)
    has_champion = models["champion"] is not None
    header = ["metric", "candidate"]
    if has_champion:
        header.append(f"champion (v{champion_version})" if champion_version else "champion")
    header += ["baseline (popularity)"]
    if has_champion:
        header.append("candidate vs champion")
    header.append("candidate vs baseline")
    rows = []
    for name in names:
        cand = (models["candidate"] or {}).get(name)
        base = (models["baseline"] or {}).get(name)
        cells = [escape(name), metric_cell(cand)]
        if has_champion:
            cells.append(metric_cell((models["champion"] or {}).get(name)))
        cells.append(metric_cell(base))
        if name != "users_evaluated":
            if has_champion:
                champ = (models["champion"] or {}).get(name)
                cells.append(_delta(finite_number(cand), finite_number(champ), name))
            cells.append(_delta(finite_number(cand), finite_number(base), name))
        else:
            cells += ["&ndash;"] * (2 if has_champion else 1)
        rows.append(("primary" if name == primary else "", cells))
    out = html_table(header, rows)
    if not has_champion:
        out += note("No champion yet: the candidate is compared with the popularity baseline only.")
    if models["baseline"] is None:
        out += note("No baseline metrics were given.")
    lower = sorted({_metric_base(n) for n in names} & LOWER_IS_BETTER)
    if lower:
        out += note(f"Lower is better for {', '.join(lower)}; higher is better for every other metric.")
    return out


def _gate(ctx: Mapping[str, Any]) -> str:
    gate = _as_dict(ctx.get("gate"))
    if gate is None:
        return note("The gate has not run for this candidate yet.")
    passed = gate.get("passed")
    status = "pending" if passed is None else ("passed" if passed else "rejected")
    out = f'<p><span class="badge {status}">{status.upper()}</span></p>'
    reasons = [str(r) for r in gate.get("reasons") or []]
    if reasons:
        items = "".join(
            f'<li class="{"pass" if r.startswith("PASS") else "fail" if r.startswith("FAIL") else ""}">'
            f"{escape(r)}</li>"
            for r in reasons
        )
        out += f'<ul class="reasons">{items}</ul>'
    else:
        out += note("The decision lists no reasons.")
    return out


def _history(ctx: Mapping[str, Any], primary: str) -> str:
    history = [row for row in ctx.get("history") or [] if isinstance(row, Mapping)]
    metrics = _as_dict(ctx.get("metrics")) or {}
    candidate = _as_dict(metrics.get("candidate")) or {}
    img = plot_history(
        history,
        primary,
        candidate_version=ctx.get("version"),
        candidate_value=finite_number(candidate.get(primary)),
        champion_version=metrics.get("champion_version"),
    )
    out = "" if history else note("No earlier versions in the registry.")
    return out + (img or note(f"No {primary} values to plot."))


def _scores(ctx: Mapping[str, Any]) -> str:
    scores = ctx.get("scores")
    if scores is None:
        return note("No candidate scores were given.")
    values = finite_scores(scores)
    img = plot_scores(values, ctx.get("k"))
    if img is None:
        return note("The candidate has no finite scores to plot.")
    stats = ", ".join(
        f"{label} {v:.4f}"
        for label, v in (
            ("min", values.min()),
            ("median", float(np.median(values))),
            ("mean", values.mean()),
            ("max", values.max()),
        )
    )
    return img + f'<p class="sub">{escape(stats)}</p>'


def _trial_rows(tuning: Any) -> tuple[list[dict[str, Any]], str, int | None, dict[str, Any]]:
    if hasattr(tuning, "to_dict"):
        tuning = tuning.to_dict()
    if isinstance(tuning, Mapping):
        split = tuning.get("split") if isinstance(tuning.get("split"), Mapping) else {}
        trials = list(tuning.get("trials") or [])
        return trials, str(tuning.get("metric") or "score"), tuning.get("best_trial"), dict(split)
    return list(tuning or []), "score", None, {}


def _params_text(params: Any) -> str:
    if not isinstance(params, Mapping):
        return "?"
    return ", ".join(f"{k}={v}" for k, v in params.items())


def _tuning(ctx: Mapping[str, Any]) -> str:
    tuning = ctx.get("tuning")
    if not tuning:
        return note("No hyper-parameter tuning for this candidate (the configured ALS parameters were used).")
    reused = tuning.get("reused_from") if isinstance(tuning, Mapping) else None
    if isinstance(reused, Mapping):
        every = tuning.get("every_weeks")
        blend = tuning.get("blend")
        return note(
            f"No search this week: the search of week {reused.get('week')} (run {reused.get('run_id')}) "
            f"chose {_params_text(tuning.get('best'))}"
            + (
                "".join(
                    f"; {segment} blend {_params_text(blend.get(segment))}" for segment in ("warm", "cold")
                )
                if isinstance(blend, Mapping)
                else ""
            )
            + ", refitted on this week's window"
            + (f" (the search runs at most every {every} weeks)" if every else "")
            + "."
        )
    trials, metric, best, split = _trial_rows(tuning)
    trials = [t for t in trials if isinstance(t, Mapping)]
    if not trials:
        return note("Tuning ran no trial.")
    reserved = {"trial", "params", "metrics", "score", "seconds", "run_id", "error"}
    params: list[str] = []
    for t in trials:
        found = (
            t.get("params")
            if isinstance(t.get("params"), Mapping)
            else {k: v for k, v in t.items() if k not in reserved}
        )
        params += [p for p in found if p not in params]
    has_error = any(t.get("error") for t in trials)
    header = ["trial", *params, metric, "seconds"] + (["error"] if has_error else [])
    rows = []
    for n, t in enumerate(trials, start=1):
        found = t.get("params") if isinstance(t.get("params"), Mapping) else t
        score = t.get(
            "score", (t.get("metrics") or {}).get(metric) if isinstance(t.get("metrics"), Mapping) else None
        )
        cells = [escape(t.get("trial", n)), *(metric_cell(found.get(p)) for p in params), metric_cell(score)]
        seconds = finite_number(t.get("seconds"))
        cells.append(f"{seconds:.1f}" if seconds is not None else "&ndash;")
        if has_error:
            cells.append(escape(t.get("error") or ""))
        rows.append(("best" if best is not None and t.get("trial", n) == best else "", cells))
    out = html_table(header, rows, left=1)
    if best is not None:
        out += (
            f'<p class="sub">best: trial {escape(best)} (highlighted), refit on the whole training window</p>'
        )
    if split:
        out += (
            '<p class="sub">validated on each user&#x27;s latest training pairs: '
            f"{metric_cell(split.get('fit_pairs'))} fit / "
            f"{metric_cell(split.get('validation_pairs'))} validation pairs, "
            f"{metric_cell(split.get('validation_users'))} users</p>"
        )
    return out


SEGMENT_LABELS = {
    "all": "all users",
    "cold_users": "cold users",
    "warm_users": "warm users",
    "new_items": "new items",
}


def _segments(ctx: Mapping[str, Any]) -> str:
    segments = _as_dict(ctx.get("segments"))
    if not segments:
        return note("No per-segment evaluation was given.")
    k = ctx.get("k") or 10
    names = [n for n in ("popularity", "als", "content", "hybrid") if n in segments] + [
        n for n in segments if n not in ("popularity", "als", "content", "hybrid")
    ]
    served = ctx.get("served_model")
    metrics = (f"ndcg@{k}", f"recall@{k}")
    header = ["segment", "users"] + [
        f"{n}{' (served)' if n == served else ''} {m}" for m in metrics for n in names
    ]
    rows = []
    for segment, label in SEGMENT_LABELS.items():
        first = (_as_dict(segments[names[0]]) or {}).get(segment) or {}
        cells = [escape(label), metric_cell(first.get("users_evaluated"), 0)]
        for metric in metrics:
            values = [
                finite_number(((_as_dict(segments[n]) or {}).get(segment) or {}).get(metric)) for n in names
            ]
            best = max((v for v in values if v is not None), default=None)
            cells += [
                f"<b>{metric_cell(v)}</b>" if v is not None and v == best and best > 0 else metric_cell(v)
                for v in values
            ]
        rows.append(("", cells))
    table = html_table(header, rows)
    extra = []
    for name in names:
        overall = (_as_dict(segments[name]) or {}).get("all") or {}
        extra.append(
            f"{name}: coverage {metric_cell(overall.get(f'coverage@{k}'))}, diversity "
            f"{metric_cell(overall.get(f'diversity@{k}'))}, Gini {metric_cell(overall.get(f'gini@{k}'))}"
        )

    def draw(ax: Any) -> None:
        width = 0.8 / len(names)
        xs = np.arange(len(SEGMENT_LABELS))
        for i, name in enumerate(names):
            heights = [
                finite_number(((_as_dict(segments[name]) or {}).get(seg) or {}).get(metrics[0])) or 0.0
                for seg in SEGMENT_LABELS
            ]
            ax.bar(xs + i * width, heights, width, label=mpl_text(name))
        ax.set_xticks(xs + width * (len(names) - 1) / 2, [mpl_text(v) for v in SEGMENT_LABELS.values()])
        ax.set_ylabel(mpl_text(metrics[0]))
        ax.legend(fontsize=8)

    return (
        table
        + note(
            "Bold: the best of the models in that segment. Cold users have fewer training pairs than "
            "the hybrid's cold_user_max; new items are held-out pairs on items absent from training."
        )
        + "<ul class='reasons'>"
        + "".join(f"<li>{escape(line)}</li>" for line in extra)
        + "</ul>"
        + png_img(draw)
    )


def _section(title: str, render: Callable[[], str]) -> str:
    try:
        body = render()
    except Exception as exc:  # noqa: BLE001 - a malformed piece must not cost the whole report
        log.warning("model report: section %r could not be rendered: %s", title, exc, exc_info=True)
        body = note(f"This section could not be rendered ({exc.__class__.__name__}: {exc}).")
    return f"<h2>{escape(title)}</h2>{body}"


def _primary(ctx: Mapping[str, Any]) -> str:
    if ctx.get("primary_metric"):
        return str(ctx["primary_metric"])
    gate = _as_dict(ctx.get("gate")) or {}
    named = (
        (gate.get("metrics") or {}).get("primary_metric")
        if isinstance(gate.get("metrics"), Mapping)
        else None
    )
    if named:
        return str(named)
    metrics = _as_dict(ctx.get("metrics")) or {}
    k = ctx.get("k") or metrics.get("k") or 10
    return f"ndcg@{k}"


def render_model_report(context: Mapping[str, Any] | None) -> str:
    """The report as one self-contained HTML document (see the module docstring for ``context``)."""
    ctx: Mapping[str, Any] = context if isinstance(context, Mapping) else {}
    try:
        primary = _primary(ctx)
    except Exception:  # noqa: BLE001
        primary = "ndcg@10"
    try:
        header = _header(ctx)
    except Exception as exc:  # noqa: BLE001
        header = f"<h1>model report</h1>{note(f'header could not be rendered: {exc}')}"
    sections = [
        _section("Gate decision", lambda: _gate(ctx)),
        _section("Metrics on this week's holdout", lambda: _metrics(ctx, primary)),
        _section(f"{primary} over model versions", lambda: _history(ctx, primary)),
        _section("ALS, content and hybrid per segment", lambda: _segments(ctx)),
        _section("Score distribution", lambda: _scores(ctx)),
        _section("Training data", lambda: _training(ctx)),
        _section("Hyper-parameter tuning", lambda: _tuning(ctx)),
    ]
    title = f"{ctx.get('model_name') or 'model'} report"
    return html_page(title, header + "".join(sections))


# ---- registry and MLflow -----------------------------------------------------------------------
def history_from_registry(
    client: MlflowClient, name: str, metric_key: str = "ndcg_at_10"
) -> list[dict[str, Any]]:
    """Every version of ``name`` as ``{"version", "week", "status", <metric>, "run_id"}``, oldest first.

    ``<metric>`` is the metric's report name (the tag ``ndcg_at_10`` becomes the key ``ndcg@10``)
    holding a float, or None when the tag is missing or not a number; a missing week or status is
    None. An unknown model gives an empty list.
    """
    from mlflow.exceptions import MlflowException  # deferred: mlflow is heavy

    metric = metric_key.replace("_at_", "@")
    versions: list[Any] = []
    token = None
    try:
        while True:
            page = client.search_model_versions(f"name = '{name}'", page_token=token)
            versions.extend(page)
            token = getattr(page, "token", None)
            if not token:
                break
    except MlflowException:
        return []
    rows = []
    for mv in versions:
        tags = mv.tags or {}
        rows.append(
            {
                "version": str(mv.version),
                "week": tags.get(TAG_WEEK),
                "status": tags.get(TAG_STATUS),
                metric: finite_number(tags.get(metric_key)),
                "run_id": mv.run_id,
            }
        )
    return sorted(rows, key=lambda row: int(row["version"]) if row["version"].isdigit() else math.inf)


def log_html(html_text: str, artifact: str, what: str, run_id: str | None = None) -> str:
    """Log a page as ``artifact`` of ``run_id`` (or the active run); return that path.

    Raises ValueError when no run is given and none is active (rather than let MLflow start one);
    ``what`` names the page in that message.
    """
    import mlflow  # deferred: mlflow is heavy

    if run_id is None:
        active = mlflow.active_run()
        if active is None:
            raise ValueError(f"no MLflow run to attach {what} to: pass run_id or start a run")
        run_id = active.info.run_id
    mlflow.MlflowClient().log_text(run_id, html_text, artifact)
    return artifact


def log_model_report(html_text: str, run_id: str | None = None) -> str:
    """Log the report as ``report/model_report.html`` (see :func:`log_html`)."""
    return log_html(html_text, REPORT_ARTIFACT, "the model report", run_id)


# ---- drift history -----------------------------------------------------------------------------
#: (metric logged by the drift monitor, threshold field of DriftThresholds, label)
DRIFT_PANELS = (
    ("item_popularity_psi", "psi_max", "item popularity PSI"),
    ("user_activity_psi", "activity_psi_max", "user activity PSI"),
    ("item_js", "js_max", "item Jensen-Shannon distance"),
    ("unseen_items_share", "unseen_items_share_max", "share on unseen items"),
    ("unseen_users_share", "unseen_users_share_max", "share by unseen users"),
    ("quality_drop", "quality_drop_max", "NDCG drop vs training"),
)


def drift_history_html(history: Any, thresholds: Any) -> str:
    """A self-contained page: each drift statistic over the checks, with its threshold and the
    checks that asked for an early retrain marked. ``history``: :func:`recsys.pipeline.monitor.drift_history`."""
    limits = thresholds.model_dump() if hasattr(thresholds, "model_dump") else dict(thresholds)
    triggered = history[history.get("retrain_triggered", 0) == 1] if "retrain_triggered" in history else None
    plots = []
    for metric, limit_name, label in DRIFT_PANELS:
        if metric not in history or history[metric].notna().sum() == 0:
            continue

        def draw(ax: Any, metric: str = metric, limit_name: str = limit_name, label: str = label) -> None:
            ax.plot(history["checked_at"], history[metric], marker="o", color=CANDIDATE_COLOUR, label=label)
            limit = limits.get(limit_name)
            if limit is not None:
                ax.axhline(
                    limit, color=STATUS_COLOURS["rejected"], linestyle="--", label=f"threshold {limit:g}"
                )
            if triggered is not None and not triggered.empty:
                ax.scatter(
                    triggered["checked_at"],
                    triggered[metric],
                    s=120,
                    facecolors="none",
                    edgecolors=STATUS_COLOURS["rejected"],
                    label="early retrain asked",
                )
            ax.set_title(mpl_text(label), fontsize=10)
            ax.legend(fontsize=8)
            ax.tick_params(axis="x", labelrotation=30, labelsize=8)

        plots.append(f"<h2>{escape(label)}</h2>" + png_img(draw, size=(8.0, 2.6)))
    rows = [
        ("", [escape(row["checked_at"].isoformat()), escape(row.get("decision", ""))])
        for _, row in history.sort_values("checked_at", ascending=False).head(30).iterrows()
    ]
    table = html_table(["checked at", "decision"], rows, left=2)
    body = "".join(plots) or note("no drift statistic computed yet (checks were skipped)")
    return html_page(
        "drift history",
        "<h1>Drift checks</h1>"
        f"<p class='sub'>{len(history)} checks, newest {history['checked_at'].max().isoformat()}</p>"
        + body
        + "<h2>Latest decisions</h2>"
        + table,
    )
