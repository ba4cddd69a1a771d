"""Realistic synthetic interaction logs, written into the raw lake one week at a time.

The generator builds one "world" from the seed (catalogue, users, latent taste groups) and then
samples each week's log from it:

* **Taste.** There are ``n_clusters`` latent taste groups; each one prefers two or three of the
  18 movie genres. Every item has a home group (its genres are mostly drawn from that group's
  favourites) and every user belongs to one or two groups. An interaction picks an item with
  probability proportional to ``popularity x taste affinity`` (or, for a ``1 - taste_strength``
  share, by popularity alone), so collaborative filtering has real structure to find and a
  popularity baseline does clearly worse.
* **Popularity.** Item popularity follows a Zipf law with exponent ``popularity_exponent``.
* **Events.** ``view`` (``watch_seconds`` set; some are abandoned early), ``rating`` (0.5 .. 5.0 in
  half steps, higher for in-taste items) and ``browse`` (seen in a list but not watched; no
  ``watch_seconds``). Out-of-taste items are browsed more and watched to the end less often.
  Times fall inside the week, more in the evening and at the weekend.
* **Catalogue and users change.** ``new_items_per_week`` items are added each week (they can be
  interacted with from the following week); a ``new_user_share`` of the users sign up during the
  generated weeks. Each week's ``items.csv`` / ``users.csv`` is the snapshot as of the week's end.
* **Dirty rows.** About ``dirty_fraction`` of each week's event lines are deliberately bad, one
  problem each, in equal shares: missing user_id, rating out of range, unknown event_type, item_id
  not in the catalogue, exact duplicate of another line, timestamp outside the week.
  ``GenerationResult.injected_bad_rows`` counts them. Every other row is valid.

Same config (seed included) and same ``end_week`` give byte-identical files.

``generate`` also records its world in ``generator.json`` (lake root) (the config and ``end_week``):
:func:`world_of_lake` rebuilds the same world from it, e.g. to simulate the users' feedback.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from recsys.core.errors import ConfigError, DataNotFoundError, DataReadError
from recsys.core.intervals import week_bounds, week_start_of, weeks_back
from recsys.core.schemas import (
    EVENT_TYPES,
    GENRE_SEPARATOR,
    RAW_EVENT_COLUMNS,
    RAW_ITEM_COLUMNS,
    RAW_USER_COLUMNS,
)
from recsys.data.raw import raw_file, write_csv
from recsys.io.storage import Lake, write_json

GENRES: tuple[str, ...] = (
    "Action",
    "Adventure",
    "Animation",
    "Children",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
CLEAN_DEVICE_TYPES: tuple[str, ...] = ("tv", "mobile", "web", "tablet")
OCCUPATIONS: tuple[str, ...] = (
    "administrator",
    "artist",
    "doctor",
    "educator",
    "engineer",
    "entertainment",
    "executive",
    "healthcare",
    "homemaker",
    "lawyer",
    "librarian",
    "marketing",
    "none",
    "other",
    "programmer",
    "retired",
    "salesman",
    "scientist",
    "student",
    "technician",
    "writer",
)
# Kinds of injected bad rows, in the order they are cycled through.
BAD_ROW_KINDS: tuple[str, ...] = (
    "missing_user_id",
    "rating_out_of_range",
    "unknown_event_type",
    "unknown_item_id",
    "duplicate_line",
    "timestamp_outside_week",
)

_SECONDS_PER_WEEK = 7 * 86400
# Activity by hour of day (UTC): quiet at night, peak in the evening.
HOUR_WEIGHTS = np.array(
    [2, 1.2, 0.8, 0.5, 0.4, 0.4, 0.8, 1.5, 2.2, 2.5, 2.8, 3, 3.5, 3.5, 3.3, 3.4, 4, 5, 7, 9.5, 11, 10, 7.5, 4]
)
# Activity by day of week, Sunday first (weeks start on Sunday): more at the weekend.
DAY_WEIGHTS = np.array([1.3, 0.9, 0.9, 0.9, 0.95, 1.15, 1.35])
_DEVICE_SHARES = np.array([0.35, 0.3, 0.25, 0.1])  # primary device: tv, mobile, web, tablet
_BAD_RATINGS = ("7.0", "-1.0", "5.5", "0.0", "10")
_BAD_EVENT_TYPES = ("click", "purchase", "share", "like", "play")
_RATING_TEXT = np.array([f"{v / 2:.1f}" for v in range(11)])  # index = rating * 2


class GeneratorConfig(BaseModel):
    """Shape of the synthetic world. Every field is range-checked; bad values fail loudly."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_users: int = Field(600, ge=1, le=5_000_000, description="users signed up by the last week's end")
    n_items: int = Field(400, ge=1, le=1_000_000, description="catalogue size before the first week")
    n_clusters: int = Field(8, ge=1, le=64, description="latent taste groups, each tied to a few genres")
    weeks: int = Field(4, ge=1, le=520, description="weeks to generate, ending with end_week")
    events_per_user_week: float = Field(12.0, gt=0, le=10_000, description="mean events of an active user")
    active_share: float = Field(0.7, gt=0, le=1, description="share of signed-up users active in a week")
    popularity_exponent: float = Field(1.0, ge=0, le=3, description="Zipf exponent of item popularity")
    taste_strength: float = Field(0.85, ge=0, le=1, description="share of choices driven by taste")
    dirty_fraction: float = Field(0.005, ge=0, lt=0.5, description="share of injected bad event lines")
    new_items_per_week: int = Field(3, ge=0, le=100_000, description="items added to the catalogue weekly")
    new_user_share: float = Field(0.05, ge=0, lt=1, description="share of users signing up in the window")
    seed: int = Field(42, ge=0, description="same seed, same bytes")
    # Drift injection (off by default): from the week containing `drift_from` on, the world changes.
    drift_from: date | None = Field(None, description="first day of drift (its week and all later weeks)")
    drift_kind: Literal["popular_genre", "activity", "catalogue"] = Field(
        "popular_genre",
        description="popular_genre: one genre becomes far more popular; activity: half the users watch "
        "`drift_strength` times more; catalogue: the most popular fifth of the titles is withdrawn (no longer watched)",
    )
    drift_strength: float = Field(
        4.0, gt=1.0, le=100.0, description="size of a popular_genre / activity shift"
    )
    drift_genre: str = Field("Documentary", description="the genre that becomes popular (popular_genre)")

    @model_validator(mode="after")
    def _known_genre(self) -> GeneratorConfig:
        if self.drift_genre not in GENRES:
            raise ValueError(f"drift_genre {self.drift_genre!r} is not one of {', '.join(GENRES)}")
        return self


