"""Tiny hand-built worlds for the hybrid's tests: horror and comedy fans, hand-set ALS factors."""

import numpy as np
import pandas as pd

from recsys.models.content import ContentModel
from recsys.models.factors import FactorModel, seen_matrix


def world(seed: int = 0):
    """8 horror films (ids 100-107) and 8 comedies (200-207); ALS knows all but the new horror film
    999; warm users have watched 6 films of their genre, the cold user "c" one horror film."""
    rng = np.random.default_rng(seed)
    horror = list(range(100, 108))
    comedy = list(range(200, 208))
    catalogue = pd.DataFrame(
        {
            "item_id": [*horror, *comedy, 999],
            "title": [f"Scream {i}" for i in horror] + [f"Laugh {i}" for i in comedy] + ["Brand New Fright"],
            "genres": ["Horror"] * 8 + ["Comedy"] * 8 + ["Horror"],
            "release_year": [1990] * 17,
        }
    )
    users = [f"h{i}" for i in range(10)] + [f"k{i}" for i in range(10)]
    history = pd.DataFrame(
        [
            (u, int(item), 1.0)
            for u in users
            for item in rng.choice(horror if u.startswith("h") else comedy, size=6, replace=False)
        ]
        + [("c", 105, 1.0)],
        columns=["user", "item_id", "strength"],
    )
    als_items = np.array(horror + comedy, dtype=np.int64)
    # 2 factors: horror fans and films load on dimension 0, comedy on dimension 1
    user_factors = np.array([[1.0, 0.0] if u.startswith("h") else [0.0, 1.0] for u in users], np.float32)
    item_factors = np.array([[1.0, 0.0]] * 8 + [[0.0, 1.0]] * 8, np.float32)
    item_factors += rng.normal(0, 0.05, item_factors.shape).astype(np.float32)
    warm = history[history.user != "c"]
    als = FactorModel(
        np.array(users),
        als_items,
        user_factors,
        item_factors,
        seen_matrix(warm, np.array(users), als_items),
        popular=np.array(comedy + horror, dtype=np.int64),
    )
    return als, ContentModel.fit(catalogue), history, catalogue


def cold_world():
    """world() plus 30 cold users ALS knows badly: each watched one horror film, but their ALS
    factors lean to comedy (too little data); they go on to watch more horror."""
    als, content, history, catalogue = world()
    cold = [f"x{i}" for i in range(30)]
    rng = np.random.default_rng(1)
    watched = rng.choice(range(100, 108), size=len(cold))
    history = pd.concat(
        [history, pd.DataFrame({"user": cold, "item_id": watched, "strength": 1.0})], ignore_index=True
    )
    factors = np.vstack([als.user_factors, np.tile([[0.2, 0.3]], (len(cold), 1))]).astype(np.float32)
    users = np.concatenate([als.users, np.array(cold)])
    als = FactorModel(
        users, als.items, factors, als.item_factors, seen_matrix(history, users, als.items), als.popular
    )
    validation = pd.DataFrame(
        [(u, int(i)) for u, w in zip(cold, watched, strict=True) for i in range(100, 108) if i != w],
        columns=["user", "item_id"],
    )
    return als, content, history, validation
