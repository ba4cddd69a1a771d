"""MovieLens datasets in their native GroupLens formats -> the raw contract, and into the raw lake.

Supported layouts (detected from the files present when ``dataset`` is not given):

========================  =====================================  ===========================================
dataset                   files                                   format
========================  =====================================  ===========================================
``ml-100k``               ``u.data``, ``u.item``, ``u.user``     tab / pipe separated, no header; ``u.item``
                                                                  is latin-1 with 19 genre flags
``ml-1m``                 ``ratings.dat``, ``movies.dat``,       ``::`` separated, no header; ``movies.dat``
                          ``users.dat``                          is latin-1; age and occupation are codes
``ml-latest-small``       ``ratings.csv``, ``movies.csv``        RFC 4180 CSV with a header, UTF-8, CRLF
                          (``tags.csv`` if present)
========================  =====================================  ===========================================

What the raw contract gets (every value is text):

* events: one ``rating`` event per rating line; ``event_id`` is ``ml-<user>-<item>`` (MovieLens has
  one rating per pair), ``timestamp`` is ISO-8601 UTC, ``device_type`` is ``unknown`` and the device,
  address and watch-time fields are empty (MovieLens does not have them).
* items: ``genres`` pipe-joined (``(no genres listed)`` and ml-100k's ``unknown`` flag give an empty
  value), ``release_year`` from the release date or a trailing ``(1995)`` in the title (empty when
  neither has one), ``added_at`` = the time of the item's first rating (MovieLens does not publish
  when a movie entered the catalogue; empty for never-rated movies). ``tags`` (the contract's
  optional column, always written here): ml-latest-small's ``tags.csv`` aggregated per movie, the
  movie's distinct tags lower-cased, stripped, sorted and ``|``-joined (:func:`recsys.core.schemas.join_tags`);
  only the tag text is kept (never who tagged), only for movies in ``movies.csv``. Empty
  for movies without tags, for ml-100k and ml-1m (which have no tags) and when ``tags.csv`` is
  absent.
* users: ml-100k and ml-1m demographics; ml-latest-small has none (one row per rating user, profile
  fields empty). ``signup_date`` = the date of the user's first rating (MovieLens does not publish
  sign-up dates). ml-1m publishes age bands, not ages: ``age`` is an age inside the band (its lower
  bound, 17 for "Under 18"), and occupation codes become their names.

Problems are reported as ``DataNotFoundError`` (no such path / missing files, naming what is
expected) or ``DataReadError`` (naming the file and, where known, the line).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.core.errors import ConfigError, DataNotFoundError, DataReadError
from recsys.core.schemas import (
    GENRE_SEPARATOR,
    OPTIONAL_ITEM_COLUMNS,
    RAW_EVENT_COLUMNS,
    RAW_ITEM_COLUMNS,
    RAW_USER_COLUMNS,
    clean_tag,
    join_tags,
)
from recsys.data.raw import csv_rows, raw_file
from recsys.io.storage import Lake, write_text

DATASETS: tuple[str, ...] = ("ml-100k", "ml-1m", "ml-latest-small")
REQUIRED_FILES: dict[str, tuple[str, ...]] = {
    "ml-100k": ("u.data", "u.item", "u.user"),
    "ml-1m": ("ratings.dat", "movies.dat", "users.dat"),
    "ml-latest-small": ("ratings.csv", "movies.csv"),
}
# Read when present; without them the items simply have no tags.
OPTIONAL_FILES: dict[str, tuple[str, ...]] = {"ml-100k": (), "ml-1m": (), "ml-latest-small": ("tags.csv",)}
# The columns of MovieLensData.items: the raw contract plus its optional ``tags``.
ITEM_COLUMNS: tuple[str, ...] = (*RAW_ITEM_COLUMNS, *OPTIONAL_ITEM_COLUMNS)
TAG_LOG_COLUMNS: tuple[str, ...] = ("item_id", "tag", "seconds")
# The 19 genre flags of ml-100k's u.item, in file order ("unknown" means no genre).
ML100K_GENRES: tuple[str, ...] = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
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
NO_GENRES = ("(no genres listed)", "unknown")
# ml-1m users.dat codes (from the ml-1m README)
ML1M_AGES: dict[str, str] = {
    "1": "17",
    "18": "18",
    "25": "25",
    "35": "35",
    "45": "45",
    "50": "50",
    "56": "56",
}
ML1M_OCCUPATIONS: dict[str, str] = {
    "0": "other",
    "1": "academic/educator",
    "2": "artist",
    "3": "clerical/admin",
    "4": "college/grad student",
    "5": "customer service",
    "6": "doctor/health care",
    "7": "executive/managerial",
    "8": "farmer",
    "9": "homemaker",
    "10": "K-12 student",
    "11": "lawyer",
    "12": "programmer",
    "13": "retired",
    "14": "sales/marketing",
    "15": "scientist",
    "16": "self-employed",
    "17": "technician/engineer",
    "18": "tradesman/craftsman",
    "19": "unemployed",
    "20": "writer",
}
_EPOCH_SUNDAY = date(1970, 1, 4)
_EPOCH_SUNDAY_SECONDS = 3 * 86400
_SECONDS_PER_WEEK = 7 * 86400
_TITLE_YEAR = re.compile(r"\((\d{4})\)\s*$")
_DATE_YEAR = re.compile(r"(\d{4})\s*$")
_INTEGER = re.compile(r"\d+")


def _no_tags() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": pd.Series([], dtype=object),
            "tag": pd.Series([], dtype=object),
            "seconds": pd.Series([], dtype=np.int64),
        }
    )


@dataclass
class MovieLensData:
    """A MovieLens dataset in the raw contract: every column text, exactly RAW_*_COLUMNS in order
    (items: ``ITEM_COLUMNS``, the contract's columns then the optional ``tags``).

    ``tag_log``: each tag application (item_id text, cleaned tag, Unix seconds), without who applied
    it, in file order; what ``items["tags"]`` aggregates, and what landing uses to give each week's
    catalogue the tags applied before the week's end. Empty for a dataset without tags.
    """

    dataset: str
    path: Path
    events: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    tag_log: pd.DataFrame = field(default_factory=_no_tags)

    def counts(self) -> dict[str, int]:
        return {"events": len(self.events), "items": len(self.items), "users": len(self.users)}


# ---- locating the files ----------------------------------------------------------------------


def _has_files(folder: Path, dataset: str) -> bool:
    return all((folder / name).is_file() for name in REQUIRED_FILES[dataset])


def _expected() -> str:
    return "; ".join(f"{name}: {', '.join(files)}" for name, files in REQUIRED_FILES.items())


def resolve_dataset(path: Path, dataset: str | None = None) -> tuple[Path, str]:
    """The folder holding the dataset's files, and the dataset's name.

    ``path`` may be the dataset folder itself, a file in it, or (with ``dataset`` given) a parent
    such as ``.../movielens`` or the shared data directory.
    """
    if dataset is not None and dataset not in DATASETS:
        raise ConfigError(f"unknown MovieLens dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    path = Path(path).expanduser()
    if not path.exists():
        wanted = dataset or "a MovieLens dataset"
        raise DataNotFoundError(
            f"{path} does not exist: expected a folder with {wanted} files "
            f"({', '.join(REQUIRED_FILES[dataset]) if dataset else _expected()})"
        )
    folder = path.parent if path.is_file() else path
    if dataset is not None:
        for candidate in (folder, folder / dataset, folder / "movielens" / dataset):
            if _has_files(candidate, dataset):
                return candidate, dataset
        missing = [name for name in REQUIRED_FILES[dataset] if not (folder / name).is_file()]
        raise DataNotFoundError(
            f"{folder} does not hold {dataset}: missing {', '.join(missing)} "
            f"(expected {', '.join(REQUIRED_FILES[dataset])})"
        )
    for name in DATASETS:
        if _has_files(folder, name):
            return folder, name
    partial = [name for name in DATASETS if any((folder / f).is_file() for f in REQUIRED_FILES[name])]
    if partial:
        name = partial[0]
        missing = [f for f in REQUIRED_FILES[name] if not (folder / f).is_file()]
        raise DataNotFoundError(
            f"{folder} looks like {name} but lacks {', '.join(missing)} "
            f"(expected {', '.join(REQUIRED_FILES[name])})"
        )
    raise DataNotFoundError(
        f"no MovieLens dataset found in {folder}: expected the files of one of {_expected()}"
    )


# ---- reading files ---------------------------------------------------------------------------


def _read_text(file: Path, encoding: str) -> str:
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise DataReadError(f"{file}: cannot read ({exc.strerror or exc})") from None
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataReadError(
            f"{file}, line {line}: not valid {encoding} text (byte 0x{data[exc.start]:02x}); "
            "is this the original GroupLens file?"
        ) from None


def _parse(
    file: Path,
    text: str,
    sep: str,
    n_fields: int,
    *,
    header: tuple[str, ...] | None = None,
    quoting: int = csv.QUOTE_NONE,
) -> tuple[pd.DataFrame, int]:
    """Parse delimited ``text`` into ``n_fields`` text columns; returns the frame and the line number
    of its first row (rows keep their physical line: row index + first line)."""
    if not text.strip():
        raise DataReadError(f"{file}: the file is empty")
    try:
        df = pd.read_csv(
            io.StringIO(text),
            sep=sep,
            header=0 if header else None,
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            skip_blank_lines=False,
            quoting=quoting,
            engine="c",
        )
    except (pd.errors.ParserError, csv.Error, ValueError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise DataReadError(f"{file}: cannot parse ({message})") from None
    first_line = 2 if header else 1
    if header:
        found = tuple(str(c).strip() for c in df.columns)
        if found[: len(header)] != header:
            raise DataReadError(
                f"{file}, line 1: unexpected header {','.join(found)!r}; expected {','.join(header)!r}"
            )
    if df.shape[1] != n_fields:
        raise DataReadError(
            f"{file}, line {first_line}: {df.shape[1]} fields separated by {sep!r}, expected {n_fields}"
        )
    df.columns = range(n_fields)
    # blank lines (e.g. a trailing one) carry no data
    blank = np.logical_and.reduce([df[c].eq("").to_numpy() for c in df.columns])
    if blank.any():
        df = df[~blank]
    return df, first_line


def _read_double_colon(file: Path, n_fields: int, encoding: str) -> tuple[pd.DataFrame, int]:
    text = _read_text(file, encoding)
    if "\x1f" in text:
        raise DataReadError(f"{file}: unexpected control character 0x1f")
    return _parse(file, text.replace("::", "\x1f"), "\x1f", n_fields)


def _line_of(df: pd.DataFrame, position: int, first_line: int) -> int:
    return int(df.index[position]) + first_line


def _integers(df: pd.DataFrame, col: int, name: str, file: Path, first_line: int) -> pd.Series:
    values = df[col].str.strip()
    ok = values.str.fullmatch(_INTEGER.pattern).to_numpy(dtype=bool)
    if not ok.all():
        bad = int(np.flatnonzero(~ok)[0])
        raise DataReadError(
            f"{file}, line {_line_of(df, bad, first_line)}: {name} {values.iloc[bad]!r} is not a whole number"
        )
    return values


def _canonical_ids(values: pd.Series) -> pd.Series:
    return values.astype(np.int64).astype(str)


def _ratings(df: pd.DataFrame, col: int, file: Path, first_line: int) -> pd.Series:
    numbers = pd.to_numeric(df[col].str.strip(), errors="coerce").to_numpy(dtype=float)
    ok = np.isfinite(numbers) & (numbers >= 0.5) & (numbers <= 5.0) & (np.round(numbers * 2) == numbers * 2)
    if not ok.all():
        bad = int(np.flatnonzero(~ok)[0])
        raise DataReadError(
            f"{file}, line {_line_of(df, bad, first_line)}: rating {df[col].iloc[bad]!r} is not "
            "0.5 .. 5.0 in half steps"
        )
    text = np.array([f"{v / 2:.1f}" for v in range(11)], dtype=object)
    return pd.Series(text[np.round(numbers * 2).astype(int)], index=df.index)


def _iso_utc(seconds: np.ndarray) -> np.ndarray:
    text = np.datetime_as_string(seconds.astype("datetime64[s]"), unit="s")
    return text.astype(object) + "Z"


def _events(user: pd.Series, item: pd.Series, rating: pd.Series, seconds: np.ndarray) -> pd.DataFrame:
    n = len(user)
    user = user.to_numpy(dtype=object)
    item = item.to_numpy(dtype=object)
    empty = np.full(n, "", dtype=object)
    return pd.DataFrame(
        {
            "event_id": "ml-" + user + "-" + item,
            "user_id": user,
            "item_id": item,
            "timestamp": _iso_utc(seconds),
            "event_type": np.full(n, "rating", dtype=object),
            "rating": rating.to_numpy(dtype=object),
            "watch_seconds": empty,
            "device_type": np.full(n, "unknown", dtype=object),
            "device_id": empty,
            "ip_address": empty,
        },
        columns=list(RAW_EVENT_COLUMNS),
    )


def _read_ratings(
    file: Path, sep: str, encoding: str, header: tuple[str, ...] | None
) -> tuple[pd.DataFrame, np.ndarray]:
    """Rating lines -> raw events, and each event's Unix seconds."""
    if sep == "::":
        df, first = _read_double_colon(file, 4, encoding)
    else:
        df, first = _parse(
            file,
            _read_text(file, encoding),
            sep,
            4,
            header=header,
            quoting=csv.QUOTE_MINIMAL if header else csv.QUOTE_NONE,
        )
    user = _canonical_ids(_integers(df, 0, "user id", file, first))
    item = _canonical_ids(_integers(df, 1, "movie id", file, first))
    rating = _ratings(df, 2, file, first)
    seconds = _integers(df, 3, "timestamp", file, first).astype(np.int64).to_numpy()
    return _events(user, item, rating, seconds), seconds


def _clean_text(values: pd.Series) -> pd.Series:
    return values.str.replace(r"[\r\n]+", " ", regex=True).str.strip()


def _year(primary: pd.Series | None, title: pd.Series) -> pd.Series:
    from_title = title.str.extract(_TITLE_YEAR, expand=False).fillna("")
    if primary is None:
        return from_title
    from_date = primary.str.extract(_DATE_YEAR, expand=False).fillna("")
    return from_date.where(from_date != "", from_title)


def _split_genres(values: pd.Series) -> pd.Series:
    def clean(text: str) -> str:
        parts = [g.strip() for g in text.split("|") if g.strip() and g.strip() not in NO_GENRES]
        return GENRE_SEPARATOR.join(parts)

    return values.map(clean)


def _items_frame(item_id: pd.Series, title: pd.Series, genres: pd.Series, year: pd.Series) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": item_id.to_numpy(dtype=object),
            "title": title.to_numpy(dtype=object),
            "genres": genres.to_numpy(dtype=object),
            "release_year": year.to_numpy(dtype=object),
            "added_at": np.full(len(item_id), "", dtype=object),
            "tags": np.full(len(item_id), "", dtype=object),
        },
        columns=list(ITEM_COLUMNS),
    )