def config_from(values: Mapping[str, Any]) -> GeneratorConfig:
    """Build a config, turning pydantic's validation error into a one-line ConfigError."""
    try:
        return GeneratorConfig(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']} (got {err.get('input')!r})"
            for err in exc.errors()
        )
        raise ConfigError(f"bad generator setting: {problems}") from None


@dataclass
class GenerationResult:
    weeks: list[date]
    rows_per_week: dict[str, int]  # week (ISO date) -> event lines written, bad rows included
    files: list[Path]
    injected_bad_rows: int
    bad_rows_by_kind: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "weeks": [w.isoformat() for w in self.weeks],
            "rows_per_week": dict(self.rows_per_week),
            "files": [str(p) for p in self.files],
            "injected_bad_rows": self.injected_bad_rows,
            "bad_rows_by_kind": dict(self.bad_rows_by_kind),
        }


# ---- the world: catalogue, users, taste ------------------------------------------------------


@dataclass
class _World:
    first_week: date
    # clusters
    cluster_genres: list[list[int]]
    # items (index i -> item_id i + 1)
    item_ids: np.ndarray  # str
    item_title: list[str]
    item_genres: list[str]
    item_year: np.ndarray  # int
    item_added_at: np.ndarray  # str ISO
    item_added_week: np.ndarray  # int: week index it was added in (-1 = before the first week)
    item_popularity: np.ndarray  # float, Zipf weight
    item_quality: np.ndarray  # float, rating offset
    item_runtime: np.ndarray  # int seconds
    affinity: np.ndarray  # float [K, I]: exp(taste score)
    match: np.ndarray  # float [K, I] in 0..1: how well item fits group
    # users (index u -> user_id f"u{u + 1:06d}")
    user_ids: np.ndarray  # str
    user_clusters: np.ndarray  # int [U, 2]; column 1 == column 0 when the user has one group
    user_second_weight: np.ndarray  # float [U]: chance a choice follows the second group
    user_signup_week: np.ndarray  # int (-1 = before the first week)
    user_signup_day: np.ndarray  # int day of week of the signup (0 for earlier users)
    user_activity: np.ndarray  # float, mean 1
    user_bias: np.ndarray  # float rating offset
    user_device: np.ndarray  # int index into CLEAN_DEVICE_TYPES
    user_device_ids: np.ndarray  # str [U, 4]
    user_home_ip: np.ndarray  # str
    user_mobile_ip: np.ndarray  # str
    users_frame: pd.DataFrame  # RAW_USER_COLUMNS


