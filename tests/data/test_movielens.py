"""MovieLens loaders (native formats -> raw contract) and landing into weekly raw partitions."""

from __future__ import annotations

import csv
import os
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from recsys.core.errors import ConfigError, DataNotFoundError, DataReadError, RecsysError
from recsys.core.intervals import week_bounds, week_start_of
from recsys.core.schemas import OPTIONAL_ITEM_COLUMNS, RAW_EVENT_COLUMNS, RAW_ITEM_COLUMNS, RAW_USER_COLUMNS
from recsys.data.movielens import ITEM_COLUMNS, MovieLensData, land_movielens, load_movielens
from recsys.io.storage import Lake

ISO_SECONDS = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z"


def movielens_dir() -> Path:
    """The shared MovieLens folder: $RECSYS_DATA_DIR (or its movielens/), else ../shared/data/movielens."""
    configured = os.environ.get("RECSYS_DATA_DIR")
    root = Path(configured) if configured else Path(__file__).resolve().parents[3] / "shared" / "data"
    for candidate in (root / "movielens", root):
        if (candidate / "ml-100k" / "u.data").is_file() and (
            candidate / "ml-latest-small" / "ratings.csv"
        ).is_file():
            return candidate
    pytest.fail(
        f"MovieLens data not found under {root} (looked for movielens/ml-100k/u.data and "
        "movielens/ml-latest-small/ratings.csv); set RECSYS_DATA_DIR to the shared data directory"
    )


@pytest.fixture(scope="module")
def ml100k() -> MovieLensData:
    return load_movielens(movielens_dir() / "ml-100k")


@pytest.fixture(scope="module")
def latest() -> MovieLensData:
    return load_movielens(movielens_dir() / "ml-latest-small")


def assert_raw_contract(data: MovieLensData) -> None:
    for frame, columns in (
        (data.events, RAW_EVENT_COLUMNS),
        (data.items, (*RAW_ITEM_COLUMNS, "tags")),  # the contract's optional tags, always written
        (data.users, RAW_USER_COLUMNS),
    ):
        assert tuple(frame.columns) == columns
        for column in frame.columns:
            assert frame[column].map(type).eq(str).all(), f"{column} is not all text"
    events = data.events
    assert events["event_id"].is_unique
    assert events["timestamp"].str.fullmatch(ISO_SECONDS).all()
    assert events["event_type"].eq("rating").all() and events["device_type"].eq("unknown").all()
    for column in ("watch_seconds", "device_id", "ip_address"):
        assert events[column].eq("").all()
    assert events["item_id"].isin(data.items["item_id"]).all()
    assert events["user_id"].isin(data.users["user_id"]).all()
    assert data.items["item_id"].is_unique and data.users["user_id"].is_unique


# ---- ml-100k ----------------------------------------------------------------------------------


def test_ml100k_counts_and_contract(ml100k: MovieLensData) -> None:
    assert ml100k.dataset == "ml-100k"
    assert ml100k.counts() == {"events": 100_000, "items": 1_682, "users": 943}
    assert_raw_contract(ml100k)
    histogram = ml100k.events["rating"].value_counts().sort_index()
    assert histogram.to_dict() == {"1.0": 6110, "2.0": 11370, "3.0": 27145, "4.0": 34174, "5.0": 21201}
    first = ml100k.events.iloc[0]  # u.data line 1: 196 242 3 881250949
    assert (first["event_id"], first["user_id"], first["item_id"], first["rating"], first["timestamp"]) == (
        "ml-196-242",
        "196",
        "242",
        "3.0",
        "1997-12-04T15:55:49Z",
    )


def test_ml100k_items_decode_latin1_and_flags(ml100k: MovieLensData) -> None:
    items = ml100k.items.set_index("item_id")
    assert items.loc["543", "title"] == "Misérables, Les (1995)"
    assert items["title"].str.contains("Misérables").sum() == 1
    assert items.loc["1", "genres"] == "Animation|Children's|Comedy"
    assert items.loc["1", "release_year"] == "1995"
    assert items.loc["267", "title"] == "unknown"
    assert items.loc["267", "release_year"] == "" and items.loc["267", "genres"] == ""
    assert not items["genres"].str.contains("unknown").any()
    assert items["added_at"].str.fullmatch(ISO_SECONDS).all()  # every ml-100k movie is rated