def _users_frame(user_id: pd.Series, **columns: pd.Series) -> pd.DataFrame:
    n = len(user_id)
    data = {name: np.full(n, "", dtype=object) for name in RAW_USER_COLUMNS}
    data["user_id"] = user_id.to_numpy(dtype=object)
    for name, values in columns.items():
        data[name] = values.to_numpy(dtype=object)
    return pd.DataFrame(data, columns=list(RAW_USER_COLUMNS))


_Loaded = tuple[pd.DataFrame, np.ndarray, pd.DataFrame, pd.DataFrame]  # events, seconds, items, users


def _load_100k(folder: Path) -> _Loaded:
    events, seconds = _read_ratings(folder / "u.data", "\t", "latin-1", None)

    file = folder / "u.item"
    df, first = _parse(file, _read_text(file, "latin-1"), "|", 5 + len(ML100K_GENRES))
    item_id = _canonical_ids(_integers(df, 0, "movie id", file, first))
    flags = df[list(range(5, 5 + len(ML100K_GENRES)))].apply(lambda s: s.str.strip())
    ok = flags.isin(["0", "1"]).to_numpy()
    if not ok.all():
        row, col = (int(v[0]) for v in np.nonzero(~ok))
        raise DataReadError(
            f"{file}, line {_line_of(df, row, first)}: genre flag {ML100K_GENRES[col]!r} is "
            f"{flags.iat[row, col]!r}, expected 0 or 1"
        )
    names = np.array(ML100K_GENRES, dtype=object)
    on = flags.eq("1").to_numpy() & (names != "unknown")
    genres = pd.Series([GENRE_SEPARATOR.join(names[mask]) for mask in on], index=df.index)
    title = _clean_text(df[1])
    items = _items_frame(item_id, title, genres, _year(df[2], title))

    file = folder / "u.user"
    df, first = _parse(file, _read_text(file, "latin-1"), "|", 5)
    user_id = _canonical_ids(_integers(df, 0, "user id", file, first))
    age = _integers(df, 1, "age", file, first).astype(np.int64).astype(str)
    users = _users_frame(
        user_id,
        age=age,
        gender=df[2].str.strip(),
        occupation=df[3].str.strip(),
        zip_code=df[4].str.strip(),
    )
    return events, seconds, items, users


