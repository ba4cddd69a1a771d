"""Content-based recommendations from the catalogue: genres, release year and title words (and tags).

Each item becomes one sparse feature row built with scikit-learn:

* genres: one-hot (``MultiLabelBinarizer`` over the pipe-joined ``genres``);
* release year: one-hot by ``year_bin``-year periods, the neighbouring periods at half weight (a 1994
  film is close to a 1996 one even when they fall into different periods);
* title: TF-IDF of the title words (the trailing "(1995)" taken off), English stop words dropped;
* tags (when given, e.g. ml-latest-small's tags.csv): TF-IDF of each item's tags joined.

Each block is L2-normalised per item and weighted (``ContentConfig``), then the whole row is
L2-normalised, so a user-item score is a cosine similarity. A user's profile is the mean of the rows
of the items they engaged with, weighted by the preference strength; the score of an item for a user
is the cosine between the profile and the item's row. Items added to the catalogue this week have
rows as soon as they are in the catalogue: content serves what ALS has never seen.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from scipy import sparse

from recsys.core.schemas import TAG_SEPARATOR, split_genres
from recsys.models.factors import BLOCK_USERS, top_k
from recsys.models.protocol import RECOMMENDATION_COLUMNS

_YEAR_SUFFIX = re.compile(r"\s*\(\s*\d{4}\s*\)\s*$")


class ContentConfig(BaseModel):
    """Weights of the feature blocks and how the text is turned into features."""

    model_config = ConfigDict(extra="forbid")

    genre_weight: float = Field(1.0, ge=0.0, description="weight of the genre block")
    year_weight: float = Field(0.3, ge=0.0, description="weight of the release-period block")
    title_weight: float = Field(0.5, ge=0.0, description="weight of the title TF-IDF block")
    tag_weight: float = Field(0.5, ge=0.0, description="weight of the tag TF-IDF block (when tags are given)")
    year_bin: int = Field(5, ge=1, le=50, description="years per release period")
    min_df: int = Field(2, ge=1, description="words (and tags) in fewer items are left out")
    max_features: int = Field(20_000, ge=1, description="most frequent words (and tags) kept per text block")


DENSE_FEATURE_SHARE = 64
"""A feature held by more than 1/64 of the catalogue's items is scored as a dense column (:meth:`ContentModel.score`)."""


