"""The benchmark helpers: generated shapes, list agreement, and the report sections."""

from __future__ import annotations

import bench.common as common
from bench.recommend import agreement


def test_generated_pairs_have_the_asked_shape_and_distinct_pairs():
    pairs = common.generated_pairs(600, 300, 20_000, seed=1)
    assert len(pairs) == 20_000
    assert not pairs.duplicated(["user", "item_id"]).any()
    assert pairs["user"].nunique() <= 600 and pairs["item_id"].between(0, 299).all()
    assert pairs["rating"].between(0.5, 5.0).all() and (pairs["strength"] == pairs["rating"] / 2.5).all()
    again = common.generated_pairs(600, 300, 20_000, seed=1)
    assert pairs.equals(again)  # same seed, same data


def test_agreement_counts_sets_and_order():
    spark = {"a": [1, 2, 3], "b": [4, 5, 6], "c": [7, 8, 9]}
    ours = {"a": [1, 2, 3], "b": [5, 4, 6], "c": [7, 8, 10]}
    assert agreement(spark, ours) == (2 / 3, 1 / 3)


def test_sections_are_replaced_in_place(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "REPORT", tmp_path / "docs" / "benchmarks.md")
    common.write_section("one", "First", "alpha")
    common.write_section("two", "Second", "beta")
    common.write_section("one", "First", "gamma")
    text = common.REPORT.read_text()
    assert "gamma" in text and "alpha" not in text and "beta" in text
    assert text.index("First") < text.index("Second") and text.count("<!-- bench:one -->") == 1
    assert "Machine:" in text and "cores" in text
