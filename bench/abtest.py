"""A/B readout power: the smallest uplift of the primary metric the readout ships in 80% of runs.

For the default :class:`recsys.experiments.ab_config.ExperimentConfig` (primary ``plays_per_user``, alpha 0.05 with
Holm across the five metrics, 50/50 split) and each traffic level (exposed users per arm), repeated
experiments are simulated and read out with :func:`recsys.experiments.abtest.readout_from_users` (the readout's
statistics and decision on the per-user table; the aggregation from the raw frames is the same for
every run and is tested in ``tests/experiments/test_abtest.py``). The power at an uplift is the share of runs
whose decision is ``ship``; a bisection over the relative uplift of the challenger's play rate
finds the smallest uplift with power >= 80%. The runs use common random numbers (run ``r`` draws the
same users at every uplift, plays by inverse-CDF sampling, :func:`poisson_quantile`), so the power is monotone in the uplift
up to the guardrails' noise.

Per-user distributions (both arms; only the challenger's play rate changes):

* exposures: 1 + Poisson(19) (ten slots a week for two weeks, some missed);
* clicks: Binomial(exposures, p), p ~ Beta(0.6, 5.4) per user (mean CTR 10%, very uneven);
* plays: negative binomial, mean 3, dispersion 1 (gamma-Poisson; variance 12), times the uplift;
* watch seconds: a lognormal per play, median 20 minutes, sigma 1.0;
* plays from recommendations: Binomial(plays, q), q ~ Beta(3, 2) per user;
* churn: 25% of users, independently.

The analytic columns are the normal-approximation MDE (:func:`analytic_mde`) at ``alpha / 5``
(Bonferroni over the five metrics, what Holm costs the primary when its p-value is the smallest) and
at ``alpha`` (the primary tested alone).

    .venv/bin/python -m bench.abtest [--traffic 1000 5000 20000] [--runs 200]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from bench.common import table, write_section
from recsys.experiments.ab_config import METRICS, ExperimentConfig
from recsys.experiments.abtest import readout_from_users

TRAFFIC = (1_000, 5_000, 20_000)
RUNS = 200
TARGET_POWER = 0.8
BISECTIONS = 7
PLAYS_MEAN = 3.0
PLAYS_DISPERSION = 1.0  # gamma shape: variance = mean + mean^2 / dispersion
WATCH_MEDIAN_SECONDS = 1_200.0
WATCH_SIGMA = 1.0
CHURN = 0.25


@dataclass(frozen=True)
class Users:
    """The uplift-independent draws of one run: per-user traits and uniforms."""

    exposures: np.ndarray
    clicks: np.ndarray
    rate: np.ndarray  # each user's play rate before any uplift
    plays_u: np.ndarray  # uniforms for the inverse-CDF plays draw
    rec_share: np.ndarray
    churned: np.ndarray
    seed: int


def draw_users(n_per_arm: int, seed: int) -> Users:
    """Two arms of ``n_per_arm`` users each (champion first), everything but the plays drawn."""
    rng = np.random.default_rng(seed)
    n = 2 * n_per_arm
    exposures = 1 + rng.poisson(19, n)
    clicks = rng.binomial(exposures, rng.beta(0.6, 5.4, n))
    return Users(
        exposures=exposures.astype(float),
        clicks=clicks.astype(float),
        rate=rng.gamma(PLAYS_DISPERSION, PLAYS_MEAN / PLAYS_DISPERSION, n),
        plays_u=rng.random(n),
        rec_share=rng.beta(3, 2, n),
        churned=(rng.random(n) < CHURN).astype(float),
        seed=seed,
    )


def poisson_quantile(u: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """The Poisson(``lam``) quantile of ``u`` elementwise: the smallest k with CDF(k) >= u (what
    ``scipy.stats.poisson.ppf`` gives, much faster for the small rates here). Monotone in ``lam``."""
    k = np.zeros(len(u))
    term = np.exp(-lam)
    cdf = term.copy()
    todo = np.flatnonzero(u > cdf)
    step = 0
    while todo.size:
        step += 1
        term[todo] *= lam[todo] / step
        cdf[todo] += term[todo]
        k[todo] = step
        todo = todo[(u[todo] > cdf[todo]) & (term[todo] > 0)]  # a vanished term: rounding, stop
    return k


def user_table(users: Users, uplift: float) -> pd.DataFrame:
    """The per-user table (:data:`recsys.experiments.ab_config.USER_COLUMNS`) with the challenger's play rate
    multiplied by ``1 + uplift``."""
    n = len(users.rate)
    half = n // 2
    factor = np.ones(n)
    factor[half:] = 1.0 + uplift
    plays = poisson_quantile(users.plays_u, users.rate * factor)
    rng = np.random.default_rng([users.seed, 1])
    counts = plays.astype(np.int64)
    per_play = rng.lognormal(math.log(WATCH_MEDIAN_SECONDS), WATCH_SIGMA, int(counts.sum()))
    watch = np.bincount(np.repeat(np.arange(n), counts), weights=per_play, minlength=n)
    rec_plays = rng.binomial(counts, users.rec_share).astype(float)
    arms = np.array(["champion"] * half + ["challenger"] * (n - half), dtype=object)
    return pd.DataFrame(
        {
            "arm": arms,
            "exposures": users.exposures,
            "clicks": users.clicks,
            "plays": plays,
            "rec_plays": rec_plays,
            "watch_seconds": watch,
            "churned": users.churned,
        }
    )


def ship_rate(n_per_arm: int, uplift: float, runs: int, config: ExperimentConfig) -> float:
    """Share of ``runs`` simulated experiments read out as ``ship`` (run r uses seed r at any uplift)."""
    ships = 0
    for run in range(runs):
        users = draw_users(n_per_arm, seed=n_per_arm * 1_000_003 + run)
        ships += readout_from_users(user_table(users, uplift), config).decision == "ship"
    return ships / runs


def plays_variance(mean: float) -> float:
    """Variance of plays per user at ``mean`` (negative binomial)."""
    return mean + mean**2 / PLAYS_DISPERSION


def analytic_mde(n_per_arm: int, alpha: float, power: float = TARGET_POWER) -> float:
    """Normal-approximation minimum detectable relative uplift of plays per user (two-sided): the
    uplift u with ``(z(1 - alpha/2) + z(power)) * sqrt((var(mean) + var(mean (1 + u))) / n) =
    u * mean`` (the challenger's variance grows with its mean), by fixed-point iteration."""
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    uplift = 0.0
    for _ in range(50):
        spread = plays_variance(PLAYS_MEAN) + plays_variance(PLAYS_MEAN * (1 + uplift))
        uplift = float(z * math.sqrt(spread / n_per_arm) / PLAYS_MEAN)
    return uplift


def smallest_uplift(
    n_per_arm: int, runs: int, config: ExperimentConfig, target: float = TARGET_POWER
) -> tuple[float, float, list[tuple[float, float]]]:
    """(smallest uplift with ship rate >= target found by bisection, its ship rate, every
    (uplift, ship rate) evaluated)."""
    evaluated: list[tuple[float, float]] = []

    def rate(uplift: float) -> float:
        value = ship_rate(n_per_arm, uplift, runs, config)
        evaluated.append((uplift, value))
        return value

    lo, hi = 0.0, 2 * analytic_mde(n_per_arm, config.alpha / len(METRICS))
    hi_rate = rate(hi)
    while hi_rate < target:
        lo, hi = hi, 2 * hi
        hi_rate = rate(hi)
        if hi > 10:
            raise RuntimeError(f"no uplift up to {hi:.0%} reaches a ship rate of {target:.0%}")
    for _ in range(BISECTIONS):
        mid = (lo + hi) / 2
        mid_rate = rate(mid)
        if mid_rate >= target:
            hi, hi_rate = mid, mid_rate
        else:
            lo = mid
    return hi, hi_rate, sorted(evaluated)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traffic", type=int, nargs="+", default=list(TRAFFIC), help="exposed users per arm")
    parser.add_argument("--runs", type=int, default=RUNS, help="simulated experiments per uplift")
    args = parser.parse_args(argv)
    if args.runs < 10 or min(args.traffic) < 2:
        parser.error("--runs must be >= 10 and every --traffic >= 2")

    config = ExperimentConfig(experiment_id="bench-power", salt="bench")
    rows, curves = [], []
    started = time.perf_counter()
    for n in args.traffic:
        begun = time.perf_counter()
        aa = ship_rate(n, 0.0, args.runs, config)
        uplift, reached, evaluated = smallest_uplift(n, args.runs, config)
        seconds = time.perf_counter() - begun
        row = [
            n,
            f"{uplift:+.1%}",
            f"{reached:.0%}",
            f"{aa:.1%}",
            f"{analytic_mde(n, config.alpha / len(METRICS)):+.1%}",
            f"{analytic_mde(n, config.alpha):+.1%}",
            f"{seconds:.0f}",
        ]
        rows.append(row)
        curves.append(f"* {n:,} users per arm: " + ", ".join(f"{u:+.1%} → {r:.0%}" for u, r in evaluated))
        print(
            f"{n:>7,} users/arm: ships >= {TARGET_POWER:.0%} from {uplift:+.1%} (rate {reached:.0%}), "
            f"A/A ship rate {aa:.1%}, {seconds:.1f} s",
            flush=True,
        )
    header = [
        "exposed users per arm",
        f"smallest uplift shipped in >= {TARGET_POWER:.0%} of runs",
        "ship rate there",
        "A/A ship rate (no uplift)",
        "analytic MDE, alpha/5",
        "analytic MDE, alpha",
        "seconds",
    ]
    text = table(header, rows)
    cost = (
        analytic_mde(args.traffic[0], config.alpha / len(METRICS))
        / analytic_mde(args.traffic[0], config.alpha)
        - 1
    )
    print(text)
    variance = plays_variance(PLAYS_MEAN)
    margin = 1.96 * math.sqrt(TARGET_POWER * (1 - TARGET_POWER) / args.runs)
    body = f"""
How large an improvement of the primary metric (`plays_per_user`) the A/B readout (`recsys.experiments.abtest`,
default config: alpha {config.alpha:g}, Holm over the {len(METRICS)} metrics, guardrails, 50/50 split)
turns into a **ship** decision in at least {TARGET_POWER:.0%} of experiments, by simulation: {args.runs}
simulated experiments per uplift, bisection over the challenger's relative uplift of the play rate,
common random numbers across uplifts (a ship rate near {TARGET_POWER:.0%} is known to about
±{margin * 100:.0f} points). Per user: plays negative binomial (mean {PLAYS_MEAN:g}, variance {variance:g}),
watch seconds lognormal per play (median {WATCH_MEDIAN_SECONDS / 60:g} min), 1 + Poisson(19) exposures with
a Beta(0.6, 5.4) click propensity, a Beta(3, 2) share of plays from recommendations, {CHURN:.0%} churn.
Total {time.perf_counter() - started:.0f} s.

{text}

The A/A column is the false "ship" rate with no uplift (at most alpha / 2 in expectation: a ship
needs a significant *improvement*, and Holm makes it rarer). The analytic MDEs are the normal
approximation for plays per user (the challenger's variance grows with its mean): at alpha / 5
(Bonferroni over the five metrics: Holm multiplies the primary's p-value by 5 when it is the
smallest of the five, as it usually is here) and at alpha (the primary tested alone). The simulated
figures follow the alpha / 5 column: correcting the primary together with the guardrails costs
about {cost:.0%} larger detectable effects than testing it alone at alpha and Holm-correcting only
the guardrails.

Ship rate at every uplift evaluated:

{chr(10).join(curves)}
"""
    path = write_section("abtest", "A/B readout power: smallest uplift shipped", body)
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