@dataclass
class ContentModel:
    items: np.ndarray  # (n_items,) int64 item ids
    features: sparse.csr_matrix  # (n_items, n_features) float32, rows L2-normalised
    feature_names: list[str]
    titles: np.ndarray  # (n_items,) str, for explanations
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._index = pd.Index(self.items.astype(np.int64))

    # ---- fitting -----------------------------------------------------------------------------
    @classmethod
    def fit(
        cls, catalogue: pd.DataFrame, config: ContentConfig | None = None, tags: pd.DataFrame | None = None
    ) -> ContentModel:
        """Item features from ``catalogue`` (item_id, title, genres, release_year, optionally tags),
        and optional ``tags`` (item_id, tag). Duplicate item ids keep their last row; items without a
        feature get a zero row.

        Tags come from the ``tags`` frame when it is given, else from the catalogue's ``tags`` column
        (the lake's optional catalogue column: each item's tags ``|``-joined, ``""`` for none).
        ``meta["tags"]`` says whether tags were used: a ``tags`` frame was given, or the column
        holds at least one tag."""
        from sklearn.preprocessing import normalize  # deferred: sklearn is heavy to import

        config = config or ContentConfig()
        missing = [c for c in ("item_id", "title", "genres", "release_year") if c not in catalogue.columns]
        if missing:
            raise ValueError(f"catalogue lacks column(s) {', '.join(missing)}")
        items = (
            catalogue.drop_duplicates("item_id", keep="last").sort_values("item_id").reset_index(drop=True)
        )
        if items.empty:
            raise ValueError("the catalogue is empty: no content features to learn")
        if tags is not None:
            item_tags = _item_tags(items["item_id"], tags)
        elif "tags" in items.columns:
            item_tags = _catalogue_tags(items["tags"])
        else:
            item_tags = pd.Series([""] * len(items), index=items.index)
        used_tags = tags is not None or bool(item_tags.str.strip().ne("").any())
        blocks: list[sparse.csr_matrix] = []
        names: list[str] = []
        for matrix, block_names, weight in (
            (*_genre_block(items["genres"]), config.genre_weight),
            (*_year_block(items["release_year"], config.year_bin), config.year_weight),
            (*_text_block(items["title"].map(_clean_title), config, "title"), config.title_weight),
            (*_text_block(item_tags, config, "tag"), config.tag_weight),
        ):
            if weight > 0 and matrix.shape[1] > 0:
                blocks.append(normalize(matrix.astype(np.float32), norm="l2") * weight)
                names.extend(block_names)
        features = (
            normalize(sparse.hstack(blocks, format="csr"), norm="l2").astype(np.float32)
            if blocks
            else sparse.csr_matrix((len(items), 0), dtype=np.float32)
        )
        return cls(
            items=items["item_id"].to_numpy(dtype=np.int64),
            features=features,
            feature_names=names,
            titles=items["title"].fillna("").astype(str).to_numpy(),
            meta={
                "kind": "content",
                "config": config.model_dump(),
                "n_items": len(items),
                "n_features": len(names),
                "tags": used_tags,
            },
        )

    # ---- scoring -----------------------------------------------------------------------------
    def knows(self, item_id: int) -> bool:
        return int(item_id) in self._index

    def profiles(self, interactions: pd.DataFrame, users: Sequence[str]) -> sparse.csr_matrix:
        """One row per user in ``users``: the strength-weighted mean of their items' feature rows,
        L2-normalised (a zero row for a user without any known item). ``interactions`` has user,
        item_id and optionally strength (1.0 when absent)."""
        return user_profiles(self.features, self._index, interactions, users)

    @functools.cached_property
    def _split(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, sparse.csr_matrix]:
        """The common features' columns and their dense transpose, the rare ones' and their sparse
        transpose (worked out on first use; a model unpickled from before has none yet)."""
        counts = self.features.getnnz(axis=0)
        common = counts * DENSE_FEATURE_SHARE > max(len(self.items), 1)
        dense_cols, rare_cols = np.flatnonzero(common), np.flatnonzero(~common)
        return (
            dense_cols,
            np.ascontiguousarray(self.features[:, dense_cols].T.toarray(), dtype=np.float32),
            rare_cols,
            self.features[:, rare_cols].T.tocsr(),
        )

    def score(self, profiles: sparse.csr_matrix) -> np.ndarray:
        """Cosine of each profile with every item: (n_profiles, n_items) float32.

        The features shared by many items (genres, release periods: each in more than 1/64 of the
        catalogue) are multiplied as dense matrices (BLAS); the rare ones (title words, tags) as sparse
        ones. A sparse product over the common features touched a few thousand items per feature
        of every profile: 44 s of the evaluate stage at the 10M shape."""
        dense_cols, dense_t, rare_cols, rare_t = self._split
        profiles = sparse.csr_matrix(profiles, dtype=np.float32)
        scores = profiles[:, dense_cols].toarray() @ dense_t
        rare = (profiles[:, rare_cols] @ rare_t).tocoo()
        scores[rare.row, rare.col] += rare.data
        return scores.astype(np.float32, copy=False)

    def similar(self, item_id: int, k: int = 10) -> pd.DataFrame:
        """The ``k`` items most similar to ``item_id`` (itself left out): item_id, score."""
        position = self._index.get_indexer([int(item_id)])[0]
        if position < 0:
            raise KeyError(f"item {item_id} is not in the content model's catalogue")
        scores = self.score(self.features[position])
        scores[0, position] = -np.inf
        top, values = top_k(scores, min(k, max(len(self.items) - 1, 1)))
        keep = np.isfinite(values[0])
        return pd.DataFrame(
            {"item_id": self.items[top[0][keep]], "score": values[0][keep].astype(np.float64)}
        )

    def recommend(
        self, users: Sequence[str], history: pd.DataFrame, k: int = 10, exclude_seen: bool = True
    ) -> pd.DataFrame:
        """Top-``k`` items per user by content (user, rank, item_id, score), from each user's
        ``history`` (user, item_id[, strength]). Users without a known item get no rows."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        users = list(users)
        if not users:  # nothing asked: an empty frame of the contract's columns and dtypes
            return pd.DataFrame(
                {
                    "user": pd.Series(dtype=object),
                    "rank": pd.Series(dtype=np.int64),
                    "item_id": pd.Series(dtype=np.int64),
                    "score": pd.Series(dtype=np.float64),
                }
            )[RECOMMENDATION_COLUMNS]
        profiles = self.profiles(history, users)
        seen = None
        if exclude_seen:
            upos = pd.Index(users).get_indexer(history["user"])
            ipos = self._index.get_indexer(history["item_id"].to_numpy(dtype=np.int64))
            keep = (upos >= 0) & (ipos >= 0)
            seen = sparse.csr_matrix(
                (np.ones(int(keep.sum()), dtype=np.int8), (upos[keep], ipos[keep])),
                shape=(len(users), len(self.items)),
            )
        empty = profiles.getnnz(axis=1) == 0
        kk = min(k, len(self.items))
        # users in blocks: a block's scores are dense (users x catalogue), all users at once were
        # 70,000 x 10,677 float32 and a near-dense sparse product beside it (8 GiB at the 10M shape)
        top = np.empty((len(users), kk), dtype=np.int64)
        values = np.empty((len(users), kk), dtype=np.float32)
        for start in range(0, len(users), BLOCK_USERS):
            block = slice(start, start + BLOCK_USERS)
            scores = self.score(profiles[block])
            if seen is not None:
                scores[seen[block].nonzero()] = -np.inf
            scores[empty[block]] = -np.inf
            top[block], values[block] = top_k(scores, kk)
        frame = pd.DataFrame(
            {
                "user": np.repeat(np.asarray(users, dtype=object), kk),
                "rank": np.tile(np.arange(1, kk + 1, dtype=np.int64), len(users)),
                "item_id": self.items[top.ravel()].astype(np.int64),
                "score": values.ravel().astype(np.float64),
            }
        )
        return frame[np.isfinite(frame["score"].to_numpy())].reset_index(drop=True)[RECOMMENDATION_COLUMNS]

    # ---- persistence -------------------------------------------------------------------------
    def save(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        sparse.save_npz(directory / "content_features.npz", self.features)
        np.savez_compressed(
            directory / "content_items.npz", items=self.items.astype(np.int64), titles=self.titles.astype(str)
        )
        (directory / "content_meta.json").write_text(
            json.dumps({**self.meta, "feature_names": self.feature_names}, indent=2), encoding="utf-8"
        )
        return directory

    @classmethod
    def load(cls, directory: Path) -> ContentModel:
        meta = json.loads((directory / "content_meta.json").read_text(encoding="utf-8"))
        with np.load(directory / "content_items.npz", allow_pickle=False) as z:
            items, titles = z["items"], z["titles"]
        names = meta.pop("feature_names")
        return cls(
            items=items,
            features=sparse.load_npz(directory / "content_features.npz").tocsr(),
            feature_names=names,
            titles=titles,
            meta=meta,
        )


def user_profiles(
    features: sparse.csr_matrix, item_index: pd.Index, interactions: pd.DataFrame, users: Sequence[str]
) -> sparse.csr_matrix:
    """:meth:`ContentModel.profiles` over any item layout: ``features`` row ``j`` is item ``item_index[j]``."""
    from sklearn.preprocessing import normalize  # deferred: sklearn is heavy to import

    upos = pd.Index(list(users)).get_indexer(interactions["user"])
    ipos = item_index.get_indexer(interactions["item_id"].astype(np.int64))
    keep = (upos >= 0) & (ipos >= 0)
    weight = (
        interactions["strength"].to_numpy(dtype=np.float32)
        if "strength" in interactions.columns
        else np.ones(len(interactions), dtype=np.float32)
    )
    engaged = sparse.csr_matrix(
        (np.clip(weight[keep], 0.0, None), (upos[keep], ipos[keep])), shape=(len(users), len(item_index))
    )
    return normalize(engaged @ features, norm="l2").astype(np.float32)


# ---- feature blocks ----------------------------------------------------------------------------
def _genre_block(genres: pd.Series) -> tuple[sparse.csr_matrix, list[str]]:
    from sklearn.preprocessing import MultiLabelBinarizer  # deferred: sklearn is heavy to import

    labels = [split_genres(value) for value in genres]
    binarizer = MultiLabelBinarizer(sparse_output=True)
    matrix = binarizer.fit_transform(labels)
    return sparse.csr_matrix(matrix), [f"genre={g}" for g in binarizer.classes_]


def _year_block(years: pd.Series, width: int) -> tuple[sparse.csr_matrix, list[str]]:
    values = pd.to_numeric(years, errors="coerce")
    known = values.notna().to_numpy()
    if not known.any():
        return sparse.csr_matrix((len(years), 0)), []
    period = (values[known].to_numpy(dtype=np.int64) // width) * width
    first, last = int(period.min()), int(period.max())
    n = (last - first) // width + 1
    rows, cols, data = [], [], []
    positions = np.flatnonzero(known)
    for offset, weight in ((0, 1.0), (-1, 0.5), (1, 0.5)):
        col = (period - first) // width + offset
        ok = (col >= 0) & (col < n)
        rows.append(positions[ok])
        cols.append(col[ok])
        data.append(np.full(int(ok.sum()), weight, dtype=np.float32))
    matrix = sparse.csr_matrix(
        (np.concatenate(data), (np.concatenate(rows), np.concatenate(cols))), shape=(len(years), n)
    )
    return matrix, [f"year={first + i * width}-{first + (i + 1) * width - 1}" for i in range(n)]


def _text_block(texts: pd.Series, config: ContentConfig, prefix: str) -> tuple[sparse.csr_matrix, list[str]]:
    from sklearn.feature_extraction.text import TfidfVectorizer  # deferred: sklearn is heavy to import

    docs = texts.fillna("").astype(str)
    if not docs.str.strip().any():
        return sparse.csr_matrix((len(docs), 0)), []
    vectorizer = TfidfVectorizer(
        stop_words="english",
        min_df=min(config.min_df, max(1, len(docs))),
        max_features=config.max_features,
        token_pattern=r"(?u)\b[^\W\d_][\w'-]+\b",
        sublinear_tf=True,
    )
    try:
        matrix = vectorizer.fit_transform(docs)
    except ValueError:  # no word is left (all stop words or below min_df)
        return sparse.csr_matrix((len(docs), 0)), []
    return sparse.csr_matrix(matrix), [f"{prefix}={w}" for w in vectorizer.get_feature_names_out()]


def _clean_title(title: object) -> str:
    return _YEAR_SUFFIX.sub("", str(title)) if isinstance(title, str) else ""


def _item_tags(item_ids: pd.Series, tags: pd.DataFrame | None) -> pd.Series:
    if tags is None or tags.empty:
        return pd.Series([""] * len(item_ids), index=item_ids.index)
    missing = [c for c in ("item_id", "tag") if c not in tags.columns]
    if missing:
        raise ValueError(f"tags lack column(s) {', '.join(missing)}")
    joined = (
        tags.dropna(subset=["tag"])
        .assign(tag=lambda t: t["tag"].astype(str).str.strip().str.lower())
        .groupby("item_id")["tag"]
        .agg(" ".join)
    )
    return item_ids.map(joined).fillna("")


def _catalogue_tags(values: pd.Series) -> pd.Series:
    """The catalogue's ``tags`` column (``|``-joined, missing = none) as one text per item."""
    return values.map(
        lambda value: (
            " ".join(t.strip().lower() for t in value.split(TAG_SEPARATOR) if t.strip())
            if isinstance(value, str)
            else ""
        )
    )


