"""Outcome bookkeeping of one kind: rows set aside (:class:`Flags`), the job an engine runs
(:class:`KindJob`) and its outcome (:class:`KindOutcome`, its accounting), the report's check
entries, the quarantined-share check, and the quarantine frame.

The reports, the accounting and the failure messages are published (MLflow artifacts, stage
results, task logs): they quote sample values of failing rows, but never values of
:data:`PERSONAL_COLUMNS`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recsys.core.schemas import QUARANTINE_REASON, SOURCE_FILE, SOURCE_LINE
from recsys.data.ingest import RAW_LINE
from recsys.validation.config import ValidationConfig
from recsys.validation.suites import FUTURE, ROW_ID, num, unexpected_rows

if TYPE_CHECKING:
    import great_expectations as gx_type

# Values of these columns are never quoted in reports, results or messages (they are published:
# MLflow artifacts, stage results); see recsys.privacy.scan.
PERSONAL_COLUMNS = frozenset({"user_id", "name", "email", "ip_address", "device_id", "zip_code"})


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
            expected = f"{'-inf' if low is None else num(low)} .. {'+inf' if high is None else num(high)}"
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


def quarantine_frame(staged: pd.DataFrame, reasons: pd.DataFrame, malformed: pd.DataFrame) -> pd.DataFrame:
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
