"""Shared pieces of the benchmarks: data at known shapes, timing, peak memory, and the report file.

Every benchmark prints its figures and writes them into its own section of ``docs/benchmarks.md``
(between ``<!-- bench:NAME -->`` markers), with the machine it ran on, so re-running one benchmark
updates its section and leaves the others alone.
"""

from __future__ import annotations

import os
import platform
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "docs" / "benchmarks.md"

#: (users, items, interactions) of the MovieLens datasets the generated shapes imitate
SHAPES = {
    "ml-1m shape": (6_040, 3_706, 1_000_209),
    "ml-10m shape": (69_878, 10_677, 10_000_054),
}


# ---- data ----------------------------------------------------------------------------------------


def data_dir() -> Path:
    configured = os.environ.get("RECSYS_DATA_DIR")
    path = Path(configured) if configured else ROOT.parent / "shared" / "data"
    if not (path / "movielens").is_dir():
        raise SystemExit(f"MovieLens data not found at {path}/movielens: set RECSYS_DATA_DIR")
    return path


def movielens_pairs(name: str) -> pd.DataFrame:
    """(user, item_id, strength, rating, ts) of ml-100k or ml-latest-small, strength = rating / 2.5."""
    base = data_dir() / "movielens" / name
    if name == "ml-100k":
        raw = pd.read_csv(base / "u.data", sep="\t", names=["user", "item_id", "rating", "ts"])
    elif name == "ml-latest-small":
        raw = pd.read_csv(base / "ratings.csv").rename(
            columns={"userId": "user", "movieId": "item_id", "timestamp": "ts"}
        )
    else:
        raise ValueError(f"unknown dataset {name!r}")
    return pd.DataFrame(
        {
            "user": "u" + raw["user"].astype(str),
            "item_id": raw["item_id"].astype(np.int64),
            "strength": (raw["rating"] / 2.5).astype(np.float64),
            "rating": raw["rating"].astype(np.float64),
            "ts": raw["ts"].astype(np.int64),
        }
    )


