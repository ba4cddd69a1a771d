"""Gate users: how many evaluated users the gate's ``beats_baseline`` verdict needs to be trusted.

The gate (:func:`recsys.promotion.gates.evaluate_gate`) passes ``beats_baseline`` when the candidate's mean
NDCG@10 over the holdout users is above the popularity baseline's and at least ``1 +
baseline_margin`` times it. With few users both means are noisy, so the verdict on a small holdout
can differ from the verdict the same models would get on many users. This script measures how often.

For each dataset (ml-100k, ml-latest-small from ``../shared/data``):

1. events -> :func:`recsys.data.prepare.prepare` (strength = rating / 2.5, each user's latest 20% of
   pairs held out, relevant = rated at least 3.5), as the pipeline prepares MovieLens;
2. the popularity baseline (:func:`recsys.models.factors.popularity_model`) and three ALS candidates
   (:func:`recsys.training.als.train_als` on a local :func:`recsys.io.spark.get_spark` session, seed 42):
   **strong** = the default :class:`recsys.training.als.ALSConfig`, **near-margin** = rank 1 (a learned
   popularity, close to the baseline), **weak** = rank 2 and 1 iteration;
3. per-user NDCG@10 of every model on the holdout (:func:`recsys.evaluation.metrics.ndcg_at_k` on the lists
   :func:`recsys.evaluation.evaluate.score_model` would score: same users, each user's training items
   excluded; their mean is checked against :func:`recsys.evaluation.metrics.ranking_metrics`);
4. for each size n: ``--draws`` seeded random subsets of n holdout users (without replacement; the
   same subsets for every candidate), and the same number of samples of n users drawn with
   replacement (n independent users from the population the holdout stands for). On each, the
   gate's own ``beats_baseline`` check on the two means; reported: the 95% interval of the
   candidate's mean and of the candidate / baseline ratio, and the share of subsets whose verdict
   differs from the verdict on every holdout user (a false fail for a candidate that passes on
   every user, a false pass for one that fails).

    .venv/bin/python -m bench.gate_users [--datasets ml-100k ml-latest-small] [--draws 1000] [--quick]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bench.common import ROOT, movielens_pairs, table, write_section

K = 10
SIZES = (10, 25, 50, 100, 200, 400, 800)
DRAWS = 1_000
SEED = 2026
TOLERANCE = 0.05  # a verdict is trusted at n when at most this share of subsets disagree
DATASETS = ("ml-100k", "ml-latest-small")
#: candidate -> ALSConfig overrides (the seed stays the config's default)
CANDIDATES: dict[str, dict[str, int]] = {
    "strong": {},
    "near-margin": {"rank": 1},
    "weak": {"rank": 2, "max_iter": 1},
}
PLOT = ROOT / "docs" / "benchmarks-gate-users.png"


# ---- pure helpers --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resampled:
    """The gate on ``draws`` samples of ``n`` users: intervals and disagreement with the full verdict."""

    n: int
    ndcg_low: float
    ndcg_high: float
    ratio_low: float
    ratio_high: float
    disagreement: float  # share of samples whose beats_baseline verdict differs from the full one


def thresholds() -> Any:
    """The gate's default thresholds, with the user-count check out of the way."""
    from recsys.promotion.gates import GateThresholds

    return GateThresholds(min_users_evaluated=0)


def beats_baseline(candidate: float, baseline: float, users: int, limits: Any = None) -> bool:
    """The gate's own ``beats_baseline`` check on two mean NDCG@K values."""
    from recsys.promotion.gates import evaluate_gate

    limits = limits if limits is not None else thresholds()
    key = limits.primary_metric
    decision = evaluate_gate({key: candidate, "users_evaluated": users}, None, {key: baseline}, limits)
    return decision.checks["beats_baseline"]


