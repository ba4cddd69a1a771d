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

import base64
import html
import io
import logging
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

REPORT_ARTIFACT = "report/model_report.html"
LOWER_IS_BETTER = frozenset({"rmse", "mae"})
ROLES = ("candidate", "champion", "baseline")
_STATUS_COLOURS = {"passed": "#2e7d32", "rejected": "#c62828"}
_OTHER_COLOUR = "#757575"
_CANDIDATE_COLOUR = "#1565c0"

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#212121;
  max-width:1100px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;
  padding-bottom:4px}
.sub{color:#616161;margin:0 0 12px}
table{border-collapse:collapse;font-size:13px}
th,td{border:1px solid #ddd;padding:4px 10px;text-align:right}
th{background:#f5f5f5}td.l,th.l{text-align:left}
tr.primary td{font-weight:600;background:#fffde7}tr.best td{background:#e8f5e9}
.up{color:#2e7d32}.down{color:#c62828}
.badge{display:inline-block;padding:3px 10px;border-radius:4px;color:#fff;font-weight:600}
.passed{background:#2e7d32}.rejected{background:#c62828}.pending{background:#757575}
ul.reasons{list-style:none;padding-left:0;font-family:monospace;font-size:13px}
ul.reasons li{padding:2px 0}li.pass{color:#2e7d32}li.fail{color:#c62828}
.note{color:#616161;font-style:italic}
img{max-width:100%;border:1px solid #eee}
"""


# ---- formatting helpers ------------------------------------------------------------------------
def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _fmt(value: Any, digits: int = 4) -> str:
    """A metric value for a table cell (already escaped)."""
    if value is None:
        return "&ndash;"
    if isinstance(value, bool | str):
        return _e(value)  # text stays as given (a digest of digits is not a number)
    if isinstance(value, int):
        return f"{value:,}"
    number = _number(value)
    if number is None:
        return "&ndash;" if isinstance(value, float) else _e(value)
    if number.is_integer() and abs(number) >= 1:
        return f"{int(number):,}"
    return f"{number:.{digits}f}"


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _table(header: list[str], rows: list[tuple[str, list[str]]], left: int = 1) -> str:
    """``header`` cells are raw text (escaped here); row cells are HTML already."""
    head = "".join(f'<th class="{"l" if i < left else ""}">{_e(h)}</th>' for i, h in enumerate(header))
    body = "".join(
        f'<tr class="{cls}">'
        + "".join(f'<td class="{"l" if i < left else ""}">{cell}</td>' for i, cell in enumerate(cells))
        + "</tr>"
        for cls, cells in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _as_dict(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    return dict(value) if isinstance(value, Mapping) else None


def _metric_base(name: str) -> str:
    return name.split("@", 1)[0]


def _mpl_text(value: Any) -> str:
    """Plot labels: matplotlib reads ``$...$`` as math; show dollars literally."""
    return str(value).replace("$", r"\$")


# ---- plots -------------------------------------------------------------------------------------
def png_bytes(draw: Callable[[Any], None], size: tuple[float, float] = (8.0, 3.2)) -> bytes:
    """Draw on a fresh Agg figure (no pyplot, no global state); the PNG's bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    draw(ax)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _png(draw: Callable[[Any], None], size: tuple[float, float] = (8.0, 3.2)) -> str:
    """:func:`png_bytes` as an <img> with a data URI."""
    encoded = base64.b64encode(png_bytes(draw, size)).decode("ascii")
    return f'<img alt="plot" src="data:image/png;base64,{encoded}">'


def plot_history(
    history: list[Mapping[str, Any]],
    primary: str,
    candidate_version: str | None = None,
    candidate_value: float | None = None,
    champion_version: str | None = None,
) -> str | None:
    """The primary metric per registered version (colour = gate status), the candidate highlighted.

    Before registration (``candidate_version`` None) the candidate is drawn after the last version.
    Returns an ``<img>`` tag, or None when there is no point to draw.
    """
    from recsys.io.tracking import metric_key

    points: list[tuple[str, float | None, str, bool]] = []  # label, value, status, is candidate
    for row in history:
        version = str(row.get("version", "?"))
        value = _number(row.get(primary, row.get(metric_key(primary))))
        is_candidate = candidate_version is not None and version == str(candidate_version)
        if is_candidate and value is None:
            value = candidate_value
        week = row.get("week") or ""
        label = f"v{version}\n{week}" if week else f"v{version}"
        points.append((label, value, str(row.get("status") or ""), is_candidate))
    if candidate_value is not None and not any(p[3] for p in points):
        points.append(("candidate", candidate_value, "", True))
    if not any(p[1] is not None for p in points):
        return None

    def draw(ax: Any) -> None:
        xs = list(range(len(points)))
        known = [(x, p[1]) for x, p in zip(xs, points, strict=True) if p[1] is not None]
        ax.plot([x for x, _ in known], [y for _, y in known], color="#9e9e9e", linewidth=1, zorder=1)
        for x, (_, value, status, is_candidate) in zip(xs, points, strict=True):
            if value is None:
                continue
            if is_candidate:
                ax.scatter([x], [value], s=180, marker="*", color=_CANDIDATE_COLOUR, zorder=3)
                ax.annotate(
                    f"candidate {value:.4f}",
                    (x, value),
                    textcoords="offset points",
                    xytext=(0, 10),
                    ha="center",
                    fontsize=8,
                    color=_CANDIDATE_COLOUR,
                )
            else:
                colour = _STATUS_COLOURS.get(status, _OTHER_COLOUR)
                ax.scatter([x], [value], s=36, color=colour, zorder=2)
        if champion_version is not None:
            for x, row in zip(xs, history, strict=False):
                if str(row.get("version")) == str(champion_version) and points[x][1] is not None:
                    ax.annotate(
                        "champion",
                        (x, points[x][1]),
                        textcoords="offset points",
                        xytext=(0, -14),
                        ha="center",
                        fontsize=8,
                    )
        step = max(1, math.ceil(len(points) / 20))
        ax.set_xticks(xs[::step])
        ax.set_xticklabels([_mpl_text(p[0]) for p in points][::step], fontsize=7)
        ax.set_ylabel(_mpl_text(primary))
        ax.set_title(f"{_mpl_text(primary)} by model version (green passed, red rejected)", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.margins(y=0.25)

    return _png(draw)


def _finite(scores: Any) -> Any:
    import numpy as np

    values = np.asarray(scores if hasattr(scores, "__len__") else list(scores), dtype=float).ravel()
    return values[np.isfinite(values)]


def plot_scores(scores: Any, k: int | None = None) -> str | None:
    """Histogram of the candidate's top-k scores (non-finite scores dropped); None when empty."""
    import numpy as np

    values = _finite(scores)
    if values.size == 0:
        return None

    def draw(ax: Any) -> None:
        ax.hist(values, bins=min(50, max(5, int(np.sqrt(values.size)))), color=_CANDIDATE_COLOUR, alpha=0.8)
        ax.axvline(float(np.median(values)), color="#212121", linestyle="--", linewidth=1, label="median")
        top = f"top-{k} " if k else ""
        ax.set_title(f"candidate {top}scores ({values.size:,} recommendations)", fontsize=10)
        ax.set_xlabel("score")
        ax.set_ylabel("count")
        ax.legend(fontsize=8)

    return _png(draw)


# ---- sections ----------------------------------------------------------------------------------
def _header(ctx: Mapping[str, Any]) -> str:
    name = ctx.get("model_name") or "unnamed model"
    version = ctx.get("version")
    version_text = f"version {version}" if version not in (None, "") else "candidate (not registered yet)"
    parts = []
    if ctx.get("week"):
        parts.append(f"week {_e(ctx['week'])}")
    interval = ctx.get("data_interval")
    if isinstance(interval, Mapping):
        parts.append(f"data interval {_e(interval.get('start', '?'))} &rarr; {_e(interval.get('end', '?'))}")
    elif interval:
        parts.append(f"data interval {_e(interval)}")
    gate = _as_dict(ctx.get("gate"))
    badge = ""
    if gate is not None and "passed" in gate:
        status = "passed" if gate["passed"] else "rejected"
        badge = f' <span class="badge {status}">gate {status.upper()}</span>'
    sub = " &middot; ".join(parts) or "week not given"
    return f"<h1>{_e(name)} &mdash; {_e(version_text)}{badge}</h1><p class='sub'>{sub}</p>"


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
        return _note("No training data facts were given.")
    keys = [k for k in _TRAINING_LABELS if k in training] + [
        k for k in training if k not in _TRAINING_LABELS and k not in ("stage", "week")
    ]
    rows = []
    for key in keys:
        value = training[key]
        if key == "window_weeks" and isinstance(value, list | tuple):
            first, last = (min(map(str, value)), max(map(str, value))) if value else ("", "")
            cell = f"{len(value)} week(s): {_e(first)} &ndash; {_e(last)}" if value else "no weeks"
        elif isinstance(value, Mapping | list | tuple):
            cell = _e(value)
        else:
            cell = _fmt(value)
        rows.append(("", [_e(_TRAINING_LABELS.get(key, key)), cell]))
    return _table(["", "value"], rows)


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
        return _note("No candidate metrics were given.")
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
        cells = [_e(name), _fmt(cand)]
        if has_champion:
            cells.append(_fmt((models["champion"] or {}).get(name)))
        cells.append(_fmt(base))
        if name != "users_evaluated":
            if has_champion:
                champ = (models["champion"] or {}).get(name)
                cells.append(_delta(_number(cand), _number(champ), name))
            cells.append(_delta(_number(cand), _number(base), name))
        else:
            cells += ["&ndash;"] * (2 if has_champion else 1)
        rows.append(("primary" if name == primary else "", cells))
    out = _table(header, rows)
    if not has_champion:
        out += _note("No champion yet: the candidate is compared with the popularity baseline only.")
    if models["baseline"] is None:
        out += _note("No baseline metrics were given.")
    lower = sorted({_metric_base(n) for n in names} & LOWER_IS_BETTER)
    if lower:
        out += _note(f"Lower is better for {', '.join(lower)}; higher is better for every other metric.")
    return out


def _gate(ctx: Mapping[str, Any]) -> str:
    gate = _as_dict(ctx.get("gate"))
    if gate is None:
        return _note("The gate has not run for this candidate yet.")
    passed = gate.get("passed")
    status = "pending" if passed is None else ("passed" if passed else "rejected")
    out = f'<p><span class="badge {status}">{status.upper()}</span></p>'
    reasons = [str(r) for r in gate.get("reasons") or []]
    if reasons:
        items = "".join(
            f'<li class="{"pass" if r.startswith("PASS") else "fail" if r.startswith("FAIL") else ""}">'
            f"{_e(r)}</li>"
            for r in reasons
        )
        out += f'<ul class="reasons">{items}</ul>'
    else:
        out += _note("The decision lists no reasons.")
    return out


def _history(ctx: Mapping[str, Any], primary: str) -> str:
    history = [row for row in ctx.get("history") or [] if isinstance(row, Mapping)]
    metrics = _as_dict(ctx.get("metrics")) or {}
    candidate = _as_dict(metrics.get("candidate")) or {}
    img = plot_history(
        history,
        primary,
        candidate_version=ctx.get("version"),
        candidate_value=_number(candidate.get(primary)),
        champion_version=metrics.get("champion_version"),
    )
    out = "" if history else _note("No earlier versions in the registry.")
    return out + (img or _note(f"No {primary} values to plot."))


def _scores(ctx: Mapping[str, Any]) -> str:
    scores = ctx.get("scores")
    if scores is None:
        return _note("No candidate scores were given.")
    import numpy as np

    values = _finite(scores)
    img = plot_scores(values, ctx.get("k"))
    if img is None:
        return _note("The candidate has no finite scores to plot.")
    stats = ", ".join(
        f"{label} {v:.4f}"
        for label, v in (
            ("min", values.min()),
            ("median", float(np.median(values))),
            ("mean", values.mean()),
            ("max", values.max()),
        )
    )
    return img + f'<p class="sub">{_e(stats)}</p>'


def _trial_rows(tuning: Any) -> tuple[list[dict[str, Any]], str, int | None, dict[str, Any]]:
    if hasattr(tuning, "to_dict"):
        tuning = tuning.to_dict()
    if isinstance(tuning, Mapping):
        split = tuning.get("split") if isinstance(tuning.get("split"), Mapping) else {}
        trials = list(tuning.get("trials") or [])
        return trials, str(tuning.get("metric") or "score"), tuning.get("best_trial"), dict(split)
    return list(tuning or []), "score", None, {}


def _tuning(ctx: Mapping[str, Any]) -> str:
    tuning = ctx.get("tuning")
    if not tuning:
        return _note(
            "No hyper-parameter tuning for this candidate (the configured ALS parameters were used)."
        )
    trials, metric, best, split = _trial_rows(tuning)
    trials = [t for t in trials if isinstance(t, Mapping)]
    if not trials:
        return _note("Tuning ran no trial.")
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
        cells = [_e(t.get("trial", n)), *(_fmt(found.get(p)) for p in params), _fmt(score)]
        seconds = _number(t.get("seconds"))
        cells.append(f"{seconds:.1f}" if seconds is not None else "&ndash;")
        if has_error:
            cells.append(_e(t.get("error") or ""))
        rows.append(("best" if best is not None and t.get("trial", n) == best else "", cells))
    out = _table(header, rows, left=1)
    if best is not None:
        out += f'<p class="sub">best: trial {_e(best)} (highlighted), refit on the whole training window</p>'
    if split:
        out += (
            '<p class="sub">validated on each user&#x27;s latest training pairs: '
            f"{_fmt(split.get('fit_pairs'))} fit / {_fmt(split.get('validation_pairs'))} validation pairs, "
            f"{_fmt(split.get('validation_users'))} users</p>"
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
        return _note("No per-segment evaluation was given.")
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
        cells = [_e(label), _fmt(first.get("users_evaluated"), 0)]
        for metric in metrics:
            values = [_number(((_as_dict(segments[n]) or {}).get(segment) or {}).get(metric)) for n in names]
            best = max((v for v in values if v is not None), default=None)
            cells += [
                f"<b>{_fmt(v)}</b>" if v is not None and v == best and best > 0 else _fmt(v) for v in values
            ]
        rows.append(("", cells))
    table = _table(header, rows)
    extra = []
    for name in names:
        overall = (_as_dict(segments[name]) or {}).get("all") or {}
        extra.append(
            f"{name}: coverage {_fmt(overall.get(f'coverage@{k}'))}, diversity "
            f"{_fmt(overall.get(f'diversity@{k}'))}, Gini {_fmt(overall.get(f'gini@{k}'))}"
        )

    def draw(ax: Any) -> None:
        import numpy as np

        width = 0.8 / len(names)
        xs = np.arange(len(SEGMENT_LABELS))
        for i, name in enumerate(names):
            heights = [
                _number(((_as_dict(segments[name]) or {}).get(seg) or {}).get(metrics[0])) or 0.0
                for seg in SEGMENT_LABELS
            ]
            ax.bar(xs + i * width, heights, width, label=_mpl_text(name))
        ax.set_xticks(xs + width * (len(names) - 1) / 2, [_mpl_text(v) for v in SEGMENT_LABELS.values()])
        ax.set_ylabel(_mpl_text(metrics[0]))
        ax.legend(fontsize=8)

    return (
        table
        + _note(
            "Bold: the best of the models in that segment. Cold users have fewer training pairs than "
            "the hybrid's cold_user_max; new items are held-out pairs on items absent from training."
        )
        + "<ul class='reasons'>"
        + "".join(f"<li>{_e(line)}</li>" for line in extra)
        + "</ul>"
        + _png(draw)
    )


def _section(title: str, render: Callable[[], str]) -> str:
    try:
        body = render()
    except Exception as exc:  # noqa: BLE001 - a malformed piece must not cost the whole report
        log.warning("model report: section %r could not be rendered: %s", title, exc, exc_info=True)
        body = _note(f"This section could not be rendered ({exc.__class__.__name__}: {exc}).")
    return f"<h2>{_e(title)}</h2>{body}"


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
        header = f"<h1>model report</h1>{_note(f'header could not be rendered: {exc}')}"
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
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        + header
        + "".join(sections)
        + "</body></html>"
    )


# ---- registry and MLflow -----------------------------------------------------------------------
def history_from_registry(
    client: MlflowClient, name: str, metric_key: str = "ndcg_at_10"
) -> list[dict[str, Any]]:
    """Every version of ``name`` as ``{"version", "week", "status", <metric>, "run_id"}``, oldest first.

    ``<metric>`` is the metric's report name (the tag ``ndcg_at_10`` becomes the key ``ndcg@10``)
    holding a float, or None when the tag is missing or not a number; a missing week or status is
    None. An unknown model gives an empty list.
    """
    from mlflow.exceptions import MlflowException

    from recsys.promotion.registry import TAG_STATUS, TAG_WEEK

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
                metric: _number(tags.get(metric_key)),
                "run_id": mv.run_id,
            }
        )
    return sorted(rows, key=lambda row: int(row["version"]) if row["version"].isdigit() else math.inf)


def log_html(html_text: str, artifact: str, what: str, run_id: str | None = None) -> str:
    """Log a page as ``artifact`` of ``run_id`` (or the active run); return that path.

    Raises ValueError when no run is given and none is active (rather than let MLflow start one);
    ``what`` names the page in that message.
    """
    import mlflow

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
            ax.plot(history["checked_at"], history[metric], marker="o", color=_CANDIDATE_COLOUR, label=label)
            limit = limits.get(limit_name)
            if limit is not None:
                ax.axhline(
                    limit, color=_STATUS_COLOURS["rejected"], linestyle="--", label=f"threshold {limit:g}"
                )
            if triggered is not None and not triggered.empty:
                ax.scatter(
                    triggered["checked_at"],
                    triggered[metric],
                    s=120,
                    facecolors="none",
                    edgecolors=_STATUS_COLOURS["rejected"],
                    label="early retrain asked",
                )
            ax.set_title(_mpl_text(label), fontsize=10)
            ax.legend(fontsize=8)
            ax.tick_params(axis="x", labelrotation=30, labelsize=8)

        plots.append(f"<h2>{_e(label)}</h2>" + _png(draw, size=(8.0, 2.6)))
    rows = [
        ("", [_e(row["checked_at"].isoformat()), _e(row.get("decision", ""))])
        for _, row in history.sort_values("checked_at", ascending=False).head(30).iterrows()
    ]
    table = _table(["checked at", "decision"], rows, left=2)
    body = "".join(plots) or _note("no drift statistic computed yet (checks were skipped)")
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>drift history</title>"
        f"<style>{_CSS}</style></head><body><h1>Drift checks</h1>"
        f"<p class='sub'>{len(history)} checks, newest {history['checked_at'].max().isoformat()}</p>"
        + body
        + "<h2>Latest decisions</h2>"
        + table
        + "</body></html>"
    )