_FIRST_NAMES = (
    "Anna", "James", "Maria", "Noah", "Olivia", "Liam", "Emma", "Lucas", "Sofia", "Ethan", "Mia",
    "Mateo", "Chloé", "José", "Zoë", "Björn", "Søren", "Łukasz", "Renée", "François", "Ayşe",
    "Hannah", "David", "Priya", "Wei", "Yuki", "Omar", "Fatima", "Ingrid", "Pedro", "Aisha",
    "Daniel", "Grace", "Samuel", "Nora", "Kenji", "Amara", "Ivan", "Elena", "Tomás", "Leila",
)  # fmt: skip
_LAST_NAMES = (
    "Smith", "Johnson", "García", "Müller", "Núñez", "O'Brien", "Nguyen", "Kim", "Rossi", "Novak",
    "Jensen", "Brown", "Silva", "Kowalski", "Dubois", "Yılmaz", "Patel", "Chen", "Okafor", "Larsen",
    "Schröder", "Martin", "Lopez", "Andersson", "Ivanova", "Tanaka", "Haddad", "Walsh", "Costa",
)  # fmt: skip
_ADJECTIVES = (
    "Silent", "Last", "Broken", "Hidden", "Midnight", "Golden", "Crimson", "Lost", "Final",
    "Endless", "Wild", "Frozen", "Distant", "Secret", "Burning", "Quiet", "Electric", "Hollow",
    "Velvet", "Restless", "Savage", "Little", "Shattered", "Naïve", "Fatal",
)  # fmt: skip
_NOUNS = (
    "Harbor", "Kingdom", "Promise", "Shadow", "River", "Empire", "Garden", "Station", "Witness",
    "Horizon", "Mirror", "Frontier", "Legacy", "Storm", "Orchard", "Signal", "Carnival", "Voyage",
    "Alibi", "Reckoning", "Lullaby", "Labyrinth", "Café", "Señorita", "Château", "Fjord",
)  # fmt: skip
_PLACES = (
    "Paris", "Brooklyn", "Tokyo", "Montréal", "São Paulo", "Berlin", "Nowhere", "Mars", "Córdoba",
    "Reykjavík", "Cairo", "Dublin", "Kraków", "Marrakesh", "the Moon",
)  # fmt: skip
_PEOPLE = ("Amélie", "Zoë", "Hugo", "Maxwell", "Inés", "Oskar", "Rosalind", "Günter", "Mabel", "Théo")


def _title(rng: np.random.Generator) -> str:
    adj = _ADJECTIVES[rng.integers(len(_ADJECTIVES))]
    noun = _NOUNS[rng.integers(len(_NOUNS))]
    noun2 = _NOUNS[rng.integers(len(_NOUNS))]
    place = _PLACES[rng.integers(len(_PLACES))]
    person = _PEOPLE[rng.integers(len(_PEOPLE))]
    template = rng.integers(11)
    if template == 0:
        return f"{noun}, {noun2} and {person}"  # comma: needs CSV quoting
    if template == 1:
        return f"{person}, {adj}"
    if template == 2:
        return f'The "{adj}" {noun}'  # quotes inside a quoted field
    if template == 3:
        return f"{person}'s {noun}"
    if template == 4:
        return f"A {noun} in {place}"
    if template == 5:
        return f"{noun} of the {adj} {noun2}"
    if template == 6:
        return f"{adj} {noun} {rng.integers(2, 5)}"
    if template == 7:
        return f"{adj} {noun}: {noun2} of {place}"
    if template == 8:
        return f"The {adj} {noun}"
    if template == 9:
        return f"{noun}s of {place}"
    return f"{adj} {noun}"


_NO_DECOMPOSITION = str.maketrans({"ı": "i", "ø": "o", "Ø": "O", "ł": "l", "Ł": "L", "ß": "ss", "æ": "ae"})


def _ascii(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text.translate(_NO_DECOMPOSITION))
    folded = folded.encode("ascii", "ignore").decode("ascii")
    return "".join(ch for ch in folded.lower() if ch.isalnum())


def _hex_ids(values: np.ndarray) -> np.ndarray:
    """uint64 array -> 16-character lowercase hex strings, vectorized."""
    digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    shifts = np.arange(60, -4, -4, dtype=np.uint64)
    nibbles = ((values[:, None] >> shifts) & np.uint64(0xF)).astype(np.intp)
    chars = np.ascontiguousarray(digits[nibbles])
    return chars.view("S16").ravel().astype(str)


def _mix64(values: np.ndarray, salt: int) -> np.ndarray:
    """A bijection on uint64 (distinct inputs give distinct outputs) that looks random."""
    x = values.astype(np.uint64) ^ np.uint64(salt & 0xFFFFFFFFFFFFFFFF)
    x = x * np.uint64(0x9E3779B97F4A7C15)
    x ^= x >> np.uint64(31)
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(29)
    return x


