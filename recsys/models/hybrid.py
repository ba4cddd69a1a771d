"""Hybrid recommendations: ALS plus content plus popularity, weighted by how much history a user has.

The item universe is the catalogue (the content model's items) plus any item ALS knows that the
catalogue lacks. For every user, three signals are standardised over that universe (z-scores of the
row, so a dot product, a cosine and a log count can be added):

* ``A``: the ALS score (on an item ALS has never seen, e.g. added this week, the content score
  stands in, so new items compete on content);
* ``C``: the cosine of the item's content features with the user's content profile (the
  strength-weighted mean of what they engaged with);
* ``P``: log(1 + distinct users) of the item in the history: "most people like what most people like"
  (never below average for an item ALS has not seen: a new title has had no time to be popular).

A user ALS knows gets ``A + w_content * C + w_popularity * P`` with the weights of their segment:
**cold** (fewer than ``cold_user_max`` interactions) or **warm**. ALS is kept for every user it
knows: on one or two interactions it is still the strongest single signal; content and popularity
correct it. A user with history whom ALS does not know (signed up after the model was trained)
gets ``C + new_user_popularity * P``; a user with no history at all gets the most popular items.

The weights are learned (:func:`recsys.training.blend.learn_blend`) on a validation split of the
training window: ALS is fitted on the earlier part, and each segment gets the grid point with the
best NDCG@k on the later part (ties go to the smaller weights, i.e. towards ALS alone); a segment
with too few validation users keeps its configured weights. Every recommended item carries the
signal it came from (``source``: als+content, content, popular).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator
from scipy import sparse

from recsys.models.content import ContentModel, user_profiles
from recsys.models.factors import FactorModel, top_k
from recsys.models.protocol import RECOMMENDATION_COLUMNS

HYBRID_COLUMNS = [*RECOMMENDATION_COLUMNS, "source"]
BLOCK_USERS = 1024
SEGMENTS = ("cold", "warm")


class BlendWeights(BaseModel):
    """Weights of the content and popularity signals next to ALS (weight 1) for one segment."""

    model_config = ConfigDict(extra="forbid")

    content: float = Field(0.0, ge=0.0, le=10.0, description="weight of z(content cosine)")
    popularity: float = Field(0.0, ge=0.0, le=10.0, description="weight of z(log popularity)")


class HybridConfig(BaseModel):
    """How ALS, content and popularity are combined (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    cold_user_max: int = Field(
        5, ge=1, description="users with fewer interactions than this are cold (their own weights)"
    )
    warm: BlendWeights = Field(
        default_factory=lambda: BlendWeights(content=0.1, popularity=0.0),
        description="weights for warm users (used as given when learn is false)",
    )
    cold: BlendWeights = Field(
        default_factory=lambda: BlendWeights(content=0.2, popularity=0.5),
        description="weights for cold users (used as given when learn is false)",
    )
    new_user_popularity: float = Field(
        0.5,
        ge=0.0,
        le=10.0,
        description="weight of popularity next to content for users with history that ALS does not know",
    )
    learn: bool = Field(True, description="learn the warm and cold weights on a validation split")
    content_grid: list[float] = Field(
        default_factory=lambda: [0.0, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 4.0], description="content weights tried"
    )
    popularity_grid: list[float] = Field(
        default_factory=lambda: [0.0, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 4.0],
        description="popularity weights tried",
    )
    min_users: int = Field(
        20, ge=1, description="validation users a segment needs for its weights to be learned"
    )
    max_users: int = Field(
        5000,
        ge=1,
        description="validation users per segment the weights are learned on: above this, a fixed sample "
        "(the users with the smallest hash of their pseudonym), since every grid point ranks each of them",
    )

    @field_validator("content_grid", "popularity_grid")
    @classmethod
    def _weights(cls, values: list[float]) -> list[float]:
        if not values:
            raise ValueError("a weight grid needs at least one value")
        if any(not 0.0 <= v <= 10.0 for v in values):
            raise ValueError(f"grid weights must be within [0, 10], got {values}")
        return sorted(set(float(v) for v in values))

    def weights(self, segment: str) -> BlendWeights:
        return self.cold if segment == "cold" else self.warm


@dataclass
class HybridModel:
    als: FactorModel
    content: ContentModel
    history: pd.DataFrame  # (user, item_id[, strength]): what the profiles and the seen items come from
    config: HybridConfig = field(default_factory=HybridConfig)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._set_items()
        self.users = np.array(sorted(self.history["user"].astype(str).unique()), dtype=object)
        self._set_user_side()

    def _set_items(self) -> None:
        """The item universe (the catalogue, then items only ALS knows), its features and the ALS
        item factors laid out on it."""
        extra = np.setdiff1d(self.als.items.astype(np.int64), self.content.items)
        self.items = np.concatenate([self.content.items, extra]).astype(np.int64)
        self._item_index = pd.Index(self.items)
        self._features = sparse.vstack(
            [
                self.content.features,
                sparse.csr_matrix((len(extra), self.content.features.shape[1]), dtype=np.float32),
            ],
            format="csr",
        )
        # ALS item factors laid out on the universe; rows of items ALS never saw stay zero (masked)
        als_pos = pd.Index(self.als.items.astype(np.int64)).get_indexer(self.items)
        self._als_known = als_pos >= 0
        self._item_factors = np.zeros((len(self.items), self.als.rank), dtype=np.float32)
        self._item_factors[self._als_known] = self.als.item_factors[als_pos[self._als_known]]

    def _set_user_side(self) -> None:
        """Each user's count, ALS row, content profile and seen items, and the items' popularity,
        from the history."""
        self._user_index = pd.Index(self.users)
        self._counts = (
            self.history.groupby("user").size().reindex(self.users).fillna(0).to_numpy(dtype=np.int64)
        )
        self._als_rows = pd.Index(self.als.users.astype(str)).get_indexer(self.users)
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
        popularity_z = _standardise(popularity.reshape(1, -1))[0]
        # a title ALS never saw (added this week) has had no time to become popular: it is not
        # held back by the popularity term (at worst average), so content can bring it forward
        self._popularity_z = np.where(self._als_known, popularity_z, np.maximum(popularity_z, 0.0))

    # ---- what the blend is made of (read by recsys.training.blend) ------------------------------
    def user_rows(self, users: Sequence[str] | np.ndarray) -> np.ndarray:
        """Positions of ``users`` in :attr:`users` (the rows :meth:`components` takes); -1 for a user
        without history."""
        return self._user_index.get_indexer(users)

    @property
    def interaction_counts(self) -> np.ndarray:
        """Interactions in the history per user of :attr:`users` (cold below ``config.cold_user_max``)."""
        return self._counts

    @property
    def popularity_z(self) -> np.ndarray:
        """z(log popularity) per item of :attr:`items`, the same for every user (never below average
        for an item ALS has not seen)."""
        return self._popularity_z

    def segment(self, user: str) -> str:
        """warm / cold (ALS plus content and popularity, by their weights), new (history but unknown
        to ALS: content and popularity) or unknown (no history: the most popular items)."""
        position = self._user_index.get_indexer([user])[0]
        if position < 0:
            return "unknown"
        if self._als_rows[position] < 0:
            return "new"
        return "cold" if self._counts[position] < self.config.cold_user_max else "warm"

    def recommend(
        self,
        users: Sequence[str],
        k: int = 10,
        exclude: Mapping[str, Iterable[int]] | None = None,
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
            scores = self._scores(block_rows)
            self.mask(scores, block_users, block_rows, exclude, exclude_seen)
            top, values = top_k(scores, kk)
            with_als = np.repeat(self._als_rows[block_rows] >= 0, kk) & self._als_known[top.ravel()]
            frame = pd.DataFrame(
                {
                    "user": np.repeat(block_users, kk),
                    "rank": np.tile(np.arange(1, kk + 1, dtype=np.int64), len(block_users)),
                    "item_id": self.items[top.ravel()],
                    "score": values.ravel().astype(np.float64),
                    "source": np.where(with_als, "als+content", "content"),
                }
            )
            frames.append(frame[np.isfinite(frame["score"].to_numpy())])
        unknown = requested[positions < 0].tolist()
        if unknown:
            fallback = self.als.popular_for(unknown, k, exclude or {})
            frames.append(fallback.assign(source="popular"))
        if not frames:
            return pd.DataFrame({c: pd.Series(dtype=object) for c in HYBRID_COLUMNS})
        return pd.concat(frames, ignore_index=True)[HYBRID_COLUMNS]

    # ---- the model in two sides (the Spark path: recsys.models.distributed) -------------------
    def item_side(self) -> HybridItems:
        """What every user's scores share: the item universe and its features, ALS item factors and
        popularity, and the blend's config (small: it grows with the catalogue, not the users)."""
        return HybridItems(
            content=self.content,
            als_items=self.als.items,
            als_item_factors=self.als.item_factors,
            popular=self.als.popular,
            popularity_z=self._popularity_z,
            config=self.config,
            meta=self.meta,
        )

    def user_side(self, users: Sequence[str]) -> HybridUsers:
        """The per-user inputs of ``users`` (those with history: :meth:`user_rows` >= 0, in the order
        given): what :meth:`HybridItems.block` needs to score them as this model does."""
        rows = self.user_rows(np.asarray(list(users), dtype=object))
        rows = rows[rows >= 0]
        als_rows = self._als_rows[rows]
        factors = np.zeros((len(rows), self.als.rank), dtype=np.float32)
        factors[als_rows >= 0] = self.als.user_factors[als_rows[als_rows >= 0]]
        return HybridUsers(
            users=self.users[rows].astype(str),
            counts=self._counts[rows],
            als_known=als_rows >= 0,
            als_factors=factors,
            profiles=self._profiles[rows],
            seen=self._seen[rows],
        )

    # ---- persistence -------------------------------------------------------------------------
    def save(self, directory: Path) -> Path:
        """ALS in ``als/``, content in ``content/``, the history (pseudonyms, items, strength) and
        the blend weights: everything :meth:`load` needs, nothing else."""
        directory.mkdir(parents=True, exist_ok=True)
        self.als.save(directory / "als")
        self.content.save(directory / "content")
        columns = [c for c in ("user", "item_id", "strength", "last_ts") if c in self.history.columns]
        self.history[columns].to_parquet(directory / "history.parquet", index=False)
        (directory / "hybrid.json").write_text(
            json.dumps({"config": self.config.model_dump(), "meta": self.meta}, indent=2, default=str),
            encoding="utf-8",
        )
        return directory

    @classmethod
    def load(cls, directory: Path) -> HybridModel:
        saved = json.loads((directory / "hybrid.json").read_text(encoding="utf-8"))
        return cls(
            als=FactorModel.load(directory / "als"),
            content=ContentModel.load(directory / "content"),
            history=pd.read_parquet(directory / "history.parquet"),
            config=HybridConfig.model_validate(saved["config"]),
            meta=saved.get("meta", {}),
        )

    # ---- scoring -----------------------------------------------------------------------------
    def mask(
        self,
        scores: np.ndarray,
        users: np.ndarray,
        rows: np.ndarray,
        exclude: Mapping[str, Iterable[int]] | None,
        exclude_seen: bool,
    ) -> None:
        """Set to -inf, in place, the ``scores`` (one row per user of ``users``, at ``rows`` of this
        model; one column per item of :attr:`items`) of each user's history items (``exclude_seen``)
        and ``exclude``d items."""
        if exclude_seen:
            scores[self._seen[rows].nonzero()] = -np.inf
        if exclude:
            for r, user in enumerate(users.tolist()):
                cols = self._item_index.get_indexer(np.fromiter(exclude.get(user, ()), dtype=np.int64))
                scores[r, cols[cols >= 0]] = -np.inf

    def components(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """z(ALS) (content where ALS cannot score), z(content) and whether ALS knows each user, for
        user ``rows`` of this model; popularity is :attr:`popularity_z` (the same for everyone)."""
        content = self.content.score(self._profiles[rows])
        extra = len(self.items) - len(self.content.items)  # items only ALS knows: no features, cosine 0
        if extra:
            content = np.hstack([content, np.zeros((len(content), extra), dtype=np.float32)])
        content = _standardise(content)
        als_rows = self._als_rows[rows]
        known = als_rows >= 0
        als = content.copy()
        if known.any():
            raw = self.als.user_factors[als_rows[known]] @ self._item_factors.T
            als[known] = np.where(self._als_known, _standardise(raw, self._als_known), content[known])
        return als, content, known

    def _scores(self, rows: np.ndarray) -> np.ndarray:
        als, content, known = self.components(rows)
        cold = self._counts[rows] < self.config.cold_user_max
        w_content = np.where(cold, self.config.cold.content, self.config.warm.content)[:, None]
        w_pop = np.where(cold, self.config.cold.popularity, self.config.warm.popularity)[:, None]
        scores = als + w_content * content + w_pop * self._popularity_z
        if not known.all():
            stranger = ~known
            scores[stranger] = content[stranger] + self.config.new_user_popularity * self._popularity_z
        return scores.astype(np.float32)


@dataclass(frozen=True)
class HybridUsers:
    """Per-user inputs of a :class:`HybridModel` (:meth:`HybridModel.user_side`), one row per user."""

    users: np.ndarray  # (n,) pseudonyms with history
    counts: np.ndarray  # (n,) interactions in the history
    als_known: np.ndarray  # (n,) whether ALS knows the user
    als_factors: np.ndarray  # (n, rank) float32, zeros where ALS does not know the user
    profiles: sparse.csr_matrix  # (n, features) content profiles
    seen: sparse.csr_matrix  # (n, universe items) 1 where in the history


@dataclass(frozen=True)
class HybridItems:
    """The item side of a :class:`HybridModel` (:meth:`HybridModel.item_side`): broadcast once to
    the executors, each of which scores its block of users with :meth:`block`."""

    content: ContentModel
    als_items: np.ndarray
    als_item_factors: np.ndarray
    popular: np.ndarray  # ALS's popularity order: the fallback of users without history
    popularity_z: np.ndarray  # over the model's item universe, computed from the whole history
    config: HybridConfig
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        """Items of the universe: the catalogue, then the items only ALS knows."""
        return len(self.content.items) + len(
            np.setdiff1d(self.als_items.astype(np.int64), self.content.items)
        )

    @property
    def n_features(self) -> int:
        return int(self.content.features.shape[1])

    def block(self, users: HybridUsers) -> HybridModel:
        """A HybridModel of ``users`` alone over this item side: its ``recommend`` gives each of them
        what the whole model gives (the same arrays, so the same scores to the bit when the users are
        scored in the same blocks of ``BLOCK_USERS``); a user without history gets the popular
        fallback. Its ``history`` is empty: the profiles and seen items come ready made."""
        known = users.als_known
        als = FactorModel(
            users=users.users[known],
            items=self.als_items,
            user_factors=users.als_factors[known],
            item_factors=self.als_item_factors,
            seen=sparse.csr_matrix((int(known.sum()), len(self.als_items)), dtype=np.float32),
            popular=self.popular,
        )
        model = object.__new__(HybridModel)
        model.als, model.content, model.config, model.meta = als, self.content, self.config, dict(self.meta)
        model.history = pd.DataFrame({"user": pd.Series(dtype=object), "item_id": pd.Series(dtype="int64")})
        model._set_items()
        model.users = np.asarray(users.users, dtype=object)
        model._user_index = pd.Index(model.users)
        model._counts = np.asarray(users.counts, dtype=np.int64)
        model._als_rows = np.where(known, np.cumsum(known) - 1, -1)
        model._profiles = users.profiles
        model._seen = users.seen
        model._popularity_z = self.popularity_z
        return model


def _standardise(scores: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Row-wise z-scores (over the ``mask``ed columns when given); a constant row becomes zeros."""
    part = scores if mask is None else scores[:, mask]
    mean = part.mean(axis=1, keepdims=True)
    std = part.std(axis=1, keepdims=True)
    std[std == 0] = 1.0
    return ((scores - mean) / std).astype(np.float32)
