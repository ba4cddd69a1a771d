"""Hybrid recommendations: ALS for users with history, content for cold users and new items.

The item universe is the catalogue (the content model's items) plus any item ALS knows that the
catalogue lacks. For every user, both scores are standardised over that universe (z-scores of the
row, so a cosine and a dot product can be added):

* a **warm** user (known to ALS, at least ``cold_user_max`` interactions) gets
  ``(1 - content_weight) * z(ALS) + content_weight * z(content)``; on an item ALS has never seen
  (added this week) the ALS term is replaced by the content one, so new items compete on content;
* a **cold** user (fewer interactions, or unknown to ALS but with some history) gets
  ``(1 - cold_popularity_weight) * z(content) + cold_popularity_weight * z(log popularity)``;
* a user with no history at all gets the most popular items (as :class:`FactorModel` does).

Every item carries the signal it came from (``source``: als+content, content, popular).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from scipy import sparse

from recsys.content import ContentModel, user_profiles
from recsys.model import RECOMMENDATION_COLUMNS, FactorModel, top_k

HYBRID_COLUMNS = [*RECOMMENDATION_COLUMNS, "source"]
BLOCK_USERS = 1024


class HybridConfig(BaseModel):
    """How ALS and content are combined."""

    model_config = ConfigDict(extra="forbid")

    content_weight: float = Field(0.2, ge=0.0, le=1.0, description="share of content in a warm user's score")
    cold_user_max: int = Field(
        5,
        ge=0,
        description="users with fewer interactions than this are served from content (and popularity)",
    )
    cold_popularity_weight: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="share of popularity (log of distinct users per item) in a cold user's score; content "
        "alone ignores that most people like what most people like",
    )


@dataclass
class HybridModel:
    als: FactorModel
    content: ContentModel
    history: pd.DataFrame  # (user, item_id[, strength]): what the profiles and the seen items come from
    config: HybridConfig = field(default_factory=HybridConfig)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        extra = np.setdiff1d(self.als.items.astype(np.int64), self.content.items)
        self.items = np.concatenate([self.content.items, extra]).astype(np.int64)
        self._item_index = pd.Index(self.items)
        n_extra = len(extra)
        self._features = sparse.vstack(
            [
                self.content.features,
                sparse.csr_matrix((n_extra, self.content.features.shape[1]), dtype=np.float32),
            ],
            format="csr",
        )
        # ALS item factors laid out on the universe; rows of items ALS never saw stay zero (masked)
        self._als_pos = pd.Index(self.als.items.astype(np.int64)).get_indexer(self.items)
        self._als_known = self._als_pos >= 0
        self._item_factors = np.zeros((len(self.items), self.als.rank), dtype=np.float32)
        self._item_factors[self._als_known] = self.als.item_factors[self._als_pos[self._als_known]]
        self.users = np.array(sorted(self.history["user"].astype(str).unique()), dtype=object)
        self._user_index = pd.Index(self.users)
        self._counts = (
            self.history.groupby("user").size().reindex(self.users).fillna(0).to_numpy(dtype=np.int64)
        )
        self._profiles = user_profiles(self._features, self._item_index, self.history, list(self.users))
        upos = self._user_index.get_indexer(self.history["user"].astype(str))
        ipos = self._item_index.get_indexer(self.history["item_id"].astype(np.int64))
        keep = (upos >= 0) & (ipos >= 0)
        seen = sparse.csr_matrix(
            (np.ones(int(keep.sum()), dtype=np.float32), (upos[keep], ipos[keep])),
            shape=(len(self.users), len(self.items)),
        )
        seen.sum_duplicates()
        self._seen = seen
        users_per_item = self.history.groupby("item_id")["user"].nunique()
        popularity = np.log1p(users_per_item.reindex(self.items).fillna(0).to_numpy(dtype=np.float32))
        self._popularity_z = _standardise(popularity.reshape(1, -1))[0]

    def segment(self, user: str) -> str:
        """cold (content only), warm (ALS + content) or unknown (no history: popularity)."""
        position = self._user_index.get_indexer([user])[0]
        if position < 0:
            return "unknown"
        if self._counts[position] < self.config.cold_user_max or not self.als.knows(user):
            return "cold"
        return "warm"

    def recommend(
        self,
        users: Sequence[str],
        k: int = 10,
        exclude: dict[str, Iterable[int]] | None = None,
        exclude_seen: bool = True,
    ) -> pd.DataFrame:
        """Top-``k`` per user (user, rank, item_id, score, source), as :meth:`FactorModel.recommend`."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        requested = np.asarray(list(users), dtype=object)
        positions = self._user_index.get_indexer(requested)
        known = requested[positions >= 0]
        rows = positions[positions >= 0]
        kk = min(k, len(self.items))
        frames = []
        for start in range(0, len(rows), BLOCK_USERS):
            block_users, block_rows = known[start : start + BLOCK_USERS], rows[start : start + BLOCK_USERS]
            scores, warm = self._scores(block_users, block_rows)
            if exclude_seen:
                scores[self._seen[block_rows].nonzero()] = -np.inf
            if exclude:
                for r, user in enumerate(block_users.tolist()):
                    cols = self._item_index.get_indexer(np.fromiter(exclude.get(user, ()), dtype=np.int64))
                    scores[r, cols[cols >= 0]] = -np.inf
            top, values = top_k(scores, kk)
            frame = pd.DataFrame(
                {
                    "user": np.repeat(block_users, kk),
                    "rank": np.tile(np.arange(1, kk + 1, dtype=np.int64), len(block_users)),
                    "item_id": self.items[top.ravel()],
                    "score": values.ravel().astype(np.float64),
                    "source": np.where(
                        np.repeat(warm, kk) & self._als_known[top.ravel()], "als+content", "content"
                    ),
                }
            )
            frames.append(frame[np.isfinite(frame["score"].to_numpy())])
        unknown = requested[positions < 0].tolist()
        if unknown:
            fallback = self.als._popular_for(unknown, k, exclude or {})
            frames.append(fallback.assign(source="popular"))
        if not frames:
            return pd.DataFrame({c: pd.Series(dtype=object) for c in HYBRID_COLUMNS})
        return pd.concat(frames, ignore_index=True)[HYBRID_COLUMNS]

    def _scores(self, users: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        content = _standardise(
            np.asarray((self._profiles[rows] @ self._features.T).todense(), dtype=np.float32)
        )
        als_rows = np.array([self.als._user_index.get(u, -1) for u in users.tolist()], dtype=np.int64)
        warm = (self._counts[rows] >= self.config.cold_user_max) & (als_rows >= 0)
        p = self.config.cold_popularity_weight
        scores = (1.0 - p) * content + p * self._popularity_z  # cold users
        if warm.any():
            w = self.config.content_weight
            als = self.als.user_factors[als_rows[warm]] @ self._item_factors.T
            als = _standardise(als, self._als_known)
            blended = (1.0 - w) * np.where(self._als_known, als, content[warm]) + w * content[warm]
            scores[warm] = blended
        return scores, warm


def _standardise(scores: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Row-wise z-scores (over the ``mask``ed columns when given); a constant row becomes zeros."""
    part = scores if mask is None else scores[:, mask]
    mean = part.mean(axis=1, keepdims=True)
    std = part.std(axis=1, keepdims=True)
    std[std == 0] = 1.0
    return ((scores - mean) / std).astype(np.float32)
