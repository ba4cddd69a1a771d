"""Offline evaluation metrics: one small function per metric, every edge case written down.

Conventions (shared by every function here)
-------------------------------------------
* ``ranked``: the recommendations for one user, best first (any sequence of hashable item ids).
* ``relevant``: the user's relevant items (the holdout), a set (any collection is accepted and
  converted to a set).
* ``k``: a positive integer. :func:`truncate` is the only place that cuts a list to ``k``; every
  ranking metric looks at ``truncate(ranked, k)`` and nothing else.
* Relevance is binary: an item is relevant iff it is in ``relevant``.
* An item repeated in a list counts only at its first position; later copies are misses (a
  recommender cannot score twice with one item).

Edge cases
----------
* **Empty relevant set**: the metric is undefined and every per-user function returns ``None``.
  :func:`ranking_metrics` leaves such users out of its averages (and out of ``users_evaluated``).
* **Fewer than k recommendations**: the missing positions count as misses. Precision still divides
  by ``k`` (a short list is not rewarded); an empty list scores 0 on every metric.
* **Missing list**: in :func:`ranking_metrics`, a user in ``truth`` without an entry in ``recs``
  is scored as an empty list (0 on every metric). Users in ``recs`` but not in ``truth`` are
  ignored: there is nothing to score them against.
* **No evaluable user**: :func:`ranking_metrics` returns NaN for every metric and
  ``users_evaluated`` = 0 (never a misleading 0.0).

Definitions (``hits`` = number of relevant items in the top k, ``R`` = ``|relevant|``)
------------------------------------------------------------------------------------
* precision@k = hits / k
* recall@k = hits / R (below 1 whenever R > k, by definition)
* ndcg@k = DCG / IDCG with DCG = sum over relevant positions i (1-based) of 1 / log2(i + 1) and
  IDCG the DCG of a perfect list, i.e. min(k, R) hits at the top
* map@k = mean over users of AP@k, AP@k = (sum over relevant positions i of precision@i) / min(k, R)
* hit_rate@k = share of users with at least one hit

Rating metrics (:func:`rmse`, :func:`mae`) exclude pairs whose prediction is NaN (Spark ALS with
``coldStartStrategy="nan"`` predicts NaN for users or items unseen in training); see their
docstrings.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Collection, Hashable, Iterable, Mapping, Sequence
from functools import lru_cache
from itertools import islice
from typing import Any, TypeVar

import numpy as np

Item = TypeVar("Item", bound=Hashable)

#: Base names of the ranking metrics, in the order :func:`ranking_metrics` reports them.
RANKING_METRICS = ("precision", "recall", "ndcg", "map", "hit_rate")
USERS_EVALUATED = "users_evaluated"


def metric_key(name: str, k: int) -> str:
    """The key a ranking metric is reported under, e.g. ``metric_key("ndcg", 10) == "ndcg@10"``."""
    return f"{name}@{_check_k(k)}"


# ---- top-k -----------------------------------------------------------------------------------
def _positive_int(value: int, name: str) -> int:
    try:
        number = operator.index(value)  # accepts int and numpy integers, rejects floats and str
    except TypeError:
        raise ValueError(f"{name} must be a positive integer, got {value!r}") from None
    if isinstance(value, bool) or number < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return number


def _check_k(k: int) -> int:
    return _positive_int(k, "k")


def truncate(ranked: Iterable[Item] | None, k: int) -> list[Item]:
    """The first ``k`` items of ``ranked`` (all of them if there are fewer), as a new list.

    The one place where lists are cut to ``k``. ``ranked=None`` is treated as an empty list.
    Raises ValueError unless ``k`` is a positive integer.
    """
    k = _check_k(k)
    if ranked is None:
        return []
    if isinstance(ranked, list | tuple):
        return list(ranked[:k])
    return list(islice(ranked, k))


def _as_set(relevant: Collection[Item] | None) -> set[Item] | frozenset[Item]:
    if relevant is None:
        return frozenset()
    if isinstance(relevant, set | frozenset):
        return relevant
    return set(relevant)


def _hit_positions(ranked: Iterable[Item] | None, relevant: set[Item] | frozenset[Item], k: int) -> list[int]:
    """1-based positions (within the top k) of the relevant items; a repeated item counts once, first."""
    positions: list[int] = []
    seen: set[Item] = set()
    for position, item in enumerate(truncate(ranked, k), start=1):
        if item in relevant and item not in seen:
            positions.append(position)
        seen.add(item)
    return positions


@lru_cache(maxsize=64)
def _ideal_dcg(n: int) -> float:
    """DCG of ``n`` hits at positions 1..n."""
    return sum(1.0 / math.log2(position + 1) for position in range(1, n + 1))


# ---- per-user metrics, from hit positions (the single definition of each metric) ---------------
def _precision(hits: list[int], n_relevant: int, k: int) -> float:
    return len(hits) / k


def _recall(hits: list[int], n_relevant: int, k: int) -> float:
    return len(hits) / n_relevant


def _ndcg(hits: list[int], n_relevant: int, k: int) -> float:
    dcg = sum(1.0 / math.log2(position + 1) for position in hits)
    return dcg / _ideal_dcg(min(k, n_relevant))


def _average_precision(hits: list[int], n_relevant: int, k: int) -> float:
    # the j-th hit (1-based) at position p contributes precision@p = j / p
    total = sum(j / position for j, position in enumerate(hits, start=1))
    return total / min(k, n_relevant)


def _hit(hits: list[int], n_relevant: int, k: int) -> float:
    return 1.0 if hits else 0.0


_DEFINITIONS = {
    "precision": _precision,
    "recall": _recall,
    "ndcg": _ndcg,
    "map": _average_precision,
    "hit_rate": _hit,
}


def _per_user(name: str, ranked: Iterable[Item], relevant: Collection[Item] | None, k: int) -> float | None:
    k = _check_k(k)
    relevant_set = _as_set(relevant)
    if not relevant_set:
        return None
    return _DEFINITIONS[name](_hit_positions(ranked, relevant_set, k), len(relevant_set), k)


def precision_at_k(ranked: Iterable[Item], relevant: Collection[Item], k: int) -> float | None:
    """hits@k / k. Divides by ``k`` even when the list is shorter. ``None`` if ``relevant`` is empty."""
    return _per_user("precision", ranked, relevant, k)


def recall_at_k(ranked: Iterable[Item], relevant: Collection[Item], k: int) -> float | None:
    """hits@k / |relevant| (so at most k / |relevant|). ``None`` if ``relevant`` is empty."""
    return _per_user("recall", ranked, relevant, k)


def ndcg_at_k(ranked: Iterable[Item], relevant: Collection[Item], k: int) -> float | None:
    """Binary-relevance NDCG@k with a log2 discount; 1.0 for a perfect list, 0.0 without a hit.

    DCG = sum of 1 / log2(position + 1) over the relevant positions (1-based) in the top k; the ideal
    DCG puts min(k, |relevant|) hits at the top. ``None`` if ``relevant`` is empty.
    """
    return _per_user("ndcg", ranked, relevant, k)


def average_precision_at_k(ranked: Iterable[Item], relevant: Collection[Item], k: int) -> float | None:
    """AP@k = sum of precision@i over the relevant positions i in the top k, / min(k, |relevant|).

    1.0 for a perfect list, 0.0 without a hit. ``None`` if ``relevant`` is empty.
    """
    return _per_user("map", ranked, relevant, k)


def hit_at_k(ranked: Iterable[Item], relevant: Collection[Item], k: int) -> float | None:
    """1.0 if any relevant item is in the top k, else 0.0. ``None`` if ``relevant`` is empty."""
    return _per_user("hit_rate", ranked, relevant, k)


# ---- aggregate ---------------------------------------------------------------------------------
def ranking_metrics(
    recs: Mapping[Any, Sequence[Item]],
    truth: Mapping[Any, Collection[Item]],
    k: int,
) -> dict[str, float]:
    """Mean precision, recall, NDCG, AP and hit rate at ``k`` over the users of ``truth``.

    Returns ``{"precision@k", "recall@k", "ndcg@k", "map@k", "hit_rate@k"}`` (with the actual k,
    e.g. ``"ndcg@10"``) plus ``"users_evaluated"`` (an int): the number of users with a non-empty
    truth set, the only users averaged over. A user of ``truth`` missing from ``recs`` counts as an
    empty list (zero on every metric); users only in ``recs`` are ignored. With no evaluable user
    every metric is NaN.
    """
    k = _check_k(k)
    totals = dict.fromkeys(RANKING_METRICS, 0.0)
    evaluated = 0
    for user, relevant in truth.items():
        relevant_set = _as_set(relevant)
        if not relevant_set:
            continue
        evaluated += 1
        hits = _hit_positions(recs.get(user), relevant_set, k)
        for name, definition in _DEFINITIONS.items():
            totals[name] += definition(hits, len(relevant_set), k)
    result: dict[str, float] = {
        metric_key(name, k): (totals[name] / evaluated if evaluated else math.nan) for name in RANKING_METRICS
    }
    result[USERS_EVALUATED] = evaluated
    return result


# ---- rating error ------------------------------------------------------------------------------
def _paired(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    true = np.asarray(y_true, dtype=float).ravel()
    pred = np.asarray(y_pred, dtype=float).ravel()
    if true.shape != pred.shape:
        raise ValueError(f"y_true and y_pred differ in length: {true.size} != {pred.size}")
    keep = ~(np.isnan(pred) | np.isnan(true))
    return true[keep], pred[keep]


def rmse(y_true: Any, y_pred: Any) -> float:
    """Root mean squared error over the pairs where neither value is NaN.

    NaN predictions (cold-start users/items under ALS ``coldStartStrategy="nan"``) and NaN truths
    (no rating known) are excluded, not counted as errors; NaN if no pair is left (or inputs are
    empty). Raises ValueError if the inputs differ in length.
    """
    true, pred = _paired(y_true, y_pred)
    if true.size == 0:
        return math.nan
    return float(np.sqrt(np.mean((true - pred) ** 2)))


def mae(y_true: Any, y_pred: Any) -> float:
    """Mean absolute error over the pairs where neither value is NaN (same exclusions as :func:`rmse`)."""
    true, pred = _paired(y_true, y_pred)
    if true.size == 0:
        return math.nan
    return float(np.mean(np.abs(true - pred)))


# ---- beyond accuracy ---------------------------------------------------------------------------
def catalog_coverage(recs: Mapping[Any, Sequence[Item]], catalog_size: int, k: int | None = None) -> float:
    """Share of the catalogue's ``catalog_size`` items that appear in at least one list.

    Lists are cut to ``k`` first when it is given. 0.0 when there are no recommendations. Raises
    ValueError if ``catalog_size`` < 1 or if more distinct items are recommended than the catalogue
    holds (the inputs do not describe the same catalogue).
    """
    catalog_size = _positive_int(catalog_size, "catalog_size")
    distinct: set[Item] = set()
    for ranked in recs.values():
        distinct.update(ranked if k is None else truncate(ranked, k))
    if len(distinct) > catalog_size:
        raise ValueError(
            f"{len(distinct)} distinct items recommended but catalog_size is {catalog_size}: "
            "pass the size of the catalogue the recommendations were drawn from"
        )
    return len(distinct) / catalog_size


def novelty(
    recs: Mapping[Any, Sequence[Item]],
    item_popularity: Mapping[Item, float],
    k: int | None = None,
) -> float:
    """Mean self-information ``-log2(share)`` of the recommended items, in bits (higher = less popular).

    ``share = item_popularity[item] / sum(item_popularity.values())``: popularity may be given as
    counts (e.g. training interactions per item) or as shares. The mean runs over every recommended
    slot of every list (cut to ``k`` first when given). Items with no or zero popularity have no
    finite self-information and are skipped. NaN when nothing is left to average. Raises
    ValueError on a negative popularity or when all popularities are zero.
    """
    total = 0.0
    for item, value in item_popularity.items():
        if not value >= 0:  # also catches NaN
            raise ValueError(f"popularity of item {item!r} is {value!r}: popularity must be >= 0")
        total += value
    if total <= 0:
        raise ValueError("item_popularity sums to 0: novelty is undefined")
    log_total = math.log2(total)
    bits = 0.0
    slots = 0
    for ranked in recs.values():
        for item in ranked if k is None else truncate(ranked, k):
            value = item_popularity.get(item, 0.0)
            if value > 0:
                bits += log_total - math.log2(value)
                slots += 1
    return bits / slots if slots else math.nan


def intra_list_diversity(
    recs: Mapping[Any, Sequence[Item]], item_genres: Mapping[Item, Collection[str]], k: int | None = None
) -> float:
    """Mean over lists of the mean pairwise genre distance ``1 - Jaccard(genres_a, genres_b)``.

    1.0: no two items of a list share a genre; 0.0: every item has the same genres. Items without
    genres (or unknown to ``item_genres``) are left out of the pairs; lists with fewer than two
    such items are skipped. NaN when no list has a pair. Each list's value: :func:`list_diversities`.
    """
    _, by_length = _diversities(recs, item_genres, k)
    return float(np.concatenate(by_length).mean()) if by_length else math.nan


def list_diversities(
    recs: Mapping[Any, Sequence[Item]], item_genres: Mapping[Item, Collection[str]], k: int | None = None
) -> np.ndarray:
    """Each list's mean pairwise genre distance (see :func:`intra_list_diversity`), in the order of
    ``recs``; NaN for a list with fewer than two items with genres. One call for many lists: the
    catalogue's genre array is built once."""
    each, _ = _diversities(recs, item_genres, k)
    return each


