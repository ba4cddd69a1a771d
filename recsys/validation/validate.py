"""Validate: type the staged text, check it with Great Expectations suites, quarantine bad rows.

The suites are code (:func:`table_suite`, :func:`events_suite`, :func:`items_suite`,
:func:`users_suite`, :func:`events_batch_suite`), versioned with the project. For each kind (items
first: its valid ids are the catalogue that events must reference; then events and users) the stage

1. checks the batch as staged (GX, ``table_suite``): the column set equals the contract (any order;
   the contract's optional columns, the items' ``tags``, may be there or not) and the row count is
   at least ``min_rows`` and, once there is history, within ``volume_ratio`` times the median of
   recent weeks. A column-set mismatch stops the kind: its rows cannot be typed,
   so all of them are quarantined as ``batch_failed: expect_table_columns_to_match_set``;
2. casts text to typed columns (a value that does not parse becomes null; for optional columns,
   where null is allowed, the row is quarantined as ``unparseable(<column>)``); the items' ``tags``
   are put in their canonical form (:func:`recsys.core.schemas.canonical_tags`; ``""`` when the batch
   has no such column), so every validated catalogue has the column;
3. checks every row (GX, row-level suites) and quarantines each row an expectation reports as
   unexpected, with reason ``<expectation>(<column>)`` (timestamps later than the processing time
   ``now``: :data:`FUTURE`); a row failing several gets them all, joined by ``"; "``;
4. among the rows still valid, keeps the first of each duplicate key (``event_id``, or the same
   user/item/timestamp/type) and quarantines the rest as ``duplicate``; for events, quarantines all
   the rows of a user-day above ``max_events_per_user_per_day`` as ``outlier: bot-like activity``;
5. for events, checks the valid rows as a batch (GX, ``events_batch_suite``): the share of rating
   events and the number of distinct users, against the recent weeks (or configured bounds);
6. fails the batch when the quarantined share (including ingest's malformed lines) is above
   ``max_quarantine_share``.

History is read from ``reports/week=W/accounting.json`` of up to ``history_weeks`` earlier weeks
whose validation of that kind passed; with fewer than ``history_min_weeks`` of them, the history
checks are recorded as not checked, with the reason. A batch-level failure (1, 5, 6) fails the
week: :class:`ValidationFailed` names the expectation, the observed value and the expected range.

Engines: a kind whose staged batch has at most ``spark_min_rows`` rows is validated in pandas; a
larger one on Spark (:mod:`recsys.validation.spark_engine`), streaming the staged parquet in chunks, so a
week that does not fit in memory still validates. Both give the same rows, reasons and accounting.

The reports, the accounting and the failure messages are published (MLflow artifacts, stage
results, task logs): they quote sample values of failing rows, but never values of
:data:`PERSONAL_COLUMNS`.

Outputs of week ``W``: ``validated/<kind>/week=W/data.parquet`` (typed valid rows; only written when
every kind passed, and removed when the week fails, so no stale partition survives a failed re-run),
``quarantine/<kind>/week=W/data.parquet`` (ingest's malformed lines + rows set aside here, as read,
with ``_reason``), ``reports/week=W/accounting.json`` and ``reports/week=W/validation.html``. The
reports are written before a batch failure is raised.

:func:`validate_week` is the pipeline stage; :func:`validate_path` runs the same code on any raw
file or partition folder (``recsys validate``), writing into an output folder laid out as a lake.
"""

from __future__ import annotations

import functools
import html
import json
import logging
import math
import os
import shutil
import statistics
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, model_validator

from recsys.core.errors import ConfigError, DataNotFoundError, ValidationFailed
from recsys.core.intervals import parse_week, week_bounds, week_start_of
from recsys.core.schemas import (
    DEVICE_TYPES,
    EVENT_TYPES,
    KINDS,
    OPTIONAL_COLUMNS,
    QUARANTINE_REASON,
    RATING_MAX,
    RATING_MIN,
    RAW_COLUMNS,
    RAW_USER_COLUMNS,
    SOURCE_FILE,
    SOURCE_LINE,
    canonical_tags,
)
from recsys.data.ingest import (
    RAW_LINE,
    find_raw_files,
    ingest_quarantine_file,
    read_header,
    stage_files,
)
from recsys.io.storage import Lake, write_json, write_text

if TYPE_CHECKING:
    import great_expectations as gx_type

log = logging.getLogger(__name__)

DUPLICATE = "duplicate"
BOT = "outlier: bot-like activity"
FUTURE = "future_timestamp: expect_column_values_to_be_between(ts)"
COLUMNS_REJECTED = "batch_failed: expect_table_columns_to_match_set"
MIN_RELEASE_YEAR = 1870
ROW_ID = "_row"  # position of a row in its staged batch (0-based): the key of row-level results
IS_RATING = "_is_rating"  # 1.0 for a rating event: its mean is the share of ratings

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
ITEM_OUTPUT_COLUMNS = (
    "item_id",
    "title",
    "genres",
    "release_year",
    "added_at",
    "tags",  # optional in the raw files: "" for every item of a file without it
    SOURCE_FILE,
    SOURCE_LINE,
)
USER_OUTPUT_COLUMNS = (*RAW_USER_COLUMNS, SOURCE_FILE, SOURCE_LINE)
OUTPUT_COLUMNS = {"events": EVENT_OUTPUT_COLUMNS, "items": ITEM_OUTPUT_COLUMNS, "users": USER_OUTPUT_COLUMNS}
# Values of these columns are never quoted in reports, results or messages (they are published:
# MLflow artifacts, stage results); see recsys.privacy.scan.
PERSONAL_COLUMNS = frozenset({"user_id", "name", "email", "ip_address", "device_id", "zip_code"})
ORDER = ("items", "events", "users")  # items first: events are checked against the valid catalogue

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
    history_weeks: int = Field(
        4,
        ge=0,
        description="earlier weeks (with a passed validation) the history checks compare with; 0: off",
    )
    history_min_weeks: int = Field(
        2, ge=1, description="history checks are skipped (and say so) with fewer earlier weeks than this"
    )
    volume_ratio: float = Field(
        5.0,
        gt=1.0,
        description="rows of a batch must lie in [median / r, median * r] of the earlier weeks "
        "(snapshots of items and users: only the lower bound)",
    )
    distinct_users_ratio: float = Field(
        5.0, gt=1.0, description="distinct users of the valid events within [median / r, median * r]"
    )
    rating_share_tolerance: float = Field(
        0.25, ge=0.0, le=1.0, description="share of rating events within the median share +- this"
    )
    rating_share_min: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="absolute lower bound of the rating share (replaces the history one)",
    )
    rating_share_max: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="absolute upper bound of the rating share (replaces the history one)",
    )
    spark_min_rows: int = Field(
        1_000_000, ge=0, description="a kind with more staged rows than this is validated on Spark"
    )

    @model_validator(mode="after")
    def _share_bounds_ordered(self) -> ValidationConfig:
        low, high = self.rating_share_min, self.rating_share_max
        if low is not None and high is not None and low > high:
            raise ValueError(f"rating_share_min {low} is above rating_share_max {high}")
        return self


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
    cls_name: str,
    *,
    reason: str | None = None,
    rule: str = "",
    role: str = "row",
    skipped: str | None = None,
    **kwargs: Any,
):
    """An expectation whose ``meta`` says how its unexpected rows are treated.

    role ``row``: each unexpected row is quarantined with ``reason``; ``unique``: rows beyond the
    first of each key are quarantined as ``duplicate``; ``table``: a failure fails the batch.
    ``skipped`` (a history check without history): why it has no bounds.
    """
    gx = _gx()
    cls = getattr(gx.expectations, cls_name)
    column = kwargs.get("column")
    if reason is None and role == "row":
        reason = f"{_snake(cls_name)}({column})"
    meta = {"reason": reason, "rule": rule, "role": role}
    if skipped:
        meta["skipped"] = skipped
    return cls(**kwargs, meta=meta)


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def _suite(name: str, expectations: Iterable[Any]) -> gx_type.ExpectationSuite:
    gx = _gx()
    suite = gx.ExpectationSuite(name=name)
    for seq, expectation in enumerate(expectations):
        expectation.meta["seq"] = seq  # results are reported in this order, whatever the engine
        suite.add_expectation(expectation)
    return suite


