"""Hyper-parameter search: time-aware validation split of the training window, real Spark ALS."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from recsys.training.als import ALSConfig
from recsys.training.tuning import TuningConfig, grid_points, time_aware_split, tune


def timed_checkerboard(n_users: int = 40, n_items: int = 20, seed: int = 0) -> pd.DataFrame:
    """Even users like even items, odd users odd items; each pair has its own time (shuffled order)."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2024-01-01", tz="UTC")
    rows = []
    for u in range(n_users):
        liked = [i for i in range(n_items) if i % 2 == u % 2]
        rng.shuffle(liked)
        for j, item in enumerate(liked):
            rows.append(
                {
                    "user": f"user{u:03d}",
                    "item_id": 100 + item,
                    "strength": 1.0,
                    "rating": np.nan,
                    "last_ts": start + pd.Timedelta(hours=int(u) + 100 * j),
                    "viewed": True,
                }
            )
    return pd.DataFrame(rows)


def test_split_keeps_each_users_latest_pairs_for_validation():
    train = timed_checkerboard()
    # a user with too few pairs stays wholly in fit
    few = pd.DataFrame(
        {
            "user": ["few"] * 3,
            "item_id": [1, 2, 3],
            "strength": 1.0,
            "rating": np.nan,
            "last_ts": pd.date_range("2024-02-01", periods=3, tz="UTC"),
            "viewed": True,
        }
    )
    fit, validation = time_aware_split(pd.concat([train, few]), validation_fraction=0.2, min_user_pairs=5)

    assert len(fit) + len(validation) == len(train) + 3
    assert "few" not in set(validation["user"]) and (fit["user"] == "few").sum() == 3
    assert validation.groupby("user").size().eq(2).all()  # floor(10 * 0.2) latest pairs per user
    assert fit.merge(validation, on=["user", "item_id"]).empty
    last_fit = fit.groupby("user")["last_ts"].max()
    first_val = validation.groupby("user")["last_ts"].min()
    assert (first_val > last_fit.reindex(first_val.index)).all()  # strictly later, user by user
    # the split only ever moves the latest pairs: every validation pair is among its user's newest
    newest = train.sort_values("last_ts").groupby("user").tail(2)
    assert set(map(tuple, validation[["user", "item_id"]].to_numpy())) == set(
        map(tuple, newest[["user", "item_id"]].to_numpy())
    )


def test_split_drops_irrelevant_latest_pairs_like_the_holdout():
    ts = pd.date_range("2024-01-01", periods=5, freq="D", tz="UTC")
    train = pd.DataFrame(
        {
            "user": ["a"] * 5,
            "item_id": [1, 2, 3, 4, 5],
            "strength": [1.0, 1.0, 1.0, 0.8, 2.0],
            "rating": [np.nan, np.nan, np.nan, 2.0, np.nan],
            "last_ts": ts,
            "viewed": [True, True, True, False, True],
        }
    )
    fit, validation = time_aware_split(train, validation_fraction=0.4, min_user_pairs=5)
    assert fit["item_id"].tolist() == [1, 2, 3]
    assert validation["item_id"].tolist() == [5]  # item 4 (rated 2.0, not watched) is not relevant


def test_split_refuses_a_frame_without_times():
    with pytest.raises(ValueError, match="last_ts"):
        time_aware_split(pd.DataFrame({"user": ["a"], "item_id": [1], "strength": [1.0]}), 0.2, 5)


def test_grid_is_validated_with_the_field_named():
    with pytest.raises(ValidationError, match="'ranks' is not an ALSConfig field"):
        TuningConfig(grid={"ranks": [8, 16]})
    with pytest.raises(ValidationError, match="'rank': value 0 is invalid"):
        TuningConfig(grid={"rank": [8, 0]})
    with pytest.raises(ValidationError, match="'reg_param' has no values"):
        TuningConfig(grid={"reg_param": []})
    with pytest.raises(ValidationError, match="must be one of"):
        TuningConfig(metric="rmse")
    config = TuningConfig(grid={"rank": ["8", 8, 16], "implicit_prefs": [True, False]})
    assert config.grid == {"rank": [8, 16], "implicit_prefs": [True, False]}  # coerced, deduplicated


def test_grid_order_and_cap_are_deterministic():
    config = TuningConfig(grid={"rank": [8, 16], "alpha": [1.0, 10.0]})
    assert grid_points(config) == [
        {"rank": 8, "alpha": 1.0},
        {"rank": 8, "alpha": 10.0},
        {"rank": 16, "alpha": 1.0},
        {"rank": 16, "alpha": 10.0},
    ]
    big = TuningConfig(grid={"rank": list(range(1, 11)), "alpha": [1.0, 2.0, 3.0]}, max_trials=7)
    picked = grid_points(big)
    assert len(picked) == 7 and picked == grid_points(big)
    full = grid_points(big.model_copy(update={"max_trials": 1000}))
    assert [full.index(p) for p in picked] == sorted(full.index(p) for p in picked)


