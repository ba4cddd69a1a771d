"""Evaluate on Spark: the metric dicts of :func:`~recsys.evaluation.evaluate.score_model` and
:func:`~recsys.evaluation.evaluate.score_segments` (the same keys, the same values up to float
rounding) for holdouts too large for one machine.

From Spark DataFrames of the week's prepared train and holdout (``user``, ``item_id``, ``rating``):

1. :func:`holdout_frames` builds, once for every model scored on the holdout, one row per holdout
   user (:func:`holdout_users`: the user's holdout items, those of them no training pair has, the
   user's training items to exclude, the number of training pairs) and the training popularity of
   each item, and keeps both persisted;
2. ``mapInPandas`` over the users: each Arrow batch of users is ranked, with that batch's
   exclusions, by the model's own ``recommend`` (a FactorModel with its blocked numpy top-k) on a
   model of the batch's users alone: the model's item side is broadcast once, each user's inputs
   come in the user's row (:mod:`recsys.models.sides`). :func:`score_users` scores each user with
   the project's metric functions
   (:func:`~recsys.evaluation.metrics.ranking_metrics` on the one user,
   :func:`~recsys.evaluation.metrics.list_diversities` on the batch's lists). Out comes one row per
   user: its metrics and its list;
3. Spark aggregates: the means per segment, and per recommended item how often it was recommended
   next to its training popularity (coverage, Gini concentration, novelty).

What reaches the driver: a few numbers per segment and one row per recommended item (bounded by the
catalogue), never a row per user.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from recsys.evaluation.evaluate import recommendation_lists
from recsys.evaluation.metrics import (
    RANKING_METRICS,
    USERS_EVALUATED,
    catalog_coverage,
    list_diversities,
    mae,
    ranking_metrics,
    rmse,
)
from recsys.io.spark import table_to_spark
from recsys.models.factors import FactorModel
from recsys.models.protocol import Recommender
from recsys.models.sides import ItemSide, block_recommender, item_side, model_users, splits, user_inputs

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

#: prefix of a user's metrics against the holdout items no training pair has (segment ``new_items``)
NEW = "new_"
DIVERSITY = "diversity"
ITEMS = "items"


# ---- the holdout, once per evaluation ------------------------------------------------------------
def holdout_users(train: DataFrame, holdout: DataFrame) -> DataFrame:
    """One row per holdout user: ``user``; ``truth`` (the user's distinct holdout items);
    ``new_truth`` (those of them absent from every training pair, maybe empty); ``exclude`` (the
    user's training items, null without any); ``n_train`` (the user's training pairs, 0 without any).
    Rows with a null user or item are left out (pandas' groupby drops them too)."""
    from pyspark.sql import functions as F  # deferred: pyspark is heavy, loaded only for a Spark evaluation

    pairs = holdout.select(F.col("user").cast("string"), F.col("item_id").cast("long")).where(
        F.col("user").isNotNull() & F.col("item_id").isNotNull()
    )
    known = (
        train.select(F.col("item_id").cast("long")).where(F.col("item_id").isNotNull()).distinct()
    ).withColumn("_known", F.lit(True))
    truth = (
        pairs.join(known, "item_id", "left")
        .groupBy("user")
        .agg(
            F.array_sort(F.collect_set("item_id")).alias("truth"),
            F.array_sort(F.collect_set(F.when(F.col("_known").isNull(), F.col("item_id")))).alias(
                "new_truth"
            ),
        )
    )
    history = (
        train.select(F.col("user").cast("string"), F.col("item_id").cast("long"))
        .where(F.col("user").isNotNull())
        .join(truth.select("user"), "user", "left_semi")
        .groupBy("user")
        .agg(F.collect_list("item_id").alias("exclude"), F.count(F.lit(1)).alias("n_train"))
    )
    return truth.join(history, "user", "left").withColumn("n_train", F.coalesce("n_train", F.lit(0)))


@dataclass(frozen=True)
class HoldoutFrames:
    """The holdout as every model is scored on it (see :func:`holdout_frames`)."""

    users: DataFrame  # :func:`holdout_users`, spread over the session's task slots
    popularity: DataFrame  # item_id, popularity: distinct training users per item
    total_popularity: int  # the sum of every item's popularity
    ratings: DataFrame  # user, item_id, rating: the holdout pairs with a known rating


@contextmanager
def holdout_frames(train: DataFrame, holdout: DataFrame) -> Iterator[HoldoutFrames]:
    """The per-user holdout rows and the items' training popularity, persisted for as long as the
    ``with`` block runs (each model scored inside it reuses them) and released after."""
    # deferred: pyspark is heavy, loaded only for a Spark evaluation
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    slots = max(2, holdout.sparkSession.sparkContext.defaultParallelism)
    # every task slot gets users (a small holdout would sit in one partition after the aggregation)
    users = holdout_users(train, holdout).repartition(slots).persist(StorageLevel.MEMORY_AND_DISK)
    popularity = (
        train.where(F.col("item_id").isNotNull())
        .groupBy(F.col("item_id").cast("long").alias("item_id"))
        .agg(F.countDistinct("user").alias("popularity"))
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    ratings = holdout.select(
        F.col("user").cast("string"), F.col("item_id").cast("long"), F.col("rating").cast("double")
    ).where(F.col("rating").isNotNull() & ~F.isnan("rating"))
    try:
        total = popularity.agg(F.sum("popularity")).first()[0]  # type: ignore[index]
        yield HoldoutFrames(
            users=users, popularity=popularity, total_popularity=int(total or 0), ratings=ratings
        )
    finally:
        users.unpersist()
        popularity.unpersist()


# ---- per user, inside mapInPandas ----------------------------------------------------------------
def score_users(
    model: Recommender,
    users: pd.DataFrame,
    k: int,
    item_genres: Mapping[int, Collection[str]] | None = None,
) -> pd.DataFrame:
    """Rank a block of :func:`holdout_users` rows with ``model`` (that block's exclusions) and score
    each user: the ranking metrics against ``truth`` and (``new_``-prefixed) against ``new_truth``
    (NaN where that truth is empty), with ``item_genres`` the list's intra-list ``diversity`` (NaN
    for a list with fewer than two items with genres), the list itself (``items``, best first) and
    ``n_train``. One row per given user, in the given order; a user the model gives nothing scores an
    empty list."""
    names = users["user"].tolist()
    exclude = {
        user: [int(i) for i in items]
        for user, items in zip(names, users["exclude"], strict=True)
        if items is not None
    }
    lists = recommendation_lists(model.recommend(names, k=k, exclude=exclude)) if names else {}
    columns: dict[str, list[Any]] = {name: [] for name in RANKING_METRICS}
    columns.update({NEW + name: [] for name in RANKING_METRICS})
    columns[ITEMS] = []
    ordered = {user: lists.get(user, []) for user in names}
    # the batch's lists at once (the catalogue's genre array once per batch, not once per user)
    diversities = list_diversities(ordered, item_genres, k) if item_genres is not None else None
    columns[DIVERSITY] = diversities.tolist() if diversities is not None else [math.nan] * len(names)
    for user, truth, new_truth in zip(names, users["truth"], users["new_truth"], strict=True):
        ranked = lists.get(user, [])
        for prefix, relevant in (("", truth), (NEW, new_truth)):
            relevant_set = {int(i) for i in relevant} if relevant is not None else set()
            values = ranking_metrics({user: ranked}, {user: relevant_set}, k)
            for name in RANKING_METRICS:
                columns[prefix + name].append(values[f"{name}@{k}"])
        columns[ITEMS].append([int(i) for i in ranked])
    out = pd.DataFrame(
        {name: pd.Series(values, dtype="float64") for name, values in columns.items() if name != ITEMS}
    )
    out[ITEMS] = pd.Series(columns[ITEMS], dtype=object)
    out["n_train"] = users["n_train"].to_numpy(dtype=np.int64)
    return out


def _scored_schema() -> str:
    metrics = [*RANKING_METRICS, *(NEW + name for name in RANKING_METRICS), DIVERSITY]
    return ", ".join([*(f"{name} double" for name in metrics), f"{ITEMS} array<bigint>", "n_train bigint"])


@contextmanager
def scored_users(
    model: Recommender,
    frames: HoldoutFrames,
    k: int,
    item_genres: Mapping[int, Collection[str]] | None = None,
) -> Iterator[DataFrame]:
    """:func:`score_users` over every holdout user as a Spark DataFrame (one row per user), persisted
    while the ``with`` block runs, so that every aggregate reads the one ranking.

    A model in two sides (:func:`recsys.models.sides.splits`: ALS, popularity, content, the hybrid,
    a re-ranker of one) broadcasts its item side alone; each holdout user's inputs join the user's
    row (:func:`recsys.models.sides.user_inputs` of the users the model has inputs for), and each
    Arrow batch of users is ranked by a model of that batch's users
    (:func:`recsys.models.sides.block_recommender`), so no executor holds every user. Another model
    is broadcast whole. ``item_genres`` are broadcast."""
    from pyspark import StorageLevel  # deferred: pyspark is heavy, loaded only for a Spark evaluation

    spark = frames.users.sparkSession
    context = spark.sparkContext
    with ExitStack() as stack:
        users = frames.users
        if splits(model):
            inputs = stack.enter_context(table_to_spark(spark, user_inputs(model, model_users(model))))
            users = users.join(inputs, "user", "left")
            shared = context.broadcast((item_side(model), item_genres))
        else:
            shared = context.broadcast((model, item_genres))
        stack.callback(shared.unpersist)

        def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
            side, genres = shared.value
            for batch in batches:
                scorer = block_recommender(batch, side) if isinstance(side, ItemSide) else side
                yield score_users(scorer, batch, k, genres)

        scored = users.mapInPandas(score, _scored_schema()).persist(StorageLevel.MEMORY_AND_DISK)
        stack.callback(scored.unpersist)
        yield scored


# ---- aggregation ---------------------------------------------------------------------------------
def _known(column: str) -> Column:
    from pyspark.sql import functions as F  # deferred: pyspark is heavy, loaded only for a Spark evaluation

    return F.col(column).isNotNull() & ~F.isnan(column)


def _segment_means(
    scored: DataFrame, k: int, segments: Mapping[str, tuple[str, Column]], diversity: bool
) -> tuple[dict[str, dict[str, float]], float]:
    """Per segment (name -> (metric prefix, condition on a scored row)), the mean of each ranking
    metric over its users with a non-empty truth and their number, as :func:`ranking_metrics` reports
    them (NaN means and 0 users for an empty segment); and with ``diversity`` the mean intra-list
    diversity over the lists that have one (else NaN). One Spark job for all of it."""
    from pyspark.sql import functions as F  # deferred: pyspark is heavy, loaded only for a Spark evaluation

    exprs = []
    for i, (prefix, condition) in enumerate(segments.values()):
        evaluated = condition & _known(prefix + RANKING_METRICS[0])
        exprs.extend(
            F.avg(F.when(evaluated, F.col(prefix + name))).alias(f"s{i}_{name}") for name in RANKING_METRICS
        )
        exprs.append(F.count(F.when(evaluated, F.lit(1))).alias(f"s{i}_users"))
    if diversity:
        exprs.append(F.avg(F.when(_known(DIVERSITY), F.col(DIVERSITY))).alias(DIVERSITY))
    row = scored.agg(*exprs).first()
    assert row is not None  # an aggregate without grouping has one row

    def value(column: str) -> float:
        return math.nan if row[column] is None else float(row[column])

    out: dict[str, dict[str, float]] = {}
    for i, name in enumerate(segments):
        metrics = {f"{m}@{k}": value(f"s{i}_{m}") for m in RANKING_METRICS}
        metrics[USERS_EVALUATED] = value(f"s{i}_users")
        out[name] = metrics
    return out, value(DIVERSITY) if diversity else math.nan


@dataclass(frozen=True)
class ItemCounts:
    """How often each recommended item was recommended and its training popularity (0: nobody
    trained on it), one entry per recommended item."""

    counts: np.ndarray  # int64
    popularity: np.ndarray  # int64


def item_counts(scored: DataFrame, popularity: DataFrame) -> ItemCounts:
    """Per recommended item its number of slots and training popularity, aggregated by Spark: the
    driver gets one row per recommended item (bounded by the catalogue)."""
    from pyspark.sql import functions as F  # deferred: pyspark is heavy, loaded only for a Spark evaluation

    per_item = (
        scored.select(F.explode(ITEMS).alias("item_id"))
        .groupBy("item_id")
        .agg(F.count(F.lit(1)).alias("n"))
        .join(popularity, "item_id", "left")
        .select("n", F.coalesce("popularity", F.lit(0)).alias("popularity"))
        .toPandas()
    )
    return ItemCounts(
        counts=per_item["n"].to_numpy(dtype=np.int64),
        popularity=per_item["popularity"].to_numpy(dtype=np.int64),
    )


def gini_of_counts(counts: np.ndarray, catalog_size: int) -> float:
    """:func:`~recsys.evaluation.metrics.gini_concentration` from how often each recommended item was
    recommended (items of the catalogue never recommended count as 0). NaN when nothing is."""
    if len(counts) > catalog_size:
        raise ValueError(
            f"{len(counts)} distinct items recommended but catalog_size is {catalog_size}: "
            "pass the size of the catalogue the recommendations were drawn from"
        )
    if len(counts) == 0:
        return math.nan
    values = np.sort(np.concatenate([np.zeros(catalog_size - len(counts)), counts.astype(float)]))
    n = len(values)
    ranks = np.arange(1, n + 1)
    return float((2 * (ranks * values).sum()) / (n * values.sum()) - (n + 1) / n)


def novelty_of_counts(counts: np.ndarray, popularity: np.ndarray, total_popularity: float) -> float:
    """:func:`~recsys.evaluation.metrics.novelty` from per-item slot counts and training popularity:
    the mean self-information ``log2(total) - log2(popularity)`` over the slots of items with a
    popularity; NaN when no slot has one (or nothing trained: ``total_popularity`` 0)."""
    if total_popularity <= 0:
        return math.nan
    keep = popularity > 0
    slots = int(counts[keep].sum())
    if not slots:
        return math.nan
    bits = counts[keep] * (math.log2(total_popularity) - np.log2(popularity[keep].astype(float)))
    return float(bits.sum() / slots)


def rating_errors_spark(model: Recommender, frames: HoldoutFrames) -> dict[str, float]:
    """:func:`~recsys.evaluation.evaluate.rating_errors` on Spark: RMSE / MAE of an explicit
    FactorModel's scores against the held-out ratings, NaN for an implicit model (its scores are
    preferences) or any other model (a hybrid's scores are blends). Each task sums the squared and
    absolute errors of its batches; the driver gets three numbers."""
    from pyspark.sql import functions as F  # deferred: pyspark is heavy, loaded only for a Spark evaluation

    if not isinstance(model, FactorModel) or model.meta.get("config", {}).get("implicit_prefs", True):
        return {"rmse": math.nan, "mae": math.nan}
    shared = frames.ratings.sparkSession.sparkContext.broadcast(model)

    def errors(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        factors: FactorModel = shared.value
        users, items = pd.Index(factors.users), pd.Index(factors.items)
        for batch in batches:
            upos, ipos = users.get_indexer(batch["user"]), items.get_indexer(batch["item_id"])
            ok = (upos >= 0) & (ipos >= 0)
            pred = np.full(len(batch), np.nan)  # as rating_errors predicts: float32 factors, float64 out
            pred[ok] = np.einsum("ij,ij->i", factors.user_factors[upos[ok]], factors.item_factors[ipos[ok]])
            diff = batch["rating"].to_numpy(dtype=float)[ok] - pred[ok]
            yield pd.DataFrame(
                {"n": [len(diff)], "sq": [float((diff**2).sum())], "ab": [float(np.abs(diff).sum())]}
            )

    try:
        row = (
            frames.ratings.mapInPandas(errors, "n bigint, sq double, ab double")
            .agg(F.sum("n").alias("n"), F.sum("sq").alias("sq"), F.sum("ab").alias("ab"))
            .first()
        )
    finally:
        shared.unpersist()
    n = int(row["n"] or 0) if row is not None else 0
    if not n:
        return {"rmse": float(rmse([], [])), "mae": float(mae([], []))}  # NaN, as for no pair
    return {"rmse": math.sqrt(row["sq"] / n), "mae": row["ab"] / n}  # type: ignore[index]


# ---- the two entry points ------------------------------------------------------------------------
def _catalogue_metrics(
    scored: DataFrame, frames: HoldoutFrames, k: int, catalog_size: int
) -> dict[str, float]:
    counts = item_counts(scored, frames.popularity)
    # items that left the catalogue since the model was trained still count as covered (as score_model)
    size = max(catalog_size, len(counts.counts), 1)
    return {
        f"coverage@{k}": float(catalog_coverage({0: range(len(counts.counts))}, size)),
        f"novelty@{k}": novelty_of_counts(counts.counts, counts.popularity, frames.total_popularity),
        f"gini@{k}": gini_of_counts(counts.counts, size),
    }


def score_model_spark(
    model: Recommender,
    frames: HoldoutFrames,
    k: int,
    catalog_size: int,
    item_genres: Mapping[int, Collection[str]] | None = None,
) -> dict[str, float]:
    """:func:`~recsys.evaluation.evaluate.score_model` on Spark, over :func:`holdout_frames`: the same
    keys and values (ranking metrics, users_evaluated, coverage, novelty, Gini, diversity with
    ``item_genres``, RMSE / MAE)."""
    from pyspark.sql import functions as F  # deferred: pyspark is heavy, loaded only for a Spark evaluation

    with scored_users(model, frames, k, item_genres) as scored:
        means, diversity = _segment_means(scored, k, {"all": ("", F.lit(True))}, item_genres is not None)
        metrics = means["all"]
        metrics.update(_catalogue_metrics(scored, frames, k, catalog_size))
    if item_genres is not None:
        metrics[f"{DIVERSITY}@{k}"] = diversity
    metrics.update(rating_errors_spark(model, frames))
    return metrics


def score_segments_spark(
    model: Recommender,
    frames: HoldoutFrames,
    k: int,
    catalog_size: int,
    cold_user_max: int = 5,
    item_genres: Mapping[int, Collection[str]] | None = None,
) -> dict[str, dict[str, float]]:
    """:func:`~recsys.evaluation.evaluate.score_segments` on Spark, over :func:`holdout_frames`: the
    ranking metrics of ``all``, ``cold_users``, ``warm_users`` and ``new_items`` from one ranking of
    every holdout user; ``all`` also has coverage, Gini and (with ``item_genres``) diversity."""
    from pyspark.sql import functions as F  # deferred: pyspark is heavy, loaded only for a Spark evaluation

    cold = F.col("n_train") < cold_user_max
    with scored_users(model, frames, k, item_genres) as scored:
        out, diversity = _segment_means(
            scored,
            k,
            {
                "all": ("", F.lit(True)),
                "cold_users": ("", cold),
                "warm_users": ("", ~cold),
                "new_items": (NEW, F.lit(True)),
            },
            item_genres is not None,
        )
        catalogue = _catalogue_metrics(scored, frames, k, catalog_size)
    out["all"][f"coverage@{k}"] = catalogue[f"coverage@{k}"]
    out["all"][f"gini@{k}"] = catalogue[f"gini@{k}"]
    if item_genres is not None:
        out["all"][f"{DIVERSITY}@{k}"] = diversity
    return out
