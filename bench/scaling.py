"""Scaling: how training and batch recommendation time grow from 100k to 10M interactions.

Generated data (bench.common.generated_pairs) at five sizes between the MovieLens-100k and
MovieLens-10M shapes, users and items growing with the interactions as they do across the MovieLens
releases. At each size: the project's training stage (:func:`recsys.training.als.train_als`, Spark sized
for the data), stock Spark ALS (defaults) on the same pairs, the project's batch top-10 for every
user (:meth:`recsys.models.factors.FactorModel.recommend`) and Spark's ``recommendForAllUsers`` from the same
fitted model. Rank 16, 10 iterations. A table in docs/benchmarks.md and a log-log plot next to it.

    .venv/bin/python -m bench.scaling [--sizes 100k 300k 1m 3m 10m]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from bench.common import REPORT, measure, table, write_section

#: name -> (users, items, interactions); the ends are the ml-100k and ml-10m shapes
SIZES = {
    "100k": (943, 1_682, 100_000),
    "300k": (2_400, 2_500, 300_000),
    "1m": (6_040, 3_706, 1_000_209),
    "3m": (21_000, 6_500, 3_000_000),
    "10m": (69_878, 10_677, 10_000_054),
}
K = 10
PLOT = REPORT.parent / "benchmarks-scaling.png"


def run_size(name: str) -> list[object]:
    from bench.common import generated_pairs
    from bench.train import stock_spark_model
    from recsys.core.settings import Settings
    from recsys.io.spark import get_spark
    from recsys.training.als import ALSConfig, factor_model, fit_spark_als

    n_users, n_items, n_pairs = SIZES[name]
    pairs = generated_pairs(n_users, n_items, n_pairs)
    config = ALSConfig()
    with measure() as train_time:
        spark = get_spark(Settings.from_env(), app_name="bench-scaling")
        fitted, users, items, _ = fit_spark_als(pairs, config, spark)
        model = factor_model(fitted, users, items, pairs, config)
    everyone = list(users)
    started = time.perf_counter()
    model.recommend(everyone, k=K, exclude_seen=False)
    ours = time.perf_counter() - started
    started = time.perf_counter()
    fitted.recommendForAllUsers(K).toPandas()
    spark_recommend = time.perf_counter() - started
    spark.stop()
    with measure() as stock_time:
        stock_spark_model(pairs, config.rank, config.max_iter)
    peak = max(train_time.peak_gib, stock_time.peak_gib)
    print(
        f"[{name}] {len(pairs):,} pairs ({len(users):,} users x {len(items):,} items): train project "
        f"{train_time.seconds:.1f}s / stock {stock_time.seconds:.1f}s; top-{K} for all project {ours:.2f}s / "
        f"Spark {spark_recommend:.2f}s; peak {peak:.2f} GiB",
        flush=True,
    )
    return [
        name,
        len(pairs),
        f"{len(users):,} x {len(items):,}",
        train_time.seconds,
        stock_time.seconds,
        ours,
        spark_recommend,
        peak,
    ]


def plot(rows: list[list[object]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = np.array([r[1] for r in rows], dtype=float)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for column, label, style in [
        (3, "train: project", "o-"),
        (4, "train: stock Spark ALS", "o--"),
        (5, "top-10 for all users: project", "s-"),
        (6, "top-10 for all users: Spark recommendForAllUsers", "s--"),
    ]:
        ax.plot(pairs, [r[column] for r in rows], style, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("interactions (distinct user-item pairs)")
    ax.set_ylabel("seconds (wall)")
    ax.set_title("Scaling from 100k to 10M interactions (rank 16, 10 iterations)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    args = parser.parse_args(argv)
    from bench.common import generated_pairs
    from recsys.core.settings import Settings
    from recsys.io.spark import get_spark
    from recsys.training.als import ALSConfig, train_als

    # warm the JVM up (start and JIT) with one small fit, so the first size does not pay for it
    spark = get_spark(Settings.from_env(), app_name="bench-warm-up")
    train_als(generated_pairs(*SIZES["100k"]), ALSConfig(), spark)
    spark.stop()
    rows = [run_size(name) for name in args.sizes]
    plot(rows)
    body = (
        "Generated pairs (Zipf popularity, taste groups; bench/common.py) at each size; rank 16, 10 "
        "iterations, implicit feedback. Train: a new SparkContext (on a JVM already up and warmed), "
        "the fit and the factors out of Spark; the project's stage sizes Spark for the data, stock "
        "keeps Spark's defaults. Top-10: every user, from the project's fitted model, once each. "
        "Peak memory: Python + Spark JVM.\n\n"
        + table(
            [
                "size",
                "pairs",
                "users x items",
                "train: project s",
                "train: stock Spark s",
                "top-10: project s",
                "top-10: Spark s",
                "peak GiB",
            ],
            rows,
        )
        + f"\n\n![scaling]({PLOT.name})"
    )
    path = write_section("scaling", "Scaling: 100k to 10M interactions", body)
    print(f"written to {path} and {PLOT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