def _uuids(rng: np.random.Generator, n: int) -> np.ndarray:
    raw = rng.integers(0, 2**63, size=(n, 2), dtype=np.int64).astype(np.uint64)
    hi = _hex_ids(raw[:, 0])
    lo = _hex_ids(raw[:, 1])
    return np.array(
        [
            f"{a[:8]}-{a[8:12]}-4{a[13:16]}-{'89ab'[int(b[0], 16) % 4]}{b[1:4]}-{b[4:16]}"
            for a, b in zip(hi, lo, strict=True)
        ],
        dtype=object,
    )


def _ipv4(rng: np.random.Generator, n: int) -> np.ndarray:
    first = rng.integers(11, 224, size=n)
    first = np.where(first == 127, 128, first)  # no loopback
    octets = [first, rng.integers(0, 256, size=n), rng.integers(0, 256, size=n), rng.integers(1, 255, size=n)]
    out = octets[0].astype(str).astype(object)
    for o in octets[1:]:
        out = out + "." + o.astype(str).astype(object)
    return out


def _iso(start: datetime, seconds: np.ndarray) -> np.ndarray:
    base = np.datetime64(start.replace(tzinfo=None), "s")
    text = np.datetime_as_string(base + seconds.astype("timedelta64[s]"), unit="s")
    return text.astype(object) + "Z"


