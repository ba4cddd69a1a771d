"""Anonymization: the last stage that sees personal data.

* user ids become keyed pseudonyms: HMAC-SHA256(key, user_id), hex. The key comes from the
  environment (``RECSYS_PSEUDONYM_KEY``), never from code: the same user gets the same pseudonym
  every week (so the model can learn), and another key gives unlinkable pseudonyms.
* direct identifiers (name, email, IP address, device id) are dropped;
* quasi-identifiers are coarsened: age to a band, zip code to its first three characters, signup
  date to its week.

Columns are handled by a declared policy; a column the policy does not name is refused (fail
closed), so a new personal column added upstream cannot slip through.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from recsys.core.errors import ValidationFailed

PSEUDONYM_HEX_CHARS = 32  # 128 bits of the HMAC: collision-free for any realistic user base

Action = Literal["pseudonymize", "keep", "drop", "age_band", "zip3", "week"]

# The one place that says what happens to each column. Lineage columns are dropped too: source
# line numbers could be joined back to the raw files.
EVENT_POLICY: dict[str, Action] = {
    "event_id": "drop",
    "user_id": "pseudonymize",
    "item_id": "keep",
    "ts": "keep",
    "event_type": "keep",
    "rating": "keep",
    "watch_seconds": "keep",
    "device_type": "keep",
    "device_id": "drop",
    "ip_address": "drop",
    "timestamp": "drop",
    "_source_file": "drop",
    "_source_line": "drop",
}
USER_POLICY: dict[str, Action] = {
    "user_id": "pseudonymize",
    "name": "drop",
    "email": "drop",
    "ip_address": "drop",
    "device_id": "drop",
    "age": "age_band",
    "gender": "keep",
    "occupation": "keep",
    "zip_code": "zip3",
    "signup_date": "week",
    "_source_file": "drop",
    "_source_line": "drop",
}
# Feedback (recsys.experiments.feedback_log): the typed rows of a raw feedback log; nothing but the user id in
# it is personal. (Ingestion adds ``week`` after this policy, so a raw ``week`` column is refused.)
FEEDBACK_POLICY: dict[str, Action] = {
    "user_id": "pseudonymize",
    "item_id": "keep",
    "ts": "keep",
    "event": "keep",
    "watch_seconds": "keep",
    "position": "keep",
    "experiment_id": "keep",
    "arm": "keep",
    "from_recommendation": "keep",
    "_source_file": "drop",
    "_source_line": "drop",
}

AGE_BANDS = [
    (0, 17, "<18"),
    (18, 24, "18-24"),
    (25, 34, "25-34"),
    (35, 44, "35-44"),
    (45, 54, "45-54"),
    (55, 64, "55-64"),
    (65, 200, "65+"),
]


def pseudonymize(values: Iterable[object], key: bytes) -> list[str | None]:
    """HMAC-SHA256 pseudonyms (hex, truncated to 128 bits); None stays None."""
    out: list[str | None] = []
    for value in values:
        if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
            out.append(None)
            continue
        digest = hmac.new(key, str(value).encode("utf-8"), hashlib.sha256).hexdigest()
        out.append(digest[:PSEUDONYM_HEX_CHARS])
    return out


def age_band(age: pd.Series) -> pd.Series:
    numeric = pd.to_numeric(age, errors="coerce")
    result = pd.Series(pd.NA, index=age.index, dtype="string")
    for low, high, label in AGE_BANDS:
        result[(numeric >= low) & (numeric <= high)] = label
    return result


def zip3(zip_code: pd.Series) -> pd.Series:
    text = zip_code.astype("string").str.strip()
    return text.str[:3].where(text.str.len() > 0)


def week_of(values: pd.Series) -> pd.Series:
    ts = pd.to_datetime(values, errors="coerce", utc=True)
    # floor to Sunday, the start of our weeks
    day = ts.dt.normalize()
    start = day - pd.to_timedelta((day.dt.dayofweek + 1) % 7, unit="D")
    return start.dt.strftime("%Y-%m-%d").astype("string")


def apply_policy(df: pd.DataFrame, policy: dict[str, Action], key: bytes, what: str) -> pd.DataFrame:
    """Apply a column policy; refuse columns the policy does not name."""
    unknown = [c for c in df.columns if c not in policy]
    if unknown:
        raise ValidationFailed(
            f"{what}: columns {unknown} are not covered by the anonymization policy; "
            "declare them in recsys/privacy/anonymize.py before they can pass (fail closed)"
        )
    out: dict[str, pd.Series] = {}
    for column in df.columns:
        action = policy[column]
        series = df[column]
        if action == "drop":
            continue
        if action == "keep":
            out[column] = series
        elif action == "pseudonymize":
            out["user"] = pd.Series(pseudonymize(series.tolist(), key), index=df.index, dtype="string")
        elif action == "age_band":
            out["age_band"] = age_band(series)
        elif action == "zip3":
            out["zip3"] = zip3(series)
        elif action == "week":
            out["signup_week"] = week_of(series)
    return pd.DataFrame(out, index=df.index).reset_index(drop=True)


def anonymize_events(events: pd.DataFrame, key: bytes) -> pd.DataFrame:
    return apply_policy(events, EVENT_POLICY, key, "events")


def anonymize_users(users: pd.DataFrame, key: bytes) -> pd.DataFrame:
    return apply_policy(users, USER_POLICY, key, "users")


def anonymize_feedback(feedback: pd.DataFrame, key: bytes) -> pd.DataFrame:
    return apply_policy(feedback, FEEDBACK_POLICY, key, "feedback")


# ---- k-anonymity of the released user attributes ----------------------------------------------

QUASI_IDENTIFIERS = ("age_band", "gender", "occupation", "zip3")
SUPPRESSED = "*"
#: the k-anonymity ladder's broad age bands, from the released ones
BROAD_AGE = {
    "<18": "<35",
    "18-24": "<35",
    "25-34": "<35",
    "35-44": "35-54",
    "45-54": "35-54",
    "55-64": "55+",
    "65+": "55+",
}


@dataclass(frozen=True)
class KAnonymityReport:
    k: int
    users_in: int
    users_released: int
    users_suppressed: int
    generalized: dict[str, int]  # rows changed by each generalization step, in order
    smallest_group: int  # in the released table (0 if empty)
    satisfied: bool

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def _group_sizes(df: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    keys = df[list(columns)].astype("string").fillna("<NA>")
    return keys.groupby(list(columns), dropna=False)[columns[0]].transform("size")


def _generalization_ladder() -> list[tuple[str, str, Callable[[pd.Series], pd.Series]]]:
    """Steps from mild to strong, applied only to rows whose group is still smaller than k."""
    return [
        ("zip3->zip1", "zip3", lambda s: s.astype("string").str[:1]),
        ("age_band->broad", "age_band", lambda s: s.astype("string").map(BROAD_AGE).astype("string")),
        ("occupation->*", "occupation", lambda s: pd.Series(SUPPRESSED, index=s.index, dtype="string")),
        ("zip->*", "zip3", lambda s: pd.Series(SUPPRESSED, index=s.index, dtype="string")),
        ("gender->*", "gender", lambda s: pd.Series(SUPPRESSED, index=s.index, dtype="string")),
    ]


def enforce_k_anonymity(
    users: pd.DataFrame, k: int, quasi_identifiers: Sequence[str] = QUASI_IDENTIFIERS
) -> tuple[pd.DataFrame, KAnonymityReport]:
    """Generalize, then suppress, until every combination of quasi-identifiers is shared by >= k users.

    Rows of groups smaller than ``k`` are generalized step by step (zip to its first character, age
    to a broad band, then occupation, zip and gender to ``*``); rows still in groups smaller than
    ``k`` are suppressed: left out of the released attribute table (the user's interactions are
    unaffected). Columns not in ``quasi_identifiers`` are never changed.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    columns = [c for c in quasi_identifiers if c in users.columns]
    out = users.copy()
    for column in columns:
        out[column] = out[column].astype("string")
    generalized: dict[str, int] = {}
    if columns and len(out):
        for step, column, transform in _generalization_ladder():
            if column not in columns:
                continue
            small = _group_sizes(out, columns) < k
            if not small.any():
                break
            before = out.loc[small, column]
            after = transform(before)
            generalized[step] = int((before.fillna("<NA>") != after.fillna("<NA>")).sum())
            out.loc[small, column] = after
        small = _group_sizes(out, columns) < k
    else:
        small = pd.Series(False, index=out.index)
    released = out[~small].reset_index(drop=True)
    smallest = int(_group_sizes(released, columns).min()) if columns and len(released) else 0
    report = KAnonymityReport(
        k=k,
        users_in=len(users),
        users_released=len(released),
        users_suppressed=int(small.sum()),
        generalized=generalized,
        smallest_group=smallest,
        satisfied=(not len(released)) or not columns or smallest >= k,
    )
    return released, report


class AnonymizeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    k: int = Field(5, ge=1, le=1000, description="k-anonymity of the released user attributes")
