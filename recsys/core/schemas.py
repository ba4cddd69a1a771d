"""Column contracts between stages: one place that names every column of every layer.

Raw layer (what upstream systems drop into ``lake/raw/<kind>/week=YYYY-MM-DD/*.csv``; UTF-8 CSV
with a header row, comma-separated; every value is text until validation types it):

* events: one row per interaction log line.
* items: the catalogue snapshot of that week. Optional column ``tags`` (``OPTIONAL_ITEM_COLUMNS``):
  the free-text labels people gave the item, as the item's distinct tags, lower-cased, stripped and
  joined with ``TAG_SEPARATOR`` (empty when none; see :func:`join_tags`). Files without the column
  are valid (the synthetic generator and older lakes have none); from the validated layer on every
  item has the column (empty string when the raw file had none). Tags are item data only: never
  who tagged.
* users: the user-profile snapshot of that week. It carries personal data (name, email, IP,
  device id, age, zip code): only the anonymize stage reads it; nothing after it may.
* feedback (``raw/feedback/week=.../*.csv``): clicks and plays of the week (``RAW_FEEDBACK_COLUMNS``),
  read by :mod:`recsys.experiments.feedback_log` only; raw user ids, so personal data like events.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

# ---- raw -------------------------------------------------------------------------------------
RAW_EVENT_COLUMNS: Final = (
    "event_id",  # unique id of the log line (string)
    "user_id",  # raw user id (personal data)
    "item_id",  # integer id of a catalogue item
    "timestamp",  # ISO-8601 UTC, e.g. 2026-11-16T08:12:33Z, or Unix seconds
    "event_type",  # one of EVENT_TYPES
    "rating",  # 0.5 .. 5.0 for event_type == "rating", empty otherwise
    "watch_seconds",  # seconds watched (>= 0) for "view", empty or 0 otherwise
    "device_type",  # one of DEVICE_TYPES
    "device_id",  # device identifier (personal data)
    "ip_address",  # client IP address (personal data)
)
RAW_ITEM_COLUMNS: Final = ("item_id", "title", "genres", "release_year", "added_at")
RAW_USER_COLUMNS: Final = (
    "user_id",
    "name",
    "email",
    "ip_address",
    "device_id",
    "age",
    "gender",
    "occupation",
    "zip_code",
    "signup_date",
)
# feedback: the app's log of clicks and plays on what an A/B test showed, and of organic plays. Not
# one of KINDS (the weekly ingest / validate stages): it has its own path, recsys.experiments.feedback_log.
FEEDBACK_KIND: Final = "feedback"
RAW_FEEDBACK_COLUMNS: Final = (
    "user_id",  # raw user id (personal data)
    "item_id",  # integer id of a catalogue item
    "ts",  # ISO-8601 UTC, e.g. 2026-11-16T08:12:33Z, or Unix seconds; inside the file's week
    "event",  # one of FEEDBACK_EVENTS
    "watch_seconds",  # seconds watched (>= 0) on a play, empty on a click
    "position",  # 1-based position in the list shown; empty for an organic play
    "experiment_id",  # the A/B test of a recommendation row; empty otherwise
    "arm",  # champion / challenger / holdout on a recommendation row; empty otherwise
    "from_recommendation",  # true / false
)
FEEDBACK_EVENTS: Final = ("click", "play")
RAW_COLUMNS: Final = {
    "events": RAW_EVENT_COLUMNS,
    "items": RAW_ITEM_COLUMNS,
    "users": RAW_USER_COLUMNS,
    FEEDBACK_KIND: RAW_FEEDBACK_COLUMNS,
}
# Columns a raw file may have or not (any order with the required ones); nothing else is accepted.
OPTIONAL_ITEM_COLUMNS: Final = ("tags",)  # the item's tags, TAG_SEPARATOR-joined; "" when none
OPTIONAL_COLUMNS: Final = {"events": (), "items": OPTIONAL_ITEM_COLUMNS, "users": ()}
KINDS: Final = ("events", "items", "users")  # what the weekly ingest and validate stages read

EVENT_TYPES: Final = ("view", "rating", "browse")  # browse = shown/browsed but not watched
DEVICE_TYPES: Final = ("tv", "mobile", "web", "tablet", "unknown")
RATING_MIN: Final = 0.5
RATING_MAX: Final = 5.0
GENRE_SEPARATOR: Final = "|"
TAG_SEPARATOR: Final = "|"
_TAG_SPACE = re.compile(r"[\s|]+")  # line breaks and a separator inside a tag become one space


def split_genres(value: object) -> list[str]:
    """The genres of a catalogue ``genres`` cell ('|'-joined), stripped, in order; none for a
    missing or empty cell."""
    if not isinstance(value, str):
        return []
    return [g.strip() for g in value.split(GENRE_SEPARATOR) if g.strip()]


def clean_tag(tag: object) -> str:
    """One tag as the contract keeps it: lower-cased, stripped, inner whitespace (and any
    ``TAG_SEPARATOR``) collapsed to one space; ``""`` for a missing value."""
    if not isinstance(tag, str):
        return ""
    return _TAG_SPACE.sub(" ", tag).strip().lower()


def join_tags(tags: Iterable[object]) -> str:
    """The ``tags`` value of an item from its tags: distinct cleaned tags, sorted, ``|``-joined."""
    return TAG_SEPARATOR.join(sorted({t for t in map(clean_tag, tags) if t}))


def canonical_tags(value: object) -> str:
    """A ``tags`` value (``|``-joined, any case or spacing, possibly missing) in the contract's form."""
    if not isinstance(value, str):
        return ""
    return join_tags(value.split(TAG_SEPARATOR))


