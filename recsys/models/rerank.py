"""Re-ranking against echo chambers: maximal marginal relevance over genres, and genre caps.

All take a deeper candidate list per user (user, rank, item_id, score; e.g. the top 5k of a model)
and return ``k`` items per user, re-ranked 1..k, with the columns they were given (scores are the
model's, unchanged).

* :func:`mmr` (Carbonell & Goldstein's maximal marginal relevance): picks greedily the candidate
  maximising ``lambda * relevance - (1 - lambda) * max similarity to the items already picked``,
  relevance being the model's score min-max scaled within the user's candidates and similarity the
  Jaccard overlap of genres. ``lambda = 1`` keeps the model's order.
* :func:`cap_genres`: walks the candidates in the model's order and skips an item once each of its
  genres already fills ``max_share`` of the list (items without genres are never skipped); if the
  caps leave the list short, the skipped items fill it in their order.
* :func:`rerank` runs one of them (or none) as a :class:`RerankConfig` says, then hands a share of
  each list to *exploration*: the best-scored candidates whose genres the user has never watched.

Exploration rule (:attr:`RerankConfig.exploration_share`): a user's list of ``m`` items (``k``, or
fewer when the user's candidates run out) gives ``n = min(int(k * exploration_share), m)`` slots to
exploration (the product rounded down, forgiving float error: 100 * 0.29 gives 29). The re-ranked list's
first ``m - n`` items stay; every other candidate of the user (within ``RerankConfig.candidates``)
that has at least one genre and none of the user's history genres is an exploration candidate
(items without genres never are: nothing says they are new to the user; a user missing from the
history has no covered genre). The ``e <= n`` best-scored of them (ties: model order) take the
slots at 0-based positions ``m - 1, m - 1 - step, ..., m - 1 - (e - 1) * step`` with
``step = m // e`` (k=10, two items: ranks 5 and 10), the better one higher up; the kept items fill
the other positions in their order, followed, when fewer than ``n`` exploration candidates exist,
by the re-ranked list's next items. Exploration items are marked ``explore=True``; no item appears
twice.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from recsys.models.protocol import Recommender

Picker = Callable[[pd.DataFrame, int], list[int]]
"""Given one user's candidates (model order) and n, the positions of the n items to keep, in order."""


class RerankConfig(BaseModel):
    """How :func:`rerank` turns a deep candidate list into each user's ``k`` recommendations."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: Literal["none", "mmr", "genre_cap"] = Field(
        "none",
        description="none: keep the model's order; mmr: maximal marginal relevance; genre_cap: cap genres",
    )
    mmr_lambda: float = Field(
        0.7,
        ge=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="mmr: weight of relevance against genre similarity (1 keeps the model's order)",
    )
    max_share: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="genre_cap: most a genre may fill of a list (cap_genres' max_share)",
    )
    exploration_share: float = Field(
        0.0,
        ge=0.0,
        le=0.5,
        allow_inf_nan=False,
        description="share of the k slots, rounded down, given to items of genres the user has not watched",
    )
    candidates: int = Field(
        100, ge=1, description="how many of the model's items per user the re-ranker sees"
    )


def _genre_sets(items: np.ndarray, item_genres: Mapping[int, Collection[str]]) -> list[frozenset[str]]:
    return [frozenset(item_genres.get(int(i)) or ()) for i in items]


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a and b else 0.0


def _model_order(candidates: pd.DataFrame, k: int) -> pd.DataFrame:
    """The candidates checked and sorted by user, then model order (rank, else score descending)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    missing = [c for c in ("user", "item_id", "score") if c not in candidates.columns]
    if missing:
        raise ValueError(f"candidates lack column(s) {', '.join(missing)}")
    return candidates.sort_values(
        ["user", "rank"] if "rank" in candidates.columns else ["user", "score"],
        ascending=[True, "rank" in candidates.columns],
        kind="stable",
    )


def _per_user(candidates: pd.DataFrame, k: int, pick: Picker) -> pd.DataFrame:
    frames = []
    for _, group in _model_order(candidates, k).groupby("user", sort=False):
        chosen = group.iloc[pick(group, min(k, len(group)))]
        frames.append(chosen.assign(rank=np.arange(1, len(chosen) + 1, dtype=np.int64)))
    if not frames:
        return candidates.iloc[0:0]
    return pd.concat(frames, ignore_index=True)


def _keep_order(group: pd.DataFrame, n: int) -> list[int]:
    return list(range(n))


def _mmr_picker(item_genres: Mapping[int, Collection[str]], lambda_: float) -> Picker:
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

    return pick


def mmr(
    candidates: pd.DataFrame, item_genres: Mapping[int, Collection[str]], k: int, lambda_: float = 0.7
) -> pd.DataFrame:
    """``k`` items per user by maximal marginal relevance (see the module's docstring)."""
    return _per_user(candidates, k, _mmr_picker(item_genres, lambda_))


def _cap_picker(item_genres: Mapping[int, Collection[str]], k: int, max_share: float) -> Picker:
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

    return pick


def cap_genres(
    candidates: pd.DataFrame, item_genres: Mapping[int, Collection[str]], k: int, max_share: float = 0.5
) -> pd.DataFrame:
    """``k`` items per user with no genre above ``max_share`` of the list (see the module's docstring)."""
    return _per_user(candidates, k, _cap_picker(item_genres, k, max_share))


