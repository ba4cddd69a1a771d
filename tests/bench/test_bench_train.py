"""The training benchmark scores every timed run's model, each from its own seed."""

import pytest

from bench.train import FIRST_SEED, seeded_runs


def test_each_run_gets_the_next_seed_and_every_model_is_kept():
    models, measure = seeded_runs(lambda seed: {"seed": seed}, 3)
    assert [m["seed"] for m in models] == [FIRST_SEED, FIRST_SEED + 1, FIRST_SEED + 2]
    assert measure.seconds >= 0


def test_no_runs_is_refused():
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        seeded_runs(lambda seed: seed, 0)
