"""Batch top-10 for every user: Spark's ``recommendForAllUsers`` against the project's path.

Both start from the same fitted ALS factors (one Spark fit per dataset). Spark ranks every item for
every user inside Spark and the result is collected to the driver; the project's path
(:meth:`recsys.models.factors.FactorModel.recommend`) takes the factors out once and scores blocks of users
with one matrix product each (numpy/BLAS) and ``argpartition``. Neither excludes seen items here, so
the two must return the same lists: the agreement is reported (same items, and same order).

    .venv/bin/python -m bench.recommend [--shapes ml-100k "ml-1m shape"]
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


def run_one(name: str, pairs: pd.DataFrame, spark) -> list[object]:  # noqa: ANN001
    from recsys.training.als import ALSConfig, factor_model, fit_spark_als

    config = ALSConfig()
    fitted, users, items, fit_seconds = fit_spark_als(pairs, config, spark)
    model = factor_model(fitted, users, items, pairs, config)
    print(
        f"[{name}] {len(pairs):,} pairs, {len(users):,} users, {len(items):,} items; fit {fit_seconds:.1f}s"
    )

    recs, spark_time = median_run(lambda: fitted.recommendForAllUsers(K).toPandas(), REPEATS)
    spark_seconds = spark_time.seconds
    spark_lists = {
        str(users[row.u]): [int(items[r["i"]]) for r in row.recommendations] for row in recs.itertuples()
    }
    print(f"[{name}] Spark recommendForAllUsers: {spark_seconds:.3f}s, peak {spark_time.peak_gib:.2f} GiB")

    everyone = list(users)
    ours_frame, our_time = median_run(lambda: model.recommend(everyone, k=K, exclude_seen=False), REPEATS)
    our_seconds = our_time.seconds
    ours = {
        u: g["item_id"].astype(int).tolist()
        for u, g in ours_frame.sort_values(["user", "rank"]).groupby("user")
    }
    print(f"[{name}] project (numpy blocks): {our_seconds:.3f}s, peak {our_time.peak_gib:.2f} GiB")

    same_set, same_list, same_scores = agreement(spark_lists, ours, model)
    speedup = spark_seconds / max(our_seconds, 1e-9)
    print(
        f"[{name}] speed-up {speedup:.1f}x; same top-{K} set for {same_set:.1%} of users, same order "
        f"{same_list:.1%}, same scores (differences only between float32 ties) {same_scores:.1%}"
    )
    return [
        name,
        f"{len(users):,} x {len(items):,}",
        spark_seconds,
        our_seconds,
        f"{speedup:.1f}x",
        f"{same_set:.2%}",
        f"{same_list:.2%}",
        f"{same_scores:.2%}",
        f"{spark_time.peak_gib:.2f} / {our_time.peak_gib:.2f}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shapes", nargs="+", default=["ml-100k", "ml-latest-small", "ml-1m shape"])
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
        rows.append(run_one(name, pairs, spark))
    spark.stop()
    body = (
        f"Top-{K} for every user from the same ALS factors (the project's default ALS config, rank "
        f"{ALSConfig().rank}), collected on the driver. Spark: `ALSModel.recommendForAllUsers`; project: "
        "`FactorModel.recommend` (blocked numpy matrix products + `argpartition`), seen items not "
        "excluded by either so the lists must agree. Seconds: median of "
        f"{REPEATS} runs each. *Same scores*: both lists hold the same scores within float32 rounding, "
        "so any different item is a tie at the cut. Peak memory: this process and the Spark JVM.\n\n"
        + table(
            [
                "data",
                "users x items",
                "Spark s",
                "project s",
                "speed-up",
                "same set",
                "same order",
                "same scores",
                "peak GiB (Spark / project)",
            ],
            rows,
        )
    )
    path = write_section("recommend", "Batch recommendation: top-10 for every user", body)
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
