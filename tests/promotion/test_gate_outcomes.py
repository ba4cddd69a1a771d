"""The gate on real models: a sane retrain passes, a model of shuffled interactions is rejected, and a
retrain worse than the champion beyond the tolerance is rejected for that reason."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from recsys.data.synthetic import GeneratorConfig, generate
from recsys.evaluation.evaluate import score_model
from recsys.models.factors import popularity_model
from recsys.pipeline.context import StageContext
from recsys.pipeline.runner import run_stage
from recsys.promotion.gates import GateThresholds, evaluate_gate
from recsys.training.als import ALSConfig, train_als

WEEK = date(2026, 11, 15)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, session_home):
    from recsys.core.settings import Settings
    from recsys.io.storage import Lake

    root = tmp_path_factory.mktemp("gate-lake")
    settings = Settings.from_env({"RECSYS_HOME": str(root)})
    generate(Lake(settings.lake_dir), GeneratorConfig(n_users=400, n_items=200, weeks=2, seed=7), WEEK)
    from recsys.validation.validate import validate_week

    for week in (WEEK - pd.Timedelta(weeks=1).to_pytimedelta(), WEEK):
        ctx = StageContext.create(week, settings=settings, key=b"k" * 32)
        run_stage("ingest", ctx)
        validate_week(ctx.lake, week, ctx.config.validation)  # without the MLflow run of the stage
        run_stage("anonymize", ctx)
        run_stage("prepare", ctx)
    folder = settings.lake_dir / "prepared" / f"week={WEEK.isoformat()}"
    return pd.read_parquet(folder / "train.parquet"), pd.read_parquet(folder / "holdout.parquet")


def scores(model, train, holdout):
    return score_model(model, train, holdout, k=10, catalog_size=int(train["item_id"].nunique()))


def test_normal_retrain_passes_and_shuffled_model_is_rejected(prepared, spark):
    train, holdout = prepared
    config = ALSConfig()
    baseline = scores(popularity_model(train), train, holdout)
    normal = scores(train_als(train, config, spark), train, holdout)
    rng = np.random.default_rng(0)
    shuffled_train = train.assign(item_id=rng.permutation(train["item_id"].to_numpy()))
    shuffled = scores(train_als(shuffled_train, config, spark), train, holdout)

    thresholds = GateThresholds()
    passed = evaluate_gate(normal, None, baseline, thresholds)
    assert passed.passed, passed.reasons
    rejected = evaluate_gate(shuffled, None, baseline, thresholds)
    assert not rejected.passed
    assert any(r.startswith("FAIL") and "baseline" in r for r in rejected.reasons)


def test_retrain_worse_than_champion_beyond_tolerance_is_rejected_for_that_reason(prepared, spark):
    train, holdout = prepared
    baseline = scores(popularity_model(train), train, holdout)
    champion = scores(train_als(train, ALSConfig(), spark), train, holdout)
    weaker = scores(train_als(train, ALSConfig(rank=2, max_iter=3), spark), train, holdout)
    assert weaker["ndcg@10"] < champion["ndcg@10"] * (1 - GateThresholds().max_regression)
    decision = evaluate_gate(weaker, champion, baseline, GateThresholds(baseline_margin=0.0))
    assert not decision.passed
    failed = [r for r in decision.reasons if r.startswith("FAIL")]
    assert failed and all("champion" in r for r in failed), decision.reasons
