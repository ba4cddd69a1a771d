"""MovieLens loaders (native formats -> raw contract) and landing into weekly raw partitions."""

from __future__ import annotations

import csv
import os
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from recsys.data.movielens import MovieLensData, land_movielens, load_movielens
from recsys.errors import ConfigError, DataNotFoundError, DataReadError, RecsysError
from recsys.intervals import week_bounds, week_start_of
from recsys.schemas import RAW_EVENT_COLUMNS, RAW_ITEM_COLUMNS, RAW_USER_COLUMNS
from recsys.storage import Lake

ISO_SECONDS = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z"


def movielens_dir() -> Path:
    """The shared MovieLens folder: $RECSYS_DATA_DIR (or its movielens/), else ../shared/data/movielens."""
    configured = os.environ.get("RECSYS_DATA_DIR")
    root = Path(configured) if configured else Path(__file__).resolve().parents[2] / "shared" / "data"
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
        (data.items, RAW_ITEM_COLUMNS),
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
        assert tuple(items.columns) == RAW_ITEM_COLUMNS and tuple(users.columns) == RAW_USER_COLUMNS
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
    assert ["3408", "Misérables, Les (1998)", "Drama|Musical", "1998", "2000-12-31T21:43:20Z"] in rows
    leftovers = [p for p in (tmp_path / "lake").rglob("*") if p.is_file() and p.name.startswith(".")]
    assert leftovers == []
    with pytest.raises(ConfigError):
        land_movielens(lake, folder, last_weeks=0)
