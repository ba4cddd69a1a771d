"""The A/B test of champion against challenger, week by week: feedback in, readout, promotion.

The pieces, in the order a week goes through them:

1. **Serving** (``recommend`` stage of ``weekly_retrain``, :mod:`recsys.pipeline.release_stages`): with an
   ``experiment`` configured, users are split between the arms by the salted hash of their pseudonym
   (:func:`recsys.experiments.ab_config.assign`) and shown their arm's list; what was shown is logged as
   **exposures** (``anonymized/exposures/week=<serving week>``). Lists trained on week W are served
   during the next week, W + 7 days: that is the exposures' ``week``.
2. **Feedback** (:func:`feedback`, the ``ingest_feedback`` task of the ``ab_readout`` Dag): the week's
   raw feedback log (``raw/feedback/week=...``; the app's, or ``recsys simulate-feedback``) is
   streamed, validated (bad rows quarantined with a reason) and pseudonymized
   (:mod:`recsys.experiments.feedback_log`).
3. **Readout** (:func:`ab_readout`): the test covers the weeks that served the **current**
   ``challenger`` version in the challenger arm (a new challenger starts a new test period), and of
   those the weeks whose feedback has landed. :func:`recsys.experiments.abtest.readout` computes per-arm metrics,
   challenger-vs-champion tests with Holm's correction, the sample-ratio check and a decision. It is
   logged as an MLflow run of the experiment ``<experiment>_ab`` (metrics, ``ab/readout.json``, the
   lift plot ``ab/readout.png`` and a page ``ab/readout.html``) and recorded in the lake
   (``runs/week=.../ab_readout.json``, ``reports/week=.../ab_readout.html``).
4. **Action** (promotion mode ``ab`` only; any other mode reports and moves nothing): once the
   challenger has been served ``min_weeks`` weeks, **ship** moves ``champion`` to it (the version's
   own gate decision, which passed, is what :func:`recsys.promotion.registry.promote_version` checks) and
   **keep** retires it; **inconclusive** continues the test until ``max_weeks`` weeks, then retires
   the challenger. A retired or shipped challenger frees the ``challenger`` alias for the next
   passed candidate (:func:`recsys.promotion.registry.register_candidate`).

*Active* users (for the churn metric) are the users with at least one feedback event (click or
play) in a week.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import tempfile
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from recsys.core.errors import DataNotFoundError
from recsys.experiments.ab_config import ARM_NAMES, METRICS
from recsys.experiments.abtest import format_number, plot_readout, readout
from recsys.experiments.feedback_log import (
    active_users,
    exposures_file,
    feedback_file,
    ingest_feedback,
    read_exposures,
    read_feedback,
)
from recsys.io.storage import json_safe, write_text
from recsys.io.tracking import configure, metric_key
from recsys.pipeline.context import StageContext
from recsys.pipeline.results import AbReadoutResult, FeedbackResult
from recsys.privacy.keyring import check_pseudonym_key
from recsys.promotion.registry import (
    champion_version,
    gate_decision_of,
    promote_version,
    retire_challenger,
    serving_challenger,
)
from recsys.reporting.model_report import log_html

log = logging.getLogger(__name__)

AB_EXPERIMENT_SUFFIX = "_ab"


def feedback(ctx: StageContext) -> FeedbackResult:
    """Stream, validate and pseudonymize the raw feedback log of ``ctx.week`` (see module docstring)."""
    week = ctx.week.isoformat()
    if ctx.config.experiment is None:
        return ctx.record(
            FeedbackResult(
                week=week, status="skipped", reason="no experiment configured (config `experiment`)"
            )
        )
    if not ctx.lake.raw_files("feedback", ctx.week):
        if exposures_file(ctx.lake, ctx.week).is_file():
            raise DataNotFoundError(
                f"lists were shown in week {ctx.week.isoformat()} (exposures logged) but no feedback "
                f"has landed in {ctx.lake.partition('raw', ctx.week, 'feedback')}"
            )
        return ctx.record(
            FeedbackResult(week=week, status="skipped", reason=f"no exposures and no feedback in week {week}")
        )
    key = ctx.pseudonym_key()
    check_pseudonym_key(ctx.lake.root, key)  # the key the lake was built with, or a one-line refusal
    return ctx.record(FeedbackResult(status="ingested", **ingest_feedback(ctx.lake, ctx.week, key)))


def _test_weeks(exposures: pd.DataFrame, challenger_version: str) -> list[str]:
    """The weeks whose challenger arm served ``challenger_version`` (ISO strings, in order)."""
    arm = exposures[exposures["arm"].astype(str) == "challenger"]
    served = arm[arm["model_version"].astype(str) == str(challenger_version)]
    return sorted(served["week"].astype(str).unique())


def ab_readout(ctx: StageContext) -> AbReadoutResult:
    """Read the experiment out over the weeks up to ``ctx.week`` and act on it (module docstring)."""
    experiment = ctx.config.experiment
    if experiment is None:
        return ctx.record(
            AbReadoutResult(
                week=ctx.week.isoformat(),
                status="skipped",
                reason="no experiment configured (config `experiment`)",
            )
        )
    client = configure(ctx.settings)
    name = ctx.settings.model_name
    challenger = serving_challenger(client, name)
    champ = champion_version(client, name)
    week = ctx.week.isoformat()
    base = {"experiment_id": experiment.experiment_id, "promotion": ctx.config.promotion}
    if challenger is None or champ is None:
        reason = "no champion yet" if champ is None else "no challenger under test"
        return ctx.record(AbReadoutResult(week=week, **base, status="skipped", reason=reason))
    weeks = [w for w in ctx.lake.weeks("anonymized", "exposures") if w <= ctx.week]
    exposures = read_exposures(ctx.lake, weeks)
    if len(exposures):
        exposures = exposures[exposures["experiment_id"].astype(str) == experiment.experiment_id]
    served = _test_weeks(exposures, str(challenger.version)) if len(exposures) else []
    base.update(challenger_version=str(challenger.version), champion_version=str(champ.version))
    if not served:
        return ctx.record(
            AbReadoutResult(
                week=week,
                **base,
                status="skipped",
                reason=f"challenger version {challenger.version} has not been served in "
                f"experiment {experiment.experiment_id} up to week {ctx.week.isoformat()}",
            )
        )
    landed = [w for w in served if feedback_file(ctx.lake, date.fromisoformat(w)).is_file()]
    waiting = [w for w in served if w not in landed]
    base.update(served_weeks=served, awaiting_feedback=waiting)
    if not landed:
        return ctx.record(
            AbReadoutResult(
                week=week,
                **base,
                status="skipped",
                reason=f"no feedback has landed for the test weeks {served}",
            )
        )
    shown = exposures[exposures["week"].astype(str).isin(landed)]
    events = read_feedback(ctx.lake, [date.fromisoformat(w) for w in landed])
    events = events.assign(week=events["week"].astype(str))
    active = active_users(events)
    result = readout(shown, events, active, experiment)
    log.info("ab_readout: %s", result.summary())
    png = plot_readout(result)
    page = readout_page(result, base, landed, png)
    run_id = _log_readout(ctx, result, base, landed, page, png)
    report = write_text(page, ctx.lake.partition("reports", ctx.week) / "ab_readout.html")
    action = act_on_readout(
        ctx,
        result.decision,
        len(landed),
        str(challenger.version),
        f"{result.summary()} (readout run {run_id})",
    )
    return ctx.record(
        AbReadoutResult(
            week=week,
            **base,
            status="read out",
            weeks=landed,
            decision=result.decision,
            summary=result.summary(),
            action=action,
            mlflow_run_id=run_id,
            report=str(report),
            readout=result.to_dict(),
        )
    )


def act_on_readout(ctx: StageContext, decision: str, weeks: int, version: str, summary: str) -> str:
    """Move aliases on a readout in promotion mode ``ab`` (module docstring); returns what was done."""
    experiment = ctx.config.experiment
    assert experiment is not None
    if ctx.config.promotion != "ab":
        return f"none: promotion mode {ctx.config.promotion} (only mode ab acts on a readout)"
    if weeks < experiment.min_weeks:
        return f"continue: {weeks} of at least {experiment.min_weeks} weeks served"
    client = configure(ctx.settings)
    name = ctx.settings.model_name
    if decision == "ship":
        promote_version(client, name, version, gate_decision_of(client.get_model_version(name, version)))
        client.set_model_version_tag(name, version, "ab_test", f"shipped: {summary}"[:5000])
        return f"promoted: version {version} is champion"
    if decision == "keep":
        retire_challenger(client, name, version, f"kept champion: {summary}"[:5000])
        return f"retired: version {version} is no longer challenger (champion kept)"
    if weeks >= experiment.max_weeks:
        retire_challenger(client, name, version, f"ended inconclusive after {weeks} weeks: {summary}"[:5000])
        return f"retired: inconclusive after {weeks} weeks (max_weeks {experiment.max_weeks})"
    return f"continue: inconclusive after {weeks} of at most {experiment.max_weeks} weeks"


def _log_readout(
    ctx: StageContext, result: Any, base: dict[str, Any], weeks: list[str], page: str, png: bytes
) -> str:
    """One MLflow run of experiment ``<experiment>_ab`` per readout: metrics, json, plot and page."""
    import mlflow  # deferred: mlflow takes seconds to import; only stages that log load it

    configure(ctx.settings, experiment=ctx.settings.mlflow_experiment + AB_EXPERIMENT_SUFFIX)
    experiment = ctx.config.experiment
    assert experiment is not None
    with mlflow.start_run(run_name=f"{experiment.experiment_id} readout {ctx.week.isoformat()}") as run:
        mlflow.set_tags(
            {
                "experiment_id": experiment.experiment_id,
                "week": ctx.week.isoformat(),
                "decision": result.decision,
                "champion_version": base["champion_version"],
                "challenger_version": base["challenger_version"],
                "weeks": ",".join(weeks),
                **ctx.run_tags(),
            }
        )
        mlflow.log_params(
            {
                "primary_metric": experiment.primary_metric,
                "alpha": experiment.alpha,
                "min_users_per_arm": experiment.min_users_per_arm,
                "arms": json.dumps(experiment.arms),
            }
        )
        metrics: dict[str, float] = {}
        for arm, n in result.users.items():
            metrics[f"users.{arm}"] = float(n)
        for arm, values in result.arm_metrics.items():
            for metric, value in values.items():
                metrics[metric_key(f"{arm}.{metric}")] = float(value)
        for metric, c in result.comparisons.items():
            metrics[metric_key(f"lift.{metric}")] = float(c.relative_lift)
            metrics[metric_key(f"p_adjusted.{metric}")] = float(c.p_adjusted)
        mlflow.log_metrics({k: v for k, v in metrics.items() if v == v})  # NaN: not computable
        mlflow.log_dict(json_safe(result.to_dict()), "ab/readout.json")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "readout.png"
            path.write_bytes(png)
            mlflow.log_artifact(str(path), "ab")
        log_html(page, "ab/readout.html", "the A/B readout", run_id=run.info.run_id)
        return run.info.run_id


def readout_page(result: Any, base: dict[str, Any], weeks: list[str], png: bytes) -> str:
    """A self-contained HTML page of a readout: the decision and its reasons, per-arm metrics, the
    comparisons and the lift plot ``png`` (:func:`recsys.experiments.abtest.plot_readout`, embedded)."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "n/a" if value != value else f"{value:,.4f}"
        return html.escape(str(value))

    arms = list(result.arm_metrics)
    metric_names = list(result.comparisons)
    arm_rows = "".join(
        f"<tr><th>{html.escape(m)}</th>"
        + "".join(f"<td>{cell(result.arm_metrics[a].get(m))}</td>" for a in arms)
        + "</tr>"
        for m in metric_names
    )
    comparisons = "".join(
        "<tr>"
        + "".join(
            f"<td>{cell(v)}</td>"
            for v in (
                c.metric,
                c.champion,
                c.challenger,
                f"{c.relative_lift * 100:+.2f}%" if c.relative_lift == c.relative_lift else "n/a",
                c.p_value,
                c.p_adjusted,
                c.verdict,
            )
        )
        + "</tr>"
        for c in result.comparisons.values()
    )
    reasons = "".join(f"<li>{html.escape(r)}</li>" for r in result.reasons)
    image = base64.b64encode(png).decode("ascii")
    users = ", ".join(f"{html.escape(a)} {n:,}" for a, n in result.users.items())
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>A/B readout {html.escape(result.experiment_id)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:60em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:right}}th{{background:#f4f4f4}}</style></head>
<body>
<h1>A/B readout: {html.escape(result.experiment_id)}</h1>
<p><b>Decision: {html.escape(result.decision.upper())}</b> &mdash; champion version
{html.escape(str(base.get("champion_version")))}, challenger version {html.escape(str(base.get("challenger_version")))};
weeks {html.escape(", ".join(weeks))}; exposed users {users}.</p>
<ul>{reasons}</ul>
<h2>Per arm</h2>
<table><tr><th>metric</th>{"".join(f"<th>{html.escape(a)}</th>" for a in arms)}</tr>{arm_rows}</table>
<h2>Challenger vs champion</h2>
<table><tr><th>metric</th><th>champion</th><th>challenger</th><th>lift</th><th>p</th><th>Holm p</th>
<th>verdict</th></tr>{comparisons}</table>
<h2>Lift with confidence intervals</h2>
<img alt="relative lift per metric" src="data:image/png;base64,{image}">
</body></html>
"""


def format_readout(result: AbReadoutResult) -> str:
    """The recorded result of an ``ab_readout`` stage as a few lines for a terminal."""
    experiment_id = result.experiment_id if result.experiment_id is not None else "-"
    lines = [f"A/B readout of week {result.week}: experiment {experiment_id}"]
    if result.status != "read out":
        lines.append(f"  {result.status}: {result.reason}")
        return "\n".join(lines)
    lines.append(
        f"  champion version {result.champion_version}, challenger version {result.challenger_version}, "
        f"weeks {', '.join(result.weeks or [])}"
    )
    out = result.readout or {}
    metrics = [m for m in METRICS if m in out["comparisons"]]
    arms = [a for a in ARM_NAMES if a in out["arm_metrics"]]
    lines.append("  " + f"{'metric':<24}" + "".join(f"{a:>14}" for a in arms) + f"{'lift':>10}{'Holm p':>10}")
    for metric in metrics:
        c = out["comparisons"][metric]
        cells = "".join(f"{_number(out['arm_metrics'][a].get(metric)):>14}" for a in arms)
        lift = c.get("relative_lift")
        lift_text = "n/a" if lift is None else f"{lift * 100:+.1f}%"
        p_text = "n/a" if c.get("p_adjusted") is None else f"{c['p_adjusted']:.3g}"
        lines.append(f"  {metric:<24}{cells}{lift_text:>10}{p_text:>10}")
    users = out["users"]
    lines.append("  users: " + ", ".join(f"{a} {users[a]}" for a in arms if a in users))
    lines.append(f"  {result.summary}")
    lines.extend(f"    {reason}" for reason in out["reasons"])
    lines.append(f"  action: {result.action}")
    lines.append(f"  report: {result.report} (MLflow run {result.mlflow_run_id})")
    return "\n".join(lines)


def _number(value: float | None) -> str:
    """A value of a recorded (JSON) readout, where a value not computable is null."""
    return format_number(float("nan") if value is None else value)


__all__ = ["ab_readout", "act_on_readout", "feedback", "format_readout", "readout_page"]
