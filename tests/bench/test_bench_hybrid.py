"""The hybrid benchmark's helpers on tiny hand-built frames (no Spark, no benchmark figures)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bench.hybrid import relative_change, simulate_cold_users, verdict


def _train(n_users: int = 8, per_user: int = 6) -> pd.DataFrame:
    rows = []
    for u in range(n_users):
        for j in range(per_user):
            # item ids run against time, and one tie on last_ts (broken by item id)
            ts = 100 + (j if j != 1 else 0)
            rows.append((f"user{u}", 50 - j, 1.0, 4.0, ts, False))
    frame = pd.DataFrame(rows, columns=["user", "item_id", "strength", "rating", "last_ts", "viewed"])
    return frame.sample(frac=1.0, random_state=3).reset_index(drop=True)  # rows in no order


def test_cold_simulation_truncates_exactly_the_share_to_the_earliest_pairs():
    train = _train()
    out, chosen = simulate_cold_users(train, share=0.25, keep=3, seed=11)
    assert len(chosen) == 2
    sizes = out.groupby("user").size()
    for user, group in train.groupby("user"):
        mine = out[out["user"] == user]
        if user in chosen:
            earliest = group.sort_values(["last_ts", "item_id"]).head(3)
            assert sizes[user] == 3
            assert set(mine["item_id"]) == set(earliest["item_id"])
            assert set(mine["item_id"]) == {50, 49, 48}  # ts 100, 100 (tie), 102
        else:
            cols = ["item_id", "strength", "rating", "last_ts", "viewed"]
            left = mine[cols].sort_values("item_id").reset_index(drop=True)
            assert left.equals(group[cols].sort_values("item_id").reset_index(drop=True))
    assert list(out.columns) == list(train.columns)
    again, chosen_again = simulate_cold_users(train, share=0.25, keep=3, seed=11)
    assert chosen_again == chosen and again.equals(out)  # same seed, same users


def test_relative_change_and_verdict():
    assert relative_change(0.55, 0.5) == "+10.0%" and relative_change(0.45, 0.5) == "-10.0%"
    assert relative_change(1.0, 0.0) == "n/a" and relative_change(math.nan, 0.5) == "n/a"

    def scores(cold: float, warm: float) -> dict[str, dict[str, float]]:
        return {"cold_users": {"ndcg@10": cold}, "warm_users": {"ndcg@10": warm}}

    _, beats, within = verdict("d", {"ALS": scores(0.30, 0.50), "hybrid": scores(0.33, 0.495)})
    assert beats and within
    text, beats, within = verdict("d", {"ALS": scores(0.30, 0.50), "hybrid": scores(0.30, 0.48)})
    assert not beats and not within and "does not beat" in text
    _, beats, _ = verdict("d", {"ALS": scores(np.nan, 0.5), "hybrid": scores(np.nan, 0.5)})
    assert not beats
