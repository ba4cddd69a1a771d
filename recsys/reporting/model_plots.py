"""The model report's plots: the primary metric over the registered versions and the candidate's
score distribution, each as an ``<img>`` (an inline PNG, see :mod:`recsys.core.html`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from recsys.core.formatting import finite_number
from recsys.core.html import mpl_text, png_img
from recsys.io.tracking import metric_key

STATUS_COLOURS = {"passed": "#2e7d32", "rejected": "#c62828"}
OTHER_COLOUR = "#757575"
CANDIDATE_COLOUR = "#1565c0"


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
    points: list[tuple[str, float | None, str, bool]] = []  # label, value, status, is candidate
    for row in history:
        version = str(row.get("version", "?"))
        value = finite_number(row.get(primary, row.get(metric_key(primary))))
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
                ax.scatter([x], [value], s=180, marker="*", color=CANDIDATE_COLOUR, zorder=3)
                ax.annotate(
                    f"candidate {value:.4f}",
                    (x, value),
                    textcoords="offset points",
                    xytext=(0, 10),
                    ha="center",
                    fontsize=8,
                    color=CANDIDATE_COLOUR,
                )
            else:
                colour = STATUS_COLOURS.get(status, OTHER_COLOUR)
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
        ax.set_xticklabels([mpl_text(p[0]) for p in points][::step], fontsize=7)
        ax.set_ylabel(mpl_text(primary))
        ax.set_title(f"{mpl_text(primary)} by model version (green passed, red rejected)", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.margins(y=0.25)

    return png_img(draw)


def finite_scores(scores: Any) -> Any:
    """The scores as a flat float array without NaN or infinite values (fallback scores are NaN)."""
    values = np.asarray(scores if hasattr(scores, "__len__") else list(scores), dtype=float).ravel()
    return values[np.isfinite(values)]


def plot_scores(scores: Any, k: int | None = None) -> str | None:
    """Histogram of the candidate's top-k scores (non-finite scores dropped); None when empty."""
    values = finite_scores(scores)
    if values.size == 0:
        return None

    def draw(ax: Any) -> None:
        ax.hist(values, bins=min(50, max(5, int(np.sqrt(values.size)))), color=CANDIDATE_COLOUR, alpha=0.8)
        ax.axvline(float(np.median(values)), color="#212121", linestyle="--", linewidth=1, label="median")
        top = f"top-{k} " if k else ""
        ax.set_title(f"candidate {top}scores ({values.size:,} recommendations)", fontsize=10)
        ax.set_xlabel("score")
        ax.set_ylabel("count")
        ax.legend(fontsize=8)

    return png_img(draw)
