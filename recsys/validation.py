"""Validate: type the staged text, check it with Great Expectations suites, quarantine bad rows.

For each kind (items first: its valid ids are the catalogue that events must reference; then events
and users) the stage

1. checks the batch (GX): the column set equals the contract (any order) and there are at least
   ``min_rows`` rows. A column-set mismatch stops the kind: its rows cannot be typed, so all of them
   are quarantined as ``batch_failed: expect_table_columns_to_match_set``;
2. casts text to typed columns in pandas (a value that does not parse becomes null; for optional
   columns, where null is allowed, the row is quarantined as ``unparseable(<column>)``);
3. checks every row (GX suite built in code, see :func:`events_suite`, :func:`items_suite`,
   :func:`users_suite`) and quarantines each row an expectation reports as unexpected, with reason
   ``<expectation>(<column>)``; a row failing several gets them all, joined by ``"; "``;
4. among the rows still valid, keeps the first of each duplicate key (``event_id``, or the same
   user/item/timestamp/type) and quarantines the rest as ``duplicate``; for events, quarantines all
   the rows of a user-day above ``max_events_per_user_per_day`` as ``outlier: bot-like activity``;
5. fails the batch when the quarantined share (including ingest's malformed lines) is above
   ``max_quarantine_share``.

Outputs of week ``W``: ``validated/<kind>/week=W/data.parquet`` (typed valid rows; only written when
every kind passed, and removed when the week fails, so no stale partition survives a failed re-run),
``quarantine/<kind>/week=W/data.parquet`` (ingest's malformed lines + rows set aside here, as read,
with ``_reason``), ``reports/week=W/accounting.json`` and ``reports/week=W/validation.html``. The
reports are written before a batch failure is raised.
"""

from __future__ import annotations

import html
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from recsys.errors import ConfigError, ValidationFailed
from recsys.ingest import RAW_LINE, ingest_quarantine_file
from recsys.intervals import week_bounds
from recsys.schemas import (
    DEVICE_TYPES,
    EVENT_TYPES,
    KINDS,
    QUARANTINE_REASON,
    RATING_MAX,
    RATING_MIN,
    RAW_COLUMNS,
    RAW_USER_COLUMNS,
    SOURCE_FILE,
    SOURCE_LINE,
)
from recsys.storage import Lake, read_parquet, write_json, write_parquet, write_text

if TYPE_CHECKING:
    import great_expectations as gx_type

log = logging.getLogger(__name__)

DUPLICATE = "duplicate"
BOT = "outlier: bot-like activity"
COLUMNS_REJECTED = "batch_failed: expect_table_columns_to_match_set"
MIN_RELEASE_YEAR = 1870

EVENT_OUTPUT_COLUMNS = (
    "event_id",
    "user_id",
    "item_id",
    "ts",
    "event_type",
    "rating",
    "watch_seconds",
    "device_type",
    "device_id",
    "ip_address",
    SOURCE_FILE,
    SOURCE_LINE,
)
ITEM_OUTPUT_COLUMNS = ("item_id", "title", "genres", "release_year", "added_at", SOURCE_FILE, SOURCE_LINE)
USER_OUTPUT_COLUMNS = (*RAW_USER_COLUMNS, SOURCE_FILE, SOURCE_LINE)

# unexpected_index_list for every expectation; no index query string, no sample lists
_RESULT_FORMAT = {
    "result_format": "COMPLETE",
    "return_unexpected_index_query": False,
    "partial_unexpected_count": 0,
}
# pandas datetime64[ns] covers about +-292 years around 1970: larger Unix seconds are not timestamps
_MAX_UNIX_SECONDS = 9.2e9


