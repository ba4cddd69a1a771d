"""One contract, every recommender: the checks of :class:`recsys.models.protocol.Recommender`.

Each check below takes a fitted model and what its case says about it, and raises AssertionError
when the model breaks the contract. ``test_conformance`` runs every check on a small fitted
instance of each implementation (ALS factors, the popularity baseline, the hybrid, content alone,
and the re-ranker over two of them). ``test_each_check_can_fail`` runs each check on a model broken
in just the way the check is about, and expects it to fail: a check that cannot fail checks nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
import pandas as pd
import pytest

from recsys.models.content import ContentRecommender
from recsys.models.factors import popularity_model
from recsys.models.hybrid import HybridConfig, HybridModel
from recsys.models.protocol import RECOMMENDATION_COLUMNS, Recommender
from recsys.models.rerank import RerankConfig, Reranked
from tests.models.worlds import world

K = 3
STRANGER = "nobody-at-all"  # a user no model has factors or history for
NO_SUCH_ITEM = 10**9  # an item id no model knows


@dataclass(frozen=True)
class Case:
    """A fitted implementation and what the contract leaves to it."""

    build: Callable[[], object]
    users: tuple[str, ...]  # users the model can score (with and without history where it matters)
    catalogue: int  # how many distinct items the model can recommend
    unknown: str  # what a user it cannot score gets: "popular" (NaN scores) or "none" (no rows)
    scores_fall: bool = True  # False for a re-ranker: its scores are the model's, reordered


def _als():
    return world()[0]


def _hybrid():
    als, content, history, _ = world()
    return HybridModel(als, content, history, HybridConfig(cold_user_max=3))


def _content():
    _, content, history, _ = world()
    return ContentRecommender(content, history)


def _popularity():
    return popularity_model(world()[2])


def _genres() -> tuple[dict[int, set[str]], pd.DataFrame]:
    _, _, history, catalogue = world()
    return {int(i): {g} for i, g in zip(catalogue["item_id"], catalogue["genres"], strict=True)}, history


def _reranked_hybrid():
    genres, history = _genres()
    config = RerankConfig(method="mmr", mmr_lambda=0.5, exploration_share=0.34, candidates=8)
    return Reranked(_hybrid(), genres, history, config)


def _reranked_als():
    genres, history = _genres()
    return Reranked(_als(), genres, history, RerankConfig(method="genre_cap", max_share=0.5, candidates=6))


CASES = {
    "als": Case(_als, ("h0", "k1", "h7"), catalogue=16, unknown="popular"),
    "popularity": Case(_popularity, ("h0", "k1", "c"), catalogue=16, unknown="popular"),
    # "c" has history but no ALS factors (content and popularity serve them)
    "hybrid": Case(_hybrid, ("h0", "k1", "c"), catalogue=17, unknown="popular"),
    "content": Case(_content, ("h0", "k1", "c"), catalogue=17, unknown="none"),
    "reranked-hybrid": Case(
        _reranked_hybrid, ("h0", "k1", "c"), catalogue=17, unknown="popular", scores_fall=False
    ),
    "reranked-als": Case(
        _reranked_als, ("h0", "k1", "h7"), catalogue=16, unknown="popular", scores_fall=False
    ),
}


@cache
def fitted(name: str) -> object:
    return CASES[name].build()


def by_user(recs: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return {str(u): g for u, g in recs.groupby("user", sort=False)}


# ---- the checks ----------------------------------------------------------------------------------
def check_is_a_recommender(model: object, case: Case) -> None:
    assert isinstance(model, Recommender), f"{type(model).__name__} has no recommend method"


def check_columns_and_dtypes(model: Recommender, case: Case) -> None:
    users = [*case.users, STRANGER]
    recs = model.recommend(users, k=K)
    assert list(recs.columns[: len(RECOMMENDATION_COLUMNS)]) == RECOMMENDATION_COLUMNS, list(recs.columns)
    assert len(recs), "the users the model can score got nothing"
    assert recs["rank"].dtype == np.int64, recs["rank"].dtype
    assert recs["item_id"].dtype == np.int64, recs["item_id"].dtype
    assert recs["score"].dtype == np.float64, recs["score"].dtype
    assert pd.api.types.is_object_dtype(recs["user"]) or pd.api.types.is_string_dtype(recs["user"])
    assert set(recs["user"]) <= set(users), set(recs["user"]) - set(users)
    assert set(case.users) <= set(recs["user"]), f"no list for {set(case.users) - set(recs['user'])}"
    assert all(isinstance(u, str) for u in recs["user"]), "users are not the pseudonyms as given"


def check_lists_are_ranked(model: Recommender, case: Case) -> None:
    recs = model.recommend([*case.users, STRANGER], k=K)
    starts = recs["user"].ne(recs["user"].shift()).sum()
    assert starts == recs["user"].nunique(), "a user's rows are not together"
    for user, rows in by_user(recs).items():
        assert len(rows) <= K, f"{user}: {len(rows)} rows for k={K}"
        ranks = rows["rank"].tolist()
        assert ranks == list(range(1, len(rows) + 1)), f"{user}: ranks {ranks}"
        assert rows["item_id"].is_unique, f"{user}: an item twice"
        scores = rows["score"].to_numpy()
        fallback = np.isnan(scores)
        assert fallback.all() or not fallback.any(), f"{user}: model scores mixed with fallback NaNs"
        if case.scores_fall and not fallback.any():
            assert (np.diff(scores) <= 0).all(), f"{user}: scores rise with the rank: {scores}"


def check_excluded_items_are_never_returned(model: Recommender, case: Case) -> None:
    users = [*case.users, STRANGER] if case.unknown == "popular" else list(case.users)
    first = by_user(model.recommend(users, k=K))
    exclude = {u: [*rows["item_id"].tolist(), NO_SUCH_ITEM] for u, rows in first.items()}
    exclude["someone-not-asked"] = [int(next(iter(first.values()))["item_id"].iloc[0])]
    again = by_user(model.recommend(users, k=K, exclude=exclude))
    for user in first:
        assert user in again and len(again[user]), f"{user}: nothing left after excluding {K} items"
        back = set(again[user]["item_id"]) & set(exclude[user])
        assert not back, f"{user}: excluded items {back} returned"


def check_unknown_users(model: Recommender, case: Case) -> None:
    try:
        recs = model.recommend([case.users[0], STRANGER], k=K)
    except Exception as exc:  # the contract: a user the model cannot score is no error
        raise AssertionError(f"a stranger made recommend fail: {exc!r}") from exc
    assert (recs["user"] == case.users[0]).any(), "a known user lost their list next to a stranger"
    stranger = recs[recs["user"] == STRANGER]
    if case.unknown == "popular":
        assert len(stranger) == K, f"the stranger got {len(stranger)} fallback items, not {K}"
        assert stranger["score"].isna().all(), "a fallback item carries a model score"
    else:
        assert stranger.empty, "a user the model cannot score got items"


def check_k_larger_than_the_catalogue(model: Recommender, case: Case) -> None:
    users = [*case.users, STRANGER]
    whole = by_user(model.recommend(users, k=case.catalogue))
    beyond = by_user(model.recommend(users, k=case.catalogue + 5))
    assert whole.keys() == beyond.keys(), (whole.keys(), beyond.keys())
    for user, rows in beyond.items():
        assert len(rows) <= case.catalogue, f"{user}: {len(rows)} rows from {case.catalogue} items"
        assert rows["item_id"].is_unique, f"{user}: an item twice"
        assert set(rows["item_id"]) == set(whole[user]["item_id"]), f"{user}: not every item it may get"


def check_bad_k_is_refused(model: Recommender, case: Case) -> None:
    try:
        model.recommend(list(case.users), k=0)
    except ValueError:
        return
    raise AssertionError("k=0 was accepted")


def check_deterministic(model: Recommender, case: Case) -> None:
    users = [*case.users, STRANGER]
    recs = model.recommend(users, k=K)
    pd.testing.assert_frame_equal(model.recommend(users, k=K), recs)
    rebuilt = case.build()
    assert isinstance(rebuilt, Recommender)
    pd.testing.assert_frame_equal(rebuilt.recommend(users, k=K), recs)


def check_no_user_asked(model: Recommender, case: Case) -> None:
    recs = model.recommend([], k=K)
    assert recs.empty
    assert list(recs.columns[: len(RECOMMENDATION_COLUMNS)]) == RECOMMENDATION_COLUMNS, list(recs.columns)


CHECKS = {
    check.__name__.removeprefix("check_"): check
    for check in (
        check_is_a_recommender,
        check_columns_and_dtypes,
        check_lists_are_ranked,
        check_excluded_items_are_never_returned,
        check_unknown_users,
        check_k_larger_than_the_catalogue,
        check_bad_k_is_refused,
        check_deterministic,
        check_no_user_asked,
    )
}


# Where an implementation falls short of the contract today (kept as it is: no change of behaviour).
# strict: the day it is fixed, the xfail fails and this entry goes.
GAPS: dict[tuple[str, str], tuple[type[BaseException], str]] = {}


def _conformance_params() -> list[object]:
    params = []
    for implementation in sorted(CASES):
        for check in sorted(CHECKS):
            gap = GAPS.get((implementation, check))
            marks = [pytest.mark.xfail(raises=gap[0], reason=gap[1], strict=True)] if gap else []
            params.append(pytest.param(implementation, check, marks=marks, id=f"{implementation}-{check}"))
    return params


@pytest.mark.parametrize(("implementation", "check"), _conformance_params())
def test_conformance(implementation: str, check: str) -> None:
    CHECKS[check](fitted(implementation), CASES[implementation])


# ---- every check can fail --------------------------------------------------------------------------
Exclude = Mapping[str, Iterable[int]] | None
Spoil = Callable[[pd.DataFrame, Sequence[str], int, Exclude], pd.DataFrame]


class Broken:
    """The ALS model with its answer spoiled by ``spoil(recs, users, k, exclude)``."""

    def __init__(self, spoil: Spoil) -> None:
        self.model, self.spoil = _als(), spoil

    def recommend(self, users: Sequence[str], k: int = 10, exclude: Exclude = None) -> pd.DataFrame:
        return self.spoil(self.model.recommend(users, k=max(k, 1), exclude=exclude), users, k, exclude)


class NoRecommend:
    """Ranks items, but under another name: not a Recommender."""

    def rank(self, users: Sequence[str], k: int = 10) -> pd.DataFrame:
        return _als().recommend(users, k=k)


def _worst_first(recs: pd.DataFrame, *_: object) -> pd.DataFrame:
    return recs.iloc[::-1].sort_values("user", kind="stable").reset_index(drop=True)


def _one_too_many(recs: pd.DataFrame, users: Sequence[str], k: int, exclude: Exclude) -> pd.DataFrame:
    return _als().recommend(users, k=k + 1, exclude=exclude)


def _ignore_exclude(recs: pd.DataFrame, users: Sequence[str], k: int, exclude: Exclude) -> pd.DataFrame:
    return _als().recommend(users, k=k)


def _refuse_strangers(recs: pd.DataFrame, users: Sequence[str], *_: object) -> pd.DataFrame:
    if STRANGER in users:
        raise KeyError(STRANGER)
    return recs


def _short_when_k_is_large(recs: pd.DataFrame, users: Sequence[str], k: int, *_: object) -> pd.DataFrame:
    return recs[recs["rank"] <= 2] if k > CASES["als"].catalogue else recs


def _shuffle(recs: pd.DataFrame, *_: object) -> pd.DataFrame:
    return recs.assign(item_id=np.random.default_rng().permutation(recs["item_id"].to_numpy()))


def _accept_k_zero(recs: pd.DataFrame, users: Sequence[str], k: int, *_: object) -> pd.DataFrame:
    return recs.iloc[0:0] if k < 1 else recs


def _score_one_fallback(recs: pd.DataFrame, *_: object) -> pd.DataFrame:
    return recs.assign(score=recs["score"].fillna(0.0, limit=1))


def _untyped_when_empty(recs: pd.DataFrame, users: Sequence[str], *_: object) -> pd.DataFrame:
    return recs if len(users) else pd.DataFrame()


# what is broken -> (the check that must catch it, how the ALS answer is spoiled)
SPOILED: dict[str, tuple[str, Spoil]] = {
    "columns out of order": ("columns_and_dtypes", lambda r, *_: r[["item_id", "user", "rank", "score"]]),
    "float item ids": ("columns_and_dtypes", lambda r, *_: r.astype({"item_id": float})),
    "no list at all": ("columns_and_dtypes", lambda r, *_: r.iloc[0:0]),
    "users renamed": ("columns_and_dtypes", lambda r, *_: r.assign(user=r["user"] + "!")),
    "one item too many": ("lists_are_ranked", _one_too_many),
    "ranks from 0": ("lists_are_ranked", lambda r, *_: r.assign(rank=r["rank"] - 1)),
    "worst first": ("lists_are_ranked", _worst_first),
    "scores rising": ("lists_are_ranked", lambda r, *_: r.assign(score=-r["score"])),
    "an item twice": ("lists_are_ranked", lambda r, *_: r.assign(item_id=r["item_id"].iloc[0])),
    "users interleaved": ("lists_are_ranked", lambda r, *_: r.sort_values("rank", kind="stable")),
    "fallback partly scored": ("lists_are_ranked", _score_one_fallback),
    "exclude ignored": ("excluded_items_are_never_returned", _ignore_exclude),
    "stranger refused": ("unknown_users", _refuse_strangers),
    "stranger left out": ("unknown_users", lambda r, *_: r[r["user"] != STRANGER]),
    "fallback scored": ("unknown_users", lambda r, *_: r.assign(score=r["score"].fillna(0.0))),
    "k beyond the catalogue cut short": ("k_larger_than_the_catalogue", _short_when_k_is_large),
    "k=0 accepted": ("bad_k_is_refused", _accept_k_zero),
    "random order": ("deterministic", _shuffle),
    "no columns when nobody is asked": ("no_user_asked", _untyped_when_empty),
}


@pytest.mark.parametrize("broken", sorted(SPOILED))
def test_each_check_can_fail(broken: str) -> None:
    check, spoil = SPOILED[broken]
    case = Case(lambda: Broken(spoil), CASES["als"].users, CASES["als"].catalogue, unknown="popular")
    with pytest.raises(AssertionError):
        CHECKS[check](case.build(), case)


def test_the_recommender_check_can_fail() -> None:
    with pytest.raises(AssertionError):
        check_is_a_recommender(NoRecommend(), CASES["als"])


def test_the_no_rows_rule_for_strangers_can_fail() -> None:
    """A model whose contract is no rows for a stranger (content alone), answering like ALS."""
    with pytest.raises(AssertionError, match="cannot score got items"):
        check_unknown_users(_als(), Case(_als, CASES["als"].users, CASES["als"].catalogue, unknown="none"))


def test_every_check_is_shown_to_fail() -> None:
    assert {check for check, _ in SPOILED.values()} | {"is_a_recommender"} == set(CHECKS)
