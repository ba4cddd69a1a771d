"""Evaluate: candidate, current champion and a popularity baseline on the same holdout.

Every model ranks items for the same holdout users, with the same exclusions (each user's training
items of this window), and the same metric functions score all three.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from recsys.metrics import catalog_coverage, mae, novelty, ranking_metrics, rmse
from recsys.model import FactorModel


def truth_sets(holdout: pd.DataFrame) -> dict[str, set[int]]:
    return {u: set(g.astype(int).tolist()) for u, g in holdout.groupby("user")["item_id"]}


def train_items(train: pd.DataFrame) -> dict[str, list[int]]:
    return {u: g.astype(int).tolist() for u, g in train.groupby("user")["item_id"]}


def recommendation_lists(recs: pd.DataFrame) -> dict[str, list[int]]:
    ordered = recs.sort_values(["user", "rank"])
    return {u: g.astype(int).tolist() for u, g in ordered.groupby("user")["item_id"]}


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
    model: FactorModel, train: pd.DataFrame, holdout: pd.DataFrame, k: int, catalog_size: int
) -> dict[str, float]:
    truth = truth_sets(holdout)
    users = sorted(truth)
    recs = model.recommend(users, k=k, exclude=train_items(train[train["user"].isin(users)]))
    lists = recommendation_lists(recs)
    metrics = dict(ranking_metrics(lists, truth, k))
    # items that left the catalogue since the model was trained still count as covered
    distinct = len({item for items in lists.values() for item in items})
    metrics[f"coverage@{k}"] = float(catalog_coverage(lists, max(catalog_size, distinct, 1)))
    # popularity = distinct training users per item; recommended items nobody trained on are skipped
    popularity = train.groupby("item_id")["user"].nunique().to_dict()
    metrics[f"novelty@{k}"] = float(novelty(lists, popularity)) if popularity else math.nan
    metrics.update(rating_errors(model, holdout))
    return {key: float(value) for key, value in metrics.items()}
