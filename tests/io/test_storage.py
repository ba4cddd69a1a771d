from datetime import date

import numpy as np
import pandas as pd
import pytest

from recsys.evaluation.evaluate import rating_errors, score_model
from recsys.io.storage import Lake, json_safe, read_parquet, replace_dir, write_json, write_parquet
from recsys.models.factors import FactorModel, seen_matrix

WEEK = date(2026, 11, 15)


def test_lake_paths_and_atomic_writes(tmp_path):
    lake = Lake(tmp_path)
    path = lake.data_file("validated", "events", WEEK)
    assert path == tmp_path / "validated" / "events" / "week=2026-11-15" / "data.parquet"
    write_parquet(pd.DataFrame({"a": [1, 2]}), path)
    write_parquet(pd.DataFrame({"a": [3]}), path)  # a re-run replaces, never appends
    assert read_parquet(path)["a"].tolist() == [3]
    assert [p.name for p in path.parent.iterdir()] == ["data.parquet"]  # no temp files left
    assert lake.weeks("validated", "events") == [WEEK]
    lake.write_stage_result(WEEK, "ingest", {"rows": 3})
    assert lake.read_stage_result(WEEK, "ingest") == {"rows": 3}
    assert lake.read_stage_result(WEEK, "train") is None


def test_missing_input_names_the_file(tmp_path):
    from recsys.core.errors import DataNotFoundError

    with pytest.raises(DataNotFoundError, match="missing input: .*nothing.parquet"):
        read_parquet(tmp_path / "nothing.parquet")


def test_replace_dir(tmp_path):
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "f").write_text("new")
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "old").write_text("old")
    replace_dir(tmp_path / "new", tmp_path / "dest")
    assert [p.name for p in (tmp_path / "dest").iterdir()] == ["f"]


def test_json_safe_turns_nan_into_null(tmp_path):
    safe = json_safe({"x": float("nan"), "y": [np.float64(1.5), float("inf")], "z": np.int64(3)})
    assert safe == {"x": None, "y": [1.5, None], "z": 3}
    write_json(tmp_path / "r.json", safe)


def test_score_model_known_answer():
    users = np.array(["a", "b"])
    items = np.array([1, 2, 3], dtype=np.int64)
    train = pd.DataFrame({"user": ["a", "b"], "item_id": [1, 3]})
    model = FactorModel(
        users,
        items,
        np.array([[1.0], [1.0]], dtype=np.float32),
        np.array([[3.0], [2.0], [1.0]], dtype=np.float32),
        seen_matrix(train, users, items),
        popular=np.array([1, 2, 3]),
        meta={"config": {"implicit_prefs": True}},
    )
    # a has seen 1, so gets 2; b has seen 3, so gets 1. a's holdout is right, b's is not.
    holdout = pd.DataFrame({"user": ["a", "b"], "item_id": [2, 2], "rating": [np.nan, np.nan]})
    metrics = score_model(model, train, holdout, k=1, catalog_size=3)
    assert metrics["precision@1"] == 0.5 and metrics["ndcg@1"] == 0.5
    assert metrics["coverage@1"] == pytest.approx(2 / 3)
    # popularity 1 user each for items 1 and 3 (item 2 unseen in training: skipped): -log2(1/2) = 1 bit
    assert metrics["novelty@1"] == pytest.approx(1.0)
    assert np.isnan(metrics["rmse"])


def test_rating_errors_for_explicit_models():
    users, items = np.array(["a"]), np.array([1, 2], dtype=np.int64)
    empty = pd.DataFrame({"user": pd.Series(dtype=str), "item_id": pd.Series(dtype=np.int64)})
    model = FactorModel(
        users,
        items,
        np.array([[2.0]], dtype=np.float32),
        np.array([[2.0], [1.0]], dtype=np.float32),
        seen_matrix(empty, users, items),
        popular=items,
        meta={"config": {"implicit_prefs": False}},
    )
    holdout = pd.DataFrame({"user": ["a", "a"], "item_id": [1, 2], "rating": [5.0, 2.0]})
    errors = rating_errors(model, holdout)
    # predictions 4 and 2 against ratings 5 and 2: errors 1 and 0
    assert errors["rmse"] == pytest.approx(np.sqrt(0.5)) and errors["mae"] == pytest.approx(0.5)


