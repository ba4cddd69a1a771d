"""Re-ranking against echo chambers: maximal marginal relevance over genres, and genre caps.

Both take a deeper candidate list per user (user, rank, item_id, score; e.g. the top 5k of a model)
and return ``k`` items per user, re-ranked 1..k, with the columns they were given (scores are the
model's, unchanged).

* :func:`mmr` (Carbonell & Goldstein's maximal marginal relevance): picks greedily the candidate
  maximising ``lambda * relevance - (1 - lambda) * max similarity to the items already picked``,
  relevance being the model's score min-max scaled within the user's candidates and similarity the
  Jaccard overlap of genres. ``lambda = 1`` keeps the model's order.
* :func:`cap_genres`: walks the candidates in the model's order and skips an item once each of its
  genres already fills ``max_share`` of the list (items without genres are never skipped); if the
  caps leave the list short, the skipped items fill it in their order.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import numpy as np
import pandas as pd


def _genre_sets(items: np.ndarray, item_genres: Mapping[int, Collection[str]]) -> list[frozenset[str]]:
    return [frozenset(item_genres.get(int(i)) or ()) for i in items]


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a and b else 0.0


def _per_user(candidates: pd.DataFrame, k: int, pick) -> pd.DataFrame:  # noqa: ANN001
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    missing = [c for c in ("user", "item_id", "score") if c not in candidates.columns]
    if missing:
        raise ValueError(f"candidates lack column(s) {', '.join(missing)}")
    ordered = candidates.sort_values(
        ["user", "rank"] if "rank" in candidates.columns else ["user", "score"],
        ascending=[True, "rank" in candidates.columns],
        kind="stable",
    )
    frames = []
    for _, group in ordered.groupby("user", sort=False):
        chosen = group.iloc[pick(group, min(k, len(group)))]
        frames.append(chosen.assign(rank=np.arange(1, len(chosen) + 1, dtype=np.int64)))
    if not frames:
        return candidates.iloc[0:0]
    return pd.concat(frames, ignore_index=True)


def mmr(
    candidates: pd.DataFrame, item_genres: Mapping[int, Collection[str]], k: int, lambda_: float = 0.7
) -> pd.DataFrame:
    """``k`` items per user by maximal marginal relevance (see the module's docstring)."""
    if not 0.0 <= lambda_ <= 1.0:
        raise ValueError(f"lambda_ must be within [0, 1], got {lambda_}")

    def pick(group: pd.DataFrame, n: int) -> list[int]:
        scores = group["score"].to_numpy(dtype=float)
        finite = np.isfinite(scores)
        low, high = (scores[finite].min(), scores[finite].max()) if finite.any() else (0.0, 0.0)
        relevance = np.where(finite, (scores - low) / (high - low) if high > low else 1.0, 0.0)
        genres = _genre_sets(group["item_id"].to_numpy(), item_genres)
        max_sim = np.zeros(len(group))
        left = list(range(len(group)))
        chosen: list[int] = []
        while len(chosen) < n:
            values = [lambda_ * relevance[i] - (1.0 - lambda_) * max_sim[i] for i in left]
            best = left.pop(int(np.argmax(values)))  # ties: the earlier candidate (model order)
            chosen.append(best)
            for i in left:
                max_sim[i] = max(max_sim[i], _jaccard(genres[i], genres[best]))
        return chosen

    return _per_user(candidates, k, pick)


def cap_genres(
    candidates: pd.DataFrame, item_genres: Mapping[int, Collection[str]], k: int, max_share: float = 0.5
) -> pd.DataFrame:
    """``k`` items per user with no genre above ``max_share`` of the list (see the module's docstring)."""
    if not 0.0 < max_share <= 1.0:
        raise ValueError(f"max_share must be within (0, 1], got {max_share}")
    limit = max(1, int(np.floor(max_share * k)))

    def pick(group: pd.DataFrame, n: int) -> list[int]:
        genres = _genre_sets(group["item_id"].to_numpy(), item_genres)
        counts: dict[str, int] = {}
        chosen: list[int] = []
        skipped: list[int] = []
        for i, item_genres_ in enumerate(genres):
            if len(chosen) == n:
                break
            if any(counts.get(g, 0) >= limit for g in item_genres_):
                skipped.append(i)
                continue
            chosen.append(i)
            for g in item_genres_:
                counts[g] = counts.get(g, 0) + 1
        chosen.extend(skipped[: n - len(chosen)])
        return chosen

    return _per_user(candidates, k, pick)