def test_ml100k_users(ml100k: MovieLensData) -> None:
    users = ml100k.users.set_index("user_id")
    assert users.loc["1", ["age", "gender", "occupation", "zip_code"]].tolist() == [
        "24",
        "M",
        "technician",
        "85711",
    ]
    assert users["zip_code"].str.len().eq(5).all()
    assert users["zip_code"].eq("T8H1N").any()  # Canadian codes stay text
    assert set(users["gender"]) == {"M", "F"}
    assert users[["name", "email", "ip_address", "device_id"]].eq("").all().all()
    assert users["signup_date"].str.fullmatch(r"\d{4}-\d{2}-\d{2}").all()


# ---- ml-latest-small --------------------------------------------------------------------------


def test_latest_small_counts_and_contract(latest: MovieLensData) -> None:
    assert latest.dataset == "ml-latest-small"
    assert latest.counts() == {"events": 100_836, "items": 9_742, "users": 610}
    assert_raw_contract(latest)
    assert set(latest.events["rating"]) == {f"{v / 2:.1f}" for v in range(1, 11)}
    assert latest.events["rating"].eq("4.0").sum() == 26818


def test_latest_small_quoting_and_line_ends(latest: MovieLensData) -> None:
    items = latest.items.set_index("item_id")
    assert items.loc["11", "title"] == "American President, The (1995)"
    assert items.loc["11", "genres"] == "Comedy|Drama|Romance"
    assert items.loc["11", "release_year"] == "1995"
    assert items.loc["73", "title"] == "Misérables, Les (1995)"
    assert items["genres"].eq("").sum() == 34  # "(no genres listed)"
    assert not items["genres"].str.contains("no genres").any()
    for frame in (latest.events, latest.items, latest.users):
        for column in frame.columns:
            assert not frame[column].str.contains("\r", regex=False).any(), column
    # no user file: one row per rating user, profile fields empty
    profile = [c for c in RAW_USER_COLUMNS if c not in ("user_id", "signup_date")]
    assert latest.users[profile].eq("").all().all()
    # never-rated movies have no added_at
    assert latest.items["added_at"].eq("").sum() == 9_742 - latest.events["item_id"].nunique()


def test_detects_dataset_and_accepts_parent_folder(tmp_path: Path) -> None:
    base = movielens_dir()
    data = load_movielens(base, "ml-100k")
    assert data.dataset == "ml-100k" and data.path == base / "ml-100k"
    with pytest.raises(DataNotFoundError, match="no MovieLens dataset found"):
        load_movielens(base)  # the parent holds no dataset files itself


# ---- ml-1m (tiny files in the GroupLens format) -----------------------------------------------

ML1M_RATINGS = """1::1193::5::978300760
1::661::3::978302109
2::1193::4::978298413
2::3408::4::978299000
3::661::1::978200000
"""
ML1M_MOVIES = """1193::One Flew Over the Cuckoo's Nest (1975)::Drama
661::James and the Giant Peach (1996)::Animation|Children's|Musical
3408::Misérables, Les (1998)::Drama|Musical
99::Untitled Project::
"""
ML1M_USERS = """1::F::1::10::48067
2::M::56::16::70072
3::M::25::0::02139
"""


