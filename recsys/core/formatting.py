"""Numbers as text: the formats that summaries, notifications, gate reasons and A/B readouts share.

The formats differ on purpose (a gate reason, a notification and a readout line do not print a
number the same way), so each has its own name; pick by what the text is for. The HTML cell
formats (``&ndash;`` for a missing value, escaped text) are in :mod:`recsys.core.html`.
"""

from __future__ import annotations

import math
from typing import Any


def finite_number(value: Any) -> float | None:
    """``value`` as a finite float, or None (None, booleans, text that is no number, NaN, inf)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def metric_text(value: Any) -> str:
    """A value in a gate's summary: "none", any number (ints too) with 4 decimals, else as text."""
    if value is None:
        return "none"
    return f"{value:.4f}" if isinstance(value, int | float) else str(value)


def float_text(value: Any) -> str:
    """A value in a notification: "none", a float with 4 decimals, anything else (ints) as text."""
    if value is None:
        return "none"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def number_or_na(value: Any, spec: str) -> str:
    """``value`` as a float formatted by ``spec`` (e.g. ``".4f"``); "n/a" for None."""
    return "n/a" if value is None else format(float(value), spec)


def percent(fraction: float) -> str:
    """A fraction as a percentage, shortest form: 0.05 is "5%", 0.025 is "2.5%"."""
    return f"{fraction * 100:g}%"


def signed_percent(value: float) -> str:
    """A relative change as a signed percentage with 2 decimals ("+10.25%"); NaN is "n/a"."""
    return "n/a" if math.isnan(value) else f"{value * 100:+.2f}%"
