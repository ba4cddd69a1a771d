"""The validation reports: the accounting as lines of text (``recsys validate``), and the HTML page
of a week (``reports/week=W/validation.html``)."""

from __future__ import annotations

import html
from datetime import date
from pathlib import Path
from typing import Any

from recsys.core.html import VALIDATION_CSS
from recsys.io.storage import Lake
from recsys.validation.config import ValidationConfig
from recsys.validation.outcomes import KindOutcome


def format_accounting(accounting: dict[str, Any]) -> list[str]:
    """Lines of text: read / valid / quarantined by reason, per kind."""
    lines = []
    for kind, acc in accounting.items():
        lines.append(
            f"{kind:<7} read {acc['rows_read']:>9}  valid {acc['rows_valid']:>9}  "
            f"quarantined {acc['rows_quarantined']:>7} ({acc['quarantine_share']:.2%})  [{acc.get('engine', '?')}]"
        )
        for reason, count in acc["by_reason"].items():
            lines.append(f"    {count:>9}  {reason}")
        for note in acc.get("notes") or []:
            lines.append(f"    note: {note}")
    return lines


# ---- HTML report ------------------------------------------------------------------------------


def _cell(value: Any, cls: str = "") -> str:
    text = "" if value is None else str(value)
    attr = f' class="{cls}"' if cls else ""
    return f"<td{attr}>{html.escape(text)}</td>"


def render_html(
    week: date, outcomes: dict[str, KindOutcome], config: ValidationConfig, failures: list[str]
) -> str:
    """A self-contained HTML page summarising the validation of ``week``."""
    e = html.escape
    status = '<span class="pass">PASSED</span>' if not failures else '<span class="fail">FAILED</span>'
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Data validation - week {e(week.isoformat())}</title>",
        f"<style>{VALIDATION_CSS}</style></head><body>",
        f"<h1>Data validation - week {e(week.isoformat())}: {status}</h1>",
        "<p>Settings: "
        + ", ".join(f"<code>{e(k)}={e(str(v))}</code>" for k, v in config.model_dump().items())
        + "</p>",
    ]
    if failures:
        out.append("<h2>Batch failures</h2><ul>")
        out.extend(f'<li class="fail">{e(f)}</li>' for f in failures)
        out.append("</ul>")
    for kind, o in outcomes.items():
        kind_status = (
            '<span class="pass">passed</span>' if not o.failures else '<span class="fail">failed</span>'
        )
        out.append(f"<h2>{e(kind)}: {kind_status} <small>({e(o.engine)})</small></h2>")
        out.append("<table><tr><th>rows read</th><th>staged</th><th>malformed</th><th>valid</th>")
        out.append("<th>quarantined</th><th>quarantined share</th></tr><tr>")
        for v in (o.rows_read, o.rows_staged, o.rows_malformed, o.rows_valid, o.rows_quarantined):
            out.append(_cell(v, "num"))
        out.append(_cell(f"{o.quarantine_share:.2%}", "num") + "</tr></table>")
        if o.notes:
            out.append("<ul>" + "".join(f"<li>{e(n)}</li>" for n in o.notes) + "</ul>")
        if o.by_reason:
            out.append("<h3>Quarantine reasons</h3><table><tr><th>reason</th><th>rows</th></tr>")
            for reason, count in sorted(o.by_reason.items(), key=lambda kv: (-kv[1], kv[0])):
                out.append(f"<tr>{_cell(reason)}{_cell(count, 'num')}</tr>")
            out.append("</table>")
        out.append("<h3>Checks</h3><table><tr><th>level</th><th>expectation</th><th>column</th><th>rule</th>")
        out.append("<th>result</th><th>observed</th><th>unexpected</th><th>quarantined</th></tr>")
        for c in o.checks:
            row_cls = "" if c["success"] else ' class="failed"'
            if c.get("skipped"):
                result, result_cls = "not checked", "skip"
            else:
                result, result_cls = ("pass", "pass") if c["success"] else ("FAIL", "fail")
            out.append(
                f"<tr{row_cls}>{_cell(c['level'])}<td><code>{e(c['expectation'])}</code></td>"
                f"{_cell(c['column'])}{_cell(c['rule'])}{_cell(result, result_cls)}"
                f"{_cell(c['observed'])}{_cell(c['unexpected_count'], 'num')}{_cell(c['rows_quarantined'], 'num')}</tr>"
            )
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def report_path(lake: Lake, week: date) -> Path:
    """Where the HTML validation report of ``week`` is written."""
    return lake.partition("reports", week) / "validation.html"