def _load_1m(folder: Path) -> _Loaded:
    events, seconds = _read_ratings(folder / "ratings.dat", "::", "latin-1", None)

    file = folder / "movies.dat"
    df, first = _read_double_colon(file, 3, "latin-1")
    item_id = _canonical_ids(_integers(df, 0, "movie id", file, first))
    title = _clean_text(df[1])
    items = _items_frame(item_id, title, _split_genres(df[2]), _year(None, title))

    file = folder / "users.dat"
    df, first = _read_double_colon(file, 5, "latin-1")
    user_id = _canonical_ids(_integers(df, 0, "user id", file, first))
    codes = {"age": (2, ML1M_AGES), "occupation": (3, ML1M_OCCUPATIONS)}
    mapped: dict[str, pd.Series] = {}
    for name, (col, table) in codes.items():
        raw = df[col].str.strip()
        known = raw.isin(list(table)).to_numpy()
        if not known.all():
            bad = int(np.flatnonzero(~known)[0])
            raise DataReadError(
                f"{file}, line {_line_of(df, bad, first)}: {name} code {raw.iloc[bad]!r} is not one of "
                f"{', '.join(table)}"
            )
        mapped[name] = raw.map(table)
    users = _users_frame(user_id, gender=df[1].str.strip(), zip_code=df[4].str.strip(), **mapped)
    return events, seconds, items, users


