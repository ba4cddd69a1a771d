"""Input data for the raw lake: synthetic weekly logs and the MovieLens datasets.

Both sources write the same files into each week's raw partitions (see ``recsys.core.schemas``)::

    raw/events/week=YYYY-MM-DD/events.csv   the week's interaction log lines
    raw/items/week=YYYY-MM-DD/items.csv     catalogue snapshot as of the week's end
    raw/users/week=YYYY-MM-DD/users.csv     user profiles as of the week's end

The synthetic generator also records its world (``generator.json`` at the lake root), so that
``recsys.experiments.feedback_log`` can simulate ``raw/feedback/week=YYYY-MM-DD/feedback.csv`` on it.

UTF-8, header row, comma separated, ``\\n`` line ends, minimal RFC 4180 quoting, written atomically.

* ``recsys.data.synthetic``: ``GeneratorConfig``, ``generate(lake, config, end_week)``
* ``recsys.data.movielens``: ``load_movielens(path)``, ``land_movielens(lake, path)``

This module holds the CSV writing both share.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.io.storage import Lake, write_text

EVENTS_FILE = "events.csv"
ITEMS_FILE = "items.csv"
USERS_FILE = "users.csv"
FEEDBACK_FILE = "feedback.csv"  # simulated feedback (recsys.experiments.feedback_log.simulate_week)
RAW_FILE_NAMES = {"events": EVENTS_FILE, "items": ITEMS_FILE, "users": USERS_FILE, "feedback": FEEDBACK_FILE}

_SPECIAL = (",", '"', "\r", "\n")


def _quote(text: str) -> str:
    if any(ch in text for ch in _SPECIAL):
        return '"' + text.replace('"', '""') + '"'
    return text


def _missing(value: object) -> bool:
    return (
        value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and np.isnan(value))
    )


def csv_rows(df: pd.DataFrame) -> tuple[str, np.ndarray]:
    """The CSV header line and one CSV line per row (no line ends), for text columns.

    Missing values become empty fields; a field is quoted only when it holds a comma, a quote or a
    line break (the same bytes as ``df.to_csv(index=False)``, several times faster on large frames).
    """
    header = ",".join(_quote(str(name)) for name in df.columns)
    if len(df) == 0:
        return header, np.empty(0, dtype=object)
    lines: np.ndarray | None = None
    for name in df.columns:
        values = df[name].to_numpy(dtype=object)
        try:
            joined = "".join(values)
        except TypeError:  # not all text
            values = np.array(["" if _missing(v) else str(v) for v in values], dtype=object)
            joined = "".join(values)
        if any(ch in joined for ch in _SPECIAL):
            values = np.array([_quote(v) for v in values], dtype=object)
        lines = values if lines is None else lines + "," + values
    assert lines is not None
    return header, lines


def csv_text(df: pd.DataFrame) -> str:
    """``df`` as CSV text: header row, comma separated, ``\\n`` line ends."""
    header, lines = csv_rows(df)
    return "\n".join([header, *lines.tolist()]) + "\n"


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    """Write ``df`` as UTF-8 CSV atomically (temporary name in the same folder, then rename)."""
    return write_text(csv_text(df), path)


def raw_file(lake: Lake, kind: str, week: date) -> Path:
    """Where the generator and the MovieLens loader put ``kind``'s file for ``week``."""
    return lake.partition("raw", week, kind) / RAW_FILE_NAMES[kind]


__all__ = [
    "EVENTS_FILE",
    "FEEDBACK_FILE",
    "ITEMS_FILE",
    "RAW_FILE_NAMES",
    "USERS_FILE",
    "csv_rows",
    "csv_text",
    "raw_file",
    "write_csv",
]