def _build_world(config: GeneratorConfig, first_week: date) -> _World:
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 0]))
    n_genres = len(GENRES)
    k = config.n_clusters

    # taste groups: a primary genre (spread over the genres) plus one or two secondary ones
    order = rng.permutation(n_genres)
    cluster_genres: list[list[int]] = []
    for c in range(k):
        core = [int(order[c % n_genres])]
        extra = rng.choice(
            [g for g in range(n_genres) if g != core[0]], size=rng.integers(1, 3), replace=False
        )
        cluster_genres.append(core + [int(g) for g in extra])
    core_mask = np.zeros((k, n_genres), dtype=bool)
    for c, gs in enumerate(cluster_genres):
        core_mask[c, gs] = True

    # catalogue: the initial items, then new_items_per_week per week
    n_initial = config.n_items
    n_total = n_initial + config.weeks * config.new_items_per_week
    added_week = np.concatenate(
        [np.full(n_initial, -1), np.repeat(np.arange(config.weeks), config.new_items_per_week)]
    ).astype(int)
    first_start, _ = week_bounds(first_week)
    added_offset = np.where(
        added_week < 0,
        -rng.integers(86400, 4 * 365 * 86400, size=n_total),
        added_week * _SECONDS_PER_WEEK + rng.integers(0, _SECONDS_PER_WEEK, size=n_total),
    )
    # earlier ids were added earlier
    initial = added_week < 0
    added_offset[initial] = np.sort(added_offset[initial])
    added_at = _iso(first_start, added_offset)
    added_year = np.array([int(s[:4]) for s in added_at])

    home = rng.integers(0, k, size=n_total)
    n_item_genres = rng.choice([1, 2, 3], size=n_total, p=[0.35, 0.45, 0.2])
    genre_sets: list[list[int]] = []
    item_genre_mask = np.zeros((n_total, n_genres), dtype=bool)
    for i in range(n_total):
        chosen: list[int] = []
        favourites = cluster_genres[home[i]]
        for _ in range(n_item_genres[i]):
            pool = favourites if rng.random() < 0.8 else range(n_genres)
            g = int(rng.choice(list(pool)))
            if g not in chosen:
                chosen.append(g)
        chosen.sort()
        genre_sets.append(chosen)
        item_genre_mask[i, chosen] = True
    item_genres = [GENRE_SEPARATOR.join(GENRES[g] for g in gs) for gs in genre_sets]

    overlap = (core_mask.astype(float) @ item_genre_mask.T.astype(float)) / item_genre_mask.sum(axis=1)
    is_home = np.arange(k)[:, None] == home[None, :]
    match = 0.5 * overlap + 0.5 * is_home
    affinity = np.exp(3.5 * overlap + 3.0 * is_home)

    rank = rng.permutation(n_total)
    popularity = 1.0 / np.power(rank + 1.0, config.popularity_exponent)
    quality = rng.normal(0.0, 0.3, size=n_total)
    runtime = np.clip(rng.normal(105, 20, size=n_total), 60, 200).astype(int) * 60
    latest_year = np.minimum(added_year, 2026)
    year = np.where(
        added_week < 0,
        latest_year - np.floor(rng.exponential(12.0, size=n_total)).astype(int),
        latest_year - rng.integers(0, 2, size=n_total),
    )
    year = np.clip(year, 1950, np.maximum(latest_year, 1950))
    titles = [_title(rng) for _ in range(n_total)]

    # users: most signed up before the first week, a share during the generated weeks
    n_users = config.n_users
    n_new = int(round(config.new_user_share * n_users))
    n_old = n_users - n_new
    signup_week = np.concatenate([np.full(n_old, -1), np.sort(rng.integers(0, config.weeks, size=n_new))])
    signup_day = np.where(signup_week >= 0, rng.integers(0, 7, size=n_users), 0)
    old_days = np.sort(rng.integers(1, 4 * 365, size=n_old))[::-1]
    signup_dates = [first_week - timedelta(days=int(d)) for d in old_days] + [
        first_week + timedelta(weeks=int(w), days=int(d))
        for w, d in zip(signup_week[n_old:], signup_day[n_old:], strict=True)
    ]

    primary = rng.integers(0, k, size=n_users)
    second = (primary + rng.integers(1, max(k, 2), size=n_users)) % k
    has_second = (rng.random(n_users) < 0.5) & (k > 1)
    clusters = np.stack([primary, np.where(has_second, second, primary)], axis=1)
    second_weight = np.where(has_second, 0.3, 0.0)
    activity = rng.lognormal(0.0, 0.6, size=n_users)
    activity /= activity.mean()
    bias = rng.normal(0.0, 0.35, size=n_users)
    device = rng.choice(len(CLEAN_DEVICE_TYPES), size=n_users, p=_DEVICE_SHARES)
    device_ids = _uuids(rng, n_users * len(CLEAN_DEVICE_TYPES)).reshape(n_users, len(CLEAN_DEVICE_TYPES))
    home_ip = _ipv4(rng, n_users)
    mobile_ip = _ipv4(rng, n_users)

    user_ids = np.array([f"u{u + 1:06d}" for u in range(n_users)], dtype=object)
    first_names = rng.integers(0, len(_FIRST_NAMES), size=n_users)
    last_names = rng.integers(0, len(_LAST_NAMES), size=n_users)
    email_style = rng.integers(0, 3, size=n_users)
    domains = rng.choice(["example.com", "example.org", "example.net"], size=n_users)
    names, emails = [], []
    for u in range(n_users):
        first, last = _FIRST_NAMES[first_names[u]], _LAST_NAMES[last_names[u]]
        names.append(f"{first} {last}")
        f, la = _ascii(first), _ascii(last)
        local = (f"{f}.{la}{u + 1}", f"{f[0]}{la}{u + 1}", f"{la}.{f}{u + 1}")[email_style[u]]
        emails.append(f"{local}@{domains[u]}")
    ages = np.clip(np.round(rng.gamma(6.0, 5.5, size=n_users) + 8), 13, 80).astype(int)
    genders = rng.choice(["M", "F", "X"], size=n_users, p=[0.48, 0.48, 0.04])
    occupations = rng.choice(OCCUPATIONS, size=n_users)
    zips = rng.integers(501, 99951, size=n_users)
    users_frame = pd.DataFrame(
        {
            "user_id": user_ids,
            "name": names,
            "email": emails,
            "ip_address": home_ip,
            "device_id": device_ids[np.arange(n_users), device],
            "age": ages.astype(str),
            "gender": genders,
            "occupation": occupations,
            "zip_code": [f"{z:05d}" for z in zips],
            "signup_date": [d.isoformat() for d in signup_dates],
        },
        columns=list(RAW_USER_COLUMNS),
    )

    return _World(
        first_week=first_week,
        cluster_genres=cluster_genres,
        item_ids=np.array([str(i + 1) for i in range(n_total)], dtype=object),
        item_title=titles,
        item_genres=item_genres,
        item_year=year,
        item_added_at=added_at,
        item_added_week=added_week,
        item_popularity=popularity,
        item_quality=quality,
        item_runtime=runtime,
        affinity=affinity,
        match=match,
        user_ids=user_ids,
        user_clusters=clusters,
        user_second_weight=second_weight,
        user_signup_week=signup_week,
        user_signup_day=signup_day,
        user_activity=activity,
        user_bias=bias,
        user_device=device,
        user_device_ids=device_ids,
        user_home_ip=home_ip,
        user_mobile_ip=mobile_ip,
        users_frame=users_frame,
    )


World = _World  # public name of the world type, for code that reads it (e.g. recsys.experiments.simulation)


def build_world(config: GeneratorConfig, end_week: date) -> World:
    """The world ``generate(lake, config, end_week)`` samples its weeks from: the same catalogue,
    users, taste groups and popularity. Its week index 0 is the first generated week
    (``end_week`` floored to its Sunday, minus ``config.weeks - 1`` weeks). Read it, do not change it."""
    weeks = weeks_back(week_start_of(end_week), config.weeks)
    return _build_world(config, weeks[0])


