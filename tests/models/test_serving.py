"""Real Spark ALS on a checkerboard whose right answer is known; real MLflow pyfunc + registry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.promotion.gates import GateDecision
from recsys.training.als import ALSConfig, train_als


def checkerboard(n_users: int = 40, n_items: int = 20, holdout_per_user: int = 2, seed: int = 0):
    """Even users like even items, odd users odd items; each user's last items are held out."""
    rng = np.random.default_rng(seed)
    train, holdout = [], []
    for u in range(n_users):
        liked = [i for i in range(n_items) if i % 2 == u % 2]
        rng.shuffle(liked)
        for j, item in enumerate(liked):
            row = {"user": f"user{u:03d}", "item_id": 100 + item, "strength": 1.0, "rating": np.nan}
            (holdout if j < holdout_per_user else train).append(row)
    return pd.DataFrame(train), pd.DataFrame(holdout)


@pytest.fixture(scope="module")
def trained(spark):
    train, holdout = checkerboard()
    model = train_als(train, ALSConfig(rank=4, max_iter=8, reg_param=0.01, alpha=5.0), spark)
    return model, train, holdout


def test_als_learns_the_checkerboard(trained):
    model, train, holdout = trained
    recs = model.recommend(sorted(holdout["user"].unique()), k=2)
    parity_ok = [
        (int(u[4:]) % 2) == (item % 2) for u, item in zip(recs["user"], recs["item_id"], strict=True)
    ]
    assert np.mean(parity_ok) == 1.0
    hits = recs.merge(holdout, on=["user", "item_id"])
    assert len(hits) / len(holdout) == 1.0  # only the held-out same-parity items are left to recommend
    assert model.meta["kind"] == "als" and model.rank == 4


def test_explicit_mode_needs_ratings(spark):
    train, _ = checkerboard()
    with pytest.raises(ValueError, match="no training pairs"):
        train_als(train, ALSConfig(implicit_prefs=False, rank=2, max_iter=2), spark)


def test_pyfunc_log_register_promote_and_serve(trained, settings):
    import mlflow

    from recsys.core.aliases import CHAMPION
    from recsys.io.tracking import configure
    from recsys.models.serving import log_pyfunc
    from recsys.promotion.registry import champion_version, load_factor_model, register_candidate

    model, _, holdout = trained
    client = configure(settings)
    with mlflow.start_run() as run:
        info = log_pyfunc(model.save(settings.home / "m"), example_user=str(model.users[0]))
    # the pickled wrapper holds no model (MLflow loaded one to check the example): the artifacts do
    pickled = Path(mlflow.artifacts.download_artifacts(artifact_uri=info.model_uri)) / "python_model.pkl"
    assert pickled.stat().st_size < 2048, pickled.stat().st_size
    passed = GateDecision(passed=True, reasons=["PASS: test"], checks={"t": True}, metrics={})
    rejected = GateDecision(passed=False, reasons=["FAIL: test"], checks={"t": False}, metrics={})

    reg = register_candidate(
        client, settings.model_name, run.info.run_id, info.model_uri, passed, {"week": "w1"}
    )
    assert reg.status == "passed" and CHAMPION in reg.aliases and reg.version == "1"
    again = register_candidate(
        client, settings.model_name, run.info.run_id, info.model_uri, passed, {"week": "w1"}
    )
    assert again.version == "1"  # idempotent: the same run is not registered twice

    with mlflow.start_run() as run2:
        info2 = log_pyfunc(model.save(settings.home / "m2"), example_user=str(model.users[0]))
    reg2 = register_candidate(
        client, settings.model_name, run2.info.run_id, info2.model_uri, rejected, {"week": "w2"}
    )
    assert reg2.status == "rejected" and reg2.aliases == []
    assert str(champion_version(client, settings.model_name).version) == "1"
    assert client.get_model_version(settings.model_name, "2").tags["validation_status"] == "rejected"

    # serving through the pyfunc loader, as `mlflow models serve` does
    pyfunc = mlflow.pyfunc.load_model(f"models:/{settings.model_name}@{CHAMPION}")
    users = sorted(holdout["user"].unique())[:3]
    out = pyfunc.predict(pd.DataFrame({"user": users + ["nobody"]}), params={"k": 3})
    assert set(out.columns) == {"user", "rank", "item_id", "score", "source", "reason_item_id", "reason"}
    assert out.groupby("user").size().to_dict() == {u: 3 for u in users + ["nobody"]}
    nobody = out[out.user == "nobody"]
    assert nobody["score"].isna().all() and set(nobody["source"]) == {"popularity"}
    direct = load_factor_model(f"models:/{settings.model_name}/1").recommend(users, k=3)
    known = out[out.user != "nobody"].reset_index(drop=True)
    assert set(known["source"]) == {"model"}
    pd.testing.assert_frame_equal(known[direct.columns].astype({"score": float}), direct)
    # every known user's item is explained by one of their own training items; strangers by popularity
    watched = train_items_of(trained[1])
    for user, reason_item in zip(known["user"], known["reason_item_id"], strict=True):
        assert int(reason_item) in watched[user]
    assert known["reason"].str.startswith("Because you watched").all()
    assert set(nobody["reason"]) == {"popular with everyone"} and nobody["reason_item_id"].isna().all()


