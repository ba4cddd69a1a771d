"""Rows of a home page and the reason behind every item in them.

A user's page is a list of rows, each with a stable id and a title:

* ``top_picks`` "Top picks for you": the served model's top-k;
* ``because:<item_id>`` "Because you watched <title>": items most similar to one of the user's
  recent titles (one row per seed, newest seeds first);
* ``trending`` "Trending now": the items most users engaged with in the latest week;
* ``new`` "New this week": the items added to the catalogue this week, best content match first.

Every item carries ``reason_item_id`` and ``reason``: for a top pick, the watched item most similar
to it (item-factor cosine when ALS scored it, content cosine when content did); "trending" and
"new" for those rows. Similarity between items is the cosine of their ALS factors blended with the
cosine of their content features (either alone when only one model knows both items).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from recsys.models.content import ContentModel
from recsys.models.factors import FactorModel, top_k
from recsys.models.hybrid import HybridModel

SEED_BLOCK = 512  # seeds scored per similarity matrix
ROW_COLUMNS = [
    "user",
    "row_id",
    "row_title",
    "row_position",
    "rank",
    "item_id",
    "score",
    "reason_item_id",
    "reason",
]


class ItemSimilarity:
    """Cosine similarity between items: ALS factors and content features, averaged where both know
    the pair (weight ``content_weight`` on content)."""

    def __init__(
        self, als: FactorModel | None, content: ContentModel | None, content_weight: float = 0.5
    ) -> None:
        if als is None and content is None:
            raise ValueError("item similarity needs an ALS model, a content model or both")
        self.als, self.content, self.content_weight = als, content, content_weight
        self._als_index = pd.Index(als.items.astype(np.int64)) if als is not None else None
        if als is not None:
            norms = np.linalg.norm(als.item_factors, axis=1, keepdims=True)
            norms[norms == 0] = 1.0
            self._als_unit = (als.item_factors / norms).astype(np.float32)
        self._content_index = pd.Index(content.items.astype(np.int64)) if content is not None else None

    def matrix(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """(len(left), len(right)) similarities; NaN where neither model knows both items."""
        total = np.zeros((len(left), len(right)), dtype=np.float64)
        weight = np.zeros_like(total)
        for index, unit, w in self._spaces():
            lp, rp = index.get_indexer(left.astype(np.int64)), index.get_indexer(right.astype(np.int64))
            known = np.outer(lp >= 0, rp >= 0)
            if not known.any():
                continue
            sims = np.zeros_like(total)
            rows, cols = np.flatnonzero(lp >= 0), np.flatnonzero(rp >= 0)
            block = unit[lp[rows]] @ unit[rp[cols]].T
            sims[np.ix_(rows, cols)] = block.toarray() if hasattr(block, "toarray") else block
            total += w * sims * known
            weight += w * known
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(weight > 0, total / weight, np.nan)

    def _spaces(self):  # noqa: ANN202
        if self.als is not None:
            yield (
                self._als_index,
                self._als_unit,
                1.0 - self.content_weight if self.content is not None else 1.0,
            )
        if self.content is not None:
            yield (
                self._content_index,
                self.content.features,
                self.content_weight if self.als is not None else 1.0,
            )


def explain(
    recs: pd.DataFrame, history: pd.DataFrame, similarity: ItemSimilarity, titles: Mapping[int, str]
) -> pd.DataFrame:
    """``recs`` (user, item_id, ...) with ``reason_item_id`` and ``reason``: the user's watched item
    most similar to each recommendation ("Because you watched <title>"), or "popular with everyone"
    when the user has no history (or nothing similar). Among equally similar watched items, the
    first in ``history``'s order.

    Scored by blocks of recommended items, not user by user: one similarity matrix of
    :data:`SEED_BLOCK` distinct recommended items against every item, then each recommendation's
    (item, watched item) pairs are looked up in it and the best taken per recommendation."""
    reason_item = _most_similar_watched(
        recs["user"].to_numpy(dtype=object), recs["item_id"].to_numpy(dtype=np.int64), history, similarity
    )
    out = recs.copy()
    out["reason_item_id"] = pd.array(np.where(reason_item >= 0, reason_item, pd.NA), dtype="Int64")
    named = {i: f"Because you watched {titles.get(i, f'title {i}')}" for i in np.unique(reason_item).tolist()}
    named[-1] = "popular with everyone"
    out["reason"] = [named[i] for i in reason_item.tolist()]
    return out


#: (recommendation, watched item) pairs looked up at once when explaining
PAIR_BLOCK = 2_000_000


def _most_similar_watched(
    users: np.ndarray, items: np.ndarray, history: pd.DataFrame, similarity: ItemSimilarity
) -> np.ndarray:
    """For each (user, item): the item of the user's ``history`` most similar to it, -1 if none
    (no history, or no model knows both)."""
    reason = np.full(len(items), -1, dtype=np.int64)
    watched = _Watched.of(history)
    owner = watched.index.get_indexer(users)
    rows = np.flatnonzero(owner >= 0)
    if not len(rows):
        return reason
    universe = _universe(similarity)
    seen_col = pd.Index(universe).get_indexer(watched.items)  # -1: no model knows it
    for block, sim_row, sims in _title_blocks(items[rows], similarity, universe):  # block: positions in rows
        sims = np.concatenate([sims, np.full((len(sims), 1), -np.inf)], axis=1)  # column -1: unknown
        lengths = watched.counts[owner[rows[block]]]
        ends = np.cumsum(lengths)
        cut = np.searchsorted(
            ends, np.arange(PAIR_BLOCK, int(ends[-1]) + PAIR_BLOCK, PAIR_BLOCK), side="right"
        )
        for part in np.split(np.arange(len(block)), np.unique(cut[cut < len(block)])):
            if not len(part):
                continue
            these, n = block[part], lengths[part]
            recs = rows[these]
            pair = watched.pairs(owner[recs], n)
            row_of = np.repeat(np.arange(len(these)), n)
            values = sims[sim_row[part][row_of], seen_col[pair]]
            starts = np.cumsum(n) - n
            best = np.maximum.reduceat(values, starts)  # every user here has watched something
            at = np.where(values == best[row_of], np.arange(len(values)), len(values))
            pick = np.minimum.reduceat(at, starts)
            ok = np.isfinite(best)
            reason[recs[ok]] = watched.items[pair[pick[ok]]]
    return reason


def _title_blocks(
    titles: np.ndarray, similarity: ItemSimilarity, universe: np.ndarray
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``titles`` by blocks of :data:`SEED_BLOCK` distinct titles: for each block, the positions in
    ``titles`` of its titles (in their order), each position's row of the block's similarity
    matrix, and that matrix against ``universe`` (-inf where no model knows both)."""
    distinct, code = np.unique(titles, return_inverse=True)
    order = np.argsort(code, kind="stable")
    bounds = np.searchsorted(code[order], np.arange(0, len(distinct) + SEED_BLOCK, SEED_BLOCK))
    for b, first in enumerate(range(0, len(distinct), SEED_BLOCK)):
        sims = similarity.matrix(distinct[first : first + SEED_BLOCK], universe)
        positions = order[bounds[b] : bounds[b + 1]]
        yield positions, code[positions] - first, np.where(np.isnan(sims), -np.inf, sims)