GENERATOR_FILE = "generator.json"  # at the lake root: what generate() drew the lake from


def generator_file(lake: Lake) -> Path:
    """``generator.json`` at the lake root: the config and end week of the last ``generate`` into ``lake``."""
    return lake.root / GENERATOR_FILE


def world_of_lake(lake: Lake) -> World:
    """The world the lake's synthetic weeks were drawn from, rebuilt from the lake's ``generator.json``.

    Raises DataNotFoundError when the lake was not written by ``recsys generate`` (no such file)
    and DataReadError when the file cannot be read as a generator record.
    """
    path = generator_file(lake)
    if not path.is_file():
        raise DataNotFoundError(
            f"no {GENERATOR_FILE} in {path.parent}: feedback can only be simulated on a lake written by "
            "`recsys generate`"
        )
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        values, end_week = record["config"], date.fromisoformat(record["end_week"])
        if not isinstance(values, dict):
            raise TypeError("config is not an object")
        config = config_from(values)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, ConfigError) as exc:
        problem = f"missing {exc}" if isinstance(exc, KeyError) else str(exc).splitlines()[0]
        raise DataReadError(
            f"{path} is corrupt ({problem}); run `recsys generate` again to rewrite it"
        ) from None
    return build_world(config, end_week)


# ---- one week of events ------------------------------------------------------------------------


