"""pandas to Spark on a local master goes through a Parquet file that lives only as long as it is used."""

import numpy as np
import pandas as pd
import pytest

from recsys.io.spark import handoff_dir, is_local, pandas_to_spark
from recsys.training.als import ALSConfig, fit_spark_als


def _frame(n: int = 1_000) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return pd.DataFrame(
        {
            "u": rng.integers(0, 50, n).astype(np.int32),
            "i": rng.integers(0, 40, n).astype(np.int32),
            "r": rng.random(n).astype(np.float32),
        }
    )


def _handoff_files(spark) -> list:  # noqa: ANN001
    directory = handoff_dir(spark)
    return sorted(directory.glob("*.parquet")) if directory.exists() else []


def test_the_frame_arrives_whole_and_its_file_goes_after_the_block(spark):
    assert is_local(spark)
    frame = _frame()
    with pandas_to_spark(spark, frame) as sdf:
        files = _handoff_files(spark)
        assert len(files) == 1, "a local master reads the frame from one Parquet file"
        back = sdf.toPandas().sort_values(["u", "i", "r"]).reset_index(drop=True)
        assert dict(sdf.dtypes) == {"u": "int", "i": "int", "r": "float"}
    pd.testing.assert_frame_equal(back, frame.sort_values(["u", "i", "r"]).reset_index(drop=True))
    assert not any(f.exists() for f in files)


def test_the_file_goes_when_the_block_fails(spark):
    with pytest.raises(RuntimeError, match="boom"), pandas_to_spark(spark, _frame()) as sdf:
        assert sdf.count() == 1_000
        raise RuntimeError("boom")
    assert _handoff_files(spark) == []


def test_a_fitted_als_model_does_not_need_its_input_file_after_the_fit(spark):
    frame = _frame(3_000)
    train = pd.DataFrame(
        {
            "user": frame["u"].map(lambda u: f"u{u}"),
            "item_id": frame["i"].astype(np.int64),
            "strength": frame["r"],
        }
    )
    fitted, users, items, _ = fit_spark_als(train, ALSConfig(rank=4, max_iter=3), spark)
    assert _handoff_files(spark) == []
    assert fitted.userFactors.count() == len(users)
    assert fitted.itemFactors.count() == len(items)
    assert fitted.recommendForAllUsers(5).count() == len(users)
