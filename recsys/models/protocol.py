"""What every recommender promises: :class:`Recommender`, the contract of ``recommend(users, k, exclude)``.

The implementations are :class:`~recsys.models.factors.FactorModel` (ALS and the popularity
baseline), :class:`~recsys.models.hybrid.HybridModel`, :class:`~recsys.models.content.ContentRecommender`
(content alone: :class:`~recsys.models.content.ContentModel` itself is not one, its ``recommend``
needs each user's history) and :class:`~recsys.models.rerank.Reranked` (any of them, re-ranked).
Code that only asks a model for lists (the evaluation, the re-ranker, the served model) takes a
``Recommender``; tests/models/test_recommender_conformance.py runs the same checks on each.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol, runtime_checkable

import pandas as pd

RECOMMENDATION_COLUMNS = ["user", "rank", "item_id", "score"]
"""The columns every recommendation frame starts with, in this order."""


@runtime_checkable
class Recommender(Protocol):
    """Anything that ranks items for users.

    ``recommend(users, k=10, exclude=None)`` returns a long frame, one row per recommended item:

    * **columns**: :data:`RECOMMENDATION_COLUMNS` (user, rank, item_id, score) first, in that order;
      an implementation may add columns after them (the hybrid's ``source``, the re-ranker's
      ``explore``). In a non-empty frame ``rank`` and ``item_id`` are int64 and ``score`` float64;
      ``user`` holds the pseudonyms as given. An empty frame (no user asked, or none got an item)
      still has the columns.
    * **at most k rows per user**, fewer when the items the user may get run out (``k`` larger than
      the catalogue is no error: every item the user may get, once). No item twice for a user.
    * **ranks** 1..n per user, in order, best first; each user's rows are together. The order of
      the users in the frame is the implementation's.
    * **scores**: the model's score of the item for the user. A scoring model's scores never
      increase with the rank; a re-ranker keeps its model's scores while reordering items, so there
      they need not. NaN marks a fallback that no model scored (the most popular items).
    * **exclude** maps a user to item ids that user must not get, on top of what the model leaves
      out itself (by default each user's training items); ids the model does not know and users not
      asked for are ignored.
    * **users the model cannot score** (no factors, no history) are no error: each gets either the
      most popular items they are not excluded from, with NaN scores, or no rows at all (content
      alone, which has nothing to go on).
    * **k < 1** raises ValueError.
    * **deterministic**: the same call on the same model gives the same frame.

    ``users`` is a sequence (it may be read more than once). Implementations may take further
    keyword arguments with defaults (``exclude_seen``).
    """

    def recommend(
        self, users: Sequence[str], k: int = 10, exclude: Mapping[str, Iterable[int]] | None = None
    ) -> pd.DataFrame:
        """The top-``k`` items of each of ``users`` (see the class docstring for the contract)."""
        ...