def _sample_from(cdf: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right"), len(cdf) - 1)


def _distinct_moments(
    user: np.ndarray, item: np.ndarray, kind: np.ndarray, seconds: np.ndarray
) -> np.ndarray:
    """Move the rare clean event that repeats another's (user, item, second, type) a second later,
    so that only injected rows look like duplicates."""
    seconds = seconds.copy()
    for _ in range(100):
        key = pd.DataFrame({"u": user, "i": item, "k": kind, "s": seconds})
        repeated = key.duplicated().to_numpy()
        if not repeated.any():
            break
        later = seconds[repeated] < _SECONDS_PER_WEEK - 1
        seconds[repeated] = np.where(later, seconds[repeated] + 1, seconds[repeated] - 1)
    return seconds


def _week_events(
    world: _World, config: GeneratorConfig, index: int, week: date
) -> tuple[pd.DataFrame, dict[str, int]]:
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 1, index]))
    start, end = week_bounds(week)

    # who is active, and how much
    signed_up = world.user_signup_week <= index
    active = signed_up & (
        (rng.random(len(signed_up)) < config.active_share) | (world.user_signup_week == index)
    )
    users = np.flatnonzero(active)
    drifting = config.drift_from is not None and week >= week_start_of(config.drift_from)
    activity = world.user_activity[users]
    if drifting and config.drift_kind == "activity":
        activity = np.where(users % 2 == 0, activity * config.drift_strength, activity)
    counts = np.maximum(1, rng.poisson(config.events_per_user_week * activity))
    ev_user = np.repeat(users, counts)
    n = len(ev_user)

    # which item: taste group x popularity, or popularity alone
    eligible = np.flatnonzero(world.item_added_week < index)
    if drifting and config.drift_kind == "catalogue":
        cut = np.quantile(world.item_popularity[eligible], 0.8)
        eligible = eligible[world.item_popularity[eligible] < cut]
    pop = world.item_popularity[eligible]
    if drifting and config.drift_kind == "popular_genre":
        in_genre = np.array([config.drift_genre in world.item_genres[i].split("|") for i in eligible])
        pop = np.where(in_genre, pop * config.drift_strength * 10, pop)
    use_second = rng.random(n) < world.user_second_weight[ev_user]
    group = np.where(use_second, world.user_clusters[ev_user, 1], world.user_clusters[ev_user, 0])
    by_taste = rng.random(n) < config.taste_strength
    choice = np.empty(n, dtype=np.intp)
    popular = ~by_taste
    choice[popular] = _sample_from(np.cumsum(pop), rng, int(popular.sum()))
    for c in range(config.n_clusters):
        sel = by_taste & (group == c)
        if sel.any():
            cdf = np.cumsum(pop * world.affinity[c, eligible])
            choice[sel] = _sample_from(cdf, rng, int(sel.sum()))
    item = eligible[choice]
    fit = np.maximum(
        world.match[world.user_clusters[ev_user, 0], item], world.match[world.user_clusters[ev_user, 1], item]
    )

    # what kind of event
    p_browse = 0.38 - 0.25 * fit
    p_rating = 0.14 + 0.12 * fit
    r = rng.random(n)
    kind = np.where(r < p_browse, 2, np.where(r < p_browse + p_rating, 1, 0))  # index into EVENT_TYPES
    event_type = np.array(EVENT_TYPES, dtype=object)[kind]

    mean = 1.9 + 2.0 * fit + world.user_bias[ev_user] + world.item_quality[item]
    stars = np.clip(np.round((mean + rng.normal(0.0, 0.6, size=n)) * 2), 1, 10).astype(int)
    rating = np.where(kind == 1, _RATING_TEXT[stars], "").astype(object)

    abandoned = rng.random(n) < (0.45 - 0.3 * fit)
    fraction = np.where(abandoned, rng.uniform(0.02, 0.6, size=n), rng.uniform(0.85, 1.0, size=n))
    watched = np.maximum(30, np.round(world.item_runtime[item] * fraction)).astype(int)
    watch_seconds = np.where(kind == 0, watched.astype(str).astype(object), "")

    # device, ids, address
    own = rng.random(n) < 0.8
    device = np.where(own, world.user_device[ev_user], rng.integers(0, len(CLEAN_DEVICE_TYPES), size=n))
    device_type = np.array(CLEAN_DEVICE_TYPES, dtype=object)[device]
    device_id = world.user_device_ids[ev_user, device]
    mobile = device == CLEAN_DEVICE_TYPES.index("mobile")
    ip = np.where(mobile, world.user_mobile_ip[ev_user], world.user_home_ip[ev_user])

    # when: a weighted day (not before a new user's signup day), an evening-heavy hour
    day_cdf = np.cumsum(DAY_WEIGHTS) / DAY_WEIGHTS.sum()
    day_min = np.where(world.user_signup_week[ev_user] == index, world.user_signup_day[ev_user], 0)
    low = np.concatenate([[0.0], day_cdf])[day_min]
    day = np.minimum(np.searchsorted(day_cdf, low + rng.random(n) * (1 - low), side="right"), 6)
    hour_cdf = np.cumsum(HOUR_WEIGHTS) / HOUR_WEIGHTS.sum()
    hour = np.minimum(np.searchsorted(hour_cdf, rng.random(n), side="right"), 23)
    seconds = day * 86400 + hour * 3600 + rng.integers(0, 3600, size=n)
    seconds = _distinct_moments(ev_user, item, kind, seconds)
    order = np.argsort(seconds, kind="stable")

    salt = config.seed * 1_000_003 + 17
    counter = (np.uint64(index) << np.uint64(40)) + np.arange(n, dtype=np.uint64)
    events = pd.DataFrame(
        {
            "event_id": "e" + _hex_ids(_mix64(counter, salt)).astype(object),
            "user_id": world.user_ids[ev_user],
            "item_id": world.item_ids[item],
            "timestamp": _iso(start, seconds),
            "event_type": event_type,
            "rating": rating,
            "watch_seconds": watch_seconds,
            "device_type": device_type,
            "device_id": device_id,
            "ip_address": ip,
        },
        columns=list(RAW_EVENT_COLUMNS),
    ).iloc[order]
    events = events.reset_index(drop=True)
    events, bad = _inject_bad_rows(events, config, rng, index, start, end, salt, len(world.item_ids))
    return events, bad


def _landed_by(events: pd.DataFrame, through: datetime) -> pd.DataFrame:
    """The events that have happened before ``through`` (unparseable timestamps kept)."""
    moment = pd.Timestamp(through)
    moment = moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")
    ts = pd.to_datetime(events["timestamp"], errors="coerce", utc=True, format="ISO8601")
    return events[ts.isna() | (ts < moment)].reset_index(drop=True)


