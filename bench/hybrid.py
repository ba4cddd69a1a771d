"""Hybrid: popularity, ALS, content alone and the hybrid blend, per user segment, on two datasets.

Every model ranks the top 10 for the same holdout users with the same exclusions (each user's
training items), and :func:`recsys.evaluation.evaluate.score_segments` scores all of them: every holdout user,
**cold users** (fewer than 5 training pairs), **warm users** (the others) and **new items** (held-out
pairs on items absent from training, for the users who have such pairs).

* **popularity**: :func:`recsys.models.factors.popularity_model`;
* **ALS**: ``reg_param`` tuned over the default grid (:func:`recsys.training.tuning.tune`, ``TuningConfig()``)
  on a time-aware validation split of the training window, then :func:`recsys.training.als.train_als` on
  the whole window;
* **content**: :class:`recsys.models.content.ContentModel` alone (genres, release year, title words, and
  tags where the dataset has them), no ALS;
* **hybrid**: :class:`recsys.models.hybrid.HybridModel` over the ALS and content models above, its cold and
  warm weights learned by :func:`recsys.training.blend.learn_blend` (ALS refitted on the earlier 80% of each
  user's training pairs, weights scored on the latest 20%).

Datasets:

* **ml-latest-small**: per-user time holdout (latest 20% of each user's pairs, relevant = rated at
  least 3.5); every MovieLens user has at least 20 ratings, so cold users are simulated: a seeded
  random 25% of the users keep only their earliest 3 training pairs (their holdout is untouched);
* **synthetic**: the project's generator (:mod:`recsys.data.synthetic`, 4,000 users, 800 items, 6
  weeks, fixed seed, no injected bad rows), the last 4 weeks as the window, turned into pairs and
  split by the prepare stage (:func:`recsys.data.prepare.prepare`); its cold users are natural.

    .venv/bin/python -m bench.hybrid [--datasets ml-latest-small synthetic]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.common import data_dir, movielens_pairs, table, write_section

K = 10
COLD_USER_MAX = 5  # users with fewer training pairs are cold (score_segments and HybridConfig)
COLD_SHARE = 0.25  # ml-latest-small: share of users turned cold
COLD_KEEP = 3  # ... who keep only their earliest training pairs
COLD_SEED = 7
WARM_TOLERANCE = 0.02  # the hybrid may lose at most this share of ALS's NDCG on warm users
DATASETS = ("ml-latest-small", "synthetic")
#: the synthetic world: ``recsys generate`` overrides, plus no injected bad rows (nothing to validate)
SYNTHETIC = {"n_users": 4_000, "n_items": 800, "weeks": 6, "seed": 42, "dirty_fraction": 0.0}
SYNTHETIC_WINDOW_WEEKS = 4
SYNTHETIC_END_WEEK = date(2025, 3, 2)  # a Sunday: fixed, so the data is the same on every run
MODELS = ("popularity", "ALS", "content", "hybrid")
SEGMENT_NAMES = ("all", "cold_users", "warm_users", "new_items")


@dataclass
class Dataset:
    name: str
    train: pd.DataFrame  # user, item_id, strength, rating, last_ts, viewed
    holdout: pd.DataFrame  # relevant held-out pairs
    catalogue: pd.DataFrame  # item_id (int64), title, genres, release_year
    tags: pd.DataFrame | None = None  # item_id, tag
    notes: dict[str, Any] = field(default_factory=dict)


# ---- pure helpers --------------------------------------------------------------------------------


def simulate_cold_users(
    train: pd.DataFrame, share: float = COLD_SHARE, keep: int = COLD_KEEP, seed: int = COLD_SEED
) -> tuple[pd.DataFrame, set[str]]:
    """(``train`` where a seeded random ``share`` of the users keep only their ``keep`` earliest pairs
    by ``last_ts`` (ties by item id, as the time split orders them), the users chosen). Every other
    user's pairs are untouched; the number chosen is ``round(share * users)``."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be within [0, 1], got {share}")
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    users = np.array(sorted(train["user"].astype(str).unique()), dtype=object)
    n = int(round(share * len(users)))
    chosen = set(np.random.default_rng(seed).choice(users, size=n, replace=False).tolist()) if n else set()
    ordered = train.sort_values(["user", "last_ts", "item_id"], kind="mergesort")
    position = ordered.groupby("user").cumcount()
    drop = ordered["user"].isin(chosen) & (position >= keep)
    return ordered[~drop.to_numpy()].reset_index(drop=True), chosen


