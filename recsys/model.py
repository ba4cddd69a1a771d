"""Factor models and the fast top-N scorer, plus the MLflow pyfunc that serves them.

A trained model is a directory with ``factors.npz`` (user and item factors, user pseudonyms, item
ids, the items each user has already seen, the popularity order for users the model does not
know) and ``meta.json``. Scoring is blocked matrix products with numpy and ``argpartition``: no
Spark needed to serve, and no per-user Python loop over items.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

BLOCK_USERS = 2048
RECOMMENDATION_COLUMNS = ["user", "rank", "item_id", "score"]


@dataclass
class FactorModel:
    users: np.ndarray  # (n_users,) pseudonyms
    items: np.ndarray  # (n_items,) int64 item ids
    user_factors: np.ndarray  # (n_users, rank) float32
    item_factors: np.ndarray  # (n_items, rank) float32
    seen: sparse.csr_matrix  # (n_users, n_items) 1 where the user interacted in training
    popular: np.ndarray  # item ids, most popular first (fallback for unknown users)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._user_index = {u: i for i, u in enumerate(self.users.tolist())}

    @property
    def rank(self) -> int:
        return int(self.user_factors.shape[1])

    def knows(self, user: str) -> bool:
        return user in self._user_index

    # ---- persistence -----------------------------------------------------------------------
    def save(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            directory / "factors.npz",
            users=self.users.astype(str),
            items=self.items.astype(np.int64),
            user_factors=self.user_factors.astype(np.float32),
            item_factors=self.item_factors.astype(np.float32),
            seen_indptr=self.seen.indptr,
            seen_indices=self.seen.indices,
            popular=self.popular.astype(np.int64),
        )
        (directory / "meta.json").write_text(json.dumps(self.meta, indent=2, default=str), encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: Path) -> FactorModel:
        with np.load(directory / "factors.npz", allow_pickle=False) as z:
            n_users, n_items = len(z["users"]), len(z["items"])
            seen = sparse.csr_matrix(
                (np.ones(len(z["seen_indices"]), dtype=np.float32), z["seen_indices"], z["seen_indptr"]),
                shape=(n_users, n_items),
            )
            model = cls(
                users=z["users"],
                items=z["items"],
                user_factors=z["user_factors"],
                item_factors=z["item_factors"],
                seen=seen,
                popular=z["popular"],
            )
        meta_file = directory / "meta.json"
        if meta_file.exists():
            model.meta = json.loads(meta_file.read_text(encoding="utf-8"))
        return model

    # ---- scoring -----------------------------------------------------------------------------
    def recommend(
        self,
        users: Sequence[str],
        k: int = 10,
        exclude: dict[str, Iterable[int]] | None = None,
        exclude_seen: bool = True,
    ) -> pd.DataFrame:
        """Top-``k`` items per user as a long frame (user, rank, item_id, score), best first.

        Known users are scored with their factors; their training items (and ``exclude``) are never
        recommended. Unknown users get the most popular items they have not been excluded from,
        with a NaN score (so callers can tell a fallback from a model score).
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        item_pos = {int(item): j for j, item in enumerate(self.items.tolist())}
        known = [(u, self._user_index[u]) for u in users if u in self._user_index]
        unknown = [u for u in users if u not in self._user_index]
        frames: list[pd.DataFrame] = []
        kk = min(k, len(self.items))
        for start in range(0, len(known), BLOCK_USERS):
            block = known[start : start + BLOCK_USERS]
            rows = np.fromiter((i for _, i in block), dtype=np.int64, count=len(block))
            scores = self.user_factors[rows] @ self.item_factors.T
            if exclude_seen:
                sub = self.seen[rows]
                scores[sub.nonzero()] = -np.inf
            if exclude:
                for r, (user, _) in enumerate(block):
                    cols = [item_pos[int(i)] for i in exclude.get(user, ()) if int(i) in item_pos]
                    if cols:
                        scores[r, cols] = -np.inf
            top = np.argpartition(-scores, kth=kk - 1, axis=1)[:, :kk]
            top_scores = np.take_along_axis(scores, top, axis=1)
            order = np.argsort(-top_scores, axis=1, kind="stable")
            top = np.take_along_axis(top, order, axis=1)
            top_scores = np.take_along_axis(top_scores, order, axis=1)
            frame = pd.DataFrame(
                {
                    "user": np.repeat([u for u, _ in block], kk),
                    "rank": np.tile(np.arange(1, kk + 1), len(block)),
                    "item_id": self.items[top.ravel()].astype(np.int64),
                    "score": top_scores.ravel().astype(np.float64),
                }
            )
            frames.append(frame[np.isfinite(frame["score"])])
        if unknown:
            frames.append(self._popular_for(unknown, k, exclude or {}))
        if not frames:
            return pd.DataFrame(
                {
                    c: pd.Series(dtype=t)
                    for c, t in zip(
                        RECOMMENDATION_COLUMNS, ["string", "int64", "int64", "float64"], strict=True
                    )
                }
            )
        out = pd.concat(frames, ignore_index=True)
        return out[RECOMMENDATION_COLUMNS]

    def _popular_for(self, users: list[str], k: int, exclude: dict[str, Iterable[int]]) -> pd.DataFrame:
        rows = []
        for user in users:
            banned = {int(i) for i in exclude.get(user, ())}
            picks = [int(i) for i in self.popular[: k + len(banned)] if int(i) not in banned][:k]
            rows.extend((user, r + 1, item, np.nan) for r, item in enumerate(picks))
        return pd.DataFrame(rows, columns=RECOMMENDATION_COLUMNS)


def popularity_order(train: pd.DataFrame) -> np.ndarray:
    """Item ids by number of distinct training users, most popular first (ties by item id)."""
    counts = train.groupby("item_id")["user"].nunique().reset_index(name="n")
    counts = counts.sort_values(["n", "item_id"], ascending=[False, True])
    return counts["item_id"].to_numpy(dtype=np.int64)


def seen_matrix(train: pd.DataFrame, users: np.ndarray, items: np.ndarray) -> sparse.csr_matrix:
    upos = pd.Index(users).get_indexer(train["user"])
    ipos = pd.Index(items).get_indexer(train["item_id"])
    keep = (upos >= 0) & (ipos >= 0)
    data = np.ones(int(keep.sum()), dtype=np.float32)
    matrix = sparse.csr_matrix((data, (upos[keep], ipos[keep])), shape=(len(users), len(items)))
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


def popularity_model(train: pd.DataFrame) -> FactorModel:
    """The popularity baseline as a FactorModel: rank-1, every known user scores items by popularity."""
    users = np.array(sorted(train["user"].unique()), dtype=str)
    popular = popularity_order(train)
    items = np.sort(popular)
    counts = train.groupby("item_id")["user"].nunique().reindex(items).to_numpy(dtype=np.float32)
    return FactorModel(
        users=users,
        items=items,
        user_factors=np.ones((len(users), 1), dtype=np.float32),
        item_factors=counts.reshape(-1, 1),
        seen=seen_matrix(train, users, items),
        popular=popular,
        meta={"kind": "popularity"},
    )