@pytest.fixture(scope="module")
def train_frame() -> pd.DataFrame:
    return timed_checkerboard()


def test_tune_picks_the_good_config(spark, train_frame, caplog):
    # measured: rank 1 cannot separate the two halves (ndcg@10 ~0.31 at reg 0.01, 0.50 at reg 50),
    # rank 4 ranks the held-back same-parity items first (~0.99)
    config = TuningConfig(grid={"rank": [1, 4]}, validation_fraction=0.2, min_user_pairs=5)
    base = ALSConfig(max_iter=5, reg_param=0.01, alpha=5.0, num_blocks=1)
    with caplog.at_level(logging.INFO, logger="recsys.training.tuning"):
        result = tune(train_frame, base, config, spark, k=10, log_to_mlflow=False)

    assert [t["params"] for t in result.trials] == [{"rank": 1}, {"rank": 4}]
    bad, good = (t["score"] for t in result.trials)
    assert good > 0.9  # the 2 held-back same-parity items come first
    assert bad < 0.6 * good
    assert result.best.rank == 4 and result.best_trial == 2 and result.best_score == good
    assert result.best.max_iter == 5 and result.best.reg_param == 0.01  # the rest comes from the base
    assert result.metric == "ndcg@10"
    assert result.split == {"fit_pairs": 320, "validation_pairs": 80, "validation_users": 40}
    assert all(t["seconds"] > 0 and "hit_rate@10" in t["metrics"] for t in result.trials)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("trial ")]
    assert len(lines) == 2 and lines[0].startswith("trial 1/2 rank=1: ndcg@10=")
    data = result.to_dict()
    assert data["best"]["rank"] == 4 and data["best_trial"] == 2
    assert all(t["metrics"]["rmse"] is None for t in data["trials"])  # NaN made JSON-safe


def test_tune_records_a_failed_trial_and_goes_on(spark, train_frame):
    # explicit mode learns from ratings, and this data has none: that trial fails, the search goes on
    config = TuningConfig(grid={"implicit_prefs": [False, True]}, min_user_pairs=5)
    base = ALSConfig(max_iter=3, rank=4, reg_param=0.01, alpha=5.0, num_blocks=1)
    result = tune(train_frame, base, config, spark, log_to_mlflow=False)
    assert "no training pairs" in result.trials[0]["error"] and np.isnan(result.trials[0]["score"])
    assert result.best.implicit_prefs is True and result.best_trial == 2
    assert result.to_dict()["trials"][0]["score"] is None


def test_ties_go_to_the_first_trial_in_grid_order(monkeypatch, train_frame):
    import recsys.training.tuning

    monkeypatch.setattr(recsys.training.tuning, "train_als", lambda fit, als, spark: als)
    fake = {2: 0.5, 4: 0.7, 8: 0.7, 16: 0.1}
    monkeypatch.setattr(
        recsys.training.tuning,
        "score_model",
        lambda model, *a: {"ndcg@10": fake[model.rank], "users_evaluated": 40},
    )
    config = TuningConfig(grid={"rank": [2, 4, 8, 16]}, min_user_pairs=5)
    result = tune(train_frame, ALSConfig(), config, spark=None, log_to_mlflow=False)
    assert result.best.rank == 4 and result.best_trial == 2 and result.best_score == 0.7


def test_tune_refuses_a_k_that_does_not_match_the_metric(spark, train_frame):
    with pytest.raises(ValueError, match="k=10"):
        tune(train_frame, ALSConfig(), TuningConfig(metric="ndcg@10"), spark, k=5)


def test_trials_are_nested_mlflow_runs(spark, train_frame, settings):
    import mlflow

    from recsys.io.tracking import configure

    client = configure(settings)
    config = TuningConfig(grid={"rank": [2, 4]}, min_user_pairs=5)
    base = ALSConfig(max_iter=3, reg_param=0.01, alpha=5.0, num_blocks=1)
    with mlflow.start_run(run_name="parent") as parent:
        result = tune(train_frame, base, config, spark)
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert sorted(run.info.run_name for run in children) == ["trial-1", "trial-2"]
    by_name = {run.info.run_name: run for run in children}
    first = by_name["trial-1"].data
    assert first.params["als.rank"] == "2" and first.params["als.max_iter"] == "3"
    assert first.metrics["ndcg_at_10"] == pytest.approx(result.trials[0]["score"])
    assert "rmse" not in first.metrics  # NaN metrics are not logged
    assert {t["run_id"] for t in result.trials} == {run.info.run_id for run in children}
    parent_run = client.get_run(parent.info.run_id)
    assert parent_run.data.metrics["tuning_best_ndcg_at_10"] == pytest.approx(result.best_score)
    assert "tuning/result.json" in [a.path for a in client.list_artifacts(parent.info.run_id, "tuning")]