def relative_change(value: float, reference: float) -> str:
    """``value`` against ``reference`` as a signed percentage ("+12.3%"); "n/a" when undefined."""
    if not (math.isfinite(value) and math.isfinite(reference)) or reference == 0:
        return "n/a"
    return f"{(value - reference) / reference * 100:+.1f}%"


def verdict(name: str, scores: dict[str, dict[str, dict[str, float]]]) -> tuple[str, bool, bool]:
    """(a sentence, whether the hybrid beats ALS on cold users, whether it stays within
    :data:`WARM_TOLERANCE` of ALS on warm users), by NDCG@K."""
    key = f"ndcg@{K}"
    cold_h, cold_a = scores["hybrid"]["cold_users"][key], scores["ALS"]["cold_users"][key]
    warm_h, warm_a = scores["hybrid"]["warm_users"][key], scores["ALS"]["warm_users"][key]
    beats = math.isfinite(cold_h) and math.isfinite(cold_a) and cold_h > cold_a
    within = math.isfinite(warm_h) and math.isfinite(warm_a) and warm_h >= (1 - WARM_TOLERANCE) * warm_a
    cold_text = (
        f"{'beats' if beats else 'does not beat'} ALS on cold users (NDCG@{K} {cold_h:.4f} vs "
        f"{cold_a:.4f}, {relative_change(cold_h, cold_a)})"
        if math.isfinite(cold_a)
        else "cannot be compared with ALS on cold users (no cold holdout user)"
    )
    warm_text = (
        f"{'stays within' if within else 'does not stay within'} {WARM_TOLERANCE:.0%} of ALS on warm "
        f"users ({warm_h:.4f} vs {warm_a:.4f}, {relative_change(warm_h, warm_a)})"
    )
    return f"**{name}**: the hybrid {cold_text} and {warm_text}.", beats, within