def _load_latest(folder: Path) -> _Loaded:
    events, seconds = _read_ratings(
        folder / "ratings.csv", ",", "utf-8-sig", ("userId", "movieId", "rating", "timestamp")
    )
    file = folder / "movies.csv"
    df, first = _parse(
        file,
        _read_text(file, "utf-8-sig"),
        ",",
        3,
        header=("movieId", "title", "genres"),
        quoting=csv.QUOTE_MINIMAL,
    )
    item_id = _canonical_ids(_integers(df, 0, "movie id", file, first))
    title = _clean_text(df[1])
    items = _items_frame(item_id, title, _split_genres(df[2]), _year(None, title))

    ids = np.unique(events["user_id"].astype(np.int64).to_numpy())
    users = _users_frame(pd.Series(ids.astype(str)))
    return events, seconds, items, users


_LOADERS = {"ml-100k": _load_100k, "ml-1m": _load_1m, "ml-latest-small": _load_latest}
TAGS_HEADER = ("userId", "movieId", "tag", "timestamp")


def _read_tags(file: Path, item_ids: pd.Series) -> pd.DataFrame:
    """ml-latest-small's ``tags.csv`` -> the tag log (item_id, tag, seconds), user ids dropped.

    Every line must have a whole-number user id, movie id and timestamp (the file's format, as in
    ``ratings.csv``); tags of movies not in the catalogue and tags empty after cleaning are left
    out. A missing file means no tags.
    """
    if not file.is_file():
        return _no_tags()
    df, first = _parse(
        file, _read_text(file, "utf-8-sig"), ",", 4, header=TAGS_HEADER, quoting=csv.QUOTE_MINIMAL
    )
    _integers(df, 0, "user id", file, first)  # checked for the format's sake, then dropped
    item = _canonical_ids(_integers(df, 1, "movie id", file, first))
    seconds = _integers(df, 3, "timestamp", file, first).astype(np.int64)
    tag = df[2].map(clean_tag)
    keep = (item.isin(item_ids) & tag.ne("")).to_numpy()
    return pd.DataFrame(
        {
            "item_id": item[keep].to_numpy(dtype=object),
            "tag": tag[keep].to_numpy(dtype=object),
            "seconds": seconds[keep].to_numpy(dtype=np.int64),
        },
        columns=list(TAG_LOG_COLUMNS),
    )


