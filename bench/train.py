"""Training: the project's Spark ALS training stage against stock Spark MLlib ALS and ``implicit``.

Same data, same rank and iterations, same per-user time-based holdout (each user's latest 20% of
pairs; relevant = rated at least 3.5), same metric code (:func:`recsys.evaluate.score_model`, seen
items excluded). Wall time covers the fit and getting the factors out; peak memory is this process
plus the Spark JVM.

* **project**: :func:`recsys.train.train_als` with the project's default ALS config, in the
  project's SparkSession (:func:`recsys.spark.get_spark`);
* **stock Spark**: ``pyspark.ml.recommendation.ALS`` with Spark's defaults except rank, iterations
  and implicit feedback, in a SparkSession with Spark's default settings;
* **implicit**: ``implicit.cpu.als.AlternatingLeastSquares`` (CPU), confidence ``1 + alpha * strength``.

    .venv/bin/python -m bench.train [--shapes ml-100k ml-latest-small "ml-1m shape"]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import pandas as pd

from bench.common import SHAPES, generated_pairs, measure, movielens_pairs, table, write_section

K = 10


def split(pairs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    from recsys.prepare import PrepareConfig, relevant_holdout, split_by_time

    config = PrepareConfig()
    frame = pairs.rename(columns={"ts": "last_ts"}).assign(viewed=False)
    train, holdout = split_by_time(frame, config)
    return train, relevant_holdout(holdout, config)


def score(model, train: pd.DataFrame, holdout: pd.DataFrame) -> dict[str, float]:  # noqa: ANN001
    from recsys.evaluate import score_model

    return score_model(model, train, holdout, K, int(train["item_id"].nunique()))


def implicit_model(train: pd.DataFrame, rank: int, iterations: int, reg: float, alpha: float):  # noqa: ANN201
    from implicit.cpu.als import AlternatingLeastSquares
    from scipy import sparse

    from recsys.model import FactorModel, popularity_order, seen_matrix

    users = np.array(sorted(train["user"].unique()), dtype=str)
    items = np.array(sorted(train["item_id"].unique()), dtype=np.int64)
    u = pd.Index(users).get_indexer(train["user"])
    i = pd.Index(items).get_indexer(train["item_id"])
    confidence = (1.0 + alpha * train["strength"].to_numpy()).astype(np.float32)
    matrix = sparse.csr_matrix((confidence, (u, i)), shape=(len(users), len(items)))
    als = AlternatingLeastSquares(
        factors=rank,
        iterations=iterations,
        regularization=reg,
        random_state=42,
        calculate_training_loss=False,
    )
    als.fit(matrix, show_progress=False)
    return FactorModel(
        users=users,
        items=items,
        user_factors=np.asarray(als.user_factors, dtype=np.float32),
        item_factors=np.asarray(als.item_factors, dtype=np.float32),
        seen=seen_matrix(train, users, items),
        popular=popularity_order(train),
        meta={"kind": "implicit"},
    )


def stock_spark_model(train: pd.DataFrame, rank: int, iterations: int):  # noqa: ANN201
    """Spark's ALS with its defaults (regParam 0.1, alpha 1.0, 10 blocks) in a default session."""
    from pyspark.ml.recommendation import ALS
    from pyspark.sql import SparkSession

    from recsys.train import ALSConfig, factor_model

    spark = (
        SparkSession.builder.master(os.environ.get("RECSYS_SPARK_MASTER", "local[*]"))
        .appName("bench-stock")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    users = np.array(sorted(train["user"].unique()), dtype=str)
    items = np.array(sorted(train["item_id"].unique()), dtype=np.int64)
    frame = pd.DataFrame(
        {
            "u": pd.Index(users).get_indexer(train["user"]).astype(np.int32),
            "i": pd.Index(items).get_indexer(train["item_id"]).astype(np.int32),
            "r": train["strength"].astype(np.float32),
        }
    )
    fitted = ALS(
        rank=rank, maxIter=iterations, implicitPrefs=True, userCol="u", itemCol="i", ratingCol="r"
    ).fit(spark.createDataFrame(frame))
    model = factor_model(fitted, users, items, train, ALSConfig(rank=rank, max_iter=iterations))
    spark.stop()
    return model


def run_one(name: str, pairs: pd.DataFrame) -> list[list[object]]:
    from recsys.model import popularity_model
    from recsys.settings import Settings
    from recsys.spark import get_spark
    from recsys.train import ALSConfig, train_als

    train, holdout = split(pairs)
    config = ALSConfig()
    print(f"[{name}] {len(train):,} training pairs, {len(holdout):,} relevant holdout pairs")
    rows = []

    def row(label: str, model, m) -> list[object]:  # noqa: ANN001
        metrics = score(model, train, holdout)
        print(
            f"[{name}] {label}: {m.seconds:.1f}s, peak {m.peak_gib:.2f} GiB, ndcg@10 {metrics['ndcg@10']:.4f}"
        )
        return [name, label, m.seconds, m.peak_gib, metrics["ndcg@10"], metrics["precision@10"]]

    # the project's session first: it starts the JVM with the project's driver memory, which a
    # later session in the same process keeps (the stock session gets Spark's defaults otherwise)
    with measure() as m:
        spark = get_spark(Settings.from_env(), app_name="bench-train")
        project = train_als(train, config, spark)
    rows.append(row("project training stage", project, m))
    spark.stop()
    with measure() as m:
        stock = stock_spark_model(train, config.rank, config.max_iter)
    rows.append(row("stock Spark ALS (defaults)", stock, m))
    with measure() as m:
        imp = implicit_model(train, config.rank, config.max_iter, config.reg_param, config.alpha)
    rows.append(row("implicit ALS (CPU)", imp, m))
    with measure() as m:
        pop = popularity_model(train)
    rows.append(row("popularity baseline", pop, m))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shapes", nargs="+", default=["ml-100k", "ml-latest-small", "ml-1m shape"])
    args = parser.parse_args(argv)
    rows: list[list[object]] = []
    # start the JVM once before measuring (with the project's driver memory): every model's time
    # then includes making its own SparkContext, not the JVM's start
    from recsys.settings import Settings
    from recsys.spark import get_spark

    get_spark(Settings.from_env(), app_name="bench-warm-up").stop()
    for name in args.shapes:
        pairs = generated_pairs(*SHAPES[name]) if name in SHAPES else movielens_pairs(name)
        rows.extend(run_one(name, pairs))
    from recsys.train import ALSConfig

    config = ALSConfig()
    body = (
        f"Rank {config.rank}, {config.max_iter} iterations, implicit feedback (strength = rating / 2.5), "
        "per-user time-based holdout (latest 20% of each user's pairs, relevant = rated >= 3.5), seen "
        "items excluded. Wall time = a new SparkContext (the JVM is already up) + fit + factors out "
        "of Spark; peak memory = Python + Spark JVM (the JVM is shared, so later rows include earlier ones). "
        "Not yet tuned per data size (issue 9 continues).\n\n"
        + table(["data", "model", "seconds", "peak GiB", "NDCG@10", "precision@10"], rows)
    )
    path = write_section("train", "Training: project vs stock Spark ALS vs implicit", body)
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