def generated_pairs(n_users: int, n_items: int, n_pairs: int, seed: int = 7) -> pd.DataFrame:
    """Interactions at a MovieLens shape: Zipf item popularity, lognormal user activity, a few taste
    groups (so there is structure to learn); ``n_pairs`` distinct (user, item) pairs (fewer only if
    the shape cannot hold them), timestamps over 3 years. Same seed, same data."""
    rng = np.random.default_rng(seed)
    groups = 20
    user_group = rng.integers(0, groups, n_users)
    item_group = rng.integers(0, groups, n_items)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.9
    rng.shuffle(popularity)
    activity = rng.lognormal(0.0, 1.0, n_users)
    user_cdf = np.cumsum(activity) / activity.sum()
    all_cdf = np.cumsum(popularity) / popularity.sum()
    members = [np.flatnonzero(item_group == g) for g in range(groups)]
    group_cdf = [np.cumsum(popularity[m]) / popularity[m].sum() if len(m) else None for m in members]

    def draw(m: int) -> np.ndarray:
        users = np.minimum(np.searchsorted(user_cdf, rng.random(m)), n_users - 1)
        items = np.minimum(np.searchsorted(all_cdf, rng.random(m)), n_items - 1)
        taste = rng.random(m) < 0.7  # 70% of picks follow the user's taste group
        for g in range(groups):
            sel = taste & (user_group[users] == g)
            if sel.any() and group_cdf[g] is not None:
                pick = np.minimum(
                    np.searchsorted(group_cdf[g], rng.random(int(sel.sum()))), len(members[g]) - 1
                )
                items[sel] = members[g][pick]
        return users.astype(np.int64) * n_items + items

    target = min(n_pairs, n_users * n_items)
    keys = np.unique(draw(target))
    for _ in range(30):
        if len(keys) >= target:
            break
        keys = np.unique(np.concatenate([keys, draw(int((target - len(keys)) * 1.5) + 16)]))
    keys = rng.permutation(keys)[:target]
    rating = np.clip(np.round(rng.normal(3.6, 1.0, len(keys)) * 2) / 2, 0.5, 5.0)
    return pd.DataFrame(
        {
            "user": np.char.add("g", (keys // n_items).astype(str)),
            "item_id": (keys % n_items).astype(np.int64),
            "strength": rating / 2.5,
            "rating": rating,
            "ts": rng.integers(1_600_000_000, 1_700_000_000, len(keys)),
        }
    )


# ---- measuring -----------------------------------------------------------------------------------


@dataclass
class Measure:
    seconds: float = 0.0
    peak_rss_bytes: int = 0
    #: (wall-clock time, resident bytes) of each sample, when asked for (``measure(keep_samples=True)``)
    samples: list[tuple[datetime, int]] = field(default_factory=list)

    @property
    def peak_gib(self) -> float:
        return self.peak_rss_bytes / 2**30

    def peak_between(self, start: datetime, end: datetime) -> float:
        """Peak GiB of the samples taken from ``start`` to ``end`` (e.g. one Airflow task's span)."""
        return max((rss for at, rss in self.samples if start <= at <= end), default=0) / 2**30


@contextmanager
def measure(interval: float = 0.05, keep_samples: bool = False) -> Iterator[Measure]:
    """Wall time and peak resident memory of this process plus its children (the Spark JVM); with
    ``keep_samples``, every sample with its UTC time too."""
    import psutil

    me = psutil.Process()
    result = Measure()
    stop = threading.Event()

    def total() -> int:
        rss = 0
        for proc in [me, *me.children(recursive=True)]:
            try:
                rss += proc.memory_info().rss
            except psutil.Error:
                pass
        return rss

    def sample() -> None:
        while not stop.is_set():
            rss = total()
            result.peak_rss_bytes = max(result.peak_rss_bytes, rss)
            if keep_samples:
                result.samples.append((datetime.now(tz=UTC), rss))
            stop.wait(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    started = time.perf_counter()
    try:
        yield result
    finally:
        result.seconds = time.perf_counter() - started
        stop.set()
        thread.join()
        result.peak_rss_bytes = max(result.peak_rss_bytes, total())


def median_run(run, repeats: int = 3):  # noqa: ANN001, ANN201
    """(the last result of ``run()``, a Measure over all ``repeats`` calls whose seconds are the
    median of the calls' wall times)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    times = []
    with measure() as whole:
        for _ in range(repeats):
            started = time.perf_counter()
            result = run()
            times.append(time.perf_counter() - started)
    whole.seconds = float(np.median(times))
    return result, whole


def machine() -> str:
    import psutil

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import pyspark

    return (
        f"{os.cpu_count()} cores ({cpu}), {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, "
        f"Python {platform.python_version()}, numpy {np.__version__}, Spark {pyspark.__version__}, "
        f"{datetime.now(tz=UTC).strftime('%Y-%m-%d %H:%M UTC')}"
    )


# ---- the report ----------------------------------------------------------------------------------


def table(header: list[str], rows: list[list[object]]) -> str:
    def cell(value: object) -> str:
        if isinstance(value, int) and not isinstance(value, bool):
            return f"{value:,}"
        if isinstance(value, float):
            return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
        return str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(name: str, title: str, body: str) -> Path:
    """Replace (or add) the section ``name`` of docs/benchmarks.md."""
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    text = (
        REPORT.read_text(encoding="utf-8")
        if REPORT.exists()
        else (
            "# Benchmarks\n\nWritten by the scripts in `bench/` (`make bench` runs them all); each section "
            "names the machine and the time it was measured. Figures from a busy machine are not comparable.\n"
        )
    )
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    section = f"{start}\n## {title}\n\nMachine: {machine()}\n\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = (
        pattern.sub(lambda _: section, text)
        if pattern.search(text)
        else text.rstrip() + "\n\n" + section + "\n"
    )
    REPORT.write_text(text, encoding="utf-8")
    return REPORT