class _Watched:
    """Each user's watched items in one array, grouped by user (CSR-like), in ``history``'s order."""

    def __init__(self, index: pd.Index, items: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> None:
        self.index, self.items, self.starts, self.counts = index, items, starts, counts

    @classmethod
    def of(cls, history: pd.DataFrame) -> _Watched:
        codes, uniques = pd.factorize(history["user"].to_numpy(dtype=object))
        order = np.argsort(codes, kind="stable")
        counts = np.bincount(codes, minlength=len(uniques)).astype(np.int64)
        items = history["item_id"].to_numpy(dtype=np.int64)[order]
        return cls(pd.Index(uniques, dtype=object), items, np.cumsum(counts) - counts, counts)

    def pairs(self, owners: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Positions in :attr:`items` of every watched item of each of ``owners`` (their ``lengths``
        = counts), owner after owner."""
        total = int(lengths.sum())
        offset = np.repeat(self.starts[owners] - (np.cumsum(lengths) - lengths), lengths)
        return offset + np.arange(total, dtype=np.int64)


def because_you_watched(
    history: pd.DataFrame,
    similarity: ItemSimilarity,
    titles: Mapping[int, str],
    k: int = 10,
    seeds_per_user: int = 1,
) -> pd.DataFrame:
    """Rows seeded by each user's most recent titles (``last_ts``, then strength; at most
    ``seeds_per_user``): the ``k`` most similar items the user has not watched.

    Seeds are scored by blocks of distinct seed titles (one similarity matrix of
    :data:`SEED_BLOCK` titles against every item; the seeds of those titles, a block of rows at a
    time, take their row of it and mask what their user watched), so a page for every user costs a
    few matrix products, however many users share a seed."""
    order = [c for c in ("last_ts", "strength") if c in history.columns]
    ranked = history.sort_values(["user", *order], ascending=[True] + [False] * len(order), kind="stable")
    universe = _universe(similarity)
    seeds = ranked.groupby("user", sort=True).head(seeds_per_user)
    seed_users = seeds["user"].to_numpy(dtype=object)
    seed_items = seeds["item_id"].to_numpy(dtype=np.int64)
    seed_rank = seeds.groupby("user", sort=False).cumcount().to_numpy()
    watched = _Watched.of(ranked)
    watched_col = pd.Index(universe).get_indexer(watched.items)
    owner = watched.index.get_indexer(seed_users)
    kk = min(k, len(universe))
    parts: dict[str, list[np.ndarray]] = {name: [] for name in ("row", "rank", "item", "score")}
    for block, sim_row, block_sims in _title_blocks(seed_items, similarity, universe):
        block_sims = block_sims.astype(np.float32)
        for start in range(0, len(block), SEED_BLOCK):
            rows = block[start : start + SEED_BLOCK]  # seed positions
            sims = block_sims[sim_row[start : start + SEED_BLOCK]]
            n = watched.counts[owner[rows]]
            cols = watched_col[watched.pairs(owner[rows], n)]
            at = np.repeat(np.arange(len(rows)), n)
            sims[at[cols >= 0], cols[cols >= 0]] = -np.inf
            top, values = top_k(sims, kk)
            keep = np.isfinite(values)
            parts["row"].append(np.repeat(rows, keep.sum(axis=1)))
            parts["rank"].append((np.cumsum(keep, axis=1))[keep])
            parts["item"].append(universe[top[keep]])
            parts["score"].append(values[keep].astype(np.float64))
    if not parts["row"] or not sum(len(p) for p in parts["row"]):
        return _frame([])
    row, rank = np.concatenate(parts["row"]), np.concatenate(parts["rank"]).astype(np.int64)
    in_order = np.lexsort((rank, row))  # seed after seed (users sorted), best first
    row, rank = row[in_order], rank[in_order]
    seed = seed_items[row]
    named = np.array(
        [f"Because you watched {titles.get(int(i), f'title {int(i)}')}" for i in seed_items], dtype=object
    )
    frame = pd.DataFrame(
        {
            "user": seed_users[row],
            "row_id": np.char.add("because:", seed.astype(str)).astype(object),
            "row_title": named[row],
            "row_position": seed_rank[row].astype(np.int64),
            "rank": rank,
            "item_id": np.concatenate(parts["item"]).astype(np.int64)[in_order],
            "score": np.concatenate(parts["score"])[in_order],
            "reason_item_id": seed,
            "reason": named[row],
        }
    )
    return _frame([frame])


def trending(latest_week: pd.DataFrame, users: list[str], history: pd.DataFrame, k: int = 10) -> pd.DataFrame:
    """ "Trending now": the items with the most distinct users in ``latest_week`` (user, item_id),
    ties by item id, without the ones each user already watched."""
    counts = latest_week.groupby("item_id")["user"].nunique().reset_index(name="n")
    counts = counts.sort_values(["n", "item_id"], ascending=[False, True])
    ranked, score = counts["item_id"].to_numpy(dtype=np.int64), counts["n"].to_numpy(dtype=np.float64)
    return _fixed_row(users, history, ranked, score, k, "trending", "Trending now", "trending")


def new_this_week(
    new_items: np.ndarray, users: list[str], history: pd.DataFrame, content: ContentModel, k: int = 10
) -> pd.DataFrame:
    """ "New this week": ``new_items`` ranked for each user by content match with their history."""
    new_items = np.asarray(new_items, dtype=np.int64)
    known = new_items[[content.knows(i) for i in new_items]]
    if not len(known) or not users:
        return _frame([])
    positions = pd.Index(content.items.astype(np.int64)).get_indexer(known)
    new_features = content.features[positions].T
    kk = min(k, len(known))
    picks, values = [], []
    profiles = content.profiles(history, users)
    for start in range(0, len(users), USER_BLOCK):
        scores = np.asarray((profiles[start : start + USER_BLOCK] @ new_features).todense(), dtype=np.float64)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :kk]
        picks.append(known[order])
        values.append(np.take_along_axis(scores, order, axis=1))
    return _rows_frame(
        np.asarray(users, dtype=object), "new", "New this week", np.vstack(picks), np.vstack(values), "new"
    )


#: users whose fixed rows or content matches are worked out at once
USER_BLOCK = 4096


def _fixed_row(
    users: list[str],
    history: pd.DataFrame,
    ranked: np.ndarray,
    score: np.ndarray,
    k: int,
    row_id: str,
    title: str,
    reason: str,
) -> pd.DataFrame:
    """One row per user: the first ``k`` of ``ranked`` the user has not watched (a block of users at
    a time: a user can only lose the ranked positions they watched, so a block looks at most ``k``
    plus its heaviest user's watched count down the ranking)."""
    if not users or not len(ranked):
        return _frame([])
    users_array = np.asarray(users, dtype=object)
    watched = _Watched.of(history)
    owner = watched.index.get_indexer(users_array)
    position = pd.Index(ranked).get_indexer(watched.items)  # -1: not in the ranking
    counts = np.where(owner >= 0, watched.counts[np.maximum(owner, 0)], 0)
    row_of, item_of, score_of, rank_of = [], [], [], []
    for start in range(0, len(users), USER_BLOCK):
        block = np.arange(start, min(start + USER_BLOCK, len(users)))
        depth = min(len(ranked), k + int(counts[block].max()))
        taken = np.zeros((len(block), depth), dtype=bool)
        n = counts[block]
        cols = position[watched.pairs(np.maximum(owner[block], 0), n)]
        at = np.repeat(np.arange(len(block)), n)
        inside = (cols >= 0) & (cols < depth)
        taken[at[inside], cols[inside]] = True
        free = ~taken
        keep = free & (np.cumsum(free, axis=1) <= k)
        r, c = np.nonzero(keep)
        row_of.append(block[r])
        item_of.append(ranked[c])
        score_of.append(score[c])
        rank_of.append(np.cumsum(keep, axis=1)[keep])
    row = np.concatenate(row_of)
    return _rows_frame(
        users_array[row],
        row_id,
        title,
        np.concatenate(item_of),
        np.concatenate(score_of),
        reason,
        rank=np.concatenate(rank_of),
    )


def _rows_frame(
    users: np.ndarray,
    row_id: str,
    title: str,
    items: np.ndarray,
    scores: np.ndarray,
    reason: str,
    rank: np.ndarray | None = None,
) -> pd.DataFrame:
    """One row of the page for many users at once, in :data:`ROW_COLUMNS`: ``items`` and ``scores``
    either (users, length) arrays (every user the same length, ranked 1..length) or flat arrays
    with one ``users`` entry and one ``rank`` per item."""
    if rank is None:
        length = items.shape[1] if items.ndim == 2 else 0
        users = np.repeat(users, length)
        rank = np.tile(np.arange(1, length + 1, dtype=np.int64), len(items))
        items, scores = items.reshape(-1), scores.reshape(-1)
    if not len(items):
        return _frame([])
    frame = pd.DataFrame(
        {
            "user": users,
            "row_id": row_id,
            "row_title": title,
            "row_position": np.zeros(len(items), dtype=np.int64),
            "rank": np.asarray(rank, dtype=np.int64),
            "item_id": np.asarray(items, dtype=np.int64),
            "score": np.asarray(scores, dtype=np.float64),
            "reason_item_id": pd.array([pd.NA] * len(items), dtype="Int64"),
            "reason": reason,
        }
    )
    return _frame([frame])


def _universe(similarity: ItemSimilarity) -> np.ndarray:
    parts = []
    if similarity.als is not None:
        parts.append(similarity.als.items.astype(np.int64))
    if similarity.content is not None:
        parts.append(similarity.content.items.astype(np.int64))
    return np.unique(np.concatenate(parts))


def _frame(rows: list[pd.DataFrame]) -> pd.DataFrame:
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in ROW_COLUMNS})
    out = pd.concat(rows, ignore_index=True)
    out["reason_item_id"] = out["reason_item_id"].astype("Int64")
    return out[ROW_COLUMNS]