def _item_tags(item_ids: pd.Series, tag_log: pd.DataFrame) -> np.ndarray:
    """Each item's ``tags`` value from the tag log (``""`` for an item without tags)."""
    out = np.full(len(item_ids), "", dtype=object)
    if tag_log.empty:
        return out
    joined = tag_log.groupby("item_id", sort=False)["tag"].agg(join_tags)
    found = item_ids.map(joined)
    tagged = found.notna().to_numpy()
    out[tagged] = found[tagged].to_numpy(dtype=object)
    return out


def _first_seen(events: pd.DataFrame, key: str, seconds: np.ndarray) -> pd.Series:
    """Earliest event second per value of ``key``."""
    return pd.Series(seconds, index=events.index).groupby(events[key].to_numpy()).min()


def load_movielens(path: Path, dataset: str | None = None) -> MovieLensData:
    """Read a MovieLens dataset into the raw contract (see the module doc)."""
    folder, name = resolve_dataset(Path(path), dataset)
    events, seconds, items, users = _LOADERS[name](folder)
    tag_log = _no_tags()
    if "tags.csv" in OPTIONAL_FILES[name]:
        tag_log = _read_tags(folder / "tags.csv", items["item_id"])
    items["tags"] = _item_tags(items["item_id"], tag_log)

    first_item = _first_seen(events, "item_id", seconds)
    added = items["item_id"].map(first_item)
    rated = added.notna().to_numpy()
    added_at = np.full(len(items), "", dtype=object)
    added_at[rated] = _iso_utc(added[rated].astype(np.int64).to_numpy())
    items["added_at"] = added_at

    first_user = _first_seen(events, "user_id", seconds)
    signup = users["user_id"].map(first_user)
    seen = signup.notna().to_numpy()
    signup_date = np.full(len(users), "", dtype=object)
    signup_date[seen] = np.datetime_as_string(
        signup[seen].astype(np.int64).to_numpy().astype("datetime64[s]"), unit="D"
    )
    users["signup_date"] = signup_date

    items = items.sort_values("item_id", key=lambda s: s.astype(np.int64), kind="stable").reset_index(
        drop=True
    )
    users = users.sort_values("user_id", key=lambda s: s.astype(np.int64), kind="stable").reset_index(
        drop=True
    )
    return MovieLensData(dataset=name, path=folder, events=events, items=items, users=users, tag_log=tag_log)


