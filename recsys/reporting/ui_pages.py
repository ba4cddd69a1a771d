"""The model-history page the Airflow UI shows: every registered version with its gate decision
and metrics, the champion and the challenger, and the drift monitor's latest checks.

One self-contained HTML document (inline CSS, no script) drawn from a
:class:`~recsys.reporting.model_history.ModelHistory`; its data comes from
:mod:`recsys.reporting.model_history`, its links to MLflow from :mod:`recsys.reporting.mlflow_links`.
``plugins/recsys_plugin.py`` serves it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from recsys.core.aliases import CHALLENGER, CHAMPION
from recsys.core.html import REPORT_CSS, escape, html_page, metric_cell, note
from recsys.reporting.mlflow_links import (
    DRIFT_HISTORY_ARTIFACT,
    REPORT_ARTIFACT,
    experiment_url,
    model_url,
    model_version_url,
    run_url,
)
from recsys.reporting.model_history import ModelHistory, VersionRow

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

    head = "".join(f"<th{align(i)}>{escape(h)}</th>" for i, h in enumerate(header))
    body = "".join(
        f'<tr class="{css}">' + "".join(f"<td{align(i)}>{c}</td>" for i, c in enumerate(cells)) + "</tr>"
        for css, cells in rows
    )
    return f'<table id="{escape(table_id)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _link(url: str, text: str) -> str:
    return f'<a href="{escape(url)}" target="_blank" rel="noopener noreferrer">{escape(text)}</a>'


def _status_badge(status: str) -> str:
    css = status if status in ("passed", "rejected") else "pending"
    return f'<span class="badge {css}">{escape((status or "no gate").upper())}</span>'


def _aliases(aliases: list[str]) -> str:
    return "".join(f'<span class="alias {escape(a)}">{escape(a)}</span>' for a in aliases)


def _when(moment: datetime | None) -> str:
    return escape(moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")) if moment else "&ndash;"


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
        return f'<div class="card" id="{escape(title)}"><h3>{escape(title)}</h3>{note(empty)}</div>'
    primary = row.primary
    value = row.metrics.get(primary) if primary else None
    facts = [f"week {escape(row.week or '?')}", f"trigger {escape(row.trigger or '?')}"]
    if primary:
        facts.append(f"{escape(primary)} {metric_cell(value)}")
    return (
        f'<div class="card" id="{escape(title)}"><h3>{escape(title)}</h3>'
        f'<div class="big">version {escape(row.version)} {_status_badge(row.status)}</div>'
        f"<div>{' &middot; '.join(facts)}</div>"
        f"<div>{' &middot; '.join(_version_links(h, row))}</div></div>"
    )


def _gate_cell(row: VersionRow) -> str:
    badge = _status_badge(row.status)
    if not row.reasons:
        return badge
    items = "".join(
        f'<li class="{"pass" if r.startswith("PASS") else "fail" if r.startswith("FAIL") else ""}">{escape(r)}</li>'
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
            escape(row.week) or "&ndash;",
            escape(row.trigger) or "&ndash;",
            _gate_cell(row),
            *[metric_cell(row.metrics.get(m)) for m in metric_names],
        ]
        if primary:
            cells.append(metric_cell(row.baseline.get(primary)))
        cells += [
            _when(row.created),
            " &middot; ".join(_version_links(h, row)[1:]) or "&ndash;",
            "<br>".join(escape(n) for n in row.notes),
        ]
        css = "best" if CHAMPION in row.aliases else ""
        rows.append((css, cells))
    return _grid(header, rows, left={0, 1, 2, 3, 4, len(header) - 2, len(header) - 1}, table_id="versions")


def _drift_section(h: ModelHistory) -> str:
    check = h.last_check
    if check is None:
        return note(
            "No drift check yet: the drift_monitor DAG logs one MLflow run per check "
            f"(experiment {h.drift_experiment})."
        )
    decision = f'<span class="decision {escape(check.decision)}">{escape(check.decision or "?")}</span>'
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
        f"<p>Last check {_when(check.checked_at)}: {decision} &mdash; "
        f"{escape(check.message) or '&ndash;'}</p>"
        f"<p class='sub'>champion version {escape(check.champion_version or '?')}, recent week "
        f"{escape(check.recent_week or '?')} against its training week {escape(check.reference_week or '?')} "
        f"&middot; {' &middot; '.join(links)}</p>"
    )
    rows = []
    for stat in check.stats:
        limit = "&ndash;" if stat.threshold is None else ("&ge; " if stat.lower_is_drift else "&le; ")
        if stat.threshold is not None:
            limit += metric_cell(stat.threshold)
        verdict = '<span class="down">drift</span>' if stat.drifted else escape(stat.verdict)
        cells = [escape(stat.label), metric_cell(stat.value), limit, verdict]
        rows.append(("primary" if stat.drifted else "", cells))
    stats = (
        _grid(["statistic", "value", "allowed", "verdict"], rows, left={0}, table_id="drift-stats")
        if rows
        else note("This check computed no statistic (it was skipped).")
    )
    recent = ""
    if len(h.checks) > 1:
        recent_rows = [
            (
                "",
                [
                    _when(c.checked_at),
                    f'<span class="decision {escape(c.decision)}">{escape(c.decision)}</span>',
                    escape(c.message[:160]),
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
        f"<h1>{escape(title)}</h1><p class='sub'>MLflow {_link(h.mlflow_url, h.mlflow_url)} "
        f"(tracking {escape(h.tracking_uri)}) &middot; read {_when(h.generated_at)}</p>"
    )
    if h.error:
        body = (
            f'<div class="error" id="mlflow-error"><b>MLflow is not reachable.</b> {escape(h.error)}<br>'
            "The Airflow UI and the DAGs are not affected; reload this page when MLflow is back.</div>"
        )
    else:
        if not h.model_exists or not h.versions:
            intro = note(
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
            + note(
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
    return html_page(title, head + body, REPORT_CSS + _PAGE_CSS)
