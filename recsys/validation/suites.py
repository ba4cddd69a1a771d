"""The Great Expectations suites of the validate stage, and the runner that checks DataFrames with them.

The suites are code (:func:`table_suite`, :func:`events_suite`, :func:`items_suite`,
:func:`users_suite`, :func:`events_batch_suite`), versioned with the project. Each expectation's
``meta`` says how its unexpected rows are treated (quarantined with a reason, resolved as
duplicates, or failing the batch). :class:`GxRunner` runs a suite on a pandas or a Spark DataFrame.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from recsys.core.schemas import (
    DEVICE_TYPES,
    EVENT_TYPES,
    OPTIONAL_COLUMNS,
    RATING_MAX,
    RATING_MIN,
    RAW_COLUMNS,
)

if TYPE_CHECKING:
    import great_expectations as gx_type

DUPLICATE = "duplicate"
BOT = "outlier: bot-like activity"
FUTURE = "future_timestamp: expect_column_values_to_be_between(ts)"
COLUMNS_REJECTED = "batch_failed: expect_table_columns_to_match_set"
MIN_RELEASE_YEAR = 1870
ROW_ID = "_row"  # position of a row in its staged batch (0-based): the key of row-level results
IS_RATING = "_is_rating"  # 1.0 for a rating event: its mean is the share of ratings

# unexpected_index_list for every expectation; no index query string, no sample lists
_RESULT_FORMAT = {
    "result_format": "COMPLETE",
    "return_unexpected_index_query": False,
    "partial_unexpected_count": 0,
}


# ---- Great Expectations ------------------------------------------------------------------------


def _gx() -> Any:
    """Import Great Expectations lazily (it takes seconds) and keep its logging quiet."""
    logging.getLogger("great_expectations").setLevel(logging.WARNING)  # chatty while importing
    import great_expectations  # deferred: Great Expectations takes seconds to import

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
        low = "-inf" if self.low is None else num(self.low)
        high = "+inf" if self.high is None else num(self.high)
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


def num(value: float) -> str:
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
    from great_expectations.expectations.row_conditions import Column  # deferred: GX is heavy

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


# ---- running suites ------------------------------------------------------------------------------


class GxRunner:
    """An ephemeral GX context with a pandas and a Spark data source; validates DataFrames.

    One is shared per process (:meth:`shared`): making assets saves the context's config each time,
    so each (engine, name) gets one asset and one whole-dataframe batch definition, reused.
    """

    _shared: GxRunner | None = None

    def __init__(self) -> None:
        gx = _gx()
        from great_expectations.data_context.types.base import ProgressBarsConfig  # deferred: GX is heavy

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