def ratio(candidate: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """candidate / baseline, elementwise; inf where only the baseline is 0, 1 where both are."""
    out = np.ones_like(candidate, dtype=float)
    positive = baseline > 0
    out[positive] = candidate[positive] / baseline[positive]
    out[~positive & (candidate > 0)] = math.inf
    return out


def samples(population: int, n: int, draws: int, rng: np.random.Generator, replace: bool) -> np.ndarray:
    """(draws, n) user positions: each row ``n`` distinct users, or ``n`` draws with replacement."""
    if replace:
        return rng.integers(0, population, size=(draws, n))
    if n > population:
        raise ValueError(f"cannot draw {n} distinct users out of {population}")
    return np.argsort(rng.random((draws, population)), axis=1)[:, :n]


def resample(
    candidate: np.ndarray,
    baseline: np.ndarray,
    sizes: tuple[int, ...] = SIZES,
    draws: int = DRAWS,
    seed: int = SEED,
    replace: bool = False,
) -> list[Resampled]:
    """The gate's ``beats_baseline`` verdict on ``draws`` random user samples per size in ``sizes``.

    ``candidate`` and ``baseline`` are per-user values of the primary metric for the same users (same
    order). Sizes above the number of users are skipped without replacement. Same seed, same samples.
    """
    candidate, baseline = np.asarray(candidate, float), np.asarray(baseline, float)
    if candidate.shape != baseline.shape or candidate.ndim != 1 or not len(candidate):
        raise ValueError("candidate and baseline must be non-empty per-user arrays of one length")
    limits = thresholds()
    users = len(candidate)
    full = beats_baseline(float(candidate.mean()), float(baseline.mean()), users, limits)
    rng = np.random.default_rng(seed)
    out: list[Resampled] = []
    for n in sizes:
        if n > users and not replace:
            continue
        rows = samples(users, n, draws, rng, replace)
        cand, base = candidate[rows].mean(axis=1), baseline[rows].mean(axis=1)
        verdicts = np.array(
            [beats_baseline(float(c), float(b), n, limits) for c, b in zip(cand, base, strict=True)]
        )
        ndcg_low, ndcg_high = np.quantile(cand, [0.025, 0.975], method="inverted_cdf")
        ratio_low, ratio_high = np.quantile(ratio(cand, base), [0.025, 0.975], method="inverted_cdf")
        out.append(
            Resampled(
                n,
                float(ndcg_low),
                float(ndcg_high),
                float(ratio_low),
                float(ratio_high),
                float(np.mean(verdicts != full)),
            )
        )
    return out


def smallest_trusted(results: list[Resampled], tolerance: float = TOLERANCE) -> int | None:
    """The smallest n from which on (that n and every larger one measured) at most ``tolerance`` of
    the samples disagree with the full verdict; None if the largest n measured does not get there."""
    trusted = None
    for result in sorted(results, key=lambda r: r.n, reverse=True):
        if result.disagreement > tolerance:
            break
        trusted = result.n
    return trusted


# ---- models and per-user figures -----------------------------------------------------------------


def prepared(name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, relevant holdout) of a MovieLens dataset through the prepare stage."""
    from recsys.data.prepare import PrepareConfig, prepare

    pairs = movielens_pairs(name)
    events = pd.DataFrame(
        {
            "user": pairs["user"],
            "item_id": pairs["item_id"],
            "ts": pd.to_datetime(pairs["ts"], unit="s", utc=True),
            "event_type": "rating",
            "rating": pairs["rating"],
            "watch_seconds": np.nan,
        }
    )
    result = prepare(events, PrepareConfig())
    return result.train, result.holdout


def per_user_ndcg(model: Any, train: pd.DataFrame, holdout: pd.DataFrame, k: int = K) -> pd.Series:
    """NDCG@k of each holdout user (index: user, sorted), ranked as :func:`recsys.evaluation.evaluate.score_model`
    ranks them; its mean is the ``ndcg@k`` of :func:`recsys.evaluation.metrics.ranking_metrics`."""
    from recsys.evaluation.evaluate import recommendation_lists, train_items, truth_sets
    from recsys.evaluation.metrics import ndcg_at_k, ranking_metrics

    truth = truth_sets(holdout)
    users = sorted(truth)
    recs = model.recommend(users, k=k, exclude=train_items(train[train["user"].isin(users)]))
    lists = recommendation_lists(recs)
    values = pd.Series([ndcg_at_k(lists.get(u, []), truth[u], k) for u in users], index=users, dtype=float)
    mean = ranking_metrics(lists, truth, k)[f"ndcg@{k}"]
    if not math.isclose(float(values.mean()), mean, rel_tol=1e-9, abs_tol=1e-12):
        raise AssertionError(f"per-user NDCG mean {values.mean()} != ranking_metrics {mean}")
    return values


@dataclass
class Outcome:
    name: str
    users: int
    per_user: pd.DataFrame  # one column per model ("popularity" and the candidates)
    subsets: dict[str, list[Resampled]]
    iid: dict[str, list[Resampled]]
    seconds: float


def run(name: str, spark: Any, sizes: tuple[int, ...], draws: int) -> Outcome:
    from recsys.models.factors import popularity_model
    from recsys.training.als import ALSConfig, train_als

    started = time.perf_counter()
    train, holdout = prepared(name)
    columns = {"popularity": per_user_ndcg(popularity_model(train), train, holdout)}
    for label, overrides in CANDIDATES.items():
        model = train_als(train, ALSConfig(**overrides), spark)
        columns[label] = per_user_ndcg(model, train, holdout)
    per_user = pd.DataFrame(columns)
    base = per_user["popularity"].to_numpy()
    subsets = {c: resample(per_user[c].to_numpy(), base, sizes, draws) for c in CANDIDATES}
    iid = {c: resample(per_user[c].to_numpy(), base, sizes, draws, replace=True) for c in CANDIDATES}
    seconds = time.perf_counter() - started
    print(f"[{name}] {len(train):,} training pairs, {len(per_user):,} holdout users", flush=True)
    for label in per_user:
        mean = per_user[label].mean()
        print(f"[{name}] {label}: ndcg@{K} {mean:.4f} ({mean / base.mean():.3f}x popularity)", flush=True)
    return Outcome(name, len(per_user), per_user, subsets, iid, seconds)


# ---- report --------------------------------------------------------------------------------------


def verdict_text(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def full_rows(outcome: Outcome) -> list[list[object]]:
    base = float(outcome.per_user["popularity"].mean())
    rows: list[list[object]] = [
        [outcome.name, "popularity", "baseline", outcome.users, f"{base:.4f}", "", ""]
    ]
    for label, overrides in CANDIDATES.items():
        mean = float(outcome.per_user[label].mean())
        shown = ", ".join(f"{k}={v}" for k, v in overrides.items()) or "default ALSConfig"
        passed = beats_baseline(mean, base, outcome.users)
        rows.append(
            [
                outcome.name,
                label,
                shown,
                outcome.users,
                f"{mean:.4f}",
                f"{mean / base:.3f}",
                verdict_text(passed),
            ]
        )
    return rows


def size_rows(outcome: Outcome) -> list[list[object]]:
    rows: list[list[object]] = []
    for label in CANDIDATES:
        iid = {r.n: r for r in outcome.iid[label]}
        for r in outcome.subsets[label]:
            other = iid[r.n]
            rows.append(
                [
                    outcome.name,
                    label,
                    r.n,
                    f"{r.n / outcome.users:.0%}",
                    f"{r.ndcg_low:.3f} – {r.ndcg_high:.3f}",
                    f"{r.ratio_low:.2f} – {r.ratio_high:.2f}",
                    f"{r.disagreement:.1%}",
                    f"{other.disagreement:.1%}",
                ]
            )
    return rows


def conclusions(outcome: Outcome) -> str:
    """One line: the smallest trusted n per candidate, on subsets and with replacement."""
    base = float(outcome.per_user["popularity"].mean())
    parts = []
    for label in CANDIDATES:
        passed = beats_baseline(float(outcome.per_user[label].mean()), base, outcome.users)
        sub, iid = smallest_trusted(outcome.subsets[label]), smallest_trusted(outcome.iid[label])
        largest = max(r.n for r in outcome.iid[label])
        shown = f"n >= {sub}" if sub is not None else "no n measured"
        shown += f" (with replacement: {f'n >= {iid}' if iid is not None else f'not by n = {largest}'})"
        parts.append(f"{label} ({verdict_text(passed)} on all users) {shown}")
    return (
        f"**{outcome.name}**: verdict within {TOLERANCE:.0%} of the all-users verdict for "
        + "; ".join(parts)
        + "."
    )


def overall(outcomes: list[Outcome], labels: tuple[str, ...] = ("strong", "weak")) -> str:
    """One line: the smallest n trusted for every candidate of ``labels`` on every dataset."""

    def worst(kind: str) -> str:
        found = [smallest_trusted(getattr(o, kind)[label]) for o in outcomes for label in labels]
        return "none measured" if any(n is None for n in found) else f"n = {max(n for n in found if n)}"

    names = " and ".join(o.name for o in outcomes)
    return (
        f"**Conclusion**: on {names}, the {' and '.join(labels)} candidates' verdicts differ from the "
        f"all-users verdict in at most {TOLERANCE:.0%} of samples from {worst('subsets')} on (subsets; "
        f"{worst('iid')} with replacement); at fewer users the gate's beats_baseline verdict is not "
        "trustworthy."
    )


def plot(outcomes: list[Outcome]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = dict(zip(CANDIDATES, ("tab:blue", "tab:orange", "tab:red"), strict=True))
    for outcome, style in zip(outcomes, ("o-", "s--", "^:"), strict=False):
        for label in CANDIDATES:
            results = outcome.subsets[label]
            ax.plot(
                [r.n for r in results],
                [r.disagreement * 100 for r in results],
                style,
                color=colours[label],
                label=f"{outcome.name}: {label}",
            )
    ax.axhline(TOLERANCE * 100, color="grey", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("users evaluated (random subsets of the holdout users)")
    ax.set_ylabel("% of subsets whose beats_baseline verdict differs")
    ax.set_title("Gate verdict on NDCG@10 vs popularity +5%: subsets against all users")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=None, help="default: both")
    parser.add_argument("--draws", type=int, default=None, help=f"samples per size (default {DRAWS})")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="200 draws, sizes up to 100, ml-100k unless --datasets; prints only (no docs, no plot)",
    )
    args = parser.parse_args(argv)
    datasets = args.datasets or (["ml-100k"] if args.quick else list(DATASETS))
    draws = args.draws or (200 if args.quick else DRAWS)
    if draws < 1:
        parser.error("--draws must be >= 1")
    sizes = tuple(n for n in SIZES if n <= 100) if args.quick else SIZES
    from recsys.core.settings import Settings
    from recsys.io.spark import get_spark

    started = time.perf_counter()
    spark = get_spark(Settings.from_env(), app_name="bench-gate-users")
    try:
        outcomes = [run(name, spark, sizes, draws) for name in datasets]
    finally:
        spark.stop()
    total = time.perf_counter() - started

    limits = thresholds()
    full = table(
        ["data", "model", "ALS config", "holdout users", "NDCG@10", "vs popularity", "beats_baseline"],
        [row for o in outcomes for row in full_rows(o)],
    )
    sized = table(
        [
            "data",
            "candidate",
            "n",
            "n / users",
            "candidate NDCG@10, 95%",
            "ratio to popularity, 95%",
            "verdict differs (subsets)",
            "verdict differs (with replacement)",
        ],
        [row for o in outcomes for row in size_rows(o)],
    )
    lines = [conclusions(o) for o in outcomes] + [overall(outcomes)]
    print(full, sized, *(line.replace("**", "") for line in lines), sep="\n\n")
    if args.quick:
        print(f"total {total:.0f} s (quick: nothing written)")
        return 0
    body = (
        f"How many evaluated users the gate's `beats_baseline` check (candidate NDCG@{K} above the "
        f"popularity baseline's and >= {1 + limits.baseline_margin:g}x it) needs before its verdict "
        "matches the verdict on every holdout user. Data through `recsys.data.prepare.prepare` (strength = "
        "rating / 2.5, each user's latest 20% of pairs held out, relevant = rated >= 3.5); candidates "
        "fitted by `recsys.training.als.train_als` (seed 42), per-user NDCG@10 with each user's training items "
        f"excluded. For each n, {draws:,} seeded random subsets of n holdout users (the same subsets "
        "for every candidate), and as many samples of n users drawn with replacement; on each, the "
        'gate\'s own check (`recsys.promotion.gates.evaluate_gate`) on the two means. "Verdict differs": share '
        "of samples whose verdict is not the all-users verdict (a false FAIL for a candidate that "
        "passes on all users, a false PASS for one that fails). Subsets of a large share of the "
        "holdout share most of their users with it, so their disagreement at large n is optimistic; "
        "the with-replacement column models n fresh users. Plot: `docs/benchmarks-gate-users.png`. "
        f"The whole run took {total:.0f} s.\n\n"
        + "\n".join(f"* {line}" for line in lines)
        + "\n\nAll holdout users:\n\n"
        + full
        + "\n\nRandom user samples:\n\n"
        + sized
    )
    path = write_section("gate-users", "Gate: users needed for a trustworthy beats_baseline verdict", body)
    plot(outcomes)
    print(f"total {total:.0f} s; written to {path} and {PLOT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
