"""The A/B test's feedback log: simulated into the raw lake, then ingested like any upstream log.

Layout (week ``W`` is the Sunday that starts the week the users were shown the lists in)::

    generator.json                                  the synthetic world (``recsys generate``)
    anonymized/exposures/week=W/data.parquet        what each arm showed (the recommend stage)
    raw/feedback/week=W/*.csv[.gz]                  the feedback log: RAW user ids
    quarantine/feedback/week=W/data.parquet         rows set aside, as read, with ``_reason``
    anonymized/feedback/week=W/data.parquet         the valid rows, pseudonymized

* :func:`simulate_week` stands in for the app: it reads the week's exposures, rebuilds the world the
  lake was generated from (:func:`recsys.data.synthetic.world_of_lake`), lets the simulated users
  respond (:func:`recsys.experiments.simulation.simulate_feedback`) and writes the RAW log
  (``recsys.core.schemas.RAW_FEEDBACK_COLUMNS``) as ``raw/feedback/week=W/feedback.csv``.
* :func:`ingest_feedback` is the path a real log takes as well: every raw file of the week is
  streamed by :func:`recsys.data.ingest.stage_files` (a record with the wrong number of fields is set
  aside with ``malformed_line: ...``, as for events), every staged row is checked and a bad one is
  set aside with one reason (the first of :data:`REASONS` that applies), and the valid rows go
  through :data:`recsys.privacy.anonymize.FEEDBACK_POLICY` (user id to pseudonym ``user``, lineage dropped,
  a column the policy does not name refused: fail closed). Rows of users who asked to be erased
  (:func:`recsys.privacy.erased_pseudonyms`) are dropped and counted, never kept.

  The quarantine has the layout of the events' (``quarantine/events/week=W/data.parquet``): the rows
  as read (text, raw user id included: like ``raw/``, the quarantine legitimately holds personal
  data and is not published), ``_source_file``, ``_source_line``, ``_reason`` and ``_raw_line``
  (the text of a malformed record). Every row read is accounted for:
  ``read == used + quarantined + erased``.

Both write atomically and replace what an earlier run of the same week wrote.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from recsys.core.errors import ConfigError, DataNotFoundError, ValidationFailed
from recsys.core.intervals import week_bounds, week_start_of
from recsys.core.schemas import (
    ANON_FEEDBACK_COLUMNS,
    FEEDBACK_EVENTS,
    FEEDBACK_KIND,
    QUARANTINE_REASON,
    RAW_FEEDBACK_COLUMNS,
    SOURCE_FILE,
    SOURCE_LINE,
)
from recsys.data.ingest import stage_files
from recsys.data.raw import raw_file, write_csv
from recsys.data.synthetic import world_of_lake
from recsys.experiments import ab_config
from recsys.experiments.ab_config import ARM_NAMES
from recsys.experiments.simulation import FeedbackConfig, simulate_feedback
from recsys.io.storage import Lake, local_scratch, read_parquet, write_parquet
from recsys.privacy import erased_pseudonyms
from recsys.privacy.anonymize import anonymize_feedback
from recsys.validation.casting import quarantine_schema, to_float, to_int, to_text, to_ts
from recsys.validation.outcomes import quarantine_frame
from recsys.validation.suites import ROW_ID

log = logging.getLogger(__name__)

EXPOSURE_COLUMNS = (*ab_config.EXPOSURE_COLUMNS, "model_version")  # as the recommend stage writes them

USER_MISSING = "user_id missing"
ITEM_NOT_INT = "item_id not an integer"
TS_UNPARSEABLE = "ts not a timestamp"
TS_OUTSIDE = "ts outside the week"
EVENT_UNKNOWN = f"event not one of {', '.join(FEEDBACK_EVENTS)}"
PLAY_WATCH = "watch_seconds missing or negative on a play"
WATCH_BAD = "watch_seconds not a number >= 0"
FROM_REC_BAD = "from_recommendation not a boolean"
POSITION_BAD = "position not a whole number >= 1"
REC_WITHOUT_ARM = "recommendation row without experiment_id or arm"
ARM_UNKNOWN = f"arm not one of {', '.join(ARM_NAMES)}"
DUPLICATE = "duplicate of an earlier row"
REASONS = (
    USER_MISSING,
    ITEM_NOT_INT,
    TS_UNPARSEABLE,
    TS_OUTSIDE,
    EVENT_UNKNOWN,
    PLAY_WATCH,
    WATCH_BAD,
    FROM_REC_BAD,
    POSITION_BAD,
    REC_WITHOUT_ARM,
    ARM_UNKNOWN,
    DUPLICATE,
)
"""Why a staged row is set aside, in the order they are checked (a row gets the first that applies).

