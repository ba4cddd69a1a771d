"""Train: Spark MLlib ALS in a real SparkSession, factors out to a FactorModel."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from recsys.io.spark import als_sizing, pandas_to_spark
from recsys.models.factors import FactorModel, popularity_order, seen_matrix

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


class ALSConfig(BaseModel):
    """Hyper-parameters of Spark's ALS (names follow Spark's where they map one to one)."""

    model_config = ConfigDict(extra="forbid")

    rank: int = Field(16, ge=1, le=1024)
    max_iter: int = Field(10, ge=1, le=200)
    reg_param: float = Field(
        0.1, ge=0.0, description="L2 weight, scaled by each user's / item's number of pairs (Spark's ALS-WR)"
    )
    alpha: float = Field(1.0, ge=0.0, description="confidence scale for implicit feedback")
    implicit_prefs: bool = True
    nonnegative: bool = False
    num_blocks: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="user and item blocks (parallelism of one solve); None: from the data size and the "
        "session's parallelism (recsys.io.spark.als_sizing)",
    )
    seed: int = 42


def fit_spark_als(
    train: pd.DataFrame, config: ALSConfig, spark: SparkSession
) -> tuple[Any, np.ndarray, np.ndarray, float]:
    """Fit Spark's ALS on (user, item_id, strength[, rating]) pairs.

    Returns the fitted ``ALSModel`` (its user / item ids are positions in the returned ``users`` /
    ``items`` arrays), those arrays, and the fit time in seconds. Implicit mode learns from
    ``strength`` as confidence; explicit mode from ``rating`` (pairs without a rating are left out).
    """
    from pyspark.ml.recommendation import ALS  # deferred: pyspark is heavy to import

    data = train if config.implicit_prefs else train[train["rating"].notna()]
    if data.empty:
        raise ValueError("no training pairs: the prepared training set is empty")
    users = np.array(sorted(data["user"].unique()), dtype=str)
    items = np.array(sorted(data["item_id"].unique()), dtype=np.int64)
    frame = pd.DataFrame(
        {
            "u": pd.Index(users).get_indexer(data["user"]).astype(np.int32),
            "i": pd.Index(items).get_indexer(data["item_id"]).astype(np.int32),
            "r": (data["strength"] if config.implicit_prefs else data["rating"]).astype(np.float32),
        }
    )
    sizing = als_sizing(
        len(frame), spark.sparkContext.defaultParallelism, config.max_iter, blocks=config.num_blocks
    )
    log.info("ALS on %d pairs: %s", len(frame), sizing.describe())
    started = time.perf_counter()
    als = ALS(
        rank=config.rank,
        maxIter=config.max_iter,
        regParam=config.reg_param,
        alpha=config.alpha,
        implicitPrefs=config.implicit_prefs,
        nonnegative=config.nonnegative,
        numUserBlocks=sizing.blocks,
        numItemBlocks=sizing.blocks,
        checkpointInterval=sizing.checkpoint_interval,
        userCol="u",
        itemCol="i",
        ratingCol="r",
        coldStartStrategy="drop",
        seed=config.seed,
    )
    # ALS materializes (and persists) its blocks and final factors inside fit, so the model does not
    # read its input again once the hand-off file is gone
    with pandas_to_spark(spark, frame) as sdf:
        fitted = als.fit(sdf)
    return fitted, users, items, time.perf_counter() - started


def train_als(train: pd.DataFrame, config: ALSConfig, spark: SparkSession) -> FactorModel:
    """Fit ALS (:func:`fit_spark_als`) and return the factors as a :class:`FactorModel`."""
    started = time.perf_counter()
    fitted, users, items, _ = fit_spark_als(train, config, spark)
    model = factor_model(fitted, users, items, train, config)
    seconds = time.perf_counter() - started
    model.meta.update({"fit_seconds": round(seconds, 3), "spark_version": spark.version})
    log.info(
        "ALS rank=%d on %d pairs (%d users, %d items) in %.1fs",
        config.rank,
        len(train),
        len(users),
        len(items),
        seconds,
    )
    return model


def factor_model(
    fitted: Any, users: np.ndarray, items: np.ndarray, train: pd.DataFrame, config: ALSConfig
) -> FactorModel:
    """The factors of a fitted ``ALSModel`` (from :func:`fit_spark_als`) as a :class:`FactorModel`."""
    return FactorModel(
        users=users,
        items=items,
        user_factors=_dense(fitted.userFactors.toPandas(), len(users), config.rank),
        item_factors=_dense(fitted.itemFactors.toPandas(), len(items), config.rank),
        seen=seen_matrix(train, users, items),
        popular=popularity_order(train),
        meta={"kind": "als", "config": config.model_dump()},
    )


def _dense(factors: pd.DataFrame, n: int, rank: int) -> np.ndarray:
    out = np.zeros((n, rank), dtype=np.float32)
    if len(factors):
        out[factors["id"].to_numpy()] = np.stack(factors["features"].to_numpy()).astype(np.float32)
    return out