@dataclass(frozen=True)
class Bounds:
    """Bounds of a batch-level number, and where they come from (``None``: open)."""

    low: float | None = None
    high: float | None = None
    rule: str = ""
    skipped: str | None = None  # why the check has no bounds

    def describe(self) -> str:
        if self.skipped:
            return f"not checked: {self.skipped}"
        low = "-inf" if self.low is None else _num(self.low)
        high = "+inf" if self.high is None else _num(self.high)
        return f"{low} .. {high}" + (f" ({self.rule})" if self.rule else "")

    def scaled_low(self, share: float) -> Bounds:
        """These bounds for a week of which only ``share`` (0..1] has elapsed: a lower bound on a
        count (events, distinct users) scales down with it; the upper bound stays."""
        if self.skipped or self.low is None or share >= 1.0:
            return self
        return Bounds(
            low=math.floor(self.low * share),
            high=self.high,
            rule=f"{self.rule}; lower bound x {share:.2f}: week in progress",
        )


def elapsed_share(week_start: datetime, week_end: datetime, now: datetime) -> float:
    """Share of ``[week_start, week_end)`` before ``now``: 1 for a week that has ended."""
    total = (week_end - week_start).total_seconds()
    return min(1.0, max(0.0, (now - week_start).total_seconds() / total))


def _num(value: float) -> str:
    return f"{value:.4g}" if isinstance(value, float) and not float(value).is_integer() else f"{int(value)}"


def expected_columns(kind: str, staged_columns: Iterable[str] = ()) -> list[str]:
    """The column set a staged batch of ``kind`` must have: the contract's required columns, plus
    those of its optional columns (``OPTIONAL_COLUMNS``) that the batch has."""
    present = set(staged_columns)
    return [*RAW_COLUMNS[kind], *(c for c in OPTIONAL_COLUMNS[kind] if c in present)]


def table_suite(
    kind: str,
    min_rows: int = 1,
    volume: Bounds | None = None,
    staged_columns: Iterable[str] = (),
) -> gx_type.ExpectationSuite:
    """Batch-level expectations on the staged text of ``kind``: contract columns and row count.

    ``volume``: bounds from the recent weeks, merged with ``min_rows`` into one row-count expectation.
    ``staged_columns``: the batch's columns; the optional columns among them join the expected set
    (a batch without them is checked against the required columns alone).
    """
    columns = expected_columns(kind, staged_columns)
    optional = [c for c in OPTIONAL_COLUMNS[kind] if c not in columns]
    volume = volume or Bounds(skipped="no history given")
    low = max(min_rows, int(volume.low or 0))
    high = None if volume.high is None else int(volume.high)
    rule = f"rows >= {min_rows}; history: {volume.describe()}"
    return _suite(
        f"{kind}_table",
        [
            _expectation(
                "ExpectTableColumnsToMatchSet",
                role="table",
                rule="columns = "
                + ", ".join(columns)
                + (f" (optional: {', '.join(optional)})" if optional else ""),
                column_set=columns,
                exact_match=True,
            ),
            _expectation(
                "ExpectTableRowCountToBeBetween", role="table", rule=rule, min_value=low, max_value=high
            ),
        ],
    )


def events_suite(
    week_start: datetime,
    week_end: datetime,
    known_item_ids: Iterable[int] | None,
    *,
    now: datetime | None = None,
) -> gx_type.ExpectationSuite:
    """Row-level expectations on typed events of the week [week_start, week_end).

    ``known_item_ids``: the valid catalogue (``None``: referential integrity is not checked);
    ``now``: the processing time (``None``: timestamps are not checked against it).
    """
    from great_expectations.expectations.row_conditions import Column

    is_rating = Column("event_type") == "rating"
    not_null = [
        _expectation("ExpectColumnValuesToNotBeNull", rule="required", column=c)
        for c in ("event_id", "user_id", "item_id", "ts", "event_type", "device_type")
    ]
    expectations = [
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
    ]
    if now is not None:
        expectations.append(
            _expectation(
                "ExpectColumnValuesToBeBetween",
                reason=FUTURE,
                rule=f"ts <= processing time {now.isoformat()}",
                column="ts",
                max_value=now,
            )
        )
    if known_item_ids is not None:
        item_ids = sorted({int(i) for i in known_item_ids})
        expectations.append(
            _expectation(
                "ExpectColumnValuesToBeInSet",
                rule=f"in the validated catalogue ({len(item_ids)} items)",
                column="item_id",
                value_set=item_ids,
            )
        )
    expectations += [
        _expectation("ExpectColumnValuesToBeUnique", role="unique", rule="unique", column="event_id"),
        _expectation(
            "ExpectCompoundColumnsToBeUnique",
            role="unique",
            rule="no exact duplicate (user_id, item_id, ts, event_type)",
            column_list=["user_id", "item_id", "ts", "event_type"],
        ),
    ]
    return _suite("events", expectations)


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


def events_batch_suite(rating_share: Bounds, distinct_users: Bounds) -> gx_type.ExpectationSuite:
    """Batch-level expectations on the valid events: share of ratings, number of distinct users."""
    return _suite(
        "events_batch",
        [
            _expectation(
                "ExpectColumnMeanToBeBetween",
                role="table",
                rule="share of rating events: " + rating_share.describe(),
                skipped=rating_share.skipped,
                column=IS_RATING,
                min_value=rating_share.low,
                max_value=rating_share.high,
            ),
            _expectation(
                "ExpectColumnUniqueValueCountToBeBetween",
                role="table",
                rule="distinct users: " + distinct_users.describe(),
                skipped=distinct_users.skipped,
                column="user_id",
                min_value=None if distinct_users.low is None else int(distinct_users.low),
                max_value=None if distinct_users.high is None else int(distinct_users.high),
            ),
        ],
    )


