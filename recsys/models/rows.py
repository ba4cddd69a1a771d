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

from collections.abc import Mapping
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
    when the user has no history (or nothing similar)."""
    watched = {u: g["item_id"].to_numpy(dtype=np.int64) for u, g in history.groupby("user")}
    reason_item = np.full(len(recs), -1, dtype=np.int64)
    for user, positions in recs.groupby("user").indices.items():
        seen = watched.get(user)
        if seen is None or not len(seen):
            continue
        sims = similarity.matrix(recs["item_id"].to_numpy(dtype=np.int64)[positions], seen)
        sims = np.where(np.isnan(sims), -np.inf, sims)
        best = sims.argmax(axis=1)
        ok = np.isfinite(sims[np.arange(len(positions)), best])
        reason_item[positions[ok]] = seen[best[ok]]
    out = recs.copy()
    out["reason_item_id"] = pd.array(np.where(reason_item >= 0, reason_item, pd.NA), dtype="Int64")
    out["reason"] = [
        f"Because you watched {titles.get(int(i), f'title {int(i)}')}" if i >= 0 else "popular with everyone"
        for i in reason_item
    ]
    return out


def because_you_watched(
    history: pd.DataFrame,
    similarity: ItemSimilarity,
    titles: Mapping[int, str],
    k: int = 10,
    seeds_per_user: int = 1,
) -> pd.DataFrame:
    """Rows seeded by each user's most recent titles (``last_ts``, then strength; at most
    ``seeds_per_user``): the ``k`` most similar items the user has not watched.

    Seeds are scored in blocks (one similarity matrix of a block of seeds against every item), so a
    page for every user costs a few matrix products, not a loop over users."""
    order = [c for c in ("last_ts", "strength") if c in history.columns]
    ranked = history.sort_values(["user", *order], ascending=[True] + [False] * len(order), kind="stable")
    universe = _universe(similarity)
    position_of = pd.Index(universe)
    seeds = ranked.groupby("user", sort=True).head(seeds_per_user)
    seed_users = seeds["user"].to_numpy(dtype=object)
    seed_items = seeds["item_id"].to_numpy(dtype=np.int64)
    seed_rank = seeds.groupby("user", sort=False).cumcount().to_numpy()
    watched = {
        u: position_of.get_indexer(g.to_numpy(dtype=np.int64)) for u, g in ranked.groupby("user")["item_id"]
    }
    kk = min(k, len(universe))
    parts: dict[str, list[np.ndarray]] = {name: [] for name in ("row", "rank", "item", "score")}
    for start in range(0, len(seed_items), SEED_BLOCK):
        block = slice(start, start + SEED_BLOCK)
        sims = similarity.matrix(seed_items[block], universe)
        sims = np.where(np.isnan(sims), -np.inf, sims).astype(np.float32)
        for r, user in enumerate(seed_users[block].tolist()):
            seen = watched[user]
            sims[r, seen[seen >= 0]] = -np.inf
        top, values = top_k(sims, kk)
        keep = np.isfinite(values)
        parts["row"].append(np.repeat(np.arange(start, start + len(top)), keep.sum(axis=1)))
        parts["rank"].append((np.cumsum(keep, axis=1))[keep])
        parts["item"].append(universe[top[keep]])
        parts["score"].append(values[keep].astype(np.float64))
    if not parts["row"] or not sum(len(p) for p in parts["row"]):
        return _frame([])
    row = np.concatenate(parts["row"])
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
            "rank": np.concatenate(parts["rank"]).astype(np.int64),
            "item_id": np.concatenate(parts["item"]).astype(np.int64),
            "score": np.concatenate(parts["score"]),
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
    profiles = content.profiles(history, users)
    positions = pd.Index(content.items.astype(np.int64)).get_indexer(known)
    scores = np.asarray((profiles @ content.features[positions].T).todense(), dtype=np.float64)
    rows = []
    for r, user in enumerate(users):
        order = np.argsort(-scores[r], kind="stable")[:k]
        rows.append(_row(user, "new", "New this week", known[order], scores[r][order], "new"))
    return _frame(rows)


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
    watched = {u: set(g.tolist()) for u, g in history.groupby("user")["item_id"]}
    rows = []
    for user in users:
        seen = watched.get(user, set())
        keep = np.array([int(i) not in seen for i in ranked[: k + len(seen)]], dtype=bool)
        picks, values = ranked[: k + len(seen)][keep][:k], score[: k + len(seen)][keep][:k]
        rows.append(_row(user, row_id, title, picks, values, reason))
    return _frame(rows)


def _row(
    user: str, row_id: str, title: str, items: np.ndarray, scores: np.ndarray, reason: str
) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user": user,
            "row_id": row_id,
            "row_title": title,
            "row_position": 0,
            "rank": np.arange(1, len(items) + 1, dtype=np.int64),
            "item_id": np.asarray(items, dtype=np.int64),
            "score": np.asarray(scores, dtype=np.float64),
            "reason_item_id": pd.array([pd.NA] * len(items), dtype="Int64"),
            "reason": reason,
        }
    )


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
