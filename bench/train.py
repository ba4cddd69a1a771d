"""Training: the project's Spark ALS training stage against stock Spark MLlib ALS and ``implicit``.

Same data, same rank and iterations, same per-user time-based holdout (each user's latest 20% of
pairs; relevant = rated at least 3.5), same metric code (:func:`recsys.evaluation.evaluate.score_model`, seen
items excluded). Wall time covers the fit and getting the factors out; peak memory is this process
plus the Spark JVM.

* **project**: :func:`recsys.training.als.train_als` with the project's default ALS config, in the
  project's SparkSession (:func:`recsys.io.spark.get_spark`);
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

from bench.common import SHAPES, generated_pairs, measure, median_run, movielens_pairs, table, write_section

K = 10
FIRST_SEED = 42


def split(pairs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    from recsys.data.prepare import PrepareConfig, relevant_holdout, split_by_time

    config = PrepareConfig()
    frame = pairs.rename(columns={"ts": "last_ts"}).assign(viewed=False)
    train, holdout = split_by_time(frame, config)
    return train, relevant_holdout(holdout, config)


def score(model, train: pd.DataFrame, holdout: pd.DataFrame) -> dict[str, float]:  # noqa: ANN001
    from recsys.evaluation.evaluate import score_model

    return score_model(model, train, holdout, K, int(train["item_id"].nunique()))


def implicit_model(  # noqa: ANN201
    train: pd.DataFrame, rank: int, iterations: int, reg: float, alpha: float, seed: int = FIRST_SEED
):
    from implicit.cpu.als import AlternatingLeastSquares
    from scipy import sparse

    from recsys.models.factors import FactorModel, popularity_order, seen_matrix

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
        random_state=seed,
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


def stock_spark_model(train: pd.DataFrame, rank: int, iterations: int, seed: int | None = None):  # noqa: ANN201
    """Spark's ALS with its defaults (regParam 0.1, alpha 1.0, 10 blocks) in a default session; ``seed``
    for its random start (None: Spark's own default seed)."""
    from pyspark.ml.recommendation import ALS
    from pyspark.sql import SparkSession

    from recsys.training.als import ALSConfig, factor_model

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
    als = ALS(rank=rank, maxIter=iterations, implicitPrefs=True, userCol="u", itemCol="i", ratingCol="r")
    if seed is not None:
        als.setSeed(seed)
    fitted = als.fit(spark.createDataFrame(frame))
    model = factor_model(fitted, users, items, train, ALSConfig(rank=rank, max_iter=iterations))
    spark.stop()
    return model


def grid() -> dict[str, list]:
    """The grid both the project and implicit are tuned over: the project's wide tuning grid."""
    from recsys.training.tuning import WIDE_GRID

    return WIDE_GRID


TUNED_ITERATIONS = 15


def project_model(train: pd.DataFrame, config):  # noqa: ANN001, ANN201
    """The training stage's path: the project's session (made or reused) and :func:`train_als`."""
    from recsys.core.settings import Settings
    from recsys.io.spark import get_spark
    from recsys.training.als import train_als

    spark = get_spark(Settings.from_env(), app_name="bench-train")
    model = train_als(train, config, spark)
    spark.stop()
    return model


def seeded_runs(make, repeats: int):  # noqa: ANN001, ANN201
    """``make(seed)`` for seeds 42, 43, ...: (every run's model, a Measure with the median wall time)."""
    models: list = []
    seeds = iter(range(FIRST_SEED, FIRST_SEED + repeats))
    _, m = median_run(lambda: models.append(make(next(seeds))), repeats)
    return models, m


def speed_rows(name: str, train: pd.DataFrame, holdout: pd.DataFrame, repeats: int) -> list[list[object]]:
    """Time and quality of each model; the quality is the mean over the timed runs' models, each
    trained with its own seed (ALS's result moves with its random start, so one seed could make a
    model look better or worse than another by chance)."""
    from recsys.models.factors import popularity_model
    from recsys.training.als import ALSConfig

    config = ALSConfig()
    rows = []

    def row(label: str, models: list, m) -> list[object]:  # noqa: ANN001
        scores = [score(model, train, holdout) for model in models]
        ndcg = [s["ndcg@10"] for s in scores]
        spread = f"{min(ndcg):.4f}-{max(ndcg):.4f}" if len(set(ndcg)) > 1 else ""
        print(
            f"[{name}] {label}: {m.seconds:.2f}s (median of {repeats}), peak {m.peak_gib:.2f} GiB, "
            f"ndcg@10 {np.mean(ndcg):.4f} {spread}",
            flush=True,
        )
        precision = float(np.mean([s["precision@10"] for s in scores]))
        return [name, label, m.seconds, m.peak_gib, float(np.mean(ndcg)), spread, precision]

    project, m = seeded_runs(
        lambda seed: project_model(train, config.model_copy(update={"seed": seed})), repeats
    )
    rows.append(row("project training stage", project, m))
    project_seconds = m.seconds
    stock, m = seeded_runs(lambda seed: stock_spark_model(train, config.rank, config.max_iter, seed), repeats)
    rows.append(row("stock Spark ALS (defaults)", stock, m))
    rows[0][1] = (
        f"project ALS fit, as the stage runs it ({m.seconds / max(project_seconds, 1e-9):.1f}x faster than stock)"
    )
    imp, m = seeded_runs(
        lambda seed: implicit_model(
            train, config.rank, config.max_iter, config.reg_param, config.alpha, seed
        ),
        repeats,
    )
    rows.append(row("implicit ALS (CPU)", imp, m))
    pop, m = median_run(lambda: popularity_model(train), repeats)
    rows.append(row("popularity baseline", [pop], m))
    return rows


def tuned_rows(name: str, train: pd.DataFrame, holdout: pd.DataFrame) -> list[list[object]]:
    """Both ALS libraries tuned over :func:`grid` on a time-aware validation split of the training window
    (:func:`recsys.training.tuning.tune` for the project; the same split and grid for implicit), then refit on
    the whole window and scored once on the holdout."""
    from recsys.core.settings import Settings
    from recsys.evaluation.evaluate import score_model
    from recsys.io.spark import get_spark
    from recsys.models.factors import popularity_model
    from recsys.training.als import ALSConfig, train_als
    from recsys.training.tuning import TuningConfig, grid_points, time_aware_split, tune

    base = ALSConfig(max_iter=TUNED_ITERATIONS)
    tuning = TuningConfig(enabled=True, grid=grid(), max_trials=1000)
    pop = score(popularity_model(train), train, holdout)["ndcg@10"]
    rows: list[list[object]] = []

    with measure() as m:
        spark = get_spark(Settings.from_env(), app_name="bench-tune")
        result = tune(train, base, tuning, spark, k=K, log_to_mlflow=False)
        project = train_als(train, result.best, spark)
        spark.stop()
    chosen = {key: getattr(result.best, key) for key in grid()}
    rows.append(
        tuned_row(
            name, "project (Spark ALS, tuned)", chosen, result.best_score, project, m, pop, train, holdout
        )
    )

    fit, validation = time_aware_split(train, tuning.validation_fraction, tuning.min_user_pairs)
    with measure() as m:
        best_point, best_score = None, -1.0
        for point in grid_points(tuning):
            candidate = implicit_model(
                fit, point["rank"], TUNED_ITERATIONS, point["reg_param"], point["alpha"]
            )
            value = score_model(candidate, fit, validation, K, int(fit["item_id"].nunique()))["ndcg@10"]
            if value > best_score:
                best_point, best_score = point, value
        assert best_point is not None
        imp = implicit_model(
            train, best_point["rank"], TUNED_ITERATIONS, best_point["reg_param"], best_point["alpha"]
        )
    rows.append(
        tuned_row(name, "implicit ALS (CPU, tuned)", best_point, best_score, imp, m, pop, train, holdout)
    )
    rows.append(popularity_row(name, pop))
    return rows


TUNED_HEADER = [
    "data",
    "model",
    "chosen",
    "validation NDCG@10",
    "holdout NDCG@10",
    "vs popularity",
    "seconds",
    "peak GiB",
]
"""Columns of a row of :func:`tuned_row` (and :func:`popularity_row`)."""


def popularity_row(name: str, pop: float) -> list[object]:
    """The popularity baseline's row of a tuned-quality table."""
    return [name, "popularity baseline", "", "", pop, "1.00x", "", ""]


def tuned_row(name, label, point, validation_score, model, m, pop, train, holdout) -> list[object]:  # noqa: ANN001
    metrics = score(model, train, holdout)
    ratio = metrics["ndcg@10"] / pop if pop > 0 else float("nan")
    shown = ", ".join(f"{k}={v:g}" for k, v in point.items())
    print(
        f"[{name}] {label}: chose {shown} (validation ndcg@10 {validation_score:.4f}); holdout ndcg@10 "
        f"{metrics['ndcg@10']:.4f} = {ratio:.2f}x popularity; {m.seconds:.0f}s, peak {m.peak_gib:.2f} GiB",
        flush=True,
    )
    return [name, label, shown, validation_score, metrics["ndcg@10"], f"{ratio:.2f}x", m.seconds, m.peak_gib]


def load(name: str) -> pd.DataFrame:
    return generated_pairs(*SHAPES[name]) if name in SHAPES else movielens_pairs(name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--shapes",
        nargs="*",
        default=["ml-100k", "ml-latest-small", "ml-1m shape", "ml-10m shape"],
        help="datasets for the speed table (none: leave that section as it is)",
    )
    parser.add_argument(
        "--tuned", nargs="*", default=["ml-100k", "ml-latest-small"], help="datasets to tune on"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed runs per model (the median is reported)"
    )
    args = parser.parse_args(argv)
    from recsys.core.settings import Settings
    from recsys.io.spark import get_spark
    from recsys.training.als import ALSConfig, train_als

    # warm the JVM up with one small fit (JIT), so no model pays for it: every timed run then
    # includes making its own SparkContext and session, not the JVM's start or its compilation
    warm_train, _ = split(
        movielens_pairs("ml-100k") if "ml-100k" in args.shapes + args.tuned else load(args.shapes[0])
    )
    spark = get_spark(Settings.from_env(), app_name="bench-warm-up")
    train_als(warm_train, ALSConfig(), spark)
    spark.stop()

    rows: list[list[object]] = []
    path = None
    for name in args.shapes:
        train, holdout = split(load(name))
        print(f"[{name}] {len(train):,} training pairs, {len(holdout):,} relevant holdout pairs", flush=True)
        rows.extend(speed_rows(name, train, holdout, args.repeats if len(train) < 5_000_000 else 1))
    config = ALSConfig()
    if rows:
        body = (
            f"Rank {config.rank}, {config.max_iter} iterations, regParam {config.reg_param:g}, alpha "
            f"{config.alpha:g} for the project and implicit (stock Spark keeps its defaults but rank, "
            "iterations, implicit feedback and the seed); strength = rating / 2.5; per-user time-based holdout "
            "(latest 20% of each user's pairs, relevant = rated >= 3.5), seen items excluded. The "
            "project's row is one fit on the training stage's path (`train_als`, Spark sized for the "
            "data, the pairs handed to Spark as Parquet on a local master); by default the stage first "
            "picks reg_param 0.1 or 1.0 on a validation split (two more fits on 80% of the window, see "
            f"the tuned section). Seconds: median of {args.repeats} runs (1 at 10M), each making its own "
            "SparkContext on a JVM already up and warmed by one fit, then fit and factors out of Spark; "
            "peak memory = Python + Spark JVM (the JVM is shared, so later rows include earlier ones). NDCG@10 "
            f"and precision@10: the mean over the timed runs' models, run i trained with seed {FIRST_SEED} + i - 1 "
            "(every model, stock Spark's too; a random start moves ALS's result), and the range of "
            "NDCG@10 over them.\n\n"
            + table(
                ["data", "model", "seconds", "peak GiB", "NDCG@10", "NDCG@10 range", "precision@10"], rows
            )
        )
        path = write_section("train", "Training: project vs stock Spark ALS vs implicit", body)
    if args.tuned:
        tuned: list[list[object]] = []
        for name in args.tuned:
            train, holdout = split(load(name))
            tuned.extend(tuned_rows(name, train, holdout))
        shown = "; ".join(f"{key} {values}" for key, values in grid().items())
        body = (
            f"Grid: the project's wide tuning grid `recsys.training.tuning.WIDE_GRID` ({shown}; {TUNED_ITERATIONS} iterations): every point fitted on the earlier 80% of each "
            "user's training pairs and scored on the latest 20% (`recsys.training.tuning.time_aware_split`, the "
            "training window only), the best refitted on the whole window and scored once on the "
            "holdout. The project's row is `recsys.training.tuning.tune` + `train_als`, as the training stage "
            "runs with tuning enabled; implicit gets the same split and grid. Seconds: the whole search "
            "and the refit.\n\n"
            + table(
                TUNED_HEADER,
                tuned,
            )
        )
        path = write_section("tuned", "Quality: tuned ALS against popularity and tuned implicit", body)
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