def write_ml1m(
    folder: Path, ratings: str = ML1M_RATINGS, movies: str = ML1M_MOVIES, users: str = ML1M_USERS
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.dat").write_bytes(ratings.encode("latin-1"))
    (folder / "movies.dat").write_bytes(movies.encode("latin-1"))
    (folder / "users.dat").write_bytes(users.encode("latin-1"))
    return folder


def test_ml1m_from_tiny_files(tmp_path: Path) -> None:
    data = load_movielens(write_ml1m(tmp_path / "ml-1m"))
    assert data.dataset == "ml-1m"
    assert data.counts() == {"events": 5, "items": 4, "users": 3}
    assert_raw_contract(data)
    assert data.events["event_id"].iloc[0] == "ml-1-1193"
    assert data.events["timestamp"].iloc[0] == "2000-12-31T22:12:40Z"
    items = data.items.set_index("item_id")
    assert items.loc["3408", "title"] == "Misérables, Les (1998)"
    assert items.loc["3408", "release_year"] == "1998"
    assert items.loc["661", "genres"] == "Animation|Children's|Musical"
    assert items.loc["99", ["genres", "release_year", "added_at"]].tolist() == ["", "", ""]
    users = data.users.set_index("user_id")
    assert users.loc["1", ["gender", "age", "occupation", "zip_code"]].tolist() == [
        "F",
        "17",
        "K-12 student",
        "48067",
    ]
    assert users.loc["2", ["age", "occupation"]].tolist() == ["56", "self-employed"]
    assert users.loc["3", ["occupation", "zip_code"]].tolist() == ["other", "02139"]
    assert users.loc["3", "signup_date"] == "2000-12-30"


# ---- errors -------------------------------------------------------------------------------------


def test_missing_path_names_path_and_expected_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(DataNotFoundError) as info:
        load_movielens(missing)
    assert (
        str(missing) in str(info.value) and "u.data" in str(info.value) and "ratings.csv" in str(info.value)
    )
    with pytest.raises(DataNotFoundError, match="ratings.dat"):
        load_movielens(missing, "ml-1m")


def test_folder_without_the_files(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="no MovieLens dataset found"):
        load_movielens(tmp_path)
    (tmp_path / "u.data").write_text("1\t2\t3\t881250949\n")
    with pytest.raises(DataNotFoundError, match=r"ml-100k but lacks u\.item, u\.user"):
        load_movielens(tmp_path)
    with pytest.raises(
        DataNotFoundError, match=r"does not hold ml-latest-small: missing ratings\.csv, movies\.csv"
    ):
        load_movielens(tmp_path, "ml-latest-small")


def test_unknown_dataset_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ml-10m"):
        load_movielens(tmp_path, "ml-10m")


@pytest.mark.parametrize(
    ("file", "content", "message"),
    [
        (
            "ratings.dat",
            "1::1193::5::978300760\n1::1193::x::978300760\n",
            r"ratings\.dat, line 2: rating 'x'",
        ),
        ("ratings.dat", "1::1193::9::978300760\n", r"ratings\.dat, line 1: rating '9'"),
        ("ratings.dat", "1::1193::5\n", r"ratings\.dat.*3 fields.*expected 4"),
        ("ratings.dat", "1::1193::5::978300760\n1::1193::5::97830::0760\n", r"ratings\.dat.*cannot parse"),
        ("ratings.dat", "1::abc::5::978300760\n", r"ratings\.dat, line 1: movie id 'abc'"),
        ("ratings.dat", "", r"ratings\.dat: the file is empty"),
        ("users.dat", "1::F::1::10::48067\n2::M::99::16::70072\n", r"users\.dat, line 2: age code '99'"),
    ],
)
def test_unreadable_files_raise_data_read_error(
    tmp_path: Path, file: str, content: str, message: str
) -> None:
    folder = write_ml1m(tmp_path / "ml-1m")
    (folder / file).write_text(content, encoding="latin-1")
    with pytest.raises(DataReadError, match=message):
        load_movielens(folder)


def test_bad_encoding_and_header_in_csv(tmp_path: Path) -> None:
    folder = tmp_path / "ml-latest-small"
    folder.mkdir()
    (folder / "movies.csv").write_text(
        'movieId,title,genres\n1,"Toy Story, The (1995)",Comedy\n', encoding="utf-8"
    )
    (folder / "ratings.csv").write_bytes(
        b"userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,1\xff,4.0,9\n"
    )
    with pytest.raises(DataReadError, match=r"ratings\.csv, line 3: not valid utf-8"):
        load_movielens(folder)
    (folder / "ratings.csv").write_text("user;movie;rating;time\n1;1;4.0;964982703\n", encoding="utf-8")
    with pytest.raises(DataReadError, match=r"ratings\.csv, line 1: unexpected header"):
        load_movielens(folder)
    (folder / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\r\n1,1,4.0,964982703\r\n", encoding="utf-8"
    )
    data = load_movielens(folder)
    assert data.items["title"].tolist() == ["Toy Story, The (1995)"]
    assert data.events["timestamp"].tolist() == ["2000-07-30T18:45:03Z"]


def test_errors_are_recsys_errors(tmp_path: Path) -> None:
    folder = write_ml1m(tmp_path / "ml-1m", movies="1193::Title (1975)::Drama\nnot-a-number::X::Drama\n")
    with pytest.raises(RecsysError, match=r"movies\.dat, line 2"):
        load_movielens(folder)


# ---- landing ------------------------------------------------------------------------------------


def read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")


def test_land_ml100k_into_weekly_partitions(tmp_path: Path, ml100k: MovieLensData) -> None:
    lake = Lake(tmp_path)
    messages: list[str] = []
    weeks = land_movielens(lake, movielens_dir() / "ml-100k", progress=messages.append)
    assert messages
    assert weeks == sorted(weeks) == lake.raw_weeks("events")
    assert len(weeks) == 32 and weeks[0] == date(1997, 9, 14) and weeks[-1] == date(1998, 4, 19)
    total = 0
    previous_items = previous_users = 0
    for week in weeks:
        assert week_start_of(week) == week
        files = {kind: lake.raw_files(kind, week) for kind in ("events", "items", "users")}
        assert [p.name for ps in files.values() for p in ps] == ["events.csv", "items.csv", "users.csv"]
        assert files["events"][0] == lake.partition("raw", week, "events") / "events.csv"
        events, items, users = (read(files[k][0]) for k in ("events", "items", "users"))
        assert tuple(events.columns) == RAW_EVENT_COLUMNS
        assert tuple(items.columns) == ITEM_COLUMNS and tuple(users.columns) == RAW_USER_COLUMNS
        assert items["tags"].eq("").all()  # ml-100k has no tags
        start, end = week_bounds(week)
        moment = pd.to_datetime(events["timestamp"], format="%Y-%m-%dT%H:%M:%SZ", utc=True)
        assert ((moment >= start) & (moment < end)).all() and moment.is_monotonic_increasing
        assert events["item_id"].isin(items["item_id"]).all()
        assert events["user_id"].isin(users["user_id"]).all()
        assert len(items) >= previous_items and len(users) >= previous_users
        previous_items, previous_users = len(items), len(users)
        total += len(events)
    assert total == 100_000
    assert (previous_items, previous_users) == (1_682, 943)
    # the last snapshot is the loaded catalogue; titles survive the CSV round trip
    last_items = read(lake.raw_files("items", weeks[-1])[0])
    pd.testing.assert_frame_equal(last_items, ml100k.items)


def test_land_last_weeks_and_rerun_replaces(tmp_path: Path) -> None:
    folder = write_ml1m(tmp_path / "ml-1m")
    lake = Lake(tmp_path / "lake")
    assert land_movielens(lake, folder) == [date(2000, 12, 24), date(2000, 12, 31)]
    assert land_movielens(lake, folder, last_weeks=1) == [date(2000, 12, 31)]
    events = read(lake.raw_files("events", date(2000, 12, 31))[0])
    assert len(events) == 4 and events["timestamp"].is_monotonic_increasing
    items = read(lake.raw_files("items", date(2000, 12, 24))[0])
    assert set(items["item_id"]) == {"661", "99"}  # first rated that week, plus the never-rated one
    with lake.raw_files("items", date(2000, 12, 31))[0].open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    assert ["3408", "Misérables, Les (1998)", "Drama|Musical", "1998", "2000-12-31T21:43:20Z", ""] in rows
    leftovers = [p for p in (tmp_path / "lake").rglob("*") if p.is_file() and p.name.startswith(".")]
    assert leftovers == []
    with pytest.raises(ConfigError):
        land_movielens(lake, folder, last_weeks=0)


# ---- tags (ml-latest-small's tags.csv -> the items' optional tags column) -----------------------


def test_item_columns_are_the_contract_plus_its_optional_tags() -> None:
    assert OPTIONAL_ITEM_COLUMNS == ("tags",)
    assert ITEM_COLUMNS == (*RAW_ITEM_COLUMNS, "tags")


def tags_from_csv(folder: Path, before: int | None = None) -> tuple[dict[str, str], dict[str, set[str]]]:
    """Straight from the csv files: each tagged movie's expected ``tags`` value (distinct tags,
    lower-cased, stripped, sorted, '|'-joined; only movies of movies.csv; only tags applied before
    ``before`` when given), and the user ids who tagged each movie."""
    with (folder / "movies.csv").open(encoding="utf-8", newline="") as fh:
        movies = {row["movieId"] for row in csv.DictReader(fh)}
    tags: dict[str, set[str]] = {}
    taggers: dict[str, set[str]] = {}
    with (folder / "tags.csv").open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            tag = " ".join(row["tag"].replace("|", " ").split()).lower()
            if row["movieId"] not in movies or not tag:
                continue
            if before is not None and int(row["timestamp"]) >= before:
                continue
            tags.setdefault(row["movieId"], set()).add(tag)
            taggers.setdefault(row["movieId"], set()).add(row["userId"])
    return {movie: "|".join(sorted(values)) for movie, values in tags.items()}, taggers


def test_latest_small_tags_come_from_tags_csv(latest: MovieLensData) -> None:
    expected, taggers = tags_from_csv(movielens_dir() / "ml-latest-small")
    tags = latest.items.set_index("item_id")["tags"]
    # Toy Story (movieId 1): its tags as tags.csv has them, and nothing of who put them there
    assert "pixar" in expected["1"].split("|")
    assert tags["1"] == expected["1"]
    assert not set(tags["1"].split("|")) & taggers["1"]
    # every movie: exactly the aggregated tag text, empty for untagged movies
    assert tags[tags.ne("")].to_dict() == expected
    assert tags.eq("").sum() == len(tags) - len(expected)
    # the tag log keeps the tag text and time only: no user id column
    assert tuple(latest.tag_log.columns) == ("item_id", "tag", "seconds")
    assert len(latest.tag_log) == 3_683


def test_ml100k_items_have_empty_tags(ml100k: MovieLensData) -> None:
    assert ml100k.items["tags"].eq("").all()
    assert ml100k.tag_log.empty


def test_ml1m_items_have_empty_tags(tmp_path: Path) -> None:
    data = load_movielens(write_ml1m(tmp_path / "ml-1m"))
    assert data.items["tags"].eq("").all() and data.tag_log.empty


# A tiny ml-latest-small: week 1 starts Sunday 2000-07-30 (964915200), week 2 on 2000-08-06
# (965520000), which ends at 966124800. The taggers' ids (4242xx) appear nowhere else.
TINY_RATINGS = "userId,movieId,rating,timestamp\r\n1,1,4.0,964982703\r\n1,2,3.0,965587503\r\n"
TINY_MOVIES = (
    "movieId,title,genres\r\n1,Toy Story (1995),Animation|Comedy\r\n2,Jumanji (1995),Adventure\r\n"
    "3,Heat (1995),Action\r\n"
)
TINY_TAGS = (
    "userId,movieId,tag,timestamp\r\n"
    "424242,1,Pixar,964982000\r\n"  # week 1
    "424243,1, pixar ,965000000\r\n"  # the same tag again, another case and spacing
    "424242,1,Fun,965600000\r\n"  # week 2
    '424244,2,"time travel, board game",965000000\r\n'  # quoted, with a comma
    "424242,99,orphan,965000000\r\n"  # movie 99 is not in movies.csv: left out
    "424242,3,   ,965000000\r\n"  # nothing left after stripping: left out
    "424245,3,A|B,965000000\r\n"  # the separator inside a tag becomes a space
    "424242,3,Later,967000000\r\n"  # after the last week with ratings
)


def write_latest(folder: Path, tags: str | bytes | None = TINY_TAGS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.csv").write_text(TINY_RATINGS, encoding="utf-8", newline="")
    (folder / "movies.csv").write_text(TINY_MOVIES, encoding="utf-8", newline="")
    if isinstance(tags, bytes):
        (folder / "tags.csv").write_bytes(tags)
    elif tags is not None:
        (folder / "tags.csv").write_text(tags, encoding="utf-8", newline="")
    return folder


def test_tiny_latest_tags_aggregate_per_movie_without_user_ids(tmp_path: Path) -> None:
    folder = write_latest(tmp_path / "ml-latest-small")
    data = load_movielens(folder)
    assert data.dataset == "ml-latest-small"
    assert_raw_contract(data)
    assert data.items.set_index("item_id")["tags"].to_dict() == {
        "1": "fun|pixar",
        "2": "time travel, board game",
        "3": "a b|later",
    }
    assert "99" not in set(data.tag_log["item_id"])
    for frame in (data.items, data.tag_log):
        assert not frame.astype(str).apply(lambda s: s.str.contains("4242")).any().any()


def test_missing_tags_csv_means_no_tags(tmp_path: Path) -> None:
    data = load_movielens(write_latest(tmp_path / "ml-latest-small", tags=None))
    assert data.items["tags"].tolist() == ["", "", ""] and data.tag_log.empty


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "userId,movieId,tag,timestamp\n1,1,fun,964982000\n1,x,fun,964982000\n",
            r"tags\.csv, line 3: movie id 'x'",
        ),
        ("userId,movieId,tag,timestamp\n1,1,fun,soon\n", r"tags\.csv, line 2: timestamp 'soon'"),
        ("userId,movieId,tag,timestamp\nabc,1,fun,964982000\n", r"tags\.csv, line 2: user id 'abc'"),
        ("user,movie,tag,time\n1,1,fun,964982000\n", r"tags\.csv, line 1: unexpected header"),
        (
            "userId,movieId,tag,timestamp\n1,1,fun,964982000\n1,1,fun,more,964982000\n",
            r"tags\.csv: cannot parse.*line 3",
        ),
        ("userId,movieId,tag\n1,1,fun\n", r"tags\.csv, line 1: unexpected header"),
        ("", r"tags\.csv: the file is empty"),
        (b"userId,movieId,tag,timestamp\n1,1,caf\xe9,964982000\n", r"tags\.csv, line 2: not valid utf-8"),
    ],
)
def test_malformed_tags_csv_names_file_and_line(tmp_path: Path, content: str | bytes, message: str) -> None:
    folder = write_latest(tmp_path / "ml-latest-small", tags=content)
    with pytest.raises(DataReadError, match=message):
        load_movielens(folder)


