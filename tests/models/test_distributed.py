"""The Spark path of batch top-k (recsys.models.distributed) gives the single-machine lists exactly."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pandas as pd
import pytest

from recsys.models.distributed import (
    block_size,
    collect_recommendations,
    exclusion_frame,
    in_served_order,
    user_blocks,
    user_table,
    whole_blocks,
    write_recommendations,
)
from recsys.models.factors import FactorModel, seen_matrix
from recsys.models.hybrid import HybridConfig, HybridModel
from recsys.models.rerank import RerankConfig, Reranked
from recsys.models.sides import factor_block_model, packed, unpacked
from tests.models.worlds import world


def hand_model() -> FactorModel:
    """3 users, 6 items, hand-set rank-2 factors: "a" likes items 10-12 (then 13-15), "b" the other way round; "a" saw 10."""
    users = np.array(["a", "b", "c"])
    items = np.array([10, 11, 12, 13, 14, 15], dtype=np.int64)
    user_factors = np.array([[1.0, 0.1], [0.1, 1.0], [0.5, 0.5]], np.float32)
    item_factors = np.array([[3, 0], [2, 0], [1, 0], [0, 3], [0, 2], [0, 1]], np.float32)
    train = pd.DataFrame({"user": ["a", "b", "c"], "item_id": [10, 13, 15]})
    return FactorModel(
        users,
        items,
        user_factors,
        item_factors,
        seen_matrix(train, users, items),
        np.array([13, 10, 11, 12, 14, 15]),
    )


def random_model(n_users: int = 900, n_items: int = 700, rank: int = 6, seed: int = 3) -> FactorModel:
    """A FactorModel big enough for several Arrow batches and two-stage top_k (700 items > 4*k*16)."""
    rng = np.random.default_rng(seed)
    users = np.array([f"u{i:04d}" for i in range(n_users)])
    items = np.arange(1000, 1000 + n_items, dtype=np.int64)
    train = pd.DataFrame(
        {"user": rng.choice(users, 6 * n_users), "item_id": rng.choice(items, 6 * n_users)}
    ).drop_duplicates()
    return FactorModel(
        users,
        items,
        rng.normal(size=(n_users, rank)).astype(np.float32),
        rng.normal(size=(n_items, rank)).astype(np.float32),
        seen_matrix(train, users, items),
        rng.permutation(items),
    )


def same(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """The same frame: columns, dtypes, rows in order, and scores to the bit."""
    pd.testing.assert_frame_equal(got, want, check_exact=True)


@contextmanager
def arrow_batches(spark, rows: int):  # noqa: ANN001
    """Spark's Arrow batches (the blocks of users mapInPandas receives) of ``rows`` rows."""
    key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    before = spark.conf.get(key)
    spark.conf.set(key, str(rows))
    try:
        yield
    finally:
        spark.conf.set(key, before)


def test_a_block_model_gives_each_user_what_the_whole_model_gives():
    model = hand_model()
    batch = pd.DataFrame(
        {
            "user": ["c", "zz", "a"],
            "factors": [
                packed(model.user_factors[2], np.float32),
                None,
                packed(model.user_factors[0], np.float32),
            ],
            "seen": [packed([5], np.int32), None, packed([0], np.int32)],
            "exclude": [None, np.array([13]), np.array([11])],
        }
    )
    block = factor_block_model(batch, model.items, model.item_factors, model.popular)
    got = block.recommend(["c", "zz", "a"], k=3, exclude={"zz": [13], "a": [11]})
    want = model.recommend(["c", "zz", "a"], k=3, exclude={"zz": [13], "a": [11]})
    same(got, want)
    assert got[got.user == "a"]["item_id"].tolist() == [12, 13, 14]  # 10 seen, 11 excluded
    assert got[got.user == "zz"]["item_id"].tolist() == [10, 11, 12]  # popular, 13 excluded