# ---- history: the recent weeks a batch is compared with ----------------------------------------


@dataclass
class History:
    """Stats of ``kind`` in up to ``history_weeks`` earlier weeks whose validation of it passed.

    ``points[metric]``: ``(week, value)`` newest first, for ``rows`` (staged rows) and, for events,
    ``rating_share`` and ``distinct_users``.
    """

    kind: str
    points: dict[str, list[tuple[date, float]]] = field(default_factory=dict)
    source: str = ""  # where it was read, or why there is none

    def _enough(self, metric: str, config: ValidationConfig) -> tuple[list[float], str] | str:
        """The values and a description of where they come from, or why there are not enough."""
        points = self.points.get(metric, [])
        n = len(points)
        weeks = f"{n} earlier week{'s' if n != 1 else ''}"
        if config.history_weeks == 0:
            return "history checks are off (history_weeks = 0)"
        if n < config.history_min_weeks:
            return f"{weeks} with a passed validation {self.source}, need {config.history_min_weeks}"
        return [v for _, v in points], f"{weeks} ({points[-1][0].isoformat()} .. {points[0][0].isoformat()})"

    def _ratio_bounds(self, metric: str, ratio: float, config: ValidationConfig, upper: bool) -> Bounds:
        found = self._enough(metric, config)
        if isinstance(found, str):
            return Bounds(skipped=found)
        values, where = found
        median = statistics.median(values)
        return Bounds(
            low=math.floor(median / ratio),
            high=math.ceil(median * ratio) if upper else None,
            rule=(f"within {ratio:g}x" if upper else f"at least 1/{ratio:g}")
            + f" of the median {_num(median)} of {where}",
        )

    def volume(self, config: ValidationConfig) -> Bounds:
        # snapshots (items, users) grow: only a fall far below the recent size is suspicious
        return self._ratio_bounds("rows", config.volume_ratio, config, upper=self.kind == "events")

    def users(self, config: ValidationConfig) -> Bounds:
        return self._ratio_bounds("distinct_users", config.distinct_users_ratio, config, upper=True)

    def share(self, config: ValidationConfig) -> Bounds:
        if config.rating_share_min is not None or config.rating_share_max is not None:
            return Bounds(config.rating_share_min, config.rating_share_max, rule="configured")
        found = self._enough("rating_share", config)
        if isinstance(found, str):
            return Bounds(skipped=found)
        values, where = found
        median = statistics.median(values)
        tol = config.rating_share_tolerance
        return Bounds(
            low=max(0.0, round(median - tol, 6)),
            high=min(1.0, round(median + tol, 6)),
            rule=f"median {median:.3f} +- {tol:g} of {where}",
        )


def load_history(lake: Lake | None, week: date, kind: str, config: ValidationConfig) -> History:
    """The recent weeks' accounting of ``kind`` before ``week``, newest first."""
    history = History(kind=kind)
    if lake is None:
        history.source = "(no lake to read history from)"
        return history
    history.source = f"in {lake.root / 'reports'}"
    weeks = 0
    for earlier in sorted((w for w in lake.weeks("reports") if w < week), reverse=True):
        if weeks >= config.history_weeks:
            break
        path = lake.partition("reports", earlier) / "accounting.json"
        try:
            acc = json.loads(path.read_text(encoding="utf-8")).get(kind)
        except (OSError, ValueError, AttributeError):
            continue
        if not isinstance(acc, dict) or not acc.get("passed") or "rows_staged" not in acc:
            continue
        weeks += 1
        history.points.setdefault("rows", []).append((earlier, int(acc["rows_staged"])))
        for metric, value in (acc.get("stats") or {}).items():
            if metric in ("rating_share", "distinct_users") and value is not None:
                history.points.setdefault(metric, []).append((earlier, float(value)))
    return history


# ---- running suites ------------------------------------------------------------------------------


class GxRunner:
    """An ephemeral GX context with a pandas and a Spark data source; validates DataFrames.

    One is shared per process (:meth:`shared`): making assets saves the context's config each time,
    so each (engine, name) gets one asset and one whole-dataframe batch definition, reused.
    """

    _shared: GxRunner | None = None

    def __init__(self) -> None:
        gx = _gx()
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        self._pandas: Any = None
        self._spark: Any = None
        self._spark_session: Any = None
        self._definitions: dict[tuple[bool, str], Any] = {}

    @classmethod
    def shared(cls) -> GxRunner:
        if cls._shared is None:
            cls._shared = cls()
        return cls._shared

    def _source(self, df: Any, spark: bool) -> Any:
        if spark:
            session = df.sparkSession
            if self._spark is None or self._spark_session is not session:
                # persist=False: the caller caches what it validates, and unpersists it afterwards
                name = f"recsys_spark_{len([k for k in self._definitions if k[0]])}_{id(session)}"
                self._spark = self.context.data_sources.add_spark(name=name, persist=False)
                self._spark_session = session
                self._definitions = {k: v for k, v in self._definitions.items() if not k[0]}
            return self._spark
        if self._pandas is None:
            self._pandas = self.context.data_sources.add_pandas(name="recsys")
        return self._pandas

    def validate(self, name: str, df: Any, suite: gx_type.ExpectationSuite, spark: bool = False) -> list[Any]:
        """Results of ``suite`` on ``df`` in suite order. On Spark, row-level results carry ``_row``."""
        source = self._source(df, spark)
        definition = self._definitions.get((spark, name))
        if definition is None:
            asset = source.add_dataframe_asset(name=name)
            definition = asset.add_batch_definition_whole_dataframe("whole")
            self._definitions[(spark, name)] = definition
        batch = definition.get_batch(batch_parameters={"dataframe": df})
        result_format = dict(_RESULT_FORMAT)
        if spark and ROW_ID in df.columns:
            result_format.update(unexpected_index_column_names=[ROW_ID], exclude_unexpected_values=True)
        results = batch.validate(suite, result_format=result_format).results
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
        return sorted(results, key=lambda r: (r.expectation_config.meta or {}).get("seq", 0))


def unexpected_rows(result: Any) -> np.ndarray:
    """Row ids an expectation reported as unexpected: the pandas index, or ``_row`` on Spark."""
    found = (result.result or {}).get("unexpected_index_list") or []
    if not found:
        return np.empty(0, dtype=np.int64)
    first = found[0]
    if isinstance(first, dict):
        if len(found) == 1 and isinstance(first.get(ROW_ID), list):  # exclude_unexpected_values
            return np.asarray(first[ROW_ID], dtype=np.int64)
        return np.asarray([d[ROW_ID] for d in found], dtype=np.int64)
    return np.asarray(found, dtype=np.int64)


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


def _tags(staged: pd.DataFrame) -> pd.Series:
    """The optional ``tags`` column in its canonical form (distinct lower-cased tags, sorted,
    ``|``-joined); ``""`` where the batch (or a file of it) has no tags column or no tags."""
    if "tags" not in staged.columns:
        return pd.Series("", index=staged.index, dtype=object)
    return staged["tags"].astype(object).map(canonical_tags)