@dataclass
class ContentRecommender:
    """Content alone as a recommender (``recommend(users, k, exclude)``, like the other models), from
    each user's ``history``: how the evaluation scores content next to ALS and the hybrid."""

    content: ContentModel
    history: pd.DataFrame

    def recommend(
        self, users: Sequence[str], k: int = 10, exclude: Mapping[str, Iterable[int]] | None = None
    ) -> pd.DataFrame:
        """Top-``k`` by content (:meth:`ContentModel.recommend`), each user's ``history`` and
        ``exclude``d items masked: the :class:`~recsys.models.protocol.Recommender` contract (users
        without a known item in the history get no rows)."""
        exclude = exclude or {}
        lists = [np.fromiter(items, dtype=np.int64) for items in exclude.values()]
        extra = pd.DataFrame(
            {
                "user": np.repeat(np.asarray(list(exclude), dtype=object), [len(a) for a in lists]),
                "item_id": np.concatenate(lists) if lists else np.empty(0, dtype=np.int64),
            }
        )
        # excluded items are masked like watched ones, but must not shape the profile: weight 0
        history = self.history[["user", "item_id"]].assign(
            strength=self.history["strength"] if "strength" in self.history.columns else 1.0
        )
        masked = pd.concat([history, extra.assign(strength=0.0)], ignore_index=True)
        return self.content.recommend(users, history=masked, k=k)