# ---- what a served model knows, for explanations --------------------------------------------------
def model_history(model: FactorModel | HybridModel) -> pd.DataFrame:
    """(user, item_id) the model was trained on: a hybrid's history, a FactorModel's seen items."""
    if isinstance(model, HybridModel):
        return model.history
    seen = model.seen.tocoo()
    return pd.DataFrame(
        {"user": model.users[seen.row].astype(object), "item_id": model.items[seen.col].astype(np.int64)}
    )


def model_similarity(model: FactorModel | HybridModel) -> ItemSimilarity:
    if isinstance(model, HybridModel):
        return ItemSimilarity(model.als, model.content)
    return ItemSimilarity(model, None)


def model_titles(model: FactorModel | HybridModel) -> dict[int, str]:
    """item_id -> title where the model has a catalogue (a hybrid's content model); else empty."""
    if isinstance(model, HybridModel):
        return dict(
            zip(model.content.items.astype(np.int64).tolist(), model.content.titles.tolist(), strict=True)
        )
    return {}


def page_rows(
    top_picks: pd.DataFrame,
    model: FactorModel | HybridModel,
    content: ContentModel,
    history: pd.DataFrame,
    catalogue: pd.DataFrame,
    titles: Mapping[int, str],
    week_start: datetime,
    week_end: datetime,
    config: RowsConfig,
    users: list[str],
) -> pd.DataFrame:
    """Every user's page, row after row (``row_position`` 0, 1, ...): Top picks (``top_picks``, the
    served list with its reasons), Because you watched (the user's most recent titles), Trending now
    (the week's most watched, from ``history``'s ``last_ts``) and New this week (``catalogue`` items
    added in the week, by content match). A row with nothing in it for a user is left out."""
    picks = top_picks.assign(row_id="top_picks", row_title="Top picks for you", row_position=0)
    picks["score"] = pd.to_numeric(picks["score"], errors="coerce").astype(np.float64)
    parts = [picks[ROW_COLUMNS]]
    if config.because_rows:
        because = because_you_watched(
            history, model_similarity(model), titles, k=config.row_length, seeds_per_user=config.because_rows
        )
        parts.append(because.assign(row_position=because["row_position"] + 1))
    next_position = 1 + config.because_rows
    if config.trending:
        when = pd.to_datetime(history["last_ts"], utc=True) if "last_ts" in history.columns else None
        latest = history[(when >= week_start) & (when < week_end)] if when is not None else history.iloc[0:0]
        parts.append(trending(latest, users, history, k=config.row_length).assign(row_position=next_position))
        next_position += 1
    if config.new_this_week and "added_at" in catalogue.columns:
        added = pd.to_datetime(catalogue["added_at"], utc=True, errors="coerce")
        new_items = catalogue.loc[(added >= week_start) & (added < week_end), "item_id"].to_numpy(
            dtype=np.int64
        )
        parts.append(
            new_this_week(new_items, users, history, content, k=config.row_length).assign(
                row_position=next_position
            )
        )
    page = _frame([p for p in parts if len(p)])
    # a row left empty for a user (nothing trending they have not watched) leaves no gap
    page["row_position"] = page.groupby("user")["row_position"].rank(method="dense").astype(np.int64) - 1
    return page.sort_values(["user", "row_position", "rank"], kind="stable", ignore_index=True)


class RowsConfig(BaseModel):
    """The rows of each user's page written by the recommend stage (besides "Top picks for you")."""

    model_config = ConfigDict(extra="forbid")

    because_rows: int = Field(2, ge=0, le=10, description='"Because you watched <title>" rows per user')
    trending: bool = Field(True, description='a "Trending now" row (most users in the latest week)')
    new_this_week: bool = Field(True, description='a "New this week" row (items added this week)')
    row_length: int = Field(10, ge=1, le=100, description="items per row (Top picks has top_k)")