# ---- landing into the lake -------------------------------------------------------------------


def _seconds_of(iso: pd.Series) -> np.ndarray:
    return iso.str.removesuffix("Z").to_numpy(dtype="datetime64[s]").astype(np.int64)


def _week_index(seconds: np.ndarray) -> np.ndarray:
    return (seconds - _EPOCH_SUNDAY_SECONDS) // _SECONDS_PER_WEEK


def _week_date(index: int) -> date:
    return _EPOCH_SUNDAY + timedelta(weeks=int(index))


class _TagsUntil:
    """Each item's tags as of a moment, for the weekly snapshots: tag applications are taken in time
    order, and only the CSV lines of items whose tags changed are rewritten."""

    def __init__(self, items: pd.DataFrame, tag_log: pd.DataFrame) -> None:
        self.items = items
        order = np.argsort(tag_log["seconds"].to_numpy(dtype=np.int64), kind="stable")
        self.seconds = tag_log["seconds"].to_numpy(dtype=np.int64)[order]
        self.position = pd.Index(items["item_id"]).get_indexer(tag_log["item_id"])[order]
        self.tags = tag_log["tag"].to_numpy(dtype=object)[order]
        self.applied = 0  # tag applications taken so far
        self.current: dict[int, set[str]] = {}

    def update(self, lines: np.ndarray, before_seconds: int) -> None:
        """Take the tag applications before ``before_seconds``; rewrite the changed items' ``lines``."""
        upto = int(np.searchsorted(self.seconds, before_seconds, side="left"))
        if upto <= self.applied:
            return
        for position, tag in zip(
            self.position[self.applied : upto], self.tags[self.applied : upto], strict=True
        ):
            self.current.setdefault(int(position), set()).add(tag)
        changed = np.unique(self.position[self.applied : upto])
        self.applied = upto
        rows = self.items.iloc[changed].assign(tags=[join_tags(self.current[int(p)]) for p in changed])
        lines[changed] = csv_rows(rows)[1]