def _inject_bad_rows(
    events: pd.DataFrame,
    config: GeneratorConfig,
    rng: np.random.Generator,
    index: int,
    start: datetime,
    end: datetime,
    salt: int,
    n_items_total: int,
) -> tuple[pd.DataFrame, dict[str, int]]:
    n_clean = len(events)
    n_bad = min(int(round(config.dirty_fraction * n_clean)), n_clean)
    counts = dict.fromkeys(BAD_ROW_KINDS, 0)
    if n_bad == 0:
        return events, counts
    kinds = rng.permutation(np.arange(n_bad) % len(BAD_ROW_KINDS))
    sources = np.sort(rng.choice(n_clean, size=n_bad, replace=False))
    bad = events.iloc[sources].copy().reset_index(drop=True)
    counter = (np.uint64(index) << np.uint64(40)) + np.uint64(n_clean) + np.arange(n_bad, dtype=np.uint64)
    new_ids = "e" + _hex_ids(_mix64(counter, salt)).astype(object)
    for b, kind_index in enumerate(kinds):
        kind = BAD_ROW_KINDS[kind_index]
        counts[kind] += 1
        if kind != "duplicate_line":
            bad.at[b, "event_id"] = new_ids[b]
        if kind == "missing_user_id":
            bad.at[b, "user_id"] = ""
        elif kind == "rating_out_of_range":
            bad.at[b, "event_type"] = "rating"
            bad.at[b, "rating"] = _BAD_RATINGS[rng.integers(len(_BAD_RATINGS))]
            bad.at[b, "watch_seconds"] = ""
        elif kind == "unknown_event_type":
            bad.at[b, "event_type"] = _BAD_EVENT_TYPES[rng.integers(len(_BAD_EVENT_TYPES))]
        elif kind == "unknown_item_id":
            bad.at[b, "item_id"] = str(n_items_total + 1000 + int(rng.integers(0, 100_000)))
        elif kind == "timestamp_outside_week":
            shift = int(rng.integers(3600, 10 * 86400))
            moment = (
                start - timedelta(seconds=shift) if rng.random() < 0.5 else end + timedelta(seconds=shift)
            )
            bad.at[b, "timestamp"] = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    # each bad row goes right after the line it was made from (retries and clock skew look like that)
    position = np.concatenate([np.arange(n_clean, dtype=float), sources + 0.5])
    merged = pd.concat([events, bad], ignore_index=True).iloc[np.argsort(position, kind="stable")]
    return merged.reset_index(drop=True), counts


# ---- writing -------------------------------------------------------------------------------------


def _items_snapshot(world: _World, index: int) -> pd.DataFrame:
    keep = world.item_added_week <= index
    return pd.DataFrame(
        {
            "item_id": world.item_ids[keep],
            "title": np.array(world.item_title, dtype=object)[keep],
            "genres": np.array(world.item_genres, dtype=object)[keep],
            "release_year": world.item_year[keep].astype(str),
            "added_at": world.item_added_at[keep],
        },
        columns=list(RAW_ITEM_COLUMNS),
    )


def _users_snapshot(world: _World, index: int) -> pd.DataFrame:
    return world.users_frame[world.user_signup_week <= index].reset_index(drop=True)


def generate(
    lake: Lake,
    config: GeneratorConfig,
    end_week: date,
    progress: Callable[[str], None] | None = None,
    through: datetime | None = None,
) -> GenerationResult:
    """Write ``config.weeks`` weeks of raw events, items and users, ending with ``end_week``.

    ``end_week`` may be any day; it is floored to its week's Sunday. Existing files of the same
    weeks are replaced.

    ``through``: the landing time of a week still in progress. Events at or after it have not
    happened yet and are left out of the files (rows whose timestamp does not parse, injected bad
    rows, are kept: they landed). The events written are exactly the ones the complete week holds
    before ``through``, so a later full landing of the week only adds to them.
    """
    end_week = week_start_of(end_week)
    weeks = weeks_back(end_week, config.weeks)
    world = _build_world(config, weeks[0])
    # the world this lake was drawn from, for world_of_lake (not in result.files: not a raw drop)
    write_json(
        generator_file(lake), {"config": config.model_dump(mode="json"), "end_week": end_week.isoformat()}
    )
    rows: dict[str, int] = {}
    files: list[Path] = []
    bad_total = dict.fromkeys(BAD_ROW_KINDS, 0)
    for index, week in enumerate(weeks):
        events, bad = _week_events(world, config, index, week)
        if through is not None:
            events = _landed_by(events, through)
        files.append(write_csv(events, raw_file(lake, "events", week)))
        files.append(write_csv(_items_snapshot(world, index), raw_file(lake, "items", week)))
        files.append(write_csv(_users_snapshot(world, index), raw_file(lake, "users", week)))
        rows[week.isoformat()] = len(events)
        for kind, count in bad.items():
            bad_total[kind] += count
        if progress is not None:
            progress(
                f"week {week.isoformat()}: {len(events)} event lines ({sum(bad.values())} injected bad), "
                f"{int((world.item_added_week <= index).sum())} items, "
                f"{int((world.user_signup_week <= index).sum())} users"
            )
    return GenerationResult(
        weeks=weeks,
        rows_per_week=rows,
        files=files,
        injected_bad_rows=sum(bad_total.values()),
        bad_rows_by_kind=bad_total,
    )


__all__ = [
    "BAD_ROW_KINDS",
    "DAY_WEIGHTS",
    "GENRES",
    "HOUR_WEIGHTS",
    "GenerationResult",
    "GeneratorConfig",
    "World",
    "build_world",
    "config_from",
    "generate",
    "generator_file",
    "world_of_lake",
]
