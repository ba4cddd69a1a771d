"""ALS layout by data size: blocks follow the interactions up to the session's parallelism."""

import pytest

from recsys.io.spark import CHECKPOINT_INTERVAL, PAIRS_PER_BLOCK, als_sizing


def test_small_data_is_one_block_without_checkpoints():
    sizing = als_sizing(100_000, parallelism=8, max_iter=10)
    assert (sizing.blocks, sizing.partitions, sizing.checkpoint_interval) == (1, 1, -1)
    assert "checkpoints off" in sizing.describe()


def test_blocks_grow_with_the_data_up_to_the_parallelism():
    assert als_sizing(3 * PAIRS_PER_BLOCK, parallelism=8, max_iter=10).blocks == 3
    assert als_sizing(3 * PAIRS_PER_BLOCK + 1, parallelism=8, max_iter=10).blocks == 4
    assert als_sizing(10_000_000, parallelism=2, max_iter=10).blocks == 2
    assert als_sizing(10_000_000, parallelism=64, max_iter=10).blocks == 40


def test_explicit_blocks_win_and_long_fits_checkpoint():
    sizing = als_sizing(100, parallelism=2, max_iter=30, blocks=6)
    assert (sizing.blocks, sizing.partitions) == (6, 6)
    assert sizing.checkpoint_interval == CHECKPOINT_INTERVAL


@pytest.mark.parametrize("args", [(-1, 2, 10), (10, 0, 10), (10, 2, 0)])
def test_bad_inputs_are_refused(args):
    with pytest.raises(ValueError, match="bad ALS sizing"):
        als_sizing(*args)