def land_movielens(
    lake: Lake,
    path: Path,
    dataset: str | None = None,
    progress: Callable[[str], None] | None = None,
    *,
    last_weeks: int | None = None,
) -> list[date]:
    """Split a MovieLens dataset into weekly raw partitions (by rating time, weeks start Sunday UTC).

    Each week with ratings gets ``events.csv`` (its ratings, in time order) plus ``items.csv`` and
    ``users.csv`` snapshots as of the week's end (items first rated / users first seen before then,
    and never-rated items; each item's ``tags`` are those applied before then, so a week's catalogue
    holds no tag from its future). ``last_weeks`` lands only the most recent weeks that have ratings (the
    full ml-latest-small spans 1,084 weeks). Returns the weeks written, oldest first.
    """
    if last_weeks is not None and last_weeks < 1:
        raise ConfigError(f"last_weeks must be at least 1, got {last_weeks}")
    data = load_movielens(path, dataset)
    if progress is not None:
        counts = data.counts()
        progress(
            f"read {data.dataset} from {data.path}: {counts['events']} ratings, {counts['items']} items, "
            f"{counts['users']} users"
        )
    if data.events.empty:
        raise DataReadError(f"{data.path}: the dataset has no ratings")

    seconds = _seconds_of(data.events["timestamp"])
    order = np.argsort(seconds, kind="stable")
    seconds = seconds[order]
    week_of_event = _week_index(seconds)
    week_indices, starts = np.unique(week_of_event, return_index=True)
    ends = np.append(starts[1:], len(seconds))
    if last_weeks is not None:
        week_indices, starts, ends = week_indices[-last_weeks:], starts[-last_weeks:], ends[-last_weeks:]

    event_header, event_lines = csv_rows(data.events.iloc[order])
    # every item without tags first; an item's line is rewritten when a week brings it new tags
    item_header, item_lines = csv_rows(data.items.assign(tags=""))
    tags_until = _TagsUntil(data.items, data.tag_log)
    user_header, user_lines = csv_rows(data.users)
    added = data.items["added_at"]
    item_undated = added.eq("").to_numpy()
    item_seconds = np.zeros(len(added), dtype=np.int64)
    item_seconds[~item_undated] = _seconds_of(added[~item_undated])
    signup = data.users["signup_date"]
    user_undated = signup.eq("").to_numpy()
    user_days = np.zeros(len(signup), dtype=np.int64)
    user_days[~user_undated] = signup[~user_undated].to_numpy(dtype="datetime64[D]").astype(np.int64)

    def text(header: str, lines: np.ndarray) -> str:
        return "\n".join([header, *lines.tolist()]) + "\n"

    weeks: list[date] = []
    step = max(1, len(week_indices) // 20)
    for n, (index, start, end) in enumerate(zip(week_indices, starts, ends, strict=True)):
        week = _week_date(int(index))
        week_end_seconds = int(index + 1) * _SECONDS_PER_WEEK + _EPOCH_SUNDAY_SECONDS
        week_end_day = week_end_seconds // 86400
        items_now = item_undated | (item_seconds < week_end_seconds)
        users_now = user_undated | (user_days < week_end_day)
        tags_until.update(item_lines, week_end_seconds)
        write_text(text(event_header, event_lines[start:end]), raw_file(lake, "events", week))
        write_text(text(item_header, item_lines[items_now]), raw_file(lake, "items", week))
        write_text(text(user_header, user_lines[users_now]), raw_file(lake, "users", week))
        weeks.append(week)
        if progress is not None and (n % step == 0 or n == len(week_indices) - 1):
            progress(
                f"[{n + 1}/{len(week_indices)}] week {week.isoformat()}: {end - start} ratings, "
                f"{int(items_now.sum())} items, {int(users_now.sum())} users"
            )
    return weeks


__all__ = [
    "DATASETS",
    "REQUIRED_FILES",
    "MovieLensData",
    "land_movielens",
    "load_movielens",
    "resolve_dataset",
]
