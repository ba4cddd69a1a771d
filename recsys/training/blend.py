"""Learning the hybrid's blend weights on a validation split of the training window.

ALS is fitted on the earlier part of the window; for each segment (cold, warm) every point of the
content x popularity grid ranks the later part's users with :class:`~recsys.models.hybrid.HybridModel`'s
own signals, and the point with the best NDCG@k wins (ties go to the smaller weights, i.e. towards
ALS alone). A segment with too few validation users keeps its configured weights; one with more
than ``max_users`` is learned on a fixed sample of them (every grid point ranks each user: at the
10M-pair shape, 70k warm users took 9 minutes on one core).
"""

from __future__ import annotations

import hashlib
import itertools
from typing import Any

import numpy as np
import pandas as pd

from recsys.evaluation.metrics import ranking_metrics
from recsys.models.content import ContentModel
from recsys.models.factors import FactorModel, top_k
from recsys.models.hybrid import BLOCK_USERS, SEGMENTS, BlendWeights, HybridConfig, HybridModel


def sample_users(users: np.ndarray, n: int) -> np.ndarray:
    """At most ``n`` of ``users``: those with the smallest BLAKE2b hash of their pseudonym, so the
    same users are picked whatever their order, week after week while they stay in the window."""
    if len(users) <= n:
        return users
    digests = np.array([hashlib.blake2b(str(u).encode(), digest_size=8).digest() for u in users], dtype="S8")
    return users[np.sort(np.argsort(digests, kind="stable")[:n])]


def learn_blend(
    als: FactorModel,
    content: ContentModel,
    fit: pd.DataFrame,
    validation: pd.DataFrame,
    config: HybridConfig,
    k: int,
) -> tuple[HybridConfig, dict[str, Any]]:
    """The warm and cold weights with the best NDCG@``k`` on ``validation`` (user, item_id), for a
    hybrid of ``als`` (fitted on ``fit`` only) and ``content``; and a report per segment (users,
    NDCG of ALS alone, of the chosen weights, the weights). Segments with fewer than
    ``config.min_users`` validation users keep their configured weights; above ``config.max_users``
    a segment's weights are learned on :func:`sample_users` of them (``users`` in the report, out
    of ``of``)."""
    model = HybridModel(als, content, fit, config)
    truth = {u: set(g.astype(np.int64).tolist()) for u, g in validation.groupby("user")["item_id"]}
    users = np.array(sorted(u for u in truth if model.segment(u) in SEGMENTS), dtype=object)
    cold = model.interaction_counts[model.user_rows(users)] < config.cold_user_max
    available = {"cold": int(cold.sum()), "warm": int((~cold).sum())}
    users = np.sort(
        np.concatenate(
            [sample_users(users[cold], config.max_users), sample_users(users[~cold], config.max_users)]
        )
    )
    rows = model.user_rows(users)
    cold = model.interaction_counts[rows] < config.cold_user_max
    grid = list(itertools.product(config.content_grid, config.popularity_grid))
    grid.sort(key=lambda point: (point[0] + point[1], point))  # ties go to the smaller weights
    lists: dict[tuple[float, float], dict[str, list[int]]] = {point: {} for point in grid}
    kk = min(k, len(model.items))
    for start in range(0, len(users), BLOCK_USERS):
        block_users, block_rows = users[start : start + BLOCK_USERS], rows[start : start + BLOCK_USERS]
        als_z, content_z, _ = model.components(block_rows)
        for point in grid:
            scores = als_z + point[0] * content_z + point[1] * model.popularity_z
            model.mask(scores, block_users, block_rows, None, True)
            top, values = top_k(scores.astype(np.float32), kk)
            for r, user in enumerate(block_users.tolist()):
                lists[point][user] = model.items[top[r][np.isfinite(values[r])]].tolist()
    learned: dict[str, BlendWeights] = {}
    report: dict[str, Any] = {}
    for name, members in (("cold", users[cold]), ("warm", users[~cold])):
        part = {u: truth[u] for u in members.tolist()}

        def ndcg(point: tuple[float, float], part: dict[str, set[int]] = part) -> float:
            found = ranking_metrics({u: lists[point][u] for u in part}, part, k)
            return float(found[f"ndcg@{k}"])

        entry: dict[str, Any] = {"users": len(part), "of": available[name]}
        if len(part) >= config.min_users:
            scored = [(ndcg(point), point) for point in grid]
            best_score = max(score for score, _ in scored)
            best = next(point for score, point in scored if score == best_score)
            learned[name] = BlendWeights(content=best[0], popularity=best[1])
            entry.update({"als_only": ndcg((0.0, 0.0)) if (0.0, 0.0) in lists else None, "best": best_score})
        else:
            learned[name] = config.weights(name)
            entry["kept"] = f"fewer than {config.min_users} validation users: configured weights kept"
        entry["weights"] = learned[name].model_dump()
        report[name] = entry
    return config.model_copy(update=learned), report
