"""The pandas engine of the validate stage: one kind's staged batch validated in memory."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from recsys.core.schemas import QUARANTINE_REASON, SOURCE_FILE, SOURCE_LINE
from recsys.validation.casting import TYPERS, output_frame, output_schema, quarantine_schema, write_frame
from recsys.validation.outcomes import (
    Flags,
    KindJob,
    KindOutcome,
    batch_stats,
    bot_entry,
    finish,
    parse_entry,
    quarantine_frame,
    record_row_results,
    table_checks,
)
from recsys.validation.suites import BOT, COLUMNS_REJECTED, DUPLICATE, IS_RATING, GxRunner


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
        valid = output_frame(kind, typed.loc[ok])
        if job.batch_suite is not None and len(valid):
            batch = valid[["user_id", "event_type"]].assign(
                **{IS_RATING: valid["event_type"].eq("rating").astype("float64")}
            )
            table_checks(kind, runner.validate(f"{kind}_batch", batch, job.batch_suite()), checks, failures)
    quarantine = quarantine_frame(staged, flags.frame(), job.malformed)
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
