"""What a person reads after a run: the summary of a week's stage results, as lines for a terminal
(``recsys pipeline``, ``recsys summary``) and as ``runs/week=.../summary.json``."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from recsys.core.formatting import number_or_na
from recsys.io.storage import Lake, read_parquet, write_json
from recsys.pipeline.context import StageContext
from recsys.pipeline.results import (
    AnonymizeResult,
    EvaluateResult,
    GateResult,
    PrepareResult,
    PrivacyScanResult,
    RecommendResult,
    RegisterResult,
    ValidateResult,
    WindowResult,
)


def summary(ctx: StageContext) -> dict[str, Any]:
    """Everything a person wants to know after a run, gathered from the stage results."""
    val = ctx.recorded(ValidateResult)
    ev = ctx.recorded(EvaluateResult)
    gate = ctx.recorded(GateResult)
    reg = ctx.recorded(RegisterResult)
    rec = ctx.recorded(RecommendResult)
    prep = ctx.recorded(PrepareResult)
    filled = ctx.recorded(WindowResult)
    scan = ctx.recorded(PrivacyScanResult)
    anon = ctx.recorded(AnonymizeResult)
    accounting = val.accounting if val is not None else {}
    return {
        "week": ctx.week.isoformat(),
        "top_k": ctx.config.top_k,
        "rows": {
            kind: {k: v for k, v in acc.items() if k in ("rows_read", "rows_valid", "rows_quarantined")}
            for kind, acc in accounting.items()
        },
        "quarantine_reasons": {kind: acc.get("by_reason", {}) for kind, acc in accounting.items()},
        "metrics": {
            "candidate": ev.candidate if ev is not None else None,
            "champion": ev.champion if ev is not None else None,
            "baseline": ev.baseline if ev is not None else None,
        },
        "models": ev.models if ev is not None else None,
        "served_model": ev.served_model if ev is not None else None,
        "gate": {
            "passed": gate.passed if gate is not None else None,
            "reasons": gate.reasons if gate is not None else [],
        },
        "registered": reg.to_xcom() if reg is not None else {},
        "recommendations": rec.to_xcom() if rec is not None else {},
        "validation_report": val.report_html if val is not None else None,
        "window": prep.window if prep is not None else None,
        "window_processed": (filled.processed if filled is not None else None) or [],
        "window_failed": (filled.failed if filled is not None else None) or {},
        "privacy_scan": scan.to_xcom() if scan is not None else {},
        "k_anonymity": anon.k_anonymity if anon is not None else None,
    }


def format_summary(s: dict[str, Any]) -> str:
    lines = [f"weekly_retrain summary for week {s['week']}"]
    for kind, rows in s["rows"].items():
        reasons = s["quarantine_reasons"].get(kind) or {}
        why = ", ".join(f"{r}: {n}" for r, n in sorted(reasons.items())) if reasons else "none"
        lines.append(
            f"  {kind:<7} read {rows.get('rows_read', '?'):>7}  valid {rows.get('rows_valid', '?'):>7}"
            f"  quarantined {rows.get('rows_quarantined', '?'):>5}  ({why})"
        )
    if s.get("window"):
        processed = s.get("window_processed") or []
        done = f" ({len(processed)} earlier weeks processed by this run)" if processed else ""
        lines.append(f"  {s['window'].replace('window: ', 'window      ', 1)}{done}")
        for failed_week, why in sorted((s.get("window_failed") or {}).items()):
            lines.append(f"              left out {failed_week}: {why}")
    metrics = s["metrics"]
    if metrics.get("candidate"):
        keys = [k for k in metrics["candidate"] if "@" in k and not k.startswith("coverage")]
        lines.append("  metrics     " + "  ".join(f"{k:>12}" for k in keys))
        for who in ("candidate", "champion", "baseline"):
            vals = metrics.get(who)
            if vals:
                lines.append(
                    f"  {who:<11} " + "  ".join(f"{number_or_na(vals.get(k), '.4f'):>12}" for k in keys)
                )
            else:
                lines.append(f"  {who:<11} (none yet)")
    models = s.get("models") or {}
    if models:
        k = s["top_k"]
        lines.append(
            f"  segments    NDCG@{k} (users) of each model; served: {s.get('served_model') or 'als'}"
        )
        names = [n for n in ("popularity", "als", "content", "hybrid") if n in models]
        lines.append("              " + f"{'':<12}" + "".join(f"{n:>16}" for n in names))
        for segment in ("all", "cold_users", "warm_users", "new_items"):
            cells = []
            for name in names:
                values = models[name].get(segment) or {}
                cells.append(
                    f"{number_or_na(values.get(f'ndcg@{k}'), '.4f')} ({int(values.get('users_evaluated') or 0)})"
                )
            lines.append(f"              {segment:<12}" + "".join(f"{c:>16}" for c in cells))
    g = s["gate"]
    if g.get("passed") is not None:
        lines.append(f"  gate        {'PASSED' if g['passed'] else 'REJECTED'}")
        lines.extend(f"              {r}" for r in g["reasons"])
    reg = s["registered"]
    if reg:
        aliases = ", ".join(reg.get("aliases") or []) or "no alias"
        lines.append(
            f"  registered  {reg.get('name')} version {reg.get('version')} ({reg.get('status')}; {aliases})"
        )
    rec = s["recommendations"]
    if rec.get("status") == "written":
        by = "per A/B arm (below)" if rec.get("experiment") else f"with version {rec['model_version']}"
        lines.append(f"  recommended top-{s['top_k']} lists for {rec['users']} users {by} -> {rec['path']}")
        if rec.get("rows_path"):
            counts = ", ".join(f"{kind} {n}" for kind, n in sorted((rec.get("page_rows") or {}).items()))
            lines.append(f"  page rows   {counts} -> {rec['rows_path']}")
        exp = rec.get("experiment")
        if exp:
            arms = ", ".join(
                f"{arm} {exp['arms'][arm]['users']} users on {exp['arms'][arm]['model_version']}"
                for arm in ("champion", "challenger", "holdout")
                if arm in exp["arms"]
            )
            lines.append(f"  A/B test    {exp['experiment_id']}, shown in week {exp['serving_week']}: {arms}")
    elif rec:
        lines.append(f"  recommend   skipped: {rec.get('reason')}")
    kanon = s.get("k_anonymity") or {}
    if kanon:
        lines.append(
            f"  privacy     k-anonymity k={kanon.get('k')}: {kanon.get('users_released')} user profiles "
            f"released, {kanon.get('users_suppressed')} suppressed"
        )
    scan = s.get("privacy_scan") or {}
    if scan:
        found = scan.get("findings") or []
        verdict = "clean" if not found and scan.get("clean", True) else f"{len(found)} findings: run FAILED"
        lines.append(f"  leak scan   {scan.get('files_scanned')} files scanned: {verdict}")
    if s.get("validation_report"):
        lines.append(f"  validation report: {s['validation_report']}")
    return "\n".join(lines)


def format_brief(s: dict[str, Any]) -> str:
    """One line per run, for a run over many weeks: the window, the gate's verdict, the version."""
    parts = [f"week {s['week']}"]
    if s.get("window"):
        parts.append(s["window"].split(";")[0])
    primary = (s["metrics"].get("candidate") or {}).get(f"ndcg@{s['top_k']}")
    if primary is not None:
        parts.append(f"ndcg@{s['top_k']} {number_or_na(primary, '.4f')}")
    if s["gate"].get("passed") is not None:
        parts.append("gate " + ("PASSED" if s["gate"]["passed"] else "REJECTED"))
    reg = s["registered"]
    if reg:
        aliases = ", ".join(reg.get("aliases") or []) or "no alias"
        parts.append(f"version {reg.get('version')} ({aliases})")
    return f"{parts[0]}: {'; '.join(parts[1:])}" if len(parts) > 1 else parts[0]


def recommendations_frame(lake: Lake, week: date) -> pd.DataFrame:
    return read_parquet(lake.partition("recommendations", week) / "recommendations.parquet")


def write_summary(ctx: StageContext) -> Path:
    return write_json(ctx.lake.partition("runs", ctx.week) / "summary.json", summary(ctx))
