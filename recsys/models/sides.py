"""A model in two sides, for the Spark paths: what every user's scores share, broadcast once to the
executors, and each user's own inputs, carried in a DataFrame next to the user.

Batch top-k (:mod:`recsys.models.distributed`) and the evaluation on Spark
(:mod:`recsys.evaluation.distributed`) rank blocks of users on the executors. Broadcasting the
model whole would copy every user's factors, history and profile to every executor, so a
broadcast would grow with the users. Instead:

* :func:`item_side` is the broadcast: the item ids and factors and the popularity order of a
  :class:`~recsys.models.factors.FactorModel`; the item side of a
  :class:`~recsys.models.hybrid.HybridModel` (:meth:`~recsys.models.hybrid.HybridModel.item_side`);
  the content model of a :class:`~recsys.models.content.ContentRecommender`; and, for a
  :class:`~recsys.models.rerank.Reranked`, its items' genres and config;
* :func:`user_inputs` is the user side, one row per user: binary cells of little-endian numbers
  (:func:`packed`; Spark moves a binary cell to Arrow as one copy, where an array cell costs a
  conversion per element: at the 10M shape, 10M seen positions took seconds), null for a user the
  model has no input for. A FactorModel's ``factors`` and ``seen`` positions; a hybrid's ``count``,
  ``factors``, content profile and ``seen``; a content recommender's history (``history_items``,
  ``history_strength``); a re-ranker's ``history_genres`` too;
* on an executor, :func:`block_recommender` rebuilds, from a block of those rows and the broadcast,
  a model of the block's users alone whose ``recommend`` gives them what the whole model gives (the
  same arrays, so the same scores when they are scored in the same blocks).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy import sparse

from recsys.models.content import ContentModel, ContentRecommender
from recsys.models.factors import FactorModel
from recsys.models.hybrid import HybridItems, HybridModel, HybridUsers
from recsys.models.protocol import Recommender
from recsys.models.rerank import RerankConfig, Reranked

#: joins a user's history genres in one cell (a control character: never in a genre's name)
GENRE_SEPARATOR = "\x1f"


# ---- cells -----------------------------------------------------------------------------------------
def packed(values: Any, dtype: Any) -> bytes:
    """One cell of the user side: ``values`` as little-endian ``dtype`` bytes (:func:`unpacked`)."""
    return np.ascontiguousarray(values, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()


def unpacked(cells: Sequence[bytes | None], dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    """(values, lengths): binary cells of little-endian ``dtype`` values (null cells hold none) as one
    array of all their values and each cell's number of values."""
    little = np.dtype(dtype).newbyteorder("<")
    cells = [c if c is not None else b"" for c in cells]
    lengths = np.fromiter((len(c) for c in cells), dtype=np.int64, count=len(cells)) // little.itemsize
    values = np.frombuffer(b"".join(cells), dtype=little).astype(np.dtype(dtype), copy=False)
    return values, lengths


def binary_cells(flat: np.ndarray, lengths: np.ndarray, valid: np.ndarray) -> pa.Array:
    """A binary Arrow array over ``flat``'s bytes (little-endian), cell i holding ``lengths[i]``
    values, null where not ``valid`` (such a cell's length is ignored): no Python object per cell."""
    data = np.ascontiguousarray(flat, dtype=flat.dtype.newbyteorder("<"))
    offsets = np.concatenate([[0], np.cumsum(np.where(valid, lengths, 0))]) * data.dtype.itemsize
    validity = None if valid.all() else pa.array(valid).buffers()[1]
    return pa.Array.from_buffers(
        pa.large_binary(),
        len(lengths),
        [validity, pa.py_buffer(offsets.astype(np.int64)), pa.py_buffer(data.tobytes())],
        null_count=int((~valid).sum()),
    )


def _csr_cells(matrix: sparse.csr_matrix, rows: np.ndarray, dtype: Any) -> tuple[pa.Array, pa.Array]:
    """(indices, values) cells of ``matrix``'s ``rows`` (-1: a null cell)."""
    valid = rows >= 0
    picked = matrix[np.where(valid, rows, 0)]
    lengths = np.diff(picked.indptr)
    keep = np.repeat(valid, lengths)
    return (
        binary_cells(picked.indices[keep].astype(np.int32), lengths, valid),
        binary_cells(picked.data[keep].astype(dtype), lengths, valid),
    )


def _csr_of(block: pd.DataFrame, indices: str, values: str | None, width: int) -> sparse.csr_matrix:
    """The CSR matrix of a block's cells (``values`` None: ones), one row per row of ``block``."""
    columns, lengths = unpacked(block[indices].tolist(), np.int32)
    data = (
        np.ones(len(columns), dtype=np.float32)
        if values is None
        else unpacked(block[values].tolist(), np.float32)[0]
    )
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    return sparse.csr_matrix((data, columns, indptr), shape=(len(block), width))


