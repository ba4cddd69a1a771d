"""The building blocks of the self-contained HTML pages (model report, data profile, drift history,
model history, validation report), in one place.

A page is one file with everything inline: CSS in a ``<style>`` block, plots as base64 PNGs drawn
with matplotlib's Agg backend (no pyplot, no global state), no script, no external URL, so it
renders the same in MLflow's artifact viewer, in a browser from disk, or attached to a ticket.
Every value that comes from data or configuration goes through :func:`escape`.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable
from typing import Any

from recsys.core.formatting import finite_number

#: the style of the report pages (model report, data profile, drift history, model history)
REPORT_CSS = """
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

#: the style of the data-validation report (plain tables, pass / fail / skip colours)
VALIDATION_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.pass { color: #176f2c; font-weight: bold; }
.fail { color: #b00020; font-weight: bold; }
.skip { color: #8a6d00; }
tr.failed td { background: #fdecee; }
code { font-size: 0.9em; }
"""


# ---- text and cells ----------------------------------------------------------------------------
def escape(value: Any) -> str:
    """``str(value)`` HTML-escaped, quotes included (safe in text and in attribute values)."""
    return html.escape(str(value), quote=True)


def metric_cell(value: Any, digits: int = 4) -> str:
    """A metric value for a table cell (already escaped)."""
    if value is None:
        return "&ndash;"
    if isinstance(value, bool | str):
        return escape(value)  # text stays as given (a digest of digits is not a number)
    if isinstance(value, int):
        return f"{value:,}"
    number = finite_number(value)
    if number is None:
        return "&ndash;" if isinstance(value, float) else escape(value)
    if number.is_integer() and abs(number) >= 1:
        return f"{int(number):,}"
    return f"{number:.{digits}f}"


def percent_cell(value: float | None) -> str:
    """A fraction for a table cell as a percentage with 1 decimal ("12.5%"); None is ``&ndash;``."""
    return "&ndash;" if value is None else f"{value:.1%}"


def note(text: str) -> str:
    """A short italic note (a figure left out, a section that could not be rendered)."""
    return f'<p class="note">{escape(text)}</p>'


def html_table(header: list[str], rows: list[tuple[str, list[str]]], left: int = 1) -> str:
    """``header`` cells are raw text (escaped here); row cells are HTML already.

    Each row is ``(css class of the <tr>, cells)``; the first ``left`` columns are left-aligned.
    """
    head = "".join(f'<th class="{"l" if i < left else ""}">{escape(h)}</th>' for i, h in enumerate(header))
    body = "".join(
        f'<tr class="{cls}">'
        + "".join(f'<td class="{"l" if i < left else ""}">{cell}</td>' for i, cell in enumerate(cells))
        + "</tr>"
        for cls, cells in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_page(title: str, body: str, css: str = REPORT_CSS) -> str:
    """One self-contained HTML document: ``title`` (escaped here), ``css`` inline, ``body`` as given."""
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>{css}</style></head><body>" + body + "</body></html>"
    )


# ---- plots -------------------------------------------------------------------------------------
def mpl_text(value: Any) -> str:
    """Plot labels: matplotlib reads ``$...$`` as math; show dollars literally."""
    return str(value).replace("$", r"\$")


def png_bytes(draw: Callable[[Any], None], size: tuple[float, float] = (8.0, 3.2)) -> bytes:
    """Draw on a fresh Agg figure (no pyplot, no global state); the PNG's bytes."""
    # deferred: matplotlib is heavy (seconds), and only pages with a plot need it
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


def png_img(draw: Callable[[Any], None], size: tuple[float, float] = (8.0, 3.2)) -> str:
    """:func:`png_bytes` as an <img> with a data URI."""
    encoded = base64.b64encode(png_bytes(draw, size)).decode("ascii")
    return f'<img alt="plot" src="data:image/png;base64,{encoded}">'