def train_items_of(train: pd.DataFrame) -> dict[str, set[int]]:
    return {u: set(g.astype(int)) for u, g in train.groupby("user")["item_id"]}


def test_hybrid_pyfunc_serves_content_for_a_new_item_and_names_titles(trained, settings):
    """The served hybrid: the pyfunc answers like the HybridModel it wraps, with titles in reasons."""
    import mlflow

    from recsys.io.tracking import configure
    from recsys.models.content import ContentModel
    from recsys.models.hybrid import HybridModel
    from recsys.models.serving import log_pyfunc

    model, train, holdout = trained
    items = [*model.items.tolist(), 500, 501]  # two new items ALS never saw: one even, one odd
    catalogue = pd.DataFrame(
        {
            "item_id": items,
            "title": [f"{'Even' if i % 2 == 0 else 'Odd'} film {i}" for i in items],
            "genres": ["Drama" if i % 2 == 0 else "Comedy" for i in items],
            "release_year": 2000,
        }
    )
    hybrid = HybridModel(model, ContentModel.fit(catalogue), train)
    configure(settings)
    with mlflow.start_run():
        info = log_pyfunc(
            hybrid_dir=hybrid.save(settings.home / "hm" / "hybrid"), example_user=str(model.users[0])
        )
    with pytest.raises(ValueError, match="exactly one"):
        log_pyfunc(model.save(settings.home / "hm" / "als"), hybrid_dir=settings.home / "hm" / "hybrid")
    served = mlflow.pyfunc.load_model(info.model_uri)
    users = sorted(holdout["user"].unique())[:4]
    out = served.predict(pd.DataFrame({"user": users}), params={"k": 3})
    direct = hybrid.recommend(users, k=3)
    assert out["item_id"].tolist() == direct["item_id"].tolist()
    assert set(out["source"]) <= {"als+content", "content"}
    new = out[out["item_id"].isin([500, 501])]
    assert set(new["source"]) == {"content"}
    # each user's new item of their parity is in their top 3 (with their 2 unseen items); never the other
    assert sorted(zip(new["user"], new["item_id"], strict=True)) == [(u, 500 + int(u[4:]) % 2) for u in users]
    titles = dict(zip(catalogue["item_id"], catalogue["title"], strict=True))
    for item, reason in zip(out["reason_item_id"], out["reason"], strict=True):
        assert reason == f"Because you watched {titles[int(item)]}"


def test_promotion_refuses_a_rejected_decision(settings):
    from recsys.core.errors import GateRejected
    from recsys.io.tracking import configure
    from recsys.promotion.registry import promote_version

    client = configure(settings)
    rejected = GateDecision(passed=False, reasons=["FAIL"], checks={"t": False}, metrics={})
    with pytest.raises(GateRejected):
        promote_version(client, settings.model_name, "1", rejected)