def _type_items(staged: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    t = pd.DataFrame(index=staged.index)
    t["item_id"] = _to_int(_text(staged["item_id"]))
    t["title"] = _text(staged["title"])
    t["genres"] = _text(staged["genres"])
    year_text, added_text = _text(staged["release_year"]), _text(staged["added_at"])
    t["release_year"] = _to_int(year_text)
    t["added_at"] = _to_ts(added_text)
    t["tags"] = _tags(staged)
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


TYPERS: dict[str, Callable[[pd.DataFrame], tuple[pd.DataFrame, dict[str, np.ndarray]]]] = {
    "events": _type_events,
    "items": _type_items,
    "users": _type_users,
}


def empty_staged(kind: str) -> pd.DataFrame:
    columns = {c: pd.Series([], dtype=object) for c in RAW_COLUMNS[kind]}
    return pd.DataFrame(
        {**columns, SOURCE_FILE: pd.Series([], dtype=object), SOURCE_LINE: pd.Series([], dtype="int64")}
    )


def _arrow_type(dtype: Any, ts_unit: str) -> pa.DataType:
    if isinstance(dtype, pd.DatetimeTZDtype):
        return pa.timestamp(ts_unit, tz="UTC")
    if str(dtype) in ("Int64", "int64"):
        return pa.int64()
    if str(dtype) == "float64":
        return pa.float64()
    return pa.string()


@functools.cache
def typed_schema(kind: str, ts_unit: str = "ns") -> pa.Schema:
    """Arrow schema of the typed columns of ``kind`` (as the typer makes them), lineage included."""
    typed, _ = TYPERS[kind](empty_staged(kind))
    return pa.schema([(c, _arrow_type(typed[c].dtype, ts_unit)) for c in typed.columns])


@functools.cache
def output_schema(kind: str) -> pa.Schema:
    """Arrow schema (with pandas metadata, so ``Int64`` columns read back as ``Int64``) of validated rows."""
    typed, _ = TYPERS[kind](empty_staged(kind))
    valid = _output_frame(kind, typed)
    schema = pa.Schema.from_pandas(valid, preserve_index=False)
    for i, name in enumerate(valid.columns):
        schema = schema.set(i, pa.field(name, _arrow_type(valid[name].dtype, "ns")))
    return schema


def quarantine_schema(text_columns: Iterable[str]) -> pa.Schema:
    """Arrow schema of a quarantine partition: the columns as staged, lineage, reason, raw line."""
    fields = [(c, pa.string()) for c in text_columns]
    fields += [(SOURCE_FILE, pa.string()), (SOURCE_LINE, pa.int64()), (QUARANTINE_REASON, pa.string())]
    return pa.schema([*fields, (RAW_LINE, pa.string())])


def _output_frame(kind: str, typed: pd.DataFrame) -> pd.DataFrame:
    valid = typed[list(OUTPUT_COLUMNS[kind])].reset_index(drop=True)
    if kind in ("events", "items"):
        valid["item_id"] = valid["item_id"].astype("int64")
    return valid


def write_frame(df: pd.DataFrame, path: Path, schema: pa.Schema) -> Path:
    """Write ``df`` to ``path`` with ``schema`` (the same file layout whichever engine made it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(df, schema=schema, preserve_index=False)
    pq.write_table(table, path)
    return path


# ---- per-kind validation ----------------------------------------------------------------------


class Flags:
    """Rows set aside so far: ``(reason, row ids)`` in the order the reasons were found."""

    def __init__(self) -> None:
        self.parts: list[tuple[str, np.ndarray]] = []

    def add(self, reason: str, rows: Iterable[int] | np.ndarray) -> int:
        ids = np.asarray(rows if isinstance(rows, np.ndarray) else list(rows), dtype=np.int64)
        if len(ids):
            self.parts.append((reason, ids))
        return len(ids)

    def rows(self) -> np.ndarray:
        if not self.parts:
            return np.empty(0, dtype=np.int64)
        return np.unique(np.concatenate([ids for _, ids in self.parts]))

    def mask(self, n: int) -> np.ndarray:
        flagged = np.zeros(n, dtype=bool)
        flagged[self.rows()] = True
        return flagged

    def counts(self) -> Counter:
        counts: Counter = Counter()
        for reason, ids in self.parts:
            counts[reason] += len(ids)
        return counts

    def frame(self) -> pd.DataFrame:
        """One row per flagged row: ``_row`` and ``_reason`` (its reasons joined by ``"; "``), by ``_row``."""
        if not self.parts:
            return pd.DataFrame(
                {ROW_ID: pd.Series([], dtype="int64"), QUARANTINE_REASON: pd.Series([], dtype=object)}
            )
        labels = np.array([reason for reason, _ in self.parts], dtype=object)
        lengths = [len(ids) for _, ids in self.parts]
        pairs = pd.DataFrame(
            {
                ROW_ID: np.concatenate([ids for _, ids in self.parts]),
                "seq": np.repeat(np.arange(len(self.parts)), lengths),
                "reason": np.repeat(labels, lengths),
            }
        )
        pairs = pairs.sort_values([ROW_ID, "seq"], kind="stable").drop_duplicates([ROW_ID, "reason"])
        joined = pairs.groupby(ROW_ID, sort=True)["reason"].agg("; ".join)
        return pd.DataFrame(
            {ROW_ID: joined.index.to_numpy(dtype=np.int64), QUARANTINE_REASON: joined.to_numpy()}
        )


@dataclass
class KindJob:
    """Everything an engine needs to validate one kind of one batch."""

    kind: str
    staged_file: Path
    malformed: pd.DataFrame  # ingest's malformed records: _source_file, _source_line, _reason, _raw_line
    rows: int  # staged rows
    config: ValidationConfig
    table_suite: Callable[[], gx_type.ExpectationSuite]
    row_suite: Callable[[], gx_type.ExpectationSuite]
    batch_suite: Callable[[], gx_type.ExpectationSuite] | None
    valid_file: Path  # where the engine writes the typed valid rows
    quarantine_file: Path  # ... and the quarantined ones
    work_dir: Path  # scratch space, removed afterwards
    notes: list[str] = field(default_factory=list)


@dataclass
class KindOutcome:
    kind: str
    engine: str
    rows_staged: int
    rows_malformed: int
    rows_valid: int
    rows_quarantined: int
    valid_file: Path
    quarantine_file: Path
    by_reason: Counter = field(default_factory=Counter)
    checks: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    item_ids: list[int] | None = None  # items: the valid catalogue
    # quarantined only for a timestamp after the processing time: in a week in progress, events that
    # landed after the run's cutoff. Not bad rows: the run of the complete week reads them again.
    rows_after_cutoff: int = 0

    @property
    def rows_read(self) -> int:
        return self.rows_staged + self.rows_malformed

    @property
    def quarantine_share(self) -> float:
        """Share of bad rows: quarantined rows over rows read, both without the rows after the cutoff."""
        read = self.rows_read - self.rows_after_cutoff
        return (self.rows_quarantined - self.rows_after_cutoff) / read if read else 0.0

    def accounting(self) -> dict[str, Any]:
        return {
            "rows_read": self.rows_read,
            "rows_staged": self.rows_staged,
            "rows_malformed": self.rows_malformed,
            "rows_valid": self.rows_valid,
            "rows_quarantined": self.rows_quarantined,
            "quarantine_share": round(self.quarantine_share, 6),
            "rows_after_cutoff": self.rows_after_cutoff,
            # rows per reason; a row quarantined for several reasons counts under each
            "by_reason": dict(sorted(self.by_reason.items(), key=lambda kv: (-kv[1], kv[0]))),
            "passed": not self.failures,
            "failures": list(self.failures),
            "engine": self.engine,
            "stats": self.stats,
            "notes": list(self.notes),
            "checks": self.checks,
        }


def _sample(values: Any, limit: int = 5) -> list[str]:
    out: list[str] = []
    for v in values or []:
        text = "null" if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NaT else str(v)
        text = text.replace("\r", "\\r").replace("\n", "\\n")  # messages stay on one line
        text = text if len(text) <= 60 else text[:57] + "..."
        if text not in out:
            out.append(text)
        if len(out) >= limit:
            break
    return out


def _observed_value(config_type: str, value: Any) -> str:
    if value is None:
        return "no value (no rows)"
    if config_type == "expect_table_row_count_to_be_between":
        return f"{value} rows"
    if config_type == "expect_column_mean_to_be_between":
        return f"share {float(value):.4f}"
    if config_type == "expect_column_unique_value_count_to_be_between":
        return f"{value} distinct values"
    return str(value)


def check_entry(kind: str, r: Any) -> dict[str, Any]:
    """One line of the report (and of ``accounting[kind]["checks"]``) for a GX result."""
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
    if meta.get("skipped"):
        entry["skipped"] = meta["skipped"]
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
    elif "observed_value" in result:
        entry["observed"] = _observed_value(config.type, result.get("observed_value"))
        entry["observed_value"] = _plain(result.get("observed_value"))
        if not r.success:
            low, high = kwargs.get("min_value"), kwargs.get("max_value")
            expected = f"{'-inf' if low is None else _num(low)} .. {'+inf' if high is None else _num(high)}"
            entry["observed"] += f", expected {expected} ({entry['rule']})"
    else:
        n, total = result.get("unexpected_count") or 0, result.get("element_count") or 0
        columns = set(kwargs.get("column_list") or [kwargs.get("column")])
        if columns & PERSONAL_COLUMNS:  # the report is published: never quote personal data
            sample = ["values not shown: personal data"] if n else []
        else:
            sample = _sample(result.get("unexpected_list"))
        entry["observed"] = f"{n} of {total} rows unexpected" + (
            f" (e.g. {', '.join(sample)})" if sample else ""
        )
    return entry


def record_row_results(
    kind: str, results: Iterable[Any], checks: list[dict[str, Any]], flags: Flags
) -> list[tuple[list[str], dict[str, Any]]]:
    """Record each row-level expectation result (both engines): flag its unexpected rows under its
    reason; return the uniqueness checks, whose duplicates are resolved afterwards (keep the first)."""
    unique_checks: list[tuple[list[str], dict[str, Any]]] = []
    for r in results:
        entry = check_entry(kind, r)
        checks.append(entry)
        meta = r.expectation_config.meta or {}
        if meta.get("role") == "unique":
            kwargs = r.expectation_config.kwargs
            unique_checks.append((list(kwargs.get("column_list") or [kwargs["column"]]), entry))
        else:
            entry["rows_quarantined"] = flags.add(meta["reason"], unexpected_rows(r))
    return unique_checks


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def table_checks(kind: str, results: list[Any], checks: list[dict[str, Any]], failures: list[str]) -> bool:
    """Record batch-level results; False when the column set does not match the contract."""
    columns_ok = True
    for r in results:
        entry = check_entry(kind, r)
        checks.append(entry)
        if not r.success:
            failures.append(f"{kind}: {entry['expectation']} failed: {entry['observed']}")
            if entry["expectation"] == "expect_table_columns_to_match_set":
                columns_ok = False
    return columns_ok


def parse_entry(kind: str, reason: str, count: int, n: int) -> dict[str, Any]:
    return {
        "kind": kind,
        "expectation": "parse",
        "column": reason.removeprefix("unparseable(").removesuffix(")"),
        "rule": "parses as its type if present",
        "level": "row",
        "success": count == 0,
        "unexpected_count": count,
        "element_count": n,
        "rows_quarantined": count,
        "observed": f"{count} of {n} rows unparseable",
    }


def bot_entry(
    limit: int, n_rows: int, n_bot_rows: int, n_users: int, n_user_days: int, top: int
) -> dict[str, Any]:
    return {
        "kind": "events",
        "expectation": "max_events_per_user_per_day",
        "column": "user_id",
        "rule": f"<= {limit} events per user per UTC day",
        "level": "row",
        "success": n_bot_rows == 0,
        "unexpected_count": n_bot_rows,
        "element_count": n_rows,
        "rows_quarantined": n_bot_rows,
        "observed": f"{n_users} users over the limit on {n_user_days} user-days ({n_bot_rows} rows); "
        f"busiest user-day {top} events",
    }


def _rows_after_cutoff(quarantine_file: Path) -> int:
    """Quarantined rows whose only reason is a timestamp after the processing time."""
    if not quarantine_file.exists():
        return 0
    reasons = pq.read_table(quarantine_file, columns=[QUARANTINE_REASON]).column(QUARANTINE_REASON)
    return int(pc.sum(pc.equal(reasons, FUTURE)).as_py() or 0)


def finish(outcome: KindOutcome, config: ValidationConfig) -> KindOutcome:
    """The quarantined-share check (rows after the cutoff of a week in progress are not bad rows),
    and the accounting identity."""
    outcome.rows_after_cutoff = _rows_after_cutoff(outcome.quarantine_file)
    if outcome.rows_after_cutoff:
        outcome.notes.append(
            f"{outcome.rows_after_cutoff} rows with a timestamp after the processing time (landed after "
            "this run's cutoff) set aside and not counted as bad; the complete week's run reads them again"
        )
    share_ok = outcome.quarantine_share <= config.max_quarantine_share
    observed = (
        f"{outcome.quarantine_share:.1%} quarantined ({outcome.rows_quarantined} of {outcome.rows_read} rows)"
    )
    outcome.checks.append(
        {
            "kind": outcome.kind,
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
        top = ", ".join(f"{reason} ({count})" for reason, count in outcome.by_reason.most_common(3))
        outcome.failures.append(
            f"{outcome.kind}: max_quarantine_share failed: {observed} exceeds "
            f"{config.max_quarantine_share:.1%}; top reasons: {top}"
        )
    accounted = outcome.rows_valid + outcome.rows_quarantined
    if outcome.rows_read != accounted:
        raise RuntimeError(f"{outcome.kind}: {outcome.rows_read} rows read but {accounted} accounted for")
    return outcome


def batch_stats(kind: str, rows_staged: int, checks: list[dict[str, Any]]) -> dict[str, Any]:
    """What later weeks compare with: rows staged, and for events the share of ratings and users."""
    stats: dict[str, Any] = {"rows_staged": rows_staged}
    if kind == "events":
        stats.update(rating_share=None, distinct_users=None)
        for c in checks:
            if c["expectation"] == "expect_column_mean_to_be_between":
                value = c.get("observed_value")
                stats["rating_share"] = None if value is None else round(float(value), 6)
            elif c["expectation"] == "expect_column_unique_value_count_to_be_between":
                stats["distinct_users"] = c.get("observed_value")
    return stats


def _quarantine_frame(staged: pd.DataFrame, reasons: pd.DataFrame, malformed: pd.DataFrame) -> pd.DataFrame:
    rows = staged.iloc[reasons[ROW_ID].to_numpy()].copy()
    rows[QUARANTINE_REASON] = reasons[QUARANTINE_REASON].to_numpy()
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


def _bot_rows(survivors: pd.DataFrame, limit: int) -> tuple[np.ndarray, dict[str, Any]]:
    rows = survivors[["user_id", "ts"]]
    day = rows["ts"].dt.floor("D")
    per_day = rows.groupby([rows["user_id"], day])["user_id"].transform("size")
    over = per_day > limit
    bots = per_day.index[over].to_numpy(dtype=np.int64)
    user_days = pd.DataFrame({"user_id": rows["user_id"][over], "day": day[over]}).drop_duplicates()
    top = int(per_day.max()) if len(per_day) else 0
    entry = bot_entry(limit, len(rows), len(bots), user_days["user_id"].nunique(), len(user_days), top)
    return bots, entry


def validate_kind_pandas(job: KindJob, runner: GxRunner) -> KindOutcome:
    """Validate one kind in memory (pandas); row ids are positions in the staged batch."""
    kind = job.kind
    staged = pd.read_parquet(job.staged_file).reset_index(drop=True)
    n = len(staged)
    checks: list[dict[str, Any]] = []
    failures: list[str] = []
    flags = Flags()
    text_columns = [c for c in staged.columns if c not in (SOURCE_FILE, SOURCE_LINE)]
    columns_ok = table_checks(
        kind, runner.validate(f"{kind}_table", staged[text_columns], job.table_suite()), checks, failures
    )
    if not columns_ok:
        flags.add(COLUMNS_REJECTED, np.arange(n))
        valid = output_schema(kind).empty_table().to_pandas()
    else:
        typed, unparseable = TYPERS[kind](staged)
        for reason, mask in unparseable.items():
            checks.append(parse_entry(kind, reason, flags.add(reason, np.flatnonzero(mask)), n))
        unique_checks = record_row_results(kind, runner.validate(kind, typed, job.row_suite()), checks, flags)
        # duplicates among the rows still valid: keep the first of each key
        ok = ~flags.mask(n)
        for key, entry in unique_checks:
            survivors = typed.loc[ok, key]
            dup = survivors.index[survivors.duplicated(keep="first")].to_numpy(dtype=np.int64)
            entry["rows_quarantined"] = flags.add(DUPLICATE, dup)
            ok[dup] = False
        if kind == "events":
            bots, entry = _bot_rows(typed.loc[ok], job.config.max_events_per_user_per_day)
            flags.add(BOT, bots)
            checks.append(entry)
            ok[bots] = False
        valid = _output_frame(kind, typed.loc[ok])
        if job.batch_suite is not None and len(valid):
            batch = valid[["user_id", "event_type"]].assign(
                **{IS_RATING: valid["event_type"].eq("rating").astype("float64")}
            )
            table_checks(kind, runner.validate(f"{kind}_batch", batch, job.batch_suite()), checks, failures)
    quarantine = _quarantine_frame(staged, flags.frame(), job.malformed)
    write_frame(valid, job.valid_file, output_schema(kind))
    write_frame(quarantine, job.quarantine_file, quarantine_schema(text_columns))
    by_reason = flags.counts()
    by_reason.update(job.malformed[QUARANTINE_REASON].tolist() if len(job.malformed) else [])
    outcome = KindOutcome(
        kind=kind,
        engine="pandas",
        rows_staged=n,
        rows_malformed=len(job.malformed),
        rows_valid=len(valid),
        rows_quarantined=len(quarantine),
        valid_file=job.valid_file,
        quarantine_file=job.quarantine_file,
        by_reason=by_reason,
        checks=checks,
        failures=failures,
        stats=batch_stats(kind, n, checks),
        notes=list(job.notes),
        item_ids=valid["item_id"].tolist() if kind == "items" else None,
    )
    return finish(outcome, job.config)


# ---- one validation run: the shared core of the stage and of `recsys validate` ------------------


def _read_malformed(lake: Lake, kind: str, week: date) -> pd.DataFrame:
    path = ingest_quarantine_file(lake, kind, week)
    if not path.exists():  # staged by something other than ingest: nothing was malformed
        return pd.DataFrame(
            {
                SOURCE_FILE: pd.Series([], dtype=object),
                SOURCE_LINE: pd.Series([], dtype="int64"),
                QUARANTINE_REASON: pd.Series([], dtype=object),
                RAW_LINE: pd.Series([], dtype=object),
            }
        )
    return pd.read_parquet(path)


@dataclass
class ValidationRun:
    """The outcome of validating some kinds of one week: accounting, reports, verdict."""

    week: date
    outcomes: dict[str, KindOutcome]
    failures: list[str]
    report_html: Path
    report_json: Path

    @property
    def passed(self) -> bool:
        return not self.failures

    def accounting(self) -> dict[str, Any]:
        return {kind: o.accounting() for kind, o in self.outcomes.items()}

    def message(self) -> str:
        """The one-line reason the batch must stop (empty when it passed)."""
        if self.passed:
            return ""
        return "; ".join(self.failures) + f" (report: {self.report_html})"

    def result(self) -> dict[str, Any]:
        return {
            "week": self.week.isoformat(),
            "accounting": self.accounting(),
            "report_html": str(self.report_html),
            "report_json": str(self.report_json),
            "passed": self.passed,
        }


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def run_validation(
    lake: Lake,
    week: date,
    config: ValidationConfig | None = None,
    *,
    kinds: Iterable[str] = KINDS,
    history: Lake | None = None,
    now: datetime | None = None,
    spark: Any = None,
    notes: dict[str, list[str]] | None = None,
) -> ValidationRun:
    """Validate the staged ``kinds`` of ``week`` in ``lake``; write quarantine, validated and reports.

    ``history``: the lake whose earlier weeks' accounting the history checks read (``None``: none);
    ``now``: the processing time, later timestamps are quarantined (default: the real clock);
    ``spark``: the session for batches above ``spark_min_rows`` (default: ``recsys.io.spark.get_spark``).
    Does not raise on a failed batch: see :attr:`ValidationRun.passed`.
    """
    config = config or ValidationConfig()
    now = _utc(now or datetime.now(tz=UTC))
    try:
        week_start, week_end = week_bounds(week)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    elapsed = elapsed_share(week_start, week_end, now)
    wanted = set(kinds)
    unknown = wanted - set(KINDS)
    if unknown:
        raise ConfigError(f"unknown kind(s) {sorted(unknown)}; choose from {', '.join(KINDS)}")
    staged_files = {kind: lake.data_file("staged", kind, week) for kind in ORDER if kind in wanted}
    for path in staged_files.values():
        if not path.exists():
            raise DataNotFoundError(
                f"missing input: {path} (has the stage that writes it run for this week?)"
            )
    notes = notes or {}
    work = lake.root / f".validation-{week.isoformat()}-{uuid.uuid4().hex[:8]}"
    work.mkdir(parents=True)
    runner = GxRunner.shared()
    outcomes: dict[str, KindOutcome] = {}
    try:
        for kind, staged_file in staged_files.items():
            kind_notes = list(notes.get(kind, []))
            past = load_history(history, week, kind, config)
            volume = past.volume(config)
            if volume.skipped:
                kind_notes.append(f"history checks not run: {volume.skipped}")
            if kind == "events" and elapsed < 1.0:
                # a week in progress (the drift monitor, an early retrain) holds part of a week's events
                volume = volume.scaled_low(elapsed)
                kind_notes.append(
                    f"week in progress at {now.isoformat()} ({elapsed:.0%} elapsed): lower bounds of "
                    "events and distinct users (where history gives them) scaled down to it"
                )
            batch_suite = None
            if kind == "events":
                catalogue = outcomes["items"].item_ids if "items" in outcomes else None
                if catalogue is None:
                    kind_notes.append(
                        "referential integrity (item_id in the catalogue) not checked: no catalogue "
                        "validated with the events (recsys validate: pass --items CATALOGUE.csv)"
                    )
                row_suite = functools.partial(events_suite, week_start, week_end, catalogue, now=now)
                batch_suite = functools.partial(
                    events_batch_suite, past.share(config), past.users(config).scaled_low(elapsed)
                )
            elif kind == "items":
                row_suite = functools.partial(items_suite, week.year + 1)
            else:
                row_suite = users_suite
            staged_meta = pq.ParquetFile(staged_file)
            rows = staged_meta.metadata.num_rows
            job = KindJob(
                kind=kind,
                staged_file=staged_file,
                malformed=_read_malformed(lake, kind, week),
                rows=rows,
                config=config,
                table_suite=functools.partial(
                    table_suite, kind, config.min_rows, volume, staged_meta.schema_arrow.names
                ),
                row_suite=row_suite,
                batch_suite=batch_suite,
                valid_file=work / f"{kind}.valid.parquet",
                quarantine_file=work / f"{kind}.quarantine.parquet",
                work_dir=work / kind,
                notes=kind_notes,
            )
            if rows > config.spark_min_rows:
                from recsys.validation.spark_engine import validate_kind_spark

                outcomes[kind] = validate_kind_spark(job, runner, spark or _default_spark())
            else:
                outcomes[kind] = validate_kind_pandas(job, runner)
        outcomes = {kind: outcomes[kind] for kind in KINDS if kind in outcomes}
        failures = [f for o in outcomes.values() for f in o.failures]
        for kind, outcome in outcomes.items():
            lake.data_file("quarantine", kind, week).parent.mkdir(parents=True, exist_ok=True)
            os.replace(outcome.quarantine_file, lake.data_file("quarantine", kind, week))
            validated = lake.data_file("validated", kind, week)
            if not failures:
                validated.parent.mkdir(parents=True, exist_ok=True)
                os.replace(outcome.valid_file, validated)
            else:
                validated.unlink(missing_ok=True)  # no stale partition from an earlier run of the week
            outcome.quarantine_file = lake.data_file("quarantine", kind, week)
            outcome.valid_file = validated
    finally:
        shutil.rmtree(work, ignore_errors=True)
    reports = lake.partition("reports", week)
    accounting = {kind: o.accounting() for kind, o in outcomes.items()}
    report_json = write_json(reports / "accounting.json", accounting)
    report_html = write_text(render_html(week, outcomes, config, failures), reports / "validation.html")
    for kind, o in outcomes.items():
        log.info(
            "validate %s %s (%s): %d read, %d valid, %d quarantined",
            kind,
            week,
            o.engine,
            o.rows_read,
            o.rows_valid,
            o.rows_quarantined,
        )
    return ValidationRun(week, outcomes, failures, report_html, report_json)


def _default_spark() -> Any:
    from recsys.core.settings import Settings
    from recsys.io.spark import get_spark

    return get_spark(Settings.from_env())


def validate_week(
    lake: Lake,
    week: date,
    config: ValidationConfig | None = None,
    *,
    now: datetime | None = None,
    spark: Any = None,
) -> dict[str, Any]:
    """Validate the staged events, items and users of ``week`` (the pipeline's validate stage).

    Returns ``{"week", "accounting", "report_html", "report_json", "passed": True}`` where
    ``accounting[kind]`` holds ``rows_read`` (including ingest's malformed lines), ``rows_valid``,
    ``rows_quarantined``, ``by_reason``, the ``stats`` later weeks compare with and the checks run.
    Raises :class:`ValidationFailed` (after writing the quarantine and the reports) when a
    batch-level check fails. ``now`` is the processing time (default: the real clock): it only
    matters for a week that has not ended yet.
    """
    run = run_validation(lake, week, config, history=lake, now=now, spark=spark)
    if not run.passed:
        raise ValidationFailed(run.message())
    return run.result()


# ---- `recsys validate PATH`: the same core on any file or raw partition --------------------------


@dataclass
class PathValidation:
    """What :func:`validate_path` validated, where it wrote, and what it found."""

    path: Path
    kind: str
    week: date
    out_dir: Path
    run: ValidationRun
    files: dict[str, list[Path]]
    notes: list[str]

    @property
    def passed(self) -> bool:
        return self.run.passed

    def quarantine_file(self, kind: str | None = None) -> Path:
        return Lake(self.out_dir).data_file("quarantine", kind or self.kind, self.week)


def _data_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith((".", "_")) and p.name.endswith((".csv", ".csv.gz"))
    )


def _files_of(path: Path, what: str) -> list[Path]:
    if not path.exists():
        raise DataNotFoundError(f"{what} not found: {path}")
    if path.is_dir():
        files = _data_files(path)
        if not files:
            raise DataNotFoundError(f"no *.csv or *.csv.gz files in {path}")
        return files
    return [path]


def infer_kind(header: list[str]) -> str | None:
    """The kind whose contract shares the most columns with ``header`` (``None``: no clear winner)."""
    overlap = sorted(((len(set(header) & set(RAW_COLUMNS[k])), k) for k in KINDS), reverse=True)
    if overlap[0][0] == 0 or overlap[0][0] == overlap[1][0]:
        return None
    return overlap[0][1]


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".csv"):
        name = name.removesuffix(suffix)
    return name


def validate_path(
    path: Path,
    *,
    kind: str | None = None,
    week: date | None = None,
    items: Path | None = None,
    out: Path | None = None,
    config: ValidationConfig | None = None,
    now: datetime | None = None,
    spark: Any = None,
) -> PathValidation:
    """Validate a raw file or partition folder with the pipeline's code, outside the pipeline.

    ``path``: a CSV(.gz) file or a folder of them. When it is a lake partition
    (``<lake>/raw/<kind>/week=YYYY-MM-DD``, or a file in one) the kind and week come from it, the
    earlier weeks of that lake give the history, and for events the lake's catalogue snapshot of the
    week is checked too unless ``items`` names another. Otherwise ``kind`` is read from the header
    and ``week`` must be given for events (snapshots default to the current week).

    Everything is written under ``out`` (default: ``validation-<name>`` beside ``path``), laid out
    as a lake: ``quarantine/<kind>/week=W/data.parquet``, ``validated/...`` (when passed) and
    ``reports/week=W/{accounting.json,validation.html}``. Does not raise on a failed batch.
    """
    path = Path(path)
    now = _utc(now or datetime.now(tz=UTC))
    files = _files_of(path, "input")
    folder = path if path.is_dir() else path.parent
    notes: list[str] = []
    layout_week = layout_kind = lake_root = None
    if folder.name.startswith("week="):
        try:
            layout_week = parse_week(folder.name)
        except ValueError:
            layout_week = None
        if folder.parent.name in KINDS:
            layout_kind = folder.parent.name
            if folder.parent.parent.name == "raw":
                lake_root = folder.parent.parent.parent
    if kind is None:
        kind = layout_kind or infer_kind(read_header(files[0]))
        if kind is None:
            raise ConfigError(
                f"cannot tell whether {files[0].name} holds events, items or users from its header; "
                "pass --kind"
            )
    elif kind not in KINDS:
        raise ConfigError(f"unknown kind {kind!r}; choose from {', '.join(KINDS)}")
    if week is None:
        week = layout_week
    else:
        week = week_start_of(week)
    if week is None:
        if kind == "events":
            raise ConfigError(
                f"cannot tell which week {path.name} holds (events are checked against the week's "
                "bounds); pass --week YYYY-MM-DD"
            )
        week = week_start_of(now)
        notes.append(f"no week given: checked as a snapshot of the current week {week.isoformat()}")
    lake = Lake(lake_root) if lake_root is not None else None
    name = f"{kind}-{week.isoformat()}" if path.is_dir() else _stem(path)
    out_dir = Path(out) if out is not None else path.parent / f"validation-{name}"
    out_lake = Lake(out_dir)

    inputs = {kind: files}
    if kind == "events":
        if items is not None:
            inputs["items"] = _files_of(Path(items), "catalogue")
            notes.append(f"catalogue: {', '.join(str(p) for p in inputs['items'])}")
        elif lake is not None:
            try:
                snapshot, inputs["items"] = find_raw_files(lake, "items", week)
                notes.append(
                    f"catalogue: the lake's items snapshot of week {snapshot.isoformat()} "
                    f"({', '.join(str(p) for p in inputs['items'])})"
                )
            except DataNotFoundError:
                pass
    if (out_dir / "raw").is_dir():
        raise ConfigError(f"{out_dir} holds a lake (it has raw/): choose another output folder with --out")
    scratch = [
        p
        for k in inputs
        for p in (out_lake.data_file("staged", k, week), ingest_quarantine_file(out_lake, k, week))
    ]
    try:
        for k, paths in inputs.items():
            stage_files(
                k, paths, out_lake.data_file("staged", k, week), ingest_quarantine_file(out_lake, k, week)
            )
        run = run_validation(out_lake, week, config, kinds=inputs, history=lake, now=now, spark=spark)
    finally:
        for file in scratch:  # the staged copy, and ingest's malformed lines (merged into data.parquet)
            file.unlink(missing_ok=True)
            for folder in (file.parent, file.parent.parent, file.parent.parent.parent):
                if folder != out_dir and folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
    return PathValidation(path, kind, week, out_dir, run, inputs, notes)


def format_accounting(accounting: dict[str, Any]) -> list[str]:
    """Lines of text: read / valid / quarantined by reason, per kind."""
    lines = []
    for kind, acc in accounting.items():
        lines.append(
            f"{kind:<7} read {acc['rows_read']:>9}  valid {acc['rows_valid']:>9}  "
            f"quarantined {acc['rows_quarantined']:>7} ({acc['quarantine_share']:.2%})  [{acc.get('engine', '?')}]"
        )
        for reason, count in acc["by_reason"].items():
            lines.append(f"    {count:>9}  {reason}")
        for note in acc.get("notes") or []:
            lines.append(f"    note: {note}")
    return lines


# ---- HTML report ------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.pass { color: #176f2c; font-weight: bold; }
.fail { color: #b00020; font-weight: bold; }
.skip { color: #8a6d00; }
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
        out.append(f"<h2>{e(kind)}: {kind_status} <small>({e(o.engine)})</small></h2>")
        out.append("<table><tr><th>rows read</th><th>staged</th><th>malformed</th><th>valid</th>")
        out.append("<th>quarantined</th><th>quarantined share</th></tr><tr>")
        for v in (o.rows_read, o.rows_staged, o.rows_malformed, o.rows_valid, o.rows_quarantined):
            out.append(_cell(v, "num"))
        out.append(_cell(f"{o.quarantine_share:.2%}", "num") + "</tr></table>")
        if o.notes:
            out.append("<ul>" + "".join(f"<li>{e(n)}</li>" for n in o.notes) + "</ul>")
        if o.by_reason:
            out.append("<h3>Quarantine reasons</h3><table><tr><th>reason</th><th>rows</th></tr>")
            for reason, count in sorted(o.by_reason.items(), key=lambda kv: (-kv[1], kv[0])):
                out.append(f"<tr>{_cell(reason)}{_cell(count, 'num')}</tr>")
            out.append("</table>")
        out.append("<h3>Checks</h3><table><tr><th>level</th><th>expectation</th><th>column</th><th>rule</th>")
        out.append("<th>result</th><th>observed</th><th>unexpected</th><th>quarantined</th></tr>")
        for c in o.checks:
            row_cls = "" if c["success"] else ' class="failed"'
            if c.get("skipped"):
                result, result_cls = "not checked", "skip"
            else:
                result, result_cls = ("pass", "pass") if c["success"] else ("FAIL", "fail")
            out.append(
                f"<tr{row_cls}>{_cell(c['level'])}<td><code>{e(c['expectation'])}</code></td>"
                f"{_cell(c['column'])}{_cell(c['rule'])}{_cell(result, result_cls)}"
                f"{_cell(c['observed'])}{_cell(c['unexpected_count'], 'num')}{_cell(c['rows_quarantined'], 'num')}</tr>"
            )
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def report_path(lake: Lake, week: date) -> Path:
    """Where the HTML validation report of ``week`` is written."""
    return lake.partition("reports", week) / "validation.html"
