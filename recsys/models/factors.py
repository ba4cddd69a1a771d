"""Factor models and the fast top-N scorer, plus the MLflow pyfunc that serves them.

A trained model is a directory with ``factors.npz`` (user and item factors, user pseudonyms, item
ids, the items each user has already seen, the popularity order for users the model does not
know) and ``meta.json``. Scoring is blocked matrix products with numpy and ``argpartition``: no
Spark needed to serve, and no per-user Python loop over items.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from threadpoolctl import threadpool_limits

from recsys.models.protocol import RECOMMENDATION_COLUMNS

BLOCK_USERS = 2048


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
        exclude: Mapping[str, Iterable[int]] | None = None,
        exclude_seen: bool = True,
    ) -> pd.DataFrame:
        """Top-``k`` items per user as a long frame (user, rank, item_id, score), best first: the
        :class:`~recsys.models.protocol.Recommender` contract.

        Known users are scored with their factors; their training items (and ``exclude``) are never
        recommended. Unknown users get the most popular items they have not been excluded from,
        with a NaN score (so callers can tell a fallback from a model score).

        Blocks of users are scored with one matrix product each and reduced to their top ``k`` by
        :func:`top_k` (chunk maxima first, then only the winning chunks), on a thread per core:
        numpy and BLAS release the GIL.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        positions = pd.Index(self.users).get_indexer(pd.Index(list(users), dtype=object))
        requested = np.asarray(list(users), dtype=object)
        rows = positions[positions >= 0]
        known_users = requested[positions >= 0]
        unknown = requested[positions < 0].tolist()
        kk = min(k, len(self.items))
        banned = self._exclusions(known_users, exclude) if exclude else None
        n_items = len(self.items)
        item_factors_t = np.zeros((self.rank, -(-n_items // CHUNK) * CHUNK), dtype=self.item_factors.dtype)
        item_factors_t[:, :n_items] = self.item_factors.T
        size = self._block_users()
        blocks = [(start, rows[start : start + size]) for start in range(0, len(rows), size)]

        def score(block: tuple[int, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
            start, block_rows = block
            scores = self.user_factors[block_rows] @ item_factors_t
            scores[:, n_items:] = -np.inf  # padding up to whole chunks: top_k then copies nothing
            if exclude_seen:
                scores[self.seen[block_rows].nonzero()] = -np.inf
            if banned is not None:
                scores[banned[start : start + len(block_rows)].nonzero()] = -np.inf
            top, values = top_k(scores, kk)
            return np.minimum(top, n_items - 1), values  # a padding column only wins with -inf

        workers = min(len(blocks), os.cpu_count() or 1)
        if workers > 1:
            # one BLAS thread per block: BLAS's own pool on top of ours oversubscribes the cores and
            # its idle threads spin against the scoring threads
            with (
                threadpool_limits(limits=1, user_api="blas"),
                ThreadPoolExecutor(max_workers=workers) as pool,
            ):
                results = list(pool.map(score, blocks))
        else:
            results = [score(block) for block in blocks]
        frames: list[pd.DataFrame] = []
        if results:
            top = np.concatenate([t for t, _ in results])
            top_scores = np.concatenate([s for _, s in results])
            frame = pd.DataFrame(
                {
                    "user": np.repeat(known_users, kk),
                    "rank": np.tile(np.arange(1, kk + 1, dtype=np.int64), len(known_users)),
                    "item_id": self.items[top.ravel()].astype(np.int64),
                    "score": top_scores.ravel().astype(np.float64),
                }
            )
            frames.append(frame[np.isfinite(frame["score"].to_numpy())])
        if unknown:
            frames.append(self.popular_for(unknown, k, exclude or {}))
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

    def _block_users(self) -> int:
        """Users per scoring block: about 8 MiB of float32 scores, between 64 and BLOCK_USERS."""
        return int(max(64, min(BLOCK_USERS, (8 << 20) // (4 * max(len(self.items), 1)))))

    def _exclusions(self, users: np.ndarray, exclude: Mapping[str, Iterable[int]]) -> sparse.csr_matrix:
        """``exclude`` as a (len(users), n_items) sparse matrix; item ids the model lacks are ignored."""
        user_rows: list[np.ndarray] = []
        item_ids: list[np.ndarray] = []
        for r, user in enumerate(users.tolist()):
            chosen = exclude.get(user)
            if chosen is None:
                continue
            ids = np.fromiter((int(i) for i in chosen), dtype=np.int64)
            user_rows.append(np.full(len(ids), r, dtype=np.int64))
            item_ids.append(ids)
        if not item_ids:
            return sparse.csr_matrix((len(users), len(self.items)), dtype=np.float32)
        cols = self._item_index().get_indexer(np.concatenate(item_ids))
        rows = np.concatenate(user_rows)
        keep = cols >= 0
        return sparse.csr_matrix(
            (np.ones(int(keep.sum()), dtype=np.float32), (rows[keep], cols[keep])),
            shape=(len(users), len(self.items)),
        )

    def _item_index(self) -> pd.Index:
        return pd.Index(self.items.astype(np.int64))

    def popular_for(self, users: list[str], k: int, exclude: Mapping[str, Iterable[int]]) -> pd.DataFrame:
        """The fallback list of ``users``: the ``k`` most popular items each is not excluded from,
        ranked 1.., with NaN scores (user, rank, item_id, score)."""
        rows = []
        for user in users:
            banned = {int(i) for i in exclude.get(user, ())}
            picks = [int(i) for i in self.popular[: k + len(banned)] if int(i) not in banned][:k]
            rows.extend((user, r + 1, item, np.nan) for r, item in enumerate(picks))
        return pd.DataFrame(rows, columns=RECOMMENDATION_COLUMNS)


CHUNK = 16  # items per chunk of the two-stage top-k


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Column positions and values of each row's ``k`` highest scores, best first.

    Two stages instead of one ``argpartition`` over every score: the columns are split into chunks of
    :data:`CHUNK` (chunk ``j`` = columns ``j, j + n, j + 2n, ...``), each chunk's maximum is taken
    (an elementwise max of contiguous rows, vectorised), the ``k`` chunks with the highest maxima
    are kept, and the top ``k`` is chosen among their columns only. Exact: a chunk holding one of
    the top ``k`` scores has a maximum at least the ``k``-th best score, and at most ``k`` chunks
    can (ties at the ``k``-th score may pick either of the tied columns, as ``argpartition`` does).
    """
    n_rows, n_cols = scores.shape
    k = min(k, n_cols)
    if n_rows == 0 or n_cols <= 4 * k * CHUNK:
        top = np.argpartition(scores, n_cols - k, axis=1)[:, n_cols - k :]
        values = np.take_along_axis(scores, top, axis=1)
    else:
        n_chunks = -(-n_cols // CHUNK)
        padded = n_chunks * CHUNK
        if padded != n_cols:
            wide = np.full((n_rows, padded), -np.inf, dtype=scores.dtype)
            wide[:, :n_cols] = scores
            scores = wide
        by_chunk = scores.reshape(n_rows, CHUNK, n_chunks)
        best = np.argpartition(by_chunk.max(axis=1), n_chunks - k, axis=1)[:, n_chunks - k :]
        candidates = np.take_along_axis(by_chunk, best[:, None, :], axis=2).reshape(n_rows, CHUNK * k)
        pick = np.argpartition(candidates, CHUNK * k - k, axis=1)[:, CHUNK * k - k :]
        values = np.take_along_axis(candidates, pick, axis=1)
        columns = (np.arange(CHUNK)[None, :, None] * n_chunks + best[:, None, :]).reshape(n_rows, CHUNK * k)
        # a padding column (score -inf) can only win in a row with fewer than k finite scores; it
        # keeps its -inf score, and its position is clipped into range
        top = np.minimum(np.take_along_axis(columns, pick, axis=1), n_cols - 1)
    order = np.argsort(-values, axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1), np.take_along_axis(values, order, axis=1)


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