# Lineage columns added by ingest to every staged row (not part of the raw contract).
SOURCE_FILE: Final = "_source_file"
SOURCE_LINE: Final = "_source_line"  # 1-based physical line number in the source file

# Quarantine: the row as read (all text) + why it was set aside.
QUARANTINE_REASON: Final = "_reason"

# ---- validated (typed) -----------------------------------------------------------------------
# events: event_id str, user_id str, item_id int64, ts datetime64[ns, UTC], event_type str,
#         rating float64 (NaN if not a rating), watch_seconds float64 (NaN if absent),
#         device_type str, device_id str, ip_address str, _source_file, _source_line
# items:  item_id int64, title str, genres str, release_year Int64 (nullable), added_at datetime,
#         tags str (canonical_tags of the raw value; "" when none or when the file has no tags column)
# users:  user_id str + the raw profile columns, age Int64 (nullable)

# ---- anonymized (no personal data from here on) ---------------------------------------------
ANON_EVENT_COLUMNS: Final = (
    "user",  # HMAC-SHA256 pseudonym of user_id (hex)
    "item_id",
    "ts",
    "event_type",
    "rating",
    "watch_seconds",
    "device_type",
)
ANON_USER_COLUMNS: Final = ("user", "age_band", "gender", "occupation", "zip3", "signup_week")
# feedback: user str (pseudonym), item_id int64, ts datetime64[ns, UTC], event str,
# watch_seconds float64 (NaN on a click), position Int64 (NA on an organic play), experiment_id and
# arm str (None on an organic play), from_recommendation bool, week str (ISO date of its Sunday)
ANON_FEEDBACK_COLUMNS: Final = (
    "user",
    "item_id",
    "ts",
    "event",
    "watch_seconds",
    "position",
    "experiment_id",
    "arm",
    "from_recommendation",
    "week",
)

# ---- prepared (model input) ------------------------------------------------------------------
# one row per (user, item) pair with the strongest evidence of preference in the window
PREPARED_COLUMNS: Final = ("user", "item_id", "strength", "rating", "last_ts")
