"""The EASE reference of bench/ceiling.py: a known answer on a tiny catalogue."""

from __future__ import annotations

import pandas as pd

from bench.ceiling import ease_model


def test_ease_recommends_what_co_occurs_with_the_users_items():
    # items 1 and 2 always go together, as do 3 and 4; u_new has only 1 and 3 -> 2 and 4 before 5
    rows = [(f"a{n}", 1) for n in range(6)] + [(f"a{n}", 2) for n in range(6)]
    rows += [(f"b{n}", 3) for n in range(6)] + [(f"b{n}", 4) for n in range(6)]
    rows += [(f"c{n}", 5) for n in range(3)] + [("u_new", 1), ("u_new", 3)]
    train = pd.DataFrame(rows, columns=["user", "item_id"]).assign(strength=1.0)
    model = ease_model(train, lam=1.0)
    recs = model.recommend(["u_new"], k=2, exclude={"u_new": [1, 3]})
    assert set(recs["item_id"]) == {2, 4}
    assert (recs["score"] > 0).all()  # learned from co-occurrence, not the popularity fallback
    assert model.meta == {"kind": "ease", "lambda": 1.0}