def test_als_lists_on_spark_are_the_single_machine_lists(spark):
    model = hand_model()
    users = ["b", "nobody", "a", "c"]
    exclude = {"a": [11], "nobody": [13], "c": [999]}
    got = collect_recommendations(spark, model, users, k=4, exclude=exclude)
    want = model.recommend(users, k=4, exclude=exclude)
    same(got, want)
    a = got[got.user == "a"]
    assert a["item_id"].tolist() == [12, 13, 14, 15]  # seen 10 and excluded 11 never come back
    assert got[got.user == "nobody"]["score"].isna().all()  # unknown: popular fallback


def test_user_blocks_number_known_users_in_the_order_asked_then_the_others():
    model = random_model(n_users=300, n_items=8000)  # 262 users per block
    assert block_size(model) == 262
    users = ["stranger", *model.users[::-1].tolist(), "other"]
    blocks = user_blocks(model, users, block_users=1)  # one scoring block per Spark block
    assert blocks["position"].tolist() == list(range(302))
    assert blocks["block"].tolist() == [2] + [0] * 262 + [1] * 38 + [2]
    wider = user_blocks(model, users, block_users=600)  # two whole scoring blocks per Spark block
    assert wider["block"].tolist() == [1] + [0] * 300 + [1]


def test_whole_blocks_reassembles_blocks_cut_across_arrow_batches():
    frame = pd.DataFrame(
        {"user": list("abcdefg"), "block": [0, 0, 0, 1, 1, 2, 2], "position": [2, 0, 1, 4, 3, 5, 6]}
    )
    frame = frame.sort_values(["block", "position"])
    got = list(whole_blocks([frame.iloc[:2], frame.iloc[2:4], frame.iloc[4:4], frame.iloc[4:]]))
    assert [b["user"].tolist() for b in got] == [["b", "c", "a"], ["e", "d"], ["f", "g"]]


def test_als_lists_agree_to_the_bit_over_many_blocks_cut_across_batches(spark):
    # 8,000 items: blocks of 262 users, so 1,000 users make 4 scoring blocks; a user scored in a
    # block of another shape may get float32 scores one unit apart in the last place
    model = random_model(n_users=1000, n_items=8000, rank=16)
    rng = np.random.default_rng(5)
    users = [*rng.permutation(model.users).tolist(), "stranger-1", "stranger-2"]
    exclude = {u: rng.choice(model.items, 20).tolist() for u in users[:300]}
    want = model.recommend(users, k=10, exclude=exclude)
    with arrow_batches(spark, 97):
        for block_users in (1, 600):  # Spark blocks of one and of two scoring blocks
            same(
                collect_recommendations(spark, model, users, k=10, exclude=exclude, block_users=block_users),
                want,
            )
        got = collect_recommendations(spark, model, users, k=10, exclude=exclude)
    same(got, want)
    seen = {(u, int(i)) for u, i in zip(*model.seen.nonzero(), strict=True)}
    positions = {u: p for p, u in enumerate(model.users.tolist())}
    item_pos = {int(i): p for p, i in enumerate(model.items.tolist())}
    known = got[got.user.isin(positions)]
    assert not any(
        (positions[u], item_pos[int(i)]) in seen for u, i in zip(known.user, known.item_id, strict=True)
    )


def test_lists_with_seen_items_kept_travel_without_the_seen_column(spark):
    model = random_model(n_users=400, n_items=300)
    users = ["stranger", *model.users[::-1].tolist()]
    assert "seen" not in user_table(model, users, with_seen=False).column_names
    got = collect_recommendations(spark, model, users, k=10, exclude_seen=False)
    same(got, model.recommend(users, k=10, exclude_seen=False))
    positions = {u: p for p, u in enumerate(model.users.tolist())}
    item_pos = {int(i): p for p, i in enumerate(model.items.tolist())}
    seen = {(u, int(i)) for u, i in zip(*model.seen.nonzero(), strict=True)}
    known = got[got.user.isin(positions)]
    assert any(  # seen items were not left out: the random world's users have seen 6 of 300 titles
        (positions[u], item_pos[int(i)]) in seen for u, i in zip(known.user, known.item_id, strict=True)
    )