# ---- the two sides -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ItemSide:
    """The broadcast of a model (:func:`item_side`)."""

    kind: str  # factors | hybrid | content
    base: Any  # (items, item_factors, popular) | HybridItems | ContentModel
    rerank_genres: Mapping[int, Collection[str]] | None = None
    rerank_config: RerankConfig | None = None


def scoring_model(served: Any) -> Any:
    """The model whose lists ``served`` gives (a re-ranker's model)."""
    return served.model if isinstance(served, Reranked) else served


def splits(served: Any) -> bool:
    """Whether ``served`` has the two sides (a FactorModel, a HybridModel, a ContentRecommender, or
    a Reranked of one)."""
    return isinstance(scoring_model(served), (FactorModel, HybridModel, ContentRecommender))


def item_side(served: Any) -> ItemSide:
    """What every user's scores share (see the module docstring)."""
    model = scoring_model(served)
    if isinstance(model, FactorModel):
        kind, base = "factors", (model.items, model.item_factors, model.popular)
    elif isinstance(model, HybridModel):
        kind, base = "hybrid", model.item_side()
    elif isinstance(model, ContentRecommender):
        kind, base = "content", model.content
    else:
        raise TypeError(f"{type(model).__name__} has no item side to broadcast")
    if isinstance(served, Reranked):
        return ItemSide(kind, base, dict(served.item_genres), served.config)
    return ItemSide(kind, base)


def model_users(served: Any) -> np.ndarray:
    """The users ``served`` has inputs for (the others get its fallback)."""
    model = scoring_model(served)
    if isinstance(model, ContentRecommender):
        return np.asarray(sorted(model.history["user"].astype(str).unique()), dtype=object)
    return np.asarray(model.users, dtype=object).astype(str)


def user_inputs(served: Any, users: Sequence[str], with_seen: bool = True) -> pa.Table:
    """The user side of ``served`` for ``users``, one row each, in order: ``user`` and the model's
    cells (see the module docstring); ``with_seen`` False leaves out the seen positions (lists that
    keep seen items do not need them)."""
    names = pd.Series(list(users), dtype=object).astype(str)
    table = pa.table({"user": pa.array(names.tolist(), pa.string())})
    if isinstance(served, Reranked):
        genres = served.history_genres
        table = table.append_column(
            "history_genres",
            pa.array([GENRE_SEPARATOR.join(sorted(genres.get(u, ()))) for u in names.tolist()], pa.string()),
        )
    model = scoring_model(served)
    if isinstance(model, FactorModel):
        return _factor_inputs(table, model, names, with_seen)
    if isinstance(model, HybridModel):
        return _hybrid_inputs(table, model, names, with_seen)
    if isinstance(model, ContentRecommender):
        return _content_inputs(table, model, names)
    raise TypeError(f"{type(model).__name__} has no user side")


def _factor_inputs(table: pa.Table, model: FactorModel, names: pd.Series, with_seen: bool) -> pa.Table:
    rows = pd.Index(model.users.astype(str)).get_indexer(names)
    known = rows >= 0
    flat = np.ascontiguousarray(model.user_factors[np.where(known, rows, 0)], dtype=np.float32)[known]
    table = table.append_column("factors", binary_cells(flat.ravel(), np.full(len(rows), model.rank), known))
    if not with_seen:
        return table
    seen, _ = _csr_cells(model.seen.tocsr(), rows, np.float32)
    return table.append_column("seen", seen)


def _hybrid_inputs(table: pa.Table, model: HybridModel, names: pd.Series, with_seen: bool) -> pa.Table:
    rows = model.user_rows(names.to_numpy(dtype=object))
    has = rows >= 0
    side = model.user_side(names[has].tolist())
    n = len(names)
    positions = np.full(n, -1)
    positions[has] = np.arange(int(has.sum()))
    counts = np.zeros(n, dtype=np.int64)
    counts[has] = side.counts
    als = np.zeros(n, dtype=bool)
    als[has] = side.als_known
    factors = binary_cells(side.als_factors[side.als_known].ravel(), np.full(n, model.als.rank), als)
    profile_items, profile_values = _csr_cells(side.profiles, positions, np.float32)
    table = (
        table.append_column("count", pa.array(counts, mask=~has))
        .append_column("factors", factors)
        .append_column("profile_items", profile_items)
        .append_column("profile_values", profile_values)
    )
    if not with_seen:
        return table
    seen, _ = _csr_cells(side.seen, positions, np.float32)
    return table.append_column("seen", seen)