def _diversities(
    recs: Mapping[Any, Sequence[Item]], item_genres: Mapping[Item, Collection[str]], k: int | None
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Per list (in order, NaN without a pair) and per list length (the values of the lists of each
    length, shortest first): each list's items with genres as rows of a (lists, slots, genres) 0/1
    array, the shared and total genres of every pair of slots by one product."""
    each = np.full(len(recs), np.nan)
    vocabulary: dict[str, int] = {}
    codes: dict[Item, int] = {}  # item with genres -> its row of ``masks`` (from 1; 0: none)
    rows: list[list[int]] = []
    for item, genres in item_genres.items():
        if genres:
            codes[item] = len(rows) + 1
            rows.append([vocabulary.setdefault(g, len(vocabulary)) for g in set(genres)])
    if not codes:
        return each, []
    masks = np.zeros((len(rows) + 1, len(vocabulary)), dtype=np.float32)
    for row, genre_ids in enumerate(rows, 1):
        masks[row, genre_ids] = 1.0
    lists = [
        [c for item in (ranked if k is None else truncate(ranked, k)) if (c := codes.get(item))]
        for ranked in recs.values()
    ]
    lengths = np.array([len(c) for c in lists], dtype=np.int64)
    by_length: list[np.ndarray] = []
    for size in sorted({n for n in lengths.tolist() if n >= 2}):  # lists of one length at a time
        where = np.flatnonzero(lengths == size)
        slots = np.array([lists[i] for i in where], dtype=np.int64)
        upper = np.triu_indices(size, 1)
        values = []
        for start in range(0, len(slots), 4096):
            x = masks[slots[start : start + 4096]]  # (lists, size, genres)
            shared = np.einsum("lig,ljg->lij", x, x)
            counts = x.sum(axis=2)
            union = counts[:, :, None] + counts[:, None, :] - shared
            pairs = shared[:, upper[0], upper[1]].astype(np.float64)  # small integers, exact in float32
            distance = 1.0 - pairs / union[:, upper[0], upper[1]].astype(np.float64)
            values.append(distance.mean(axis=1))
        by_length.append(np.concatenate(values))
        each[where] = by_length[-1]
    return each, by_length


def gini_concentration(recs: Mapping[Any, Sequence[Item]], catalog_size: int, k: int | None = None) -> float:
    """Gini coefficient of how often each catalogue item is recommended (0: every item equally
    often; towards 1: a few blockbusters take every slot). Items never recommended count as 0.
    NaN when nothing is recommended. Raises ValueError as :func:`catalog_coverage` does."""
    catalog_size = _positive_int(catalog_size, "catalog_size")
    counts: dict[Item, int] = {}
    for ranked in recs.values():
        for item in ranked if k is None else truncate(ranked, k):
            counts[item] = counts.get(item, 0) + 1
    if len(counts) > catalog_size:
        raise ValueError(
            f"{len(counts)} distinct items recommended but catalog_size is {catalog_size}: "
            "pass the size of the catalogue the recommendations were drawn from"
        )
    if not counts:
        return math.nan
    values = np.sort(
        np.concatenate([np.zeros(catalog_size - len(counts)), np.fromiter(counts.values(), float)])
    )
    n = len(values)
    ranks = np.arange(1, n + 1)
    return float((2 * (ranks * values).sum()) / (n * values.sum()) - (n + 1) / n)
