"""Evaluate: candidate, current champion and a popularity baseline on the same holdout.

Every model ranks items for the same holdout users, with the same exclusions (each user's training
items of this window), and the same metric functions score all three.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from recsys.core.schemas import split_genres
from recsys.evaluation.metrics import (
    catalog_coverage,
    gini_concentration,
    intra_list_diversity,
    mae,
    novelty,
    ranking_metrics,
    rmse,
)
from recsys.models.factors import FactorModel
from recsys.models.protocol import Recommender


def grouped_items(users: pd.Series, items: pd.Series) -> dict[str, list[int]]:
    """user -> their ``items`` as Python ints, in the frame's order; users sorted. One sort and one
    list of all items, sliced per user: a per-group Series (pandas' groupby iteration) costs about
    100 µs a user, which at 70,000 users and six models was a minute of the evaluate stage."""
    if not len(users):
        return {}
    codes, uniques = pd.factorize(users, sort=True)
    order = np.argsort(codes, kind="stable")
    values = items.to_numpy()[order].astype(np.int64).tolist()
    ends = np.cumsum(np.bincount(codes, minlength=len(uniques))).tolist()
    starts = [0, *ends[:-1]]
    return {u: values[a:b] for u, a, b in zip(uniques.tolist(), starts, ends, strict=True)}


def truth_sets(holdout: pd.DataFrame) -> dict[str, set[int]]:
    return {u: set(items) for u, items in grouped_items(holdout["user"], holdout["item_id"]).items()}


def train_items(train: pd.DataFrame) -> dict[str, list[int]]:
    return grouped_items(train["user"], train["item_id"])


def recommendation_lists(recs: pd.DataFrame) -> dict[str, list[int]]:
    ordered = recs.sort_values(["user", "rank"], kind="stable")
    return grouped_items(ordered["user"], ordered["item_id"])


@dataclass(frozen=True)
class HoldoutSets:
    """What every model's scoring on one holdout shares: each holdout user's held-out items, the
    users in order, and each one's training items (what their lists exclude). Built once per
    evaluation (:meth:`of`) and handed to :func:`score_model` / :func:`score_segments`."""

    truth: dict[str, set[int]]
    users: list[str]
    exclude: dict[str, list[int]]
    #: (id(model), k) -> (model, its lists): a model scored twice (the served one, as the candidate and
    #: in the per-segment comparison) is ranked once
    _ranked: dict[tuple[int, int], tuple[Any, dict[str, list[int]]]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def lists(self, model: Recommender, k: int) -> dict[str, list[int]]:
        """``model``'s top-``k`` of every holdout user, its training items excluded (worked out once
        per model object)."""
        known = self._ranked.get((id(model), k))
        if known is not None and known[0] is model:
            return known[1]
        lists = recommendation_lists(model.recommend(self.users, k=k, exclude=self.exclude))
        self._ranked[(id(model), k)] = (model, lists)
        return lists

    @classmethod
    def of(cls, train: pd.DataFrame, holdout: pd.DataFrame) -> HoldoutSets:
        truth = truth_sets(holdout)
        users = sorted(truth)
        return cls(truth, users, train_items(train[train["user"].isin(users)]))


def rating_errors(model: FactorModel, holdout: pd.DataFrame) -> dict[str, float]:
    """RMSE / MAE of the model's scores against held-out explicit ratings.

    Only meaningful for a model trained on explicit ratings (``implicit_prefs=False``); for an
    implicit model the scores are preferences, not ratings, and both are reported as NaN.
    """
    rated = holdout[holdout["rating"].notna()]
    if model.meta.get("config", {}).get("implicit_prefs", True) or rated.empty:
        return {"rmse": math.nan, "mae": math.nan}
    upos = pd.Index(model.users).get_indexer(rated["user"])
    ipos = pd.Index(model.items).get_indexer(rated["item_id"])
    ok = (upos >= 0) & (ipos >= 0)
    pred = np.full(len(rated), np.nan)
    pred[ok] = np.einsum("ij,ij->i", model.user_factors[upos[ok]], model.item_factors[ipos[ok]])
    truth = rated["rating"].to_numpy(dtype=float)
    return {"rmse": float(rmse(truth, pred)), "mae": float(mae(truth, pred))}


def score_model(
    model: Recommender,
    train: pd.DataFrame,
    holdout: pd.DataFrame,
    k: int,
    catalog_size: int,
    item_genres: Mapping[int, Collection[str]] | None = None,
    sets: HoldoutSets | None = None,
) -> dict[str, float]:
    """Ranking metrics, coverage, novelty and Gini concentration of ``model``'s top-``k`` for the
    holdout users (and intra-list genre diversity with ``item_genres``); RMSE / MAE for an explicit
    FactorModel. ``model`` is anything with ``recommend(users, k, exclude)``; ``sets``: the holdout's
    :class:`HoldoutSets` when several models are scored on it (built here when not given)."""
    sets = sets or HoldoutSets.of(train, holdout)
    truth = sets.truth
    lists = sets.lists(model, k)
    metrics = dict(ranking_metrics(lists, truth, k))
    # items that left the catalogue since the model was trained still count as covered
    distinct = len({item for items in lists.values() for item in items})
    metrics[f"coverage@{k}"] = float(catalog_coverage(lists, max(catalog_size, distinct, 1)))
    # popularity = distinct training users per item; recommended items nobody trained on are skipped
    popularity = train.groupby("item_id")["user"].nunique().to_dict()
    metrics[f"novelty@{k}"] = float(novelty(lists, popularity)) if popularity else math.nan
    metrics[f"gini@{k}"] = float(gini_concentration(lists, max(catalog_size, distinct, 1)))
    if item_genres is not None:
        metrics[f"diversity@{k}"] = float(intra_list_diversity(lists, item_genres, k))
    if isinstance(model, FactorModel):
        metrics.update(rating_errors(model, holdout))
    else:  # a hybrid's scores are blends, not ratings
        metrics.update({"rmse": math.nan, "mae": math.nan})
    return {key: float(value) for key, value in metrics.items()}


SEGMENTS = ("all", "cold_users", "warm_users", "new_items")


def score_segments(
    model: Recommender,
    train: pd.DataFrame,
    holdout: pd.DataFrame,
    k: int,
    catalog_size: int,
    cold_user_max: int = 5,
    item_genres: Mapping[int, Collection[str]] | None = None,
    sets: HoldoutSets | None = None,
) -> dict[str, dict[str, float]]:
    """Ranking metrics overall and per segment, from one ranking of every holdout user.

    * ``cold_users``: users with fewer than ``cold_user_max`` training pairs (none counts);
    * ``warm_users``: the others;
    * ``new_items``: only the held-out pairs on items absent from training (relevance of what no
      collaborative model could have learned), for the users who have such pairs.

    ``all`` also has coverage, Gini concentration and, with ``item_genres``, intra-list diversity.
    A segment without users has NaN metrics (``users_evaluated`` = 0). ``model`` is anything with
    ``recommend(users, k, exclude)`` (a FactorModel, a HybridModel); ``sets`` as for :func:`score_model`.
    """
    sets = sets or HoldoutSets.of(train, holdout)
    truth, users = sets.truth, sets.users
    lists = sets.lists(model, k)
    counts = train.groupby("user").size()
    cold = {u for u in users if int(counts.get(u, 0)) < cold_user_max}
    known_items = set(train["item_id"].astype(int).tolist())
    new_truth = {u: {i for i in items if i not in known_items} for u, items in truth.items()}
    parts = {
        "all": truth,
        "cold_users": {u: truth[u] for u in users if u in cold},
        "warm_users": {u: truth[u] for u in users if u not in cold},
        "new_items": {u: items for u, items in new_truth.items() if items},
    }
    out: dict[str, dict[str, float]] = {}
    for name, part in parts.items():
        metrics = {
            key: float(v) for key, v in ranking_metrics({u: lists.get(u, []) for u in part}, part, k).items()
        }
        out[name] = metrics
    distinct = len({item for items in lists.values() for item in items})
    size = max(catalog_size, distinct, 1)
    out["all"][f"coverage@{k}"] = float(catalog_coverage(lists, size))
    out["all"][f"gini@{k}"] = float(gini_concentration(lists, size))
    if item_genres is not None:
        out["all"][f"diversity@{k}"] = float(intra_list_diversity(lists, item_genres, k))
    return out


def item_genres(items: pd.DataFrame) -> dict[int, set[str]]:
    """item_id -> its genres, from a catalogue frame (``genres`` pipe-joined; empty: none)."""
    return {
        int(i): set(split_genres(genres)) for i, genres in zip(items["item_id"], items["genres"], strict=True)
    }