def _history(history_genres: Mapping[Any, Collection[str]], user: Any) -> frozenset[str]:
    """The user's history genres, looked up by the user id as given, then as a string."""
    seen = history_genres.get(user)
    if seen is None:
        seen = history_genres.get(str(user))
    return frozenset(seen or ())


def _explore(
    group: pd.DataFrame,
    order: list[int],
    n: int,
    item_genres: Mapping[int, Collection[str]],
    seen: frozenset[str],
) -> tuple[list[int], list[bool]]:
    """``order`` (positions in ``group``, whose items are distinct) with up to ``n`` exploration items
    placed, and which positions hold them (see the module's docstring for the rule)."""
    m = len(order)
    n = min(n, m)
    kept = order[: m - n]
    genres = _genre_sets(group["item_id"].to_numpy(), item_genres)
    scores = group["score"].to_numpy(dtype=float)
    kept_set = set(kept)
    pool = [i for i in range(len(group)) if i not in kept_set and genres[i] and not genres[i] & seen]
    pool.sort(key=lambda i: -scores[i] if np.isfinite(scores[i]) else np.inf)  # stable: ties in model order
    explore = pool[:n]
    if not explore:
        return order, [False] * m
    fill = [i for i in order[m - n :] if i not in explore][: n - len(explore)]
    exploit = iter(kept + fill)
    step = m // len(explore)
    placed = dict(zip(sorted(m - 1 - j * step for j in range(len(explore))), explore, strict=True))
    return [placed[p] if p in placed else next(exploit) for p in range(m)], [p in placed for p in range(m)]


def rerank(
    candidates: pd.DataFrame,
    item_genres: Mapping[int, Collection[str]],
    history_genres: Mapping[str, Collection[str]],
    k: int,
    config: RerankConfig,
) -> pd.DataFrame:
    """``k`` items per user (fewer when the candidates run out) as ``config`` says.

    ``candidates`` holds each user's candidate list (user, item_id, score, optionally rank and other
    columns), of which the first ``config.candidates`` in model order are used (an item listed twice
    for a user counts once, at its first place); ``item_genres`` maps
    item ids to genres and ``history_genres`` user ids to the genres of what they watched. The
    method re-ranks (``none`` keeps the model's order), then the exploration share is applied (see
    the module's docstring). Returns the given columns, ``rank`` 1..k and a boolean ``explore``
    (True for the exploration slots); scores are the model's, unchanged.
    """
    if config.method == "mmr":
        pick = _mmr_picker(item_genres, config.mmr_lambda)
    elif config.method == "genre_cap":
        pick = _cap_picker(item_genres, k, config.max_share)
    else:
        pick = _keep_order
    n_explore = math.floor(k * config.exploration_share + 1e-9)  # 100 * 0.29 = 28.999999999999996
    frames = []
    for user, group in _model_order(candidates, k).groupby("user", sort=False):
        group = group.drop_duplicates("item_id").iloc[: config.candidates]
        order = pick(group, min(k, len(group)))
        order, explore = _explore(group, order, n_explore, item_genres, _history(history_genres, user))
        chosen = group.iloc[order]
        frames.append(
            chosen.assign(
                rank=np.arange(1, len(chosen) + 1, dtype=np.int64), explore=np.array(explore, dtype=bool)
            )
        )
    if not frames:
        return candidates.iloc[0:0].assign(rank=pd.Series(dtype=np.int64), explore=pd.Series(dtype=bool))
    return pd.concat(frames, ignore_index=True)


class Reranked:
    """A model whose lists go through :func:`rerank`: ``recommend(users, k, exclude)`` asks the model
    for ``config.candidates`` items per user and re-ranks them to ``k``. What the evaluation scores
    and the recommend stage serves when re-ranking is configured. A
    :class:`~recsys.models.protocol.Recommender` itself (its scores are the model's, so with a
    re-ranking method or exploration they need not fall with the rank)."""

    def __init__(
        self,
        model: Recommender,
        item_genres: Mapping[int, Collection[str]],
        history: pd.DataFrame,
        config: RerankConfig,
    ) -> None:
        self.model, self.item_genres, self.config = model, item_genres, config
        self.history_genres: dict[str, set[str]] = {}
        for user, items in history.groupby("user")["item_id"]:
            self.history_genres[str(user)] = {g for i in items.tolist() for g in item_genres.get(int(i), ())}

    @classmethod
    def of_genres(
        cls,
        model: Recommender,
        item_genres: Mapping[int, Collection[str]],
        history_genres: Mapping[str, Collection[str]],
        config: RerankConfig,
    ) -> Reranked:
        """A Reranked whose users' history genres are given ready made (a block of users on an
        executor, :mod:`recsys.models.sides`) instead of computed from their history."""
        out = cls(model, item_genres, pd.DataFrame({"user": [], "item_id": []}), config)
        out.history_genres = {str(u): set(g) for u, g in history_genres.items()}
        return out

    def recommend(
        self, users: Sequence[str], k: int = 10, exclude: Mapping[str, Iterable[int]] | None = None
    ) -> pd.DataFrame:
        depth = max(k, self.config.candidates)
        candidates = self.model.recommend(users, k=depth, exclude=dict(exclude) if exclude else None)
        return rerank(candidates, self.item_genres, self.history_genres, k, self.config)
