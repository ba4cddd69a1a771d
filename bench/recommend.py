"""Batch top-10 for every user: Spark's ``recommendForAllUsers`` against the project's two paths.

All start from the same fitted ALS factors (one Spark fit per dataset). Spark ranks every item for
every user inside Spark and the result is collected to the driver; the project's single-machine path
(:meth:`recsys.models.factors.FactorModel.recommend`) takes the factors out once and scores blocks of users
with one matrix product each (numpy/BLAS) and ``argpartition``; the project's Spark path
(:func:`recsys.models.distributed.collect_recommendations`, what the recommend stage runs above the
configured size) runs that same kernel on the executors, one ``mapInPandas`` block of users at a time,
with the item factors broadcast, and its lists are collected to the driver too. None excludes seen
items here, so all must return the same lists: the agreement with Spark's is reported (same items, and
same order), and the Spark path's lists are checked identical to the single-machine path's.

    .venv/bin/python -m bench.recommend [--shapes ml-100k "ml-1m shape" "ml-10m shape"] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd

from bench.common import SHAPES, generated_pairs, median_run, movielens_pairs, table, write_section

K = 10


REPEATS = 3


def agreement(
    spark_lists: dict[str, list[int]],
    ours: dict[str, list[int]],
    model,  # noqa: ANN001
) -> tuple[float, float, float]:
    """(share of users with the same top-K set, with the same ordered list, and with lists whose
    scores agree item by item within float32 rounding: a different item there is a tie)."""
    same_set = same_list = same_scores = 0
    user_pos = {u: i for i, u in enumerate(model.users.tolist())}
    item_pos = {int(item): j for j, item in enumerate(model.items.tolist())}
    for user, items in spark_lists.items():
        mine = ours.get(user, [])
        same_set += set(items) == set(mine)
        same_list += list(items) == list(mine)
        vector = model.user_factors[user_pos[user]].astype(np.float64)
        theirs_scores = model.item_factors[[item_pos[i] for i in items]].astype(np.float64) @ vector
        my_scores = model.item_factors[[item_pos[i] for i in mine]].astype(np.float64) @ vector
        tolerance = 1e-5 * max(float(np.abs(theirs_scores).max(initial=0.0)), 1.0)
        same_scores += len(mine) == len(items) and bool(
            np.allclose(np.sort(theirs_scores), np.sort(my_scores), rtol=0, atol=tolerance)
        )
    n = max(len(spark_lists), 1)
    return same_set / n, same_list / n, same_scores / n


def run_one(name: str, pairs: pd.DataFrame, spark, repeats: int, max_iter: int | None) -> list[object]:  # noqa: ANN001
    from recsys.models.distributed import collect_recommendations
    from recsys.training.als import ALSConfig, factor_model, fit_spark_als

    config = ALSConfig() if max_iter is None else ALSConfig(max_iter=max_iter)
    fitted, users, items, fit_seconds = fit_spark_als(pairs, config, spark)
    model = factor_model(fitted, users, items, pairs, config)
    print(
        f"[{name}] {len(pairs):,} pairs, {len(users):,} users, {len(items):,} items; fit {fit_seconds:.1f}s"
    )

    recs, spark_time = median_run(lambda: fitted.recommendForAllUsers(K).toPandas(), repeats)
    spark_seconds = spark_time.seconds
    spark_lists = {
        str(users[row.u]): [int(items[r["i"]]) for r in row.recommendations] for row in recs.itertuples()
    }
    print(f"[{name}] Spark recommendForAllUsers: {spark_seconds:.3f}s, peak {spark_time.peak_gib:.2f} GiB")

    everyone = list(users)
    ours_frame, our_time = median_run(lambda: model.recommend(everyone, k=K, exclude_seen=False), repeats)
    our_seconds = our_time.seconds
    ours = {
        u: g["item_id"].astype(int).tolist()
        for u, g in ours_frame.sort_values(["user", "rank"]).groupby("user")
    }
    print(f"[{name}] project (numpy blocks): {our_seconds:.3f}s, peak {our_time.peak_gib:.2f} GiB")

    distributed_frame, distributed_time = median_run(
        lambda: collect_recommendations(spark, model, everyone, k=K, exclude_seen=False), repeats
    )
    identical = distributed_frame.equals(ours_frame)
    print(
        f"[{name}] project on Spark (mapInPandas blocks): {distributed_time.seconds:.3f}s, peak "
        f"{distributed_time.peak_gib:.2f} GiB; lists identical to the single-machine path: {identical}"
    )

    same_set, same_list, same_scores = agreement(spark_lists, ours, model)
    speedup = spark_seconds / max(our_seconds, 1e-9)
    distributed_speedup = spark_seconds / max(distributed_time.seconds, 1e-9)
    print(
        f"[{name}] speed-up {speedup:.1f}x (numpy), {distributed_speedup:.1f}x (Spark mapInPandas); same "
        f"top-{K} set for {same_set:.1%} of users, same order {same_list:.1%}, same scores (differences "
        f"only between float32 ties) {same_scores:.1%}"
    )
    return [
        name,
        f"{len(pairs):,}",
        f"{len(users):,} x {len(items):,}",
        spark_seconds,
        our_seconds,
        distributed_time.seconds,
        f"{speedup:.1f}x / {distributed_speedup:.1f}x",
        "yes" if identical else "NO",
        f"{same_set:.2%}",
        f"{same_list:.2%}",
        f"{same_scores:.2%}",
        f"{spark_time.peak_gib:.2f} / {our_time.peak_gib:.2f} / {distributed_time.peak_gib:.2f}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--shapes", nargs="+", default=["ml-100k", "ml-latest-small", "ml-1m shape", "ml-10m shape"]
    )
    parser.add_argument("--repeats", type=int, default=REPEATS, help="timed runs per path (median)")
    parser.add_argument(
        "--max-iter", type=int, default=None, help="ALS iterations of the fit (default: the project's config)"
    )
    args = parser.parse_args(argv)

    from recsys.core.settings import Settings
    from recsys.io.spark import get_spark
    from recsys.training.als import ALSConfig

    spark = get_spark(Settings.from_env(), app_name="bench-recommend")
    rows = []
    for name in args.shapes:
        pairs = (
            movielens_pairs(name)
            if name.startswith("ml-") and name not in SHAPES
            else generated_pairs(*SHAPES[name])
        )
        rows.append(run_one(name, pairs, spark, args.repeats, args.max_iter))
    spark.stop()
    body = (
        f"Top-{K} for every user from the same ALS factors (the project's default ALS config, rank "
        f"{ALSConfig().rank}{'' if args.max_iter is None else f', max_iter {args.max_iter}'}), collected "
        "on the driver. Spark: `ALSModel.recommendForAllUsers`; numpy: `FactorModel.recommend` (blocked "
        "numpy matrix products + two-stage `argpartition`) on the driver; Spark mapInPandas: "
        "`recsys.models.distributed.collect_recommendations`, the same kernel on the executors over "
        "blocks of users with the item factors broadcast (the recommend stage's Spark path). Seen items "
        "are not excluded by any, so the lists must agree. Seconds: median of "
        f"{args.repeats} runs each. *Identical*: the Spark mapInPandas frame equals the numpy one. *Same "
        "set / order / scores*: against Spark's lists; same scores means within float32 rounding, so any "
        "different item is a tie at the cut. Peak memory: this process and the Spark JVM (and its Python "
        "workers).\n\n"
        + table(
            [
                "data",
                "pairs",
                "users x items",
                "recommendForAllUsers s",
                "numpy s",
                "Spark mapInPandas s",
                "speed-up (numpy / mapInPandas)",
                "identical",
                "same set",
                "same order",
                "same scores",
                "peak GiB (Spark / numpy / mapInPandas)",
            ],
            rows,
        )
    )
    path = write_section("recommend", "Batch recommendation: top-10 for every user", body)
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