def fmt(value: float, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "n/a"


# ---- datasets ------------------------------------------------------------------------------------


def movielens_dataset() -> Dataset:
    from bench.train import split
    from recsys.data.movielens import load_movielens

    name = "ml-latest-small"
    train, holdout = split(movielens_pairs(name))
    full_users = int(train["user"].nunique())
    train, chosen = simulate_cold_users(train)
    data = load_movielens(data_dir() / "movielens", name)
    catalogue = data.items.assign(item_id=data.items["item_id"].astype(np.int64))
    tags = pd.read_csv(data.path / "tags.csv").rename(columns={"movieId": "item_id"})[["item_id", "tag"]]
    return Dataset(
        name,
        train,
        holdout,
        catalogue,
        tags,
        {"users": full_users, "made_cold": len(chosen)},
    )


def synthetic_dataset() -> Dataset:
    from recsys.data.prepare import PrepareConfig, prepare
    from recsys.data.raw import raw_file
    from recsys.data.synthetic import config_from, generate
    from recsys.io.storage import Lake

    config = config_from(SYNTHETIC)
    with tempfile.TemporaryDirectory(prefix="bench-hybrid-") as tmp:
        lake = Lake(Path(tmp))
        result = generate(lake, config, SYNTHETIC_END_WEEK)
        window = result.weeks[-SYNTHETIC_WINDOW_WEEKS:]
        raw = pd.concat(
            [pd.read_csv(raw_file(lake, "events", w), dtype=str, keep_default_na=False) for w in window],
            ignore_index=True,
        )
        catalogue = pd.read_csv(raw_file(lake, "items", result.weeks[-1]), dtype=str, keep_default_na=False)
    events = pd.DataFrame(
        {
            "user": raw["user_id"],
            "item_id": raw["item_id"].astype(np.int64),
            "ts": pd.to_datetime(raw["timestamp"], utc=True, format="ISO8601"),
            "event_type": raw["event_type"],
            "rating": pd.to_numeric(raw["rating"], errors="coerce"),
            "watch_seconds": pd.to_numeric(raw["watch_seconds"], errors="coerce"),
        }
    )
    prepared = prepare(events, PrepareConfig())
    catalogue = catalogue.assign(
        item_id=catalogue["item_id"].astype(np.int64),
        release_year=pd.to_numeric(catalogue["release_year"], errors="coerce"),
    )
    return Dataset(
        "synthetic",
        prepared.train,
        prepared.holdout,
        catalogue,
        None,
        {"events": len(events), "weeks": f"{window[0].isoformat()} .. {window[-1].isoformat()}"},
    )


LOADERS = {"ml-latest-small": movielens_dataset, "synthetic": synthetic_dataset}


# ---- the run -------------------------------------------------------------------------------------


@dataclass
class Outcome:
    data: Dataset
    scores: dict[str, dict[str, dict[str, float]]]
    reg_param: float
    blend_report: dict[str, Any]
    learned: Any
    seconds: float
    catalog_size: int


def run(data: Dataset, spark: Any) -> Outcome:
    from recsys.data.prepare import PrepareConfig
    from recsys.evaluation.evaluate import item_genres, score_segments
    from recsys.models.content import ContentModel, ContentRecommender
    from recsys.models.factors import popularity_model
    from recsys.models.hybrid import HybridConfig, HybridModel
    from recsys.training.als import ALSConfig, train_als
    from recsys.training.blend import learn_blend
    from recsys.training.tuning import TuningConfig, time_aware_split, tune

    started = time.perf_counter()
    name, train, holdout = data.name, data.train, data.holdout
    result = tune(
        train,
        ALSConfig(),
        TuningConfig(),
        spark,
        k=K,
        log_to_mlflow=False,
        relevance_min_rating=PrepareConfig().relevance_min_rating,
    )
    best = result.best
    print(
        f"[{name}] tuned reg_param={best.reg_param:g} (validation ndcg@{K} {result.best_score:.4f})",
        flush=True,
    )
    als = train_als(train, best, spark)
    content = ContentModel.fit(data.catalogue, tags=data.tags)
    fit, validation = time_aware_split(train, 0.2, min_user_pairs=2)
    als_fit = train_als(fit, best, spark)
    learned, report = learn_blend(
        als_fit, content, fit, validation, HybridConfig(cold_user_max=COLD_USER_MAX), k=K
    )
    print(f"[{name}] learned weights: cold {learned.cold.model_dump()}, warm {learned.warm.model_dump()}")
    print(f"[{name}] learn_blend report: {report}", flush=True)
    models = {
        "popularity": popularity_model(train),
        "ALS": als,
        "content": ContentRecommender(content, train),
        "hybrid": HybridModel(als, content, train, learned),
    }
    catalog_size = int(data.catalogue["item_id"].nunique())
    genres = item_genres(data.catalogue)
    scores = {
        label: score_segments(
            model, train, holdout, K, catalog_size, cold_user_max=COLD_USER_MAX, item_genres=genres
        )
        for label, model in models.items()
    }
    seconds = time.perf_counter() - started
    for label in MODELS:
        shown = ", ".join(
            f"{seg} {fmt(scores[label][seg][f'ndcg@{K}'])} ({int(scores[label][seg]['users_evaluated'])})"
            for seg in SEGMENT_NAMES
        )
        print(f"[{name}] {label}: ndcg@{K} {shown}", flush=True)
    return Outcome(data, scores, best.reg_param, report, learned, seconds, catalog_size)


def result_rows(outcome: Outcome) -> list[list[object]]:
    key = f"ndcg@{K}"
    rows: list[list[object]] = []
    for label in MODELS:
        for seg in SEGMENT_NAMES:
            metrics = outcome.scores[label][seg]
            vs_als = relative_change(metrics[key], outcome.scores["ALS"][seg][key]) if label != "ALS" else ""
            overall = [
                fmt(metrics.get(f"{m}@{K}", math.nan), 3) if seg == "all" else ""
                for m in ("coverage", "diversity", "gini")
            ]
            rows.append(
                [
                    outcome.data.name,
                    label,
                    seg,
                    int(metrics["users_evaluated"]),
                    fmt(metrics[key]),
                    fmt(metrics[f"recall@{K}"]),
                    vs_als,
                    *overall,
                ]
            )
    return rows


def blend_rows(outcome: Outcome) -> list[list[object]]:
    rows: list[list[object]] = []
    for seg in ("cold", "warm"):
        entry = outcome.blend_report.get(seg, {})
        weights = entry.get("weights", {})
        als_only, best = entry.get("als_only"), entry.get("best")
        rows.append(
            [
                outcome.data.name,
                seg,
                int(entry.get("users", 0)),
                fmt(als_only) if als_only is not None else "",
                fmt(best) if best is not None else "",
                weights.get("content", ""),
                weights.get("popularity", ""),
                entry.get("kept", "learned"),
            ]
        )
    return rows


def dataset_rows(outcome: Outcome) -> list[list[object]]:
    data = outcome.data
    counts = data.train.groupby("user").size()
    holdout_users = data.holdout["user"].unique()
    cold = int((counts.reindex(holdout_users).fillna(0) < COLD_USER_MAX).sum())
    return [
        [
            data.name,
            len(data.train),
            int(data.train["user"].nunique()),
            len(data.holdout),
            len(holdout_users),
            cold,
            outcome.catalog_size,
            f"{outcome.reg_param:g}",
            int(round(outcome.seconds)),
        ]
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    args = parser.parse_args(argv)
    from recsys.core.settings import Settings
    from recsys.io.spark import get_spark

    started = time.perf_counter()
    spark = get_spark(Settings.from_env(), app_name="bench-hybrid")
    outcomes: list[Outcome] = []
    try:
        for name in args.datasets:
            data = LOADERS[name]()
            print(
                f"[{name}] {len(data.train):,} training pairs, {len(data.holdout):,} relevant holdout pairs, "
                f"{len(data.catalogue):,} catalogue items",
                flush=True,
            )
            outcomes.append(run(data, spark))
    finally:
        spark.stop()
    total = time.perf_counter() - started

    verdicts = [verdict(o.data.name, o.scores)[0] for o in outcomes]
    for line in verdicts:
        print(line.replace("**", ""))
    notes = []
    for o in outcomes:
        if o.data.name == "ml-latest-small":
            notes.append(
                f"ml-latest-small: per-user time holdout of `bench.train.split` (latest 20% of each user's "
                f"pairs, relevant = rated >= 3.5; strength = rating / 2.5). Every MovieLens user has 20+ "
                f"ratings, so cold users are simulated: a seeded random {COLD_SHARE:.0%} of the users "
                f"({o.data.notes['made_cold']} of {o.data.notes['users']}, seed {COLD_SEED}) keep only their "
                f"earliest {COLD_KEEP} training pairs by time; their holdout is untouched. Content: genres, "
                "release year, title words and tags.csv (all of it: tags are item metadata here)."
            )
        else:
            notes.append(
                f"synthetic: `recsys.data.synthetic.generate` ({', '.join(f'{k}={v}' for k, v in SYNTHETIC.items())}, "
                f"weeks ending {SYNTHETIC_END_WEEK.isoformat()}), the last {SYNTHETIC_WINDOW_WEEKS} weeks "
                f"({o.data.notes['weeks']}, {o.data.notes['events']:,} events) through "
                "`recsys.data.prepare.prepare` (view / rating strengths, per-user time holdout, relevant = "
                "watched or rated >= 3.5). Cold users are natural; since users with fewer than 5 pairs are "
                "not held out, a cold holdout user has exactly 4 training pairs. Content: genres, release "
                "year and title words (no tags)."
            )
    body = (
        f"Top {K}, each user's training items excluded, same holdout for every model "
        f"(`recsys.evaluation.evaluate.score_segments`, cold users = fewer than {COLD_USER_MAX} training pairs). "
        "ALS: reg_param tuned over the default grid (`TuningConfig()`) on a time-aware validation split "
        "of the training window, then refit on the whole window. Content: `ContentModel` alone (no "
        "ALS). Hybrid: `HybridModel` over that ALS and content model, weights learned by `learn_blend` "
        "(ALS refitted on the earlier 80% of each user's training pairs with the tuned config, "
        "`time_aware_split(train, 0.2, min_user_pairs=2)`, each segment's grid point with the best "
        "NDCG on the latest 20%). Coverage, diversity (genre distance within a list) and Gini on the "
        '`all` rows only; coverage over the catalogue. "vs ALS": the change of NDCG@10 against ALS '
        "on the same segment.\n\n"
        + "\n".join(f"* {n}" for n in notes)
        + "\n\n"
        + "\n".join(f"* {v}" for v in verdicts)
        + "\n\n"
        + table(
            [
                "data",
                "model",
                "segment",
                "users",
                "NDCG@10",
                "recall@10",
                "vs ALS",
                "coverage@10",
                "diversity@10",
                "gini@10",
            ],
            [row for o in outcomes for row in result_rows(o)],
        )
        + "\n\nLearned blend weights (`learn_blend` on the validation split; ALS weight 1):\n\n"
        + table(
            [
                "data",
                "segment",
                "validation users",
                "ALS-only NDCG@10",
                "chosen NDCG@10",
                "content",
                "popularity",
                "weights",
            ],
            [row for o in outcomes for row in blend_rows(o)],
        )
        + "\n\nData and timing (seconds: tuning, fits, blend learning and scoring of the dataset; "
        f"the whole run took {total:.0f} s):\n\n"
        + table(
            [
                "data",
                "training pairs",
                "users",
                "holdout pairs",
                "holdout users",
                "cold holdout users",
                "catalogue items",
                "ALS reg_param",
                "seconds",
            ],
            [row for o in outcomes for row in dataset_rows(o)],
        )
    )
    path = write_section("hybrid", "Hybrid: ALS, content and popularity per user segment", body)
    print(f"total {total:.0f} s; written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