def _content_inputs(table: pa.Table, model: ContentRecommender, names: pd.Series) -> pa.Table:
    history = model.history
    strength = (
        history["strength"].to_numpy(dtype=np.float64)
        if "strength" in history.columns
        else np.ones(len(history), dtype=np.float64)
    )
    rows = pd.Index(names).get_indexer(history["user"].astype(str))
    mine = rows >= 0
    order = np.argsort(rows[mine], kind="stable")  # each user's rows together, in the history's order
    lengths = np.bincount(rows[mine], minlength=len(names))
    has = lengths > 0
    items = history["item_id"].to_numpy(dtype=np.int64)[mine][order]
    return table.append_column("history_items", binary_cells(items, lengths, has)).append_column(
        "history_strength", binary_cells(strength[mine][order], lengths, has)
    )


# ---- on the executors ----------------------------------------------------------------------------
def factor_block_model(
    block: pd.DataFrame, items: np.ndarray, item_factors: np.ndarray, popular: np.ndarray
) -> FactorModel:
    """A FactorModel of the block's users with ``factors`` over the broadcast item side (without a
    ``seen`` column they have seen nothing)."""
    known = block["factors"].notna().to_numpy()
    rows = block[known]
    flat, _ = unpacked(rows["factors"].tolist(), np.float32)
    if "seen" in rows.columns:
        seen = _csr_of(rows, "seen", None, len(items))
    else:
        seen = sparse.csr_matrix((len(rows), len(items)), dtype=np.float32)
    return FactorModel(
        users=rows["user"].to_numpy(dtype=str),
        items=items,
        user_factors=flat.reshape(len(rows), item_factors.shape[1]),
        item_factors=item_factors,
        seen=seen,
        popular=popular,
    )


def hybrid_block_model(block: pd.DataFrame, items: HybridItems) -> HybridModel:
    """A HybridModel of the block's users with history (``count`` not null) over the broadcast item
    side (:meth:`HybridItems.block`)."""
    rows = block[block["count"].notna().to_numpy()]
    als_known = rows["factors"].notna().to_numpy()
    factors = np.zeros((len(rows), items.als_item_factors.shape[1]), np.float32)
    flat, _ = unpacked(rows["factors"][als_known].tolist(), np.float32)
    factors[als_known] = flat.reshape(int(als_known.sum()), factors.shape[1])
    seen = (
        _csr_of(rows, "seen", None, items.n_items)
        if "seen" in rows.columns
        else sparse.csr_matrix((len(rows), items.n_items), dtype=np.float32)
    )
    users = HybridUsers(
        users=rows["user"].to_numpy(dtype=str),
        counts=rows["count"].to_numpy(dtype=np.int64),
        als_known=als_known,
        als_factors=factors,
        profiles=_csr_of(rows, "profile_items", "profile_values", items.n_features),
        seen=seen,
    )
    return items.block(users)


def content_block_model(block: pd.DataFrame, content: ContentModel) -> ContentRecommender:
    """A ContentRecommender of the block's users over the broadcast content model."""
    items, lengths = unpacked(block["history_items"].tolist(), np.int64)
    strength, _ = unpacked(block["history_strength"].tolist(), np.float64)
    history = pd.DataFrame(
        {
            "user": np.repeat(block["user"].to_numpy(dtype=object), lengths),
            "item_id": items,
            "strength": strength,
        }
    )
    return ContentRecommender(content, history)


def block_scorer(block: pd.DataFrame, side: ItemSide) -> Any:
    """The model of ``block``'s users over ``side``, before any re-ranking."""
    if side.kind == "factors":
        return factor_block_model(block, *side.base)
    if side.kind == "hybrid":
        return hybrid_block_model(block, side.base)
    return content_block_model(block, side.base)


def history_genres(block: pd.DataFrame) -> dict[str, set[str]]:
    """The re-ranker's genres of what each user of the block watched (``history_genres`` cells)."""
    return {
        str(user): set(cell.split(GENRE_SEPARATOR)) if cell else set()
        for user, cell in zip(block["user"].tolist(), block["history_genres"].tolist(), strict=True)
    }


def block_recommender(block: pd.DataFrame, side: ItemSide) -> Recommender:
    """The served model of ``block``'s users: :func:`block_scorer`, re-ranked as the whole model is."""
    model = block_scorer(block, side)
    if side.rerank_config is None:
        return model
    return Reranked.of_genres(model, side.rerank_genres or {}, history_genres(block), side.rerank_config)
