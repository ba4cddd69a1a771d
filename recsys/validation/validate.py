"""Validate: type the staged text, check it with Great Expectations suites, quarantine bad rows.

The suites are code (:mod:`recsys.validation.suites`: :func:`table_suite`, :func:`events_suite`,
:func:`items_suite`, :func:`users_suite`, :func:`events_batch_suite`), versioned with the project.
For each kind (items first: its valid ids are the catalogue that events must reference; then events
and users) the stage

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
   ``now``: :data:`~recsys.validation.suites.FUTURE`); a row failing several gets them all, joined
   by ``"; "``;
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
larger one on Spark (:mod:`recsys.validation.spark_engine`; pandas:
:mod:`recsys.validation.pandas_engine`), streaming the staged parquet in chunks, so a week that does
not fit in memory still validates. Both give the same rows, reasons and accounting.

The reports, the accounting and the failure messages are published (MLflow artifacts, stage
results, task logs): they quote sample values of failing rows, but never values of
:data:`~recsys.validation.outcomes.PERSONAL_COLUMNS`.

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
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from recsys.core.errors import ConfigError, DataNotFoundError, ValidationFailed
from recsys.core.intervals import parse_week, week_bounds, week_start_of
from recsys.core.schemas import KINDS, QUARANTINE_REASON, RAW_COLUMNS, SOURCE_FILE, SOURCE_LINE
from recsys.core.settings import Settings
from recsys.data.csv_stream import read_header
from recsys.data.ingest import (
    RAW_LINE,
    find_raw_files,
    ingest_quarantine_file,
    stage_files,
)
from recsys.io.spark import get_spark
from recsys.io.storage import (
    Lake,
    fetch,
    local_scratch,
    move_file,
    read_parquet,
    remove_tree,
    write_json,
    write_text,
)
from recsys.validation.config import ValidationConfig
from recsys.validation.history import load_history
from recsys.validation.outcomes import KindJob, KindOutcome
from recsys.validation.pandas_engine import validate_kind_pandas
from recsys.validation.report import render_html
from recsys.validation.spark_engine import validate_kind_spark
from recsys.validation.suites import (
    GxRunner,
    elapsed_share,
    events_batch_suite,
    events_suite,
    items_suite,
    table_suite,
    users_suite,
)

log = logging.getLogger(__name__)

ORDER = ("items", "events", "users")  # items first: events are checked against the valid catalogue


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
    return read_parquet(path)


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
    runner = GxRunner.shared()
    outcomes: dict[str, KindOutcome] = {}
    with local_scratch(lake, f"validation-{week.isoformat()}") as work:
        for kind, lake_file in staged_files.items():
            # the engines read a local file: in an object store, the week's staged partition is fetched
            staged_file = fetch(lake_file, work / f"{kind}.staged.parquet")
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
                outcomes[kind] = validate_kind_spark(job, runner, spark or _default_spark())
            else:
                outcomes[kind] = validate_kind_pandas(job, runner)
        outcomes = {kind: outcomes[kind] for kind in KINDS if kind in outcomes}
        failures = [f for o in outcomes.values() for f in o.failures]
        for kind, outcome in outcomes.items():
            # the quarantine partition also holds ingest's malformed records: replaced file by file
            lake.data_file("quarantine", kind, week).parent.mkdir(parents=True, exist_ok=True)
            move_file(outcome.quarantine_file, lake.data_file("quarantine", kind, week))
            # the validated partitions are committed by the validate record, written last
            validated = lake.data_file("validated", kind, week)
            if not failures:
                with lake.commit("validated", week, kind, stage="validate") as folder:
                    move_file(outcome.valid_file, folder / "data.parquet")
            else:  # no stale partition from an earlier run of the week
                remove_tree(validated.parent)
            outcome.quarantine_file = lake.data_file("quarantine", kind, week)
            outcome.valid_file = validated
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