def test_user_table_cells_unpack_to_the_models_factors_and_seen_items():
    model = random_model(n_users=50, n_items=40)
    table = user_table(model, ["u0003", "nobody", "u0001"]).to_pandas()
    assert table["factors"].isna().tolist() == [False, True, False]
    factors, lengths = unpacked([table["factors"][0], table["factors"][2]], np.float32)
    np.testing.assert_array_equal(factors.reshape(2, -1), model.user_factors[[3, 1]])
    assert lengths.tolist() == [model.rank, model.rank]
    seen, counts = unpacked([table["seen"][0], table["seen"][2]], np.int32)
    csr = model.seen.tocsr()
    np.testing.assert_array_equal(seen, np.concatenate([csr[3].indices, csr[1].indices]))
    assert counts.tolist() == [csr[3].nnz, csr[1].nnz]


def test_exclusions_can_come_from_a_spark_frame_of_training_pairs(spark):
    model = random_model(n_users=200, n_items=120)
    train = pd.DataFrame({"user": ["u0001", "u0001", "u0002", "new"], "item_id": [1000, 1001, 1005, 1002]})
    users = ["u0001", "u0002", "new", "u0003"]
    got = collect_recommendations(
        spark, model, users, k=5, exclude=exclusion_frame(spark.createDataFrame(train))
    )
    want = model.recommend(users, k=5, exclude={"u0001": [1000, 1001], "u0002": [1005], "new": [1002]})
    same(got, want)


def hybrid() -> HybridModel:
    als, content, history, _ = world()
    # "n" has history but ALS does not know them: the content + popularity segment
    history = pd.concat([history, pd.DataFrame({"user": ["n"], "item_id": [203], "strength": [1.0]})])
    return HybridModel(als, content, history, HybridConfig(cold_user_max=3))


def test_hybrid_lists_on_spark_are_the_single_machine_lists(spark):
    model = hybrid()
    users = ["k3", "c", "nobody", "h1", "n", *[f"h{i}" for i in range(2, 10)]]
    exclude = {"h1": [999, 100], "nobody": [201], "n": [204]}
    got = collect_recommendations(spark, model, users, k=5, exclude=exclude)
    want = model.recommend(users, k=5, exclude=exclude)
    same(got, want)
    assert set(got["source"]) == {"als+content", "content", "popular"}
    watched = model.history.groupby("user")["item_id"].apply(set)
    assert not any(i in watched[u] for u, i in zip(got.user, got.item_id, strict=True) if u in watched)


def test_reranked_lists_on_spark_are_the_single_machine_lists(spark):
    model = hybrid()
    _, _, _, catalogue = world()
    genres = {int(i): {g} for i, g in zip(catalogue.item_id, catalogue.genres, strict=True)}
    served = Reranked(
        model,
        genres,
        model.history,
        RerankConfig(method="mmr", mmr_lambda=0.5, exploration_share=0.2, candidates=8),
    )
    users = ["h0", "k1", "c", "nobody"]
    got = collect_recommendations(spark, served, users, k=5, exclude={"k1": [200]})
    want = served.recommend(users, k=5, exclude={"k1": [200]})
    same(got, want)
    assert got["explore"].any()


def test_lists_written_by_the_executors_read_back_as_the_single_machine_lists(spark, tmp_path):
    model = random_model(n_users=300, n_items=90)
    users = [*model.users.tolist(), "stranger"]
    write_recommendations(spark, model, users, str(tmp_path / "recs"), k=7)
    got = in_served_order(pd.read_parquet(tmp_path / "recs"), users, model)
    pd.testing.assert_frame_equal(got, model.recommend(users, k=7))


def test_k_below_one_is_refused(spark):
    with pytest.raises(ValueError, match="k must be >= 1"):
        collect_recommendations(spark, hand_model(), ["a"], k=0)