def test_score_segments_known_answer():
    from recsys.evaluation.evaluate import score_segments

    users = np.array(["warm", "cold"])
    items = np.array([1, 2, 3, 4], dtype=np.int64)
    # "warm" has 3 training pairs, "cold" 1; items 4 and 5 are in no training pair (new items)
    train = pd.DataFrame({"user": ["warm", "warm", "warm", "cold"], "item_id": [1, 2, 3, 1]})
    model = FactorModel(
        users,
        items,
        np.array([[1.0], [1.0]], dtype=np.float32),
        np.array([[4.0], [3.0], [2.0], [1.0]], dtype=np.float32),
        seen_matrix(train, users, items),
        popular=np.array([1, 2, 3, 4]),
    )
    # warm gets 4 (the only unseen item): right; cold gets 2: wrong (it wanted 3), and wanted new item 5
    holdout = pd.DataFrame({"user": ["warm", "cold", "cold"], "item_id": [4, 3, 5]})
    genres = {1: {"A"}, 2: {"A"}, 3: {"B"}, 4: {"B"}}
    out = score_segments(model, train, holdout, k=1, catalog_size=5, cold_user_max=2, item_genres=genres)
    assert out["warm_users"]["precision@1"] == 1.0 and out["warm_users"]["users_evaluated"] == 1
    assert out["cold_users"]["precision@1"] == 0.0 and out["cold_users"]["recall@1"] == 0.0
    # new items: warm wanted 4 and got it, cold wanted 5 (and 3, not new) and got 2
    assert out["new_items"]["users_evaluated"] == 2 and out["new_items"]["recall@1"] == 0.5
    assert out["all"]["precision@1"] == 0.5
    assert out["all"]["coverage@1"] == pytest.approx(2 / 5)
    assert np.isnan(out["all"]["diversity@1"])  # one item per list: no pair to compare
    assert out["all"]["gini@1"] == pytest.approx(0.6)  # 2 of 5 items recommended once each
    empty = score_segments(
        model, train, holdout[holdout.user == "warm"], k=1, catalog_size=5, cold_user_max=2
    )
    assert np.isnan(empty["cold_users"]["ndcg@1"]) and empty["cold_users"]["users_evaluated"] == 0


def test_a_partition_commits_all_its_files_or_none(tmp_path):
    from recsys.core.errors import DataReadError
    from recsys.io.storage import COMMIT_MARKER, attempt_scope

    lake = Lake(tmp_path)
    folder = lake.partition("prepared", WEEK)
    with attempt_scope() as first:
        with lake.commit("prepared", WEEK, stage="prepare") as tmp:
            write_parquet(pd.DataFrame({"a": [1]}), tmp / "train.parquet")
            write_parquet(pd.DataFrame({"a": [2]}), tmp / "holdout.parquet")
            assert not folder.exists()  # nothing visible before the commit
        lake.write_stage_result(WEEK, "prepare", {"attempt": first})
    assert sorted(p.name for p in folder.iterdir()) == [COMMIT_MARKER, "holdout.parquet", "train.parquet"]
    assert read_parquet(folder / "train.parquet")["a"].tolist() == [1]

    # a second attempt fails half-way: the partition keeps the first attempt's files, no temporaries
    with attempt_scope(), pytest.raises(RuntimeError):
        with lake.commit("prepared", WEEK, stage="prepare") as tmp:
            write_parquet(pd.DataFrame({"a": [9]}), tmp / "train.parquet")
            raise RuntimeError("killed")
    assert read_parquet(folder / "train.parquet")["a"].tolist() == [1]
    assert sorted(p.name for p in folder.parent.iterdir()) == ["week=2026-11-15"]

    # a third attempt commits its partition but its stage never records: readers refuse it
    with attempt_scope():
        with lake.commit("prepared", WEEK, stage="prepare") as tmp:
            write_parquet(pd.DataFrame({"a": [3]}), tmp / "train.parquet")
    with pytest.raises(DataReadError) as refused:
        read_parquet(folder / "train.parquet")
    assert str(refused.value).startswith(f"partition {folder} is not committed: stage 'prepare'")
    assert "re-run stage 'prepare' for the week of runs/week=2026-11-15/prepare.json" in str(refused.value)


def test_a_partition_without_marker_was_written_before_commits_and_is_read(tmp_path):
    path = Lake(tmp_path).data_file("anonymized", "events", WEEK)
    write_parquet(pd.DataFrame({"a": [1]}), path)
    assert read_parquet(path)["a"].tolist() == [1]


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_corrupt_parquet_file_is_one_line_naming_it(tmp_path, damage):
    from recsys.core.errors import DataReadError

    path = write_parquet(pd.DataFrame({"a": range(1000)}), tmp_path / "week=2026-11-15" / "data.parquet")
    raw = path.read_bytes()
    path.write_bytes({"truncated": raw[: len(raw) // 2], "garbage": b"x" * 500, "empty": b""}[damage])
    with pytest.raises(DataReadError) as refused:
        read_parquet(path)
    message = str(refused.value)
    assert message.startswith(f"cannot read {path}: ") and "\n" not in message
    assert "'<Buffer>'" not in message