``watch_seconds``: required on a play; on a click it may be empty, else it must be a number >= 0.
``position``: required on a recommendation row; elsewhere it may be empty. ``from_recommendation``:
``true`` / ``false`` (any case) or ``1`` / ``0``. ``duplicate``: the same values in every column as
an earlier valid row (an upstream retry)."""
_BOOLEANS = {"true": True, "false": False, "1": True, "0": False}


def exposures_file(lake: Lake, week: date) -> Path:
    return lake.data_file("anonymized", "exposures", week)


def feedback_file(lake: Lake, week: date) -> Path:
    """The anonymized feedback of ``week``."""
    return lake.data_file("anonymized", FEEDBACK_KIND, week)


def quarantine_file(lake: Lake, week: date) -> Path:
    return lake.data_file("quarantine", FEEDBACK_KIND, week)


def _week(week: date) -> date:
    if week != week_start_of(week):
        raise ConfigError(f"{week.isoformat()} is not a week start (weeks start on Sunday UTC)")
    return week


# ---- simulation -------------------------------------------------------------------------------


def simulate_week(lake: Lake, week: date, key: bytes, config: FeedbackConfig | None = None) -> dict[str, Any]:
    """Simulate the users' clicks and plays on the week's exposures into ``raw/feedback/week=W/feedback.csv``.

    ``config``: how the users respond (default: ``FeedbackConfig()``). Returns
    ``week``, ``path``, ``exposures`` (rows read), ``rows``, ``clicks``, ``plays``, ``users`` (distinct
    users with an event) and ``skipped`` (exposure rows left out, by reason).
    """
    week = _week(week)
    path = exposures_file(lake, week)
    if not path.is_file():
        raise DataNotFoundError(
            f"no exposures for week {week.isoformat()}: run the recommend stage with an experiment "
            f"configured first (looked for {path})"
        )
    exposures = read_parquet(path)
    world = world_of_lake(lake)
    feedback = simulate_feedback(world, exposures, key, config or FeedbackConfig(), week)
    skipped = {k: int(v) for k, v in feedback.attrs.get("skipped", {}).items()}
    written = write_csv(_raw_text(feedback), raw_file(lake, FEEDBACK_KIND, week))
    events = feedback["event"].astype(str)
    result = {
        "week": week.isoformat(),
        "path": str(written),
        "exposures": len(exposures),
        "rows": len(feedback),
        "clicks": int((events == "click").sum()),
        "plays": int((events == "play").sum()),
        "users": int(feedback["user_id"].nunique()),
        "skipped": skipped,
    }
    log.info("simulate feedback %s: %s", week, {k: v for k, v in result.items() if k != "path"})
    return result


def _raw_text(feedback: pd.DataFrame) -> pd.DataFrame:
    """The log as the app would write it: text, missing values empty, booleans ``true`` / ``false``."""
    out = pd.DataFrame(index=feedback.index)
    for column in RAW_FEEDBACK_COLUMNS:
        values = feedback[column]
        if column == "from_recommendation":
            out[column] = values.map({True: "true", False: "false"}).astype(object)
        else:
            out[column] = [None if pd.isna(v) else str(v) for v in values.to_numpy(dtype=object)]
    return out


# ---- ingestion ------------------------------------------------------------------------------------


def ingest_feedback(lake: Lake, week: date, key: bytes) -> dict[str, Any]:
    """Stage, check and anonymize every raw feedback file of ``week`` (see the module docstring).

    Writes ``anonymized/feedback/week=W/data.parquet`` (:data:`recsys.core.schemas.ANON_FEEDBACK_COLUMNS`)
    and ``quarantine/feedback/week=W/data.parquet``. Returns ``week``, ``files``, ``read`` (records
    read, malformed ones included), ``used``, ``quarantined``, ``erased``, ``by_reason``, ``path``,
    ``quarantine_path``, ``blank_lines``, ``bytes`` and ``sha256`` (of the raw files).

    Raises DataNotFoundError when the week has no raw feedback file, DataReadError when a file
    cannot be read as CSV (nothing is written), ValidationFailed when the files lack a column of the
    contract or have one the anonymization policy does not name (nothing is written).
    """
    week = _week(week)
    paths = lake.raw_files(FEEDBACK_KIND, week)
    if not paths:
        folder = lake.partition("raw", week, FEEDBACK_KIND)
        raise DataNotFoundError(
            f"no raw feedback for week {week.isoformat()}: looked in {folder} for *.csv / *.csv.gz "
            "(land the app's feedback log there, or run `recsys simulate-feedback` on a synthetic lake)"
        )
    with local_scratch(lake, f"feedback-{week.isoformat()}") as work:
        staged_kind = stage_files(FEEDBACK_KIND, paths, work / "staged.parquet", work / "malformed.parquet")
        staged = pd.read_parquet(staged_kind.staged_file).reset_index(drop=True)
        malformed = pd.read_parquet(staged_kind.malformed_file)
    summary = staged_kind.summary()

    missing = [c for c in RAW_FEEDBACK_COLUMNS if c not in staged.columns]
    if missing:
        raise ValidationFailed(
            f"feedback of week {week.isoformat()}: the files ({', '.join(summary['files'])}) lack "
            f"column(s) {', '.join(missing)}; expected {', '.join(RAW_FEEDBACK_COLUMNS)}"
        )
    typed, reasons = check_rows(staged, week)
    ok = reasons.isna().to_numpy()
    extra = [c for c in staged.columns if c not in RAW_FEEDBACK_COLUMNS]  # refused by the policy
    valid = pd.concat([typed[ok], staged.loc[ok, extra]], axis=1)
    anonymized = anonymize_feedback(valid, key)  # fails closed on a column the policy does not name
    anonymized["item_id"] = anonymized["item_id"].astype("int64")
    anonymized["week"] = week.isoformat()
    anonymized = anonymized[list(ANON_FEEDBACK_COLUMNS)]
    erased = erased_pseudonyms(lake, key)
    is_erased = anonymized["user"].isin(erased).to_numpy() if erased else np.zeros(len(anonymized), bool)
    anonymized = anonymized[~is_erased].reset_index(drop=True)

    flagged = pd.DataFrame(
        {
            ROW_ID: np.flatnonzero(~ok).astype("int64"),
            QUARANTINE_REASON: reasons[~ok].to_numpy(dtype=object),
        }
    )
    quarantine = quarantine_frame(staged, flagged, malformed)
    text_columns = [c for c in staged.columns if c not in (SOURCE_FILE, SOURCE_LINE)]

    by_reason = Counter(quarantine[QUARANTINE_REASON].tolist())
    result: dict[str, Any] = {
        "week": week.isoformat(),
        "files": summary["files"],
        "read": summary["rows_read"],
        "used": len(anonymized),
        "quarantined": len(quarantine),
        "erased": int(is_erased.sum()),
        "by_reason": dict(sorted(by_reason.items())),
        "path": str(feedback_file(lake, week)),
        "quarantine_path": str(quarantine_file(lake, week)),
        "blank_lines": summary["blank_lines"],
        "bytes": summary["bytes"],
        "sha256": summary["sha256"],
    }
    assert result["read"] == result["used"] + result["quarantined"] + result["erased"], result

    write_parquet(quarantine, quarantine_file(lake, week), quarantine_schema(text_columns))
    write_parquet(anonymized, feedback_file(lake, week), _anonymized_schema(anonymized))
    log.info(
        "ingest feedback %s: %d read, %d used, %d quarantined, %d of erased users dropped",
        week,
        result["read"],
        result["used"],
        result["quarantined"],
        result["erased"],
    )
    return result


def check_rows(staged: pd.DataFrame, week: date) -> tuple[pd.DataFrame, pd.Series]:
    """Type the staged text of a feedback log and say what is wrong with each row.

    Returns the typed rows (the contract's columns and the lineage columns) and, for each row, the
    first reason of :data:`REASONS` that applies (None for a valid row).
    """
    start, end = week_bounds(week)
    text = {c: to_text(staged[c]) for c in RAW_FEEDBACK_COLUMNS}
    item_id = to_int(text["item_id"])
    ts = to_ts(text["ts"])
    event = text["event"]
    watch = to_float(text["watch_seconds"])
    position = to_int(text["position"])
    flag = text["from_recommendation"].astype("string").str.lower().map(_BOOLEANS)
    from_rec = flag.isin([True])
    experiment_id, arm = text["experiment_id"], text["arm"]
    is_play = event.eq("play")
    bad_watch = watch.isna() | (watch < 0)

    rules = [
        (USER_MISSING, text["user_id"].isna()),
        (ITEM_NOT_INT, item_id.isna()),
        (TS_UNPARSEABLE, ts.isna()),
        (TS_OUTSIDE, (ts < start) | (ts >= end)),
        (EVENT_UNKNOWN, ~event.isin(FEEDBACK_EVENTS)),
        (PLAY_WATCH, is_play & bad_watch),
        (WATCH_BAD, text["watch_seconds"].notna() & bad_watch),
        (FROM_REC_BAD, flag.isna()),
        (POSITION_BAD, (text["position"].notna() | from_rec) & (position.isna() | (position < 1))),
        (REC_WITHOUT_ARM, from_rec & (experiment_id.isna() | arm.isna())),
        (ARM_UNKNOWN, arm.notna() & ~arm.isin(ARM_NAMES)),
    ]
    reasons = pd.Series(None, index=staged.index, dtype=object)
    for reason, mask in rules:
        hit = mask.fillna(False).astype(bool) & reasons.isna()
        reasons[hit] = reason

    typed = pd.DataFrame(
        {
            "user_id": text["user_id"],
            "item_id": item_id,
            "ts": ts,
            "event": event,
            "watch_seconds": watch.astype("float64"),
            "position": position,
            "experiment_id": experiment_id,
            "arm": arm,
            "from_recommendation": from_rec,
            SOURCE_FILE: staged[SOURCE_FILE],
            SOURCE_LINE: staged[SOURCE_LINE],
        },
        index=staged.index,
    )
    # an upstream retry: the same values as an earlier valid row
    ok = reasons.isna()
    duplicate = typed.loc[ok, list(RAW_FEEDBACK_COLUMNS)].duplicated(keep="first")
    reasons[duplicate.index[duplicate.to_numpy()]] = DUPLICATE
    return typed, reasons


def _anonymized_schema(df: pd.DataFrame) -> pa.Schema:
    return pa.schema(
        [
            ("user", pa.string()),
            ("item_id", pa.int64()),
            ("ts", pa.timestamp("ns", tz="UTC")),
            ("event", pa.string()),
            ("watch_seconds", pa.float64()),
            ("position", pa.int64()),
            ("experiment_id", pa.string()),
            ("arm", pa.string()),
            ("from_recommendation", pa.bool_()),
            ("week", pa.string()),
        ],
        metadata=pa.Schema.from_pandas(df, preserve_index=False).metadata,  # Int64 reads back as Int64
    )


# ---- reading --------------------------------------------------------------------------------------


def read_feedback(lake: Lake, weeks: Iterable[date]) -> pd.DataFrame:
    """The anonymized feedback of ``weeks``, concatenated (a week without a file is simply absent)."""
    return _read_weeks([feedback_file(lake, w) for w in weeks], ANON_FEEDBACK_COLUMNS)


def read_exposures(lake: Lake, weeks: Iterable[date]) -> pd.DataFrame:
    """The exposures of ``weeks``, concatenated (a week without a file is simply absent)."""
    return _read_weeks([exposures_file(lake, w) for w in weeks], EXPOSURE_COLUMNS)


def active_users(feedback: pd.DataFrame) -> pd.DataFrame:
    """The activity frame of a readout: one row per (user, week) with at least one event."""
    active = feedback[["user", "week"]].drop_duplicates()
    return active.sort_values(["week", "user"]).reset_index(drop=True)


def _read_weeks(paths: list[Path], columns: tuple[str, ...]) -> pd.DataFrame:
    frames = [read_parquet(p) for p in paths if p.is_file()]
    if not frames:
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in columns})
    filled = [f for f in frames if len(f)]
    return pd.concat(filled, ignore_index=True) if filled else frames[0]


__all__ = [
    "REASONS",
    "active_users",
    "check_rows",
    "exposures_file",
    "feedback_file",
    "ingest_feedback",
    "quarantine_file",
    "read_exposures",
    "read_feedback",
    "simulate_week",
]