def test_landing_writes_each_weeks_tags_as_of_its_end(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    weeks = land_movielens(lake, write_latest(tmp_path / "ml-latest-small"))
    assert weeks == [date(2000, 7, 30), date(2000, 8, 6)]
    first, second = (read(lake.raw_files("items", week)[0]) for week in weeks)
    assert tuple(first.columns) == tuple(second.columns) == ITEM_COLUMNS
    # week 1: movie 2 is not in the catalogue yet; "Fun" (week 2) and "Later" are in the future
    assert first.set_index("item_id")["tags"].to_dict() == {"1": "pixar", "3": "a b"}
    assert second.set_index("item_id")["tags"].to_dict() == {
        "1": "fun|pixar",
        "2": "time travel, board game",
        "3": "a b",  # "Later" comes after the last week with ratings
    }
    for week in weeks:
        for kind in ("events", "items", "users"):
            assert "4242" not in lake.raw_files(kind, week)[0].read_text(encoding="utf-8")
    # landing only the last week gives it the same tags
    lake_last = Lake(tmp_path / "lake-last")
    assert land_movielens(lake_last, tmp_path / "ml-latest-small", last_weeks=1) == [date(2000, 8, 6)]
    pd.testing.assert_frame_equal(read(lake_last.raw_files("items", date(2000, 8, 6))[0]), second)


def test_land_latest_small_last_weeks_carry_tags(tmp_path: Path, latest: MovieLensData) -> None:
    lake = Lake(tmp_path / "lake")
    weeks = land_movielens(lake, movielens_dir() / "ml-latest-small", last_weeks=2)
    assert len(weeks) == 2
    _, week_end = week_bounds(weeks[-1])
    expected, _ = tags_from_csv(movielens_dir() / "ml-latest-small", before=int(week_end.timestamp()))
    items = read(lake.raw_files("items", weeks[-1])[0])
    assert tuple(items.columns) == ITEM_COLUMNS
    tags = items.set_index("item_id")["tags"]
    assert tags["1"] == expected["1"] and "pixar" in tags["1"]
    assert tags[tags.ne("")].to_dict() == {m: t for m, t in expected.items() if m in tags.index}