class ValidationConfig(BaseModel):
    """Thresholds of the validate stage."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_quarantine_share: float = Field(
        0.2, ge=0.0, le=1.0, description="fail the batch when more of its rows than this are quarantined"
    )
    min_rows: int = Field(1, ge=0, description="fail the batch when it has fewer rows than this")
    max_events_per_user_per_day: int = Field(
        500, ge=1, description="a user with more events than this on one UTC day is treated as a bot"
    )


# ---- Great Expectations ------------------------------------------------------------------------


def _gx() -> Any:
    """Import Great Expectations lazily (it takes seconds) and keep its logging quiet."""
    logging.getLogger("great_expectations").setLevel(logging.WARNING)  # chatty while importing
    import great_expectations

    # some GX modules set their own logger to INFO on import (e.g. the ephemeral context's
    # "Created temporary directory" message): quiet them after importing
    for name in ("great_expectations", "great_expectations.data_context.types.base"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return great_expectations


def _expectation(
    cls_name: str, *, reason: str | None = None, rule: str = "", role: str = "row", **kwargs: Any
):
    """An expectation whose ``meta`` says how its unexpected rows are treated.

    role ``row``: each unexpected row is quarantined with ``reason``; ``unique``: rows beyond the
    first of each key are quarantined as ``duplicate``; ``table``: a failure fails the batch.
    """
    gx = _gx()
    cls = getattr(gx.expectations, cls_name)
    column = kwargs.get("column")
    if reason is None and role == "row":
        reason = f"{_snake(cls_name)}({column})"
    return cls(**kwargs, meta={"reason": reason, "rule": rule, "role": role})


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def _suite(name: str, expectations: Iterable[Any]) -> gx_type.ExpectationSuite:
    gx = _gx()
    suite = gx.ExpectationSuite(name=name)
    for expectation in expectations:
        suite.add_expectation(expectation)
    return suite


def table_suite(kind: str, min_rows: int = 1) -> gx_type.ExpectationSuite:
    """Batch-level expectations on the staged text of ``kind``: contract columns and row count."""
    columns = list(RAW_COLUMNS[kind])
    return _suite(
        f"{kind}_table",
        [
            _expectation(
                "ExpectTableColumnsToMatchSet",
                role="table",
                rule="columns = " + ", ".join(columns),
                column_set=columns,
                exact_match=True,
            ),
            _expectation(
                "ExpectTableRowCountToBeBetween", role="table", rule=f"rows >= {min_rows}", min_value=min_rows
            ),
        ],
    )


def events_suite(
    week_start: datetime, week_end: datetime, known_item_ids: Iterable[int]
) -> gx_type.ExpectationSuite:
    """Row-level expectations on typed events of the week [week_start, week_end)."""
    from great_expectations.expectations.row_conditions import Column

    is_rating = Column("event_type") == "rating"
    item_ids = sorted({int(i) for i in known_item_ids})
    not_null = [
        _expectation("ExpectColumnValuesToNotBeNull", rule="required", column=c)
        for c in ("event_id", "user_id", "item_id", "ts", "event_type", "device_type")
    ]
    return _suite(
        "events",
        [
            *not_null,
            _expectation(
                "ExpectColumnValuesToBeInSet",
                rule="one of " + ", ".join(EVENT_TYPES),
                column="event_type",
                value_set=list(EVENT_TYPES),
            ),
            _expectation(
                "ExpectColumnValuesToBeInSet",
                rule="one of " + ", ".join(DEVICE_TYPES),
                column="device_type",
                value_set=list(DEVICE_TYPES),
            ),
            _expectation(
                "ExpectColumnValuesToNotBeNull",
                rule="required where event_type == 'rating'",
                column="rating",
                row_condition=is_rating,
            ),
            _expectation(
                "ExpectColumnValuesToBeBetween",
                rule=f"{RATING_MIN} <= rating <= {RATING_MAX} where event_type == 'rating'",
                column="rating",
                min_value=RATING_MIN,
                max_value=RATING_MAX,
                row_condition=is_rating,
            ),
            _expectation(
                "ExpectColumnValuesToBeBetween", rule=">= 0 if present", column="watch_seconds", min_value=0
            ),
            _expectation(
                "ExpectColumnValuesToBeBetween",
                rule=f"{week_start.isoformat()} <= ts < {week_end.isoformat()}",
                column="ts",
                min_value=week_start,
                max_value=week_end,
                strict_max=True,
            ),
            _expectation(
                "ExpectColumnValuesToBeInSet",
                rule=f"in the validated catalogue ({len(item_ids)} items)",
                column="item_id",
                value_set=item_ids,
            ),
            _expectation("ExpectColumnValuesToBeUnique", role="unique", rule="unique", column="event_id"),
            _expectation(
                "ExpectCompoundColumnsToBeUnique",
                role="unique",
                rule="no exact duplicate (user_id, item_id, ts, event_type)",
                column_list=["user_id", "item_id", "ts", "event_type"],
            ),
        ],
    )


def items_suite(max_release_year: int | None = None) -> gx_type.ExpectationSuite:
    """Row-level expectations on the typed catalogue; release years up to ``max_release_year``."""
    if max_release_year is None:
        max_release_year = date.today().year + 1
    return _suite(
        "items",
        [
            _expectation("ExpectColumnValuesToNotBeNull", rule="required", column="item_id"),
            _expectation("ExpectColumnValuesToNotBeNull", rule="required", column="title"),
            _expectation("ExpectColumnValuesToBeUnique", role="unique", rule="unique", column="item_id"),
            _expectation(
                "ExpectColumnValuesToBeBetween",
                rule=f"{MIN_RELEASE_YEAR} <= release_year <= {max_release_year} if present",
                column="release_year",
                min_value=MIN_RELEASE_YEAR,
                max_value=max_release_year,
            ),
        ],
    )


def users_suite() -> gx_type.ExpectationSuite:
    """Row-level expectations on the typed user profiles."""
    return _suite(
        "users",
        [
            _expectation("ExpectColumnValuesToNotBeNull", rule="required", column="user_id"),
            _expectation("ExpectColumnValuesToBeUnique", role="unique", rule="unique", column="user_id"),
        ],
    )


class _GxRunner:
    """One ephemeral GX context with a pandas data source; validates DataFrames against suites."""

    def __init__(self) -> None:
        gx = _gx()
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        self.source = self.context.data_sources.add_pandas(name="recsys")
        self._count = 0

    def validate(self, name: str, df: pd.DataFrame, suite: gx_type.ExpectationSuite) -> list[Any]:
        self._count += 1
        asset = self.source.add_dataframe_asset(name=f"{name}_{self._count}")
        batch_definition = asset.add_batch_definition_whole_dataframe("whole")
        batch = batch_definition.get_batch(batch_parameters={"dataframe": df})
        results = batch.validate(suite, result_format=_RESULT_FORMAT).results
        for r in results:
            info = r.exception_info or {}
            infos = (
                [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, dict)]
            )
            for i in infos:
                if i.get("raised_exception"):
                    raise RuntimeError(
                        f"{name}: {r.expectation_config.type} could not be evaluated: {i.get('exception_message')}"
                    )
        return results


# ---- typing text ------------------------------------------------------------------------------


def _text(s: pd.Series) -> pd.Series:
    """Stripped text; empty -> None."""
    t = s.astype("string").str.strip()
    t = t.mask(t == "")
    return t.astype(object).where(t.notna(), None)


def _to_float(text: pd.Series) -> pd.Series:
    num = pd.to_numeric(text, errors="coerce").astype("float64")
    return num.where(np.isfinite(num))


def _to_int(text: pd.Series) -> pd.Series:
    num = _to_float(text)
    integral = num.notna() & (num % 1 == 0) & (num.abs() < 2**53)
    return num.where(integral).astype("Int64")


def _to_ts(text: pd.Series) -> pd.Series:
    """ISO-8601 (``Z`` or offset; naive = UTC) or Unix seconds -> datetime64[ns, UTC]; else NaT."""
    out = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns, UTC]")
    as_string = text.astype("string")
    numeric = as_string.str.fullmatch(r"[+-]?\d+(?:\.\d+)?").fillna(False).astype(bool)
    if numeric.any():
        secs = pd.to_numeric(text[numeric], errors="coerce")
        secs = secs.where(secs.abs() < _MAX_UNIX_SECONDS)
        out[numeric] = pd.to_datetime(secs, unit="s", utc=True)
    iso = text.notna() & ~numeric
    if iso.any():
        out[iso] = pd.to_datetime(text[iso], format="ISO8601", utc=True, errors="coerce")
    return out


def _unparseable(text: pd.Series, parsed: pd.Series) -> np.ndarray:
    return (text.notna() & parsed.isna()).to_numpy(dtype=bool)


def _type_events(staged: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    t = pd.DataFrame(index=staged.index)
    for c in ("event_id", "user_id"):
        t[c] = _text(staged[c])
    t["item_id"] = _to_int(_text(staged["item_id"]))
    t["ts"] = _to_ts(_text(staged["timestamp"]))
    t["event_type"] = _text(staged["event_type"])
    rating_text, watch_text = _text(staged["rating"]), _text(staged["watch_seconds"])
    t["rating"] = _to_float(rating_text)
    t["watch_seconds"] = _to_float(watch_text)
    for c in ("device_type", "device_id", "ip_address"):
        t[c] = _text(staged[c])
    t[SOURCE_FILE] = staged[SOURCE_FILE]
    t[SOURCE_LINE] = staged[SOURCE_LINE]
    unparseable = {
        "unparseable(rating)": _unparseable(rating_text, t["rating"]),
        "unparseable(watch_seconds)": _unparseable(watch_text, t["watch_seconds"]),
    }
    return t, unparseable


def _type_items(staged: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    t = pd.DataFrame(index=staged.index)
    t["item_id"] = _to_int(_text(staged["item_id"]))
    t["title"] = _text(staged["title"])
    t["genres"] = _text(staged["genres"])
    year_text, added_text = _text(staged["release_year"]), _text(staged["added_at"])
    t["release_year"] = _to_int(year_text)
    t["added_at"] = _to_ts(added_text)
    t[SOURCE_FILE] = staged[SOURCE_FILE]
    t[SOURCE_LINE] = staged[SOURCE_LINE]
    unparseable = {
        "unparseable(release_year)": _unparseable(year_text, t["release_year"]),
        "unparseable(added_at)": _unparseable(added_text, t["added_at"]),
    }
    return t, unparseable


def _type_users(staged: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    t = pd.DataFrame(index=staged.index)
    for c in RAW_USER_COLUMNS:
        t[c] = _text(staged[c])
    age_text = t["age"]
    t["age"] = _to_int(age_text)
    t[SOURCE_FILE] = staged[SOURCE_FILE]
    t[SOURCE_LINE] = staged[SOURCE_LINE]
    return t, {"unparseable(age)": _unparseable(age_text, t["age"])}


_TYPERS: dict[str, Callable[[pd.DataFrame], tuple[pd.DataFrame, dict[str, np.ndarray]]]] = {
    "events": _type_events,
    "items": _type_items,
    "users": _type_users,
}
_OUTPUT_COLUMNS = {"events": EVENT_OUTPUT_COLUMNS, "items": ITEM_OUTPUT_COLUMNS, "users": USER_OUTPUT_COLUMNS}


# ---- per-kind validation ----------------------------------------------------------------------


@dataclass
class KindOutcome:
    kind: str
    rows_staged: int
    rows_malformed: int
    valid: pd.DataFrame
    quarantine: pd.DataFrame
    by_reason: Counter = field(default_factory=Counter)
    checks: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def rows_read(self) -> int:
        return self.rows_staged + self.rows_malformed

    @property
    def rows_quarantined(self) -> int:
        return len(self.quarantine)

    @property
    def quarantine_share(self) -> float:
        return self.rows_quarantined / self.rows_read if self.rows_read else 0.0

    def accounting(self) -> dict[str, Any]:
        return {
            "rows_read": self.rows_read,
            "rows_staged": self.rows_staged,
            "rows_malformed": self.rows_malformed,
            "rows_valid": len(self.valid),
            "rows_quarantined": self.rows_quarantined,
            "quarantine_share": round(self.quarantine_share, 6),
            # rows per reason; a row quarantined for several reasons counts under each
            "by_reason": dict(sorted(self.by_reason.items(), key=lambda kv: (-kv[1], kv[0]))),
            "passed": not self.failures,
            "failures": list(self.failures),
            "checks": self.checks,
        }


def _sample(values: Any, limit: int = 5) -> list[str]:
    out: list[str] = []
    for v in values or []:
        text = "null" if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NaT else str(v)
        text = text if len(text) <= 60 else text[:57] + "..."
        if text not in out:
            out.append(text)
        if len(out) >= limit:
            break
    return out


def _check_entry(kind: str, r: Any) -> dict[str, Any]:
    config = r.expectation_config
    meta = config.meta or {}
    kwargs = config.kwargs
    result = r.result or {}
    column = kwargs.get("column") or (",".join(kwargs["column_list"]) if kwargs.get("column_list") else None)
    entry: dict[str, Any] = {
        "kind": kind,
        "expectation": config.type,
        "column": column,
        "rule": meta.get("rule", ""),
        "level": "batch" if meta.get("role") == "table" else "row",
        "success": bool(r.success),
        "unexpected_count": result.get("unexpected_count"),
        "element_count": result.get("element_count"),
        "rows_quarantined": 0,
    }
    if config.type == "expect_table_columns_to_match_set":
        mismatched = (result.get("details") or {}).get("mismatched") or {}
        if r.success:
            entry["observed"] = "columns: " + ", ".join(map(str, result.get("observed_value") or []))
        else:
            parts = []
            if mismatched.get("missing"):
                parts.append(f"missing {sorted(mismatched['missing'])}")
            if mismatched.get("unexpected"):
                parts.append(f"unexpected {sorted(mismatched['unexpected'])}")
            entry["observed"] = ", ".join(parts) or f"observed {result.get('observed_value')}"
    elif config.type == "expect_table_row_count_to_be_between":
        entry["observed"] = f"{result.get('observed_value')} rows"
        if not r.success:
            entry["observed"] += f", expected at least {kwargs.get('min_value')}"
    else:
        n, total = result.get("unexpected_count") or 0, result.get("element_count") or 0
        sample = _sample(result.get("unexpected_list"))
        entry["observed"] = f"{n} of {total} rows unexpected" + (
            f" (e.g. {', '.join(sample)})" if sample else ""
        )
    return entry


def _quarantine_frame(
    staged: pd.DataFrame, reasons: list[list[str]], malformed: pd.DataFrame
) -> pd.DataFrame:
    bad = np.fromiter((bool(r) for r in reasons), dtype=bool, count=len(reasons))
    rows = staged.loc[bad].copy()
    rows[QUARANTINE_REASON] = ["; ".join(r) for r in reasons if r]
    rows[RAW_LINE] = None
    text_columns = [c for c in staged.columns if c not in (SOURCE_FILE, SOURCE_LINE)]
    columns = [*text_columns, SOURCE_FILE, SOURCE_LINE, QUARANTINE_REASON, RAW_LINE]
    parts = [p for p in (malformed, rows) if len(p)]
    if not parts:
        out = pd.DataFrame({c: pd.Series([], dtype=object) for c in columns})
    else:
        out = pd.concat(parts, ignore_index=True, sort=False).reindex(columns=columns)
        out = out.sort_values([SOURCE_FILE, SOURCE_LINE], kind="stable").reset_index(drop=True)
    for c in columns:
        if c != SOURCE_LINE:
            out[c] = out[c].astype(object).where(out[c].notna(), None)
    out[SOURCE_LINE] = out[SOURCE_LINE].astype("int64")
    return out


def _validate_kind(
    runner: _GxRunner,
    kind: str,
    staged: pd.DataFrame,
    malformed: pd.DataFrame,
    suite: Callable[[], gx_type.ExpectationSuite],
    config: ValidationConfig,
) -> KindOutcome:
    staged = staged.reset_index(drop=True)
    n = len(staged)
    reasons: list[list[str]] = [[] for _ in range(n)]
    checks: list[dict[str, Any]] = []
    failures: list[str] = []

    # 1. batch: contract columns and row count, on the text as staged
    text_columns = [c for c in staged.columns if c not in (SOURCE_FILE, SOURCE_LINE)]
    columns_ok = True
    for r in runner.validate(f"{kind}_table", staged[text_columns], table_suite(kind, config.min_rows)):
        entry = _check_entry(kind, r)
        checks.append(entry)
        if not r.success:
            failures.append(f"{kind}: {entry['expectation']} failed: {entry['observed']}")
            if entry["expectation"] == "expect_table_columns_to_match_set":
                columns_ok = False

    valid = pd.DataFrame({c: pd.Series([], dtype=object) for c in _OUTPUT_COLUMNS[kind]})
    if not columns_ok:
        for r in reasons:
            r.append(COLUMNS_REJECTED)
    else:
        # 2. typing; unparseable optional values
        typed, unparseable = _TYPERS[kind](staged)
        for reason, mask in unparseable.items():
            for i in np.flatnonzero(mask):
                reasons[i].append(reason)
            checks.append(
                {
                    "kind": kind,
                    "expectation": "parse",
                    "column": reason.removeprefix("unparseable(").removesuffix(")"),
                    "rule": "parses as its type if present",
                    "level": "row",
                    "success": not mask.any(),
                    "unexpected_count": int(mask.sum()),
                    "element_count": n,
                    "rows_quarantined": int(mask.sum()),
                    "observed": f"{int(mask.sum())} of {n} rows unparseable",
                }
            )
        # 3. row-level expectations
        unique_checks: list[tuple[list[str], set[int], dict[str, Any]]] = []
        for r in runner.validate(kind, typed, suite()):
            entry = _check_entry(kind, r)
            checks.append(entry)
            meta = r.expectation_config.meta or {}
            indices = (r.result or {}).get("unexpected_index_list") or []
            if meta.get("role") == "unique":
                kwargs = r.expectation_config.kwargs
                key = list(kwargs.get("column_list") or [kwargs["column"]])
                unique_checks.append((key, {int(i) for i in indices}, entry))
            else:
                for i in indices:
                    reasons[int(i)].append(meta["reason"])
                entry["rows_quarantined"] = len(indices)
        # 4. duplicates among the rows still valid: keep the first of each key
        ok = np.fromiter((not r for r in reasons), dtype=bool, count=n)
        for key, flagged, entry in unique_checks:
            survivors = typed.loc[ok, key]
            dup = survivors.index[survivors.duplicated(keep="first")]
            count = 0
            for i in dup:
                if i in flagged:
                    reasons[i].append(DUPLICATE)
                    ok[i] = False
                    count += 1
            entry["rows_quarantined"] = count
        if kind == "events":
            checks.append(_bot_rule(typed, ok, reasons, config.max_events_per_user_per_day))
            ok = np.fromiter((not r for r in reasons), dtype=bool, count=n)
        valid = typed.loc[ok, list(_OUTPUT_COLUMNS[kind])].reset_index(drop=True)
        if kind in ("events", "items"):
            valid["item_id"] = valid["item_id"].astype("int64")

    quarantine = _quarantine_frame(staged, reasons, malformed)
    by_reason: Counter = Counter()
    for r in reasons:
        by_reason.update(r)
    by_reason.update(malformed[QUARANTINE_REASON].tolist() if len(malformed) else [])
    outcome = KindOutcome(
        kind=kind,
        rows_staged=n,
        rows_malformed=len(malformed),
        valid=valid,
        quarantine=quarantine,
        by_reason=by_reason,
        checks=checks,
        failures=failures,
    )
    # 5. quarantined share, including ingest's malformed lines
    share_ok = outcome.quarantine_share <= config.max_quarantine_share
    observed = (
        f"{outcome.quarantine_share:.1%} quarantined ({outcome.rows_quarantined} of {outcome.rows_read} rows)"
    )
    checks.append(
        {
            "kind": kind,
            "expectation": "max_quarantine_share",
            "column": None,
            "rule": f"quarantined share <= {config.max_quarantine_share:.1%}",
            "level": "batch",
            "success": share_ok,
            "unexpected_count": None,
            "element_count": outcome.rows_read,
            "rows_quarantined": 0,
            "observed": observed,
        }
    )
    if not share_ok:
        top = ", ".join(f"{reason} ({count})" for reason, count in by_reason.most_common(3))
        failures.append(
            f"{kind}: max_quarantine_share failed: {observed} exceeds {config.max_quarantine_share:.1%}; "
            f"top reasons: {top}"
        )
    accounted = len(outcome.valid) + outcome.rows_quarantined
    assert outcome.rows_read == accounted, (
        f"{kind}: {outcome.rows_read} rows read but {accounted} accounted for"
    )
    return outcome


def _bot_rule(typed: pd.DataFrame, ok: np.ndarray, reasons: list[list[str]], limit: int) -> dict[str, Any]:
    rows = typed.loc[ok, ["user_id", "ts"]]
    per_day = rows.groupby([rows["user_id"], rows["ts"].dt.floor("D")])["user_id"].transform("size")
    bots = per_day.index[per_day > limit]
    for i in bots:
        reasons[i].append(BOT)
    user_days = rows.loc[bots].assign(day=rows.loc[bots, "ts"].dt.floor("D"))[["user_id", "day"]]
    n_user_days = len(user_days.drop_duplicates())
    n_users = user_days["user_id"].nunique()
    top = int(per_day.max()) if len(per_day) else 0
    return {
        "kind": "events",
        "expectation": "max_events_per_user_per_day",
        "column": "user_id",
        "rule": f"<= {limit} events per user per UTC day",
        "level": "row",
        "success": len(bots) == 0,
        "unexpected_count": len(bots),
        "element_count": len(rows),
        "rows_quarantined": len(bots),
        "observed": f"{n_users} users over the limit on {n_user_days} user-days ({len(bots)} rows); "
        f"busiest user-day {top} events",
    }


# ---- the stage -------------------------------------------------------------------------------


def _read_malformed(lake: Lake, kind: str, week: date) -> pd.DataFrame:
    path = ingest_quarantine_file(lake, kind, week)
    if not path.exists():  # staged by something other than ingest: nothing was malformed
        return pd.DataFrame(
            {c: pd.Series([], dtype=object) for c in (SOURCE_FILE, QUARANTINE_REASON, RAW_LINE)}
        )
    return pd.read_parquet(path)


def validate_week(lake: Lake, week: date, config: ValidationConfig | None = None) -> dict[str, Any]:
    """Validate the staged events, items and users of ``week``.

    Returns ``{"week", "accounting", "report_html", "report_json", "passed": True}`` where
    ``accounting[kind]`` holds ``rows_read`` (including ingest's malformed lines), ``rows_valid``,
    ``rows_quarantined``, ``by_reason`` and the checks run. Raises :class:`ValidationFailed` (after
    writing the quarantine and the reports) when a batch-level check fails.
    """
    config = config or ValidationConfig()
    try:
        week_start, week_end = week_bounds(week)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    staged = {kind: read_parquet(lake.data_file("staged", kind, week)) for kind in KINDS}

    runner = _GxRunner()
    outcomes: dict[str, KindOutcome] = {}
    items = _validate_kind(
        runner,
        "items",
        staged["items"],
        _read_malformed(lake, "items", week),
        lambda: items_suite(week.year + 1),
        config,
    )
    outcomes["items"] = items
    known_ids = items.valid["item_id"].tolist()
    outcomes["events"] = _validate_kind(
        runner,
        "events",
        staged["events"],
        _read_malformed(lake, "events", week),
        lambda: events_suite(week_start, week_end, known_ids),
        config,
    )
    outcomes["users"] = _validate_kind(
        runner, "users", staged["users"], _read_malformed(lake, "users", week), users_suite, config
    )
    outcomes = {kind: outcomes[kind] for kind in KINDS}

    failures = [f for o in outcomes.values() for f in o.failures]
    passed = not failures
    for kind, outcome in outcomes.items():
        write_parquet(outcome.quarantine, lake.data_file("quarantine", kind, week))
        validated = lake.data_file("validated", kind, week)
        if passed:
            write_parquet(outcome.valid, validated)
        else:
            validated.unlink(missing_ok=True)  # no stale partition from an earlier run of the week
    accounting = {kind: o.accounting() for kind, o in outcomes.items()}
    reports = lake.partition("reports", week)
    report_json = write_json(reports / "accounting.json", accounting)
    report_html = write_text(render_html(week, outcomes, config, failures), reports / "validation.html")
    for kind, o in outcomes.items():
        log.info(
            "validate %s %s: %d read, %d valid, %d quarantined",
            kind,
            week,
            o.rows_read,
            len(o.valid),
            o.rows_quarantined,
        )
    if not passed:
        raise ValidationFailed("; ".join(failures) + f" (report: {report_html})")
    return {
        "week": week.isoformat(),
        "accounting": accounting,
        "report_html": str(report_html),
        "report_json": str(report_json),
        "passed": True,
    }


# ---- HTML report ------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.pass { color: #176f2c; font-weight: bold; }
.fail { color: #b00020; font-weight: bold; }
tr.failed td { background: #fdecee; }
code { font-size: 0.9em; }
"""


def _cell(value: Any, cls: str = "") -> str:
    text = "" if value is None else str(value)
    attr = f' class="{cls}"' if cls else ""
    return f"<td{attr}>{html.escape(text)}</td>"


def render_html(
    week: date, outcomes: dict[str, KindOutcome], config: ValidationConfig, failures: list[str]
) -> str:
    """A self-contained HTML page summarising the validation of ``week``."""
    e = html.escape
    status = '<span class="pass">PASSED</span>' if not failures else '<span class="fail">FAILED</span>'
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Data validation - week {e(week.isoformat())}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Data validation - week {e(week.isoformat())}: {status}</h1>",
        "<p>Settings: "
        + ", ".join(f"<code>{e(k)}={e(str(v))}</code>" for k, v in config.model_dump().items())
        + "</p>",
    ]
    if failures:
        out.append("<h2>Batch failures</h2><ul>")
        out.extend(f'<li class="fail">{e(f)}</li>' for f in failures)
        out.append("</ul>")
    for kind, o in outcomes.items():
        kind_status = (
            '<span class="pass">passed</span>' if not o.failures else '<span class="fail">failed</span>'
        )
        out.append(f"<h2>{e(kind)}: {kind_status}</h2>")
        out.append("<table><tr><th>rows read</th><th>staged</th><th>malformed</th><th>valid</th>")
        out.append("<th>quarantined</th><th>quarantined share</th></tr><tr>")
        for v in (o.rows_read, o.rows_staged, o.rows_malformed, len(o.valid), o.rows_quarantined):
            out.append(_cell(v, "num"))
        out.append(_cell(f"{o.quarantine_share:.2%}", "num") + "</tr></table>")
        if o.by_reason:
            out.append("<h3>Quarantine reasons</h3><table><tr><th>reason</th><th>rows</th></tr>")
            for reason, count in sorted(o.by_reason.items(), key=lambda kv: (-kv[1], kv[0])):
                out.append(f"<tr>{_cell(reason)}{_cell(count, 'num')}</tr>")
            out.append("</table>")
        out.append("<h3>Checks</h3><table><tr><th>level</th><th>expectation</th><th>column</th><th>rule</th>")
        out.append("<th>result</th><th>observed</th><th>unexpected</th><th>quarantined</th></tr>")
        for c in o.checks:
            row_cls = "" if c["success"] else ' class="failed"'
            result = "pass" if c["success"] else "FAIL"
            out.append(
                f"<tr{row_cls}>{_cell(c['level'])}<td><code>{e(c['expectation'])}</code></td>"
                f"{_cell(c['column'])}{_cell(c['rule'])}{_cell(result, 'pass' if c['success'] else 'fail')}"
                f"{_cell(c['observed'])}{_cell(c['unexpected_count'], 'num')}{_cell(c['rows_quarantined'], 'num')}</tr>"
            )
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def report_path(lake: Lake, week: date) -> Path:
    """Where the HTML validation report of ``week`` is written."""
    return lake.partition("reports", week) / "validation.html"
