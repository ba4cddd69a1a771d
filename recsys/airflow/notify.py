"""Notifications through Airflow notifiers: failed tasks and runs, gate rejections, early retrains.

The DAG files only wire callbacks; everything else is here::

    default_args={"on_failure_callback": RecsysNotifier("task_failed"), ...}   # a task failed: its error
    @dag(on_failure_callback=RecsysNotifier("run_failed"))                    # a run failed
    @task(on_success_callback=RecsysNotifier("gate_rejected"))  # on `register`: only when the gate said no
    TriggerDagRunOperator(on_success_callback=RecsysNotifier("drift_retrain"))  # drift started a retrain

:class:`RecsysNotifier` (an Airflow ``BaseNotifier``) builds a :class:`Notification` from the
callback's context and hands it to every configured channel, each one an Airflow notifier:

=================================== ==================================================================
``RECSYS_NOTIFY`` entry              channel
=================================== ==================================================================
``log`` (the default)                :class:`LogNotifier`: one line on the ``recsys.airflow.notify`` logger
                                     (the task log; for run failures the scheduler / DAG processor log)
``email:<address>[:<conn id>]``      ``SmtpNotifier`` (providers-smtp) through the SMTP connection
                                     ``<conn id>``, else ``[email] email_conn_id`` (``smtp_default``);
                                     several ``email:`` entries on one connection make one e-mail
``slack[:<conn id>]``                ``SlackWebhookNotifier`` (providers-slack) through the Slack
                                     incoming-webhook connection ``<conn id>`` (``slack_default``)
``none``                             no notifications
=================================== ==================================================================

Entries are comma-separated, e.g. ``RECSYS_NOTIFY="log,email:ops@example.com,slack:recsys_slack"``.
Addresses, webhooks and passwords live in Airflow connections, never in the message. Messages carry
the DAG, run, task, week, what happened and the error or the gate's reasons; error texts are passed
through Airflow's secrets masker and have e-mail addresses and IP addresses masked, and run confs
(which may hold personal data, e.g. ``user_erasure``'s) are never quoted. No links.

A bad ``RECSYS_NOTIFY`` is a :class:`~recsys.core.errors.ConfigError` from :func:`parse_channels`; at
notification time it is logged and the notification goes to the log instead, so it is never lost.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow.sdk import BaseNotifier

from recsys.core.errors import ConfigError
from recsys.core.formatting import float_text
from recsys.core.intervals import week_start_of
from recsys.core.runplan import plan_run
from recsys.core.settings import NOTIFY_ENV, notify_spec

LOGGER_NAME = "recsys.notify"
log = logging.getLogger(LOGGER_NAME)

EVENTS = ("task_failed", "run_failed", "gate_rejected", "drift_retrain")
RETRAIN_DAG = "weekly_retrain"
DEFAULT_SLACK_CONN = "slack_default"
MAX_ERROR_CHARS = 600

_CONN_ID = re.compile(r"^[A-Za-z0-9_.-]{1,250}$")
_ADDRESS = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$")
_EMAIL_IN_TEXT = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_IPV4_IN_TEXT = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.])")
_USAGE = "use log, email:<address>[:<smtp connection id>], slack[:<connection id>] or none, comma-separated"


# ---- configuration -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Channel:
    """One place a notification goes: ``log``, ``email`` (to ``target`` via ``conn_id``) or ``slack``
    (``target`` is the webhook connection id)."""

    kind: str
    target: str | None = None
    conn_id: str | None = None


def parse_channels(spec: str | None) -> list[Channel]:
    """The channels of a ``RECSYS_NOTIFY`` value (empty or ``None``: the log only; ``none``: nothing).

    Raises ConfigError naming the bad entry and the accepted forms.
    """
    entries = [entry.strip() for entry in (spec or "").split(",") if entry.strip()]
    if not entries:
        return [Channel("log")]

    def bad(entry: str, why: str) -> ConfigError:
        return ConfigError(f"{NOTIFY_ENV}={spec!r}: {why} in {entry!r}; {_USAGE}")

    if any(entry.lower() == "none" for entry in entries):
        if len(entries) > 1:
            raise bad("none", "'none' cannot be combined with other channels")
        return []
    channels: list[Channel] = []
    for entry in entries:
        kind, _, rest = entry.partition(":")
        kind = kind.strip().lower()
        if kind == "log":
            if rest:
                raise bad(entry, "the log channel takes no argument")
            channel = Channel("log")
        elif kind == "email":
            address, _, conn_id = rest.partition(":")
            address, conn_id = address.strip(), conn_id.strip()
            if not address:
                raise bad(entry, "email needs an address (email:ops@example.com)")
            if not _ADDRESS.match(address):
                raise bad(entry, f"not an e-mail address: {address!r}")
            if ":" in rest and not _CONN_ID.match(conn_id):
                raise bad(entry, f"not an Airflow connection id: {conn_id!r}")
            channel = Channel("email", address, conn_id or None)
        elif kind == "slack":
            conn_id = rest.strip() or DEFAULT_SLACK_CONN
            if not _CONN_ID.match(conn_id):
                raise bad(entry, f"not an Airflow connection id: {conn_id!r}")
            channel = Channel("slack", conn_id)
        else:
            raise bad(entry, f"unknown channel {kind!r}")
        if channel not in channels:
            channels.append(channel)
    return channels


# ---- messages ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Notification:
    """What happened, in words fit for a log line, a Slack message and an e-mail."""

    event: str
    headline: str  # what happened, one sentence
    dag_id: str
    run_id: str | None = None
    task_id: str | None = None
    week: str | None = None
    trigger: str | None = None
    details: list[str] = field(default_factory=list)  # the error, the reasons, the metrics

    @property
    def subject(self) -> str:
        week = f" (week {self.week})" if self.week else ""
        return f"[recsys] {self.dag_id}: {self.headline}{week}"

    def facts(self) -> str:
        parts = [f"dag={self.dag_id}", f"run={self.run_id or '?'}", f"task={self.task_id or '-'}"]
        parts += [f"week={self.week or '?'}"] + ([f"trigger={self.trigger}"] if self.trigger else [])
        return " ".join(parts)

    def line(self) -> str:
        """One line: ``[recsys] <event>: <headline> | dag=... run=... task=... week=... | <details>``."""
        text = " | ".join([f"[recsys] {self.event}: {self.headline}", self.facts(), *self.details])
        return " ".join(text.split())

    def text(self) -> str:
        """Several lines (Slack, e-mail)."""
        return "\n".join([self.subject, self.facts(), *(f"- {detail}" for detail in self.details)])

    def html(self) -> str:
        items = "".join(f"<li>{html.escape(detail)}</li>" for detail in self.details)
        return (
            f"<p><b>{html.escape(self.headline)}</b></p><p><code>{html.escape(self.facts())}</code></p>"
            f"<ul>{items}</ul>"
        )


def scrub(text: object, limit: int = MAX_ERROR_CHARS) -> str:
    """A free text fit for a notification: one line, Airflow-registered secrets masked, e-mail and
    IP addresses masked, at most ``limit`` characters."""
    value = " ".join(str(text).split())
    try:  # the masker Airflow applies to task logs (connection passwords, secret Variables)
        # deferred: airflow's masker lives in a private module (Airflow 3.3 exposes mask_secret in
        # airflow.sdk.log but no public redact); imported inside the try, its absence means no masking
        from airflow.sdk._shared.secrets_masker import redact  # noqa: PLC2701

        value = str(redact(value))
    except Exception:  # noqa: BLE001 - masking registered secrets is best effort outside Airflow
        pass
    value = _IPV4_IN_TEXT.sub("<ip>", _EMAIL_IN_TEXT.sub("<email>", value))
    return value if len(value) <= limit else value[: limit - 3] + "..."


def failure_notification(
    dag_id: str,
    run_id: str | None,
    task_id: str | None,
    *,
    week: str | None = None,
    trigger: str | None = None,
    error: object = None,
    reason: str | None = None,
    run_level: bool = False,
    tries: int | None = None,
) -> Notification:
    """(a) A task failed (with its error) or a run failed (with the reason and the failing task)."""
    if run_level:
        headline = "run failed" + (f" at task {task_id}" if task_id else "")
        details = [f"reason: {reason or 'unknown'}"]
        if error is None:
            details.append("the error is in the task log and the task_failed notification")
    else:
        tried = f" after {tries} {'try' if tries == 1 else 'tries'}" if tries else ""
        headline = f"task {task_id or '?'} failed{tried}"
        details = []
    if (
        isinstance(error, BaseException)
        and type(error).__name__ == "AirflowFailException"
        and error.__cause__
    ):
        error = error.__cause__  # recsys.airflow.tasks.fail_fast wraps the RecsysError that says it all
    if error is not None:
        kind = type(error).__name__ if isinstance(error, BaseException) else ""
        details.insert(0, f"error: {kind + ': ' if kind else ''}{scrub(error)}")
    return Notification(
        "run_failed" if run_level else "task_failed",
        headline,
        dag_id,
        run_id,
        task_id,
        week,
        trigger,
        details,
    )


def gate_rejection_notification(
    dag_id: str,
    run_id: str | None,
    task_id: str | None,
    decision: Mapping[str, Any],
    registration: Mapping[str, Any] | None = None,
    *,
    week: str | None = None,
    trigger: str | None = None,
) -> Notification:
    """(b) The gate rejected this week's candidate: version, week, failed checks' reasons, metrics.

    ``decision`` is the ``gate`` stage's GateDecision dict, ``registration`` the ``register`` stage's.
    """
    registration = registration or {}
    reasons = [str(r) for r in decision.get("reasons") or []]
    failed = [r for r in reasons if r.startswith("FAIL")] or ["FAIL: no checks ran"]
    checks = decision.get("checks") or {}
    version = registration.get("version")
    candidate = (
        f"candidate {registration.get('name') or 'model'} version {version}" if version else "candidate"
    )
    headline = (
        f"gate rejected {candidate} ({sum(1 for ok in checks.values() if ok)}/{len(checks)} checks passed)"
    )
    champion = registration.get("previous_champion")
    status = registration.get("status")
    metrics = decision.get("metrics") or {}
    name = metrics.get("primary_metric", "primary metric")
    shown = [f"{role} {float_text(metrics.get(role))}" for role in ("candidate", "baseline", "champion")]
    if "users_evaluated" in metrics:
        shown.append(f"users_evaluated {float_text(metrics['users_evaluated'])}")
    if champion:
        stays = f"champion stays version {champion}"
    else:  # a champion was evaluated against, or there is none yet
        stays = "champion unchanged" if metrics.get("champion") is not None else "no champion yet"
    details = [
        f"registered as {status or 'rejected'}; {stays}",
        f"{name}: {', '.join(shown)}",
        *failed,
    ]
    return Notification(
        "gate_rejected",
        headline,
        dag_id,
        run_id,
        task_id,
        week or decision.get("week"),
        trigger,
        details,
    )


def drift_retrain_notification(
    dag_id: str, run_id: str | None, task_id: str | None, conf: Mapping[str, Any], triggered_run: str | None
) -> Notification:
    """(c) Drift made the monitor start an early retrain: the week, data through, the reasons."""
    through = conf.get("through")
    headline = f"drift triggered an early {RETRAIN_DAG} run" + (f" {triggered_run}" if triggered_run else "")
    details = [f"data through {through}" if through else "on the complete week"]
    if conf.get("champion_version"):
        details.append(f"champion version {conf['champion_version']}")
    details += [f"reason: {scrub(reason, 200)}" for reason in conf.get("reasons") or []]
    return Notification(
        "drift_retrain", headline, dag_id, run_id, task_id, conf.get("week"), "drift", details
    )


# ---- from an Airflow callback context ----------------------------------------------------------


def _run_facts(context: Mapping[str, Any]) -> dict[str, Any]:
    """DAG, run, task, week and trigger of a callback context (whatever of them it has)."""
    dag, dag_run, ti = context.get("dag"), context.get("dag_run"), context.get("ti")
    dag_id = getattr(dag, "dag_id", None) or getattr(dag_run, "dag_id", None) or getattr(ti, "dag_id", "?")
    facts: dict[str, Any] = {
        "dag_id": dag_id,
        "run_id": context.get("run_id") or getattr(dag_run, "run_id", None),
        "task_id": getattr(ti, "task_id", None),
        "week": None,
        "trigger": None,
    }
    if dag_id == RETRAIN_DAG and dag_run is not None:
        try:
            plan = plan_run(
                getattr(dag_run, "run_type", None),
                context.get("data_interval_end") or getattr(dag_run, "data_interval_end", None),
                getattr(dag_run, "conf", None),
            )
            facts["week"], facts["trigger"] = plan.week.isoformat(), plan.trigger
        except Exception:  # noqa: BLE001 - a bad conf may be why the run failed: say "?" instead
            pass
    elif context.get("data_interval_end") is not None:  # drift_monitor: the week in progress
        try:
            facts["week"] = week_start_of(context["data_interval_end"]).isoformat()
        except Exception:  # noqa: BLE001 - not a date-time: no week
            pass
    return facts


def notification_from_context(event: str, context: Mapping[str, Any]) -> Notification | None:
    """The notification an Airflow callback context calls for; None when there is nothing to say
    (a gate that passed, a trigger that did not start a run)."""
    facts = _run_facts(context)
    ti = context.get("ti")
    if event == "task_failed":
        return failure_notification(
            **facts, error=context.get("exception"), tries=getattr(ti, "try_number", None)
        )
    if event == "run_failed":
        return failure_notification(
            **facts, error=context.get("exception"), reason=context.get("reason"), run_level=True
        )
    if event == "gate_rejected":
        decision = ti.xcom_pull(task_ids="gate") if ti is not None else None
        if not decision or decision.get("passed", True):
            return None
        registration = ti.xcom_pull(task_ids=ti.task_id) if ti.task_id != "gate" else None
        return gate_rejection_notification(
            facts["dag_id"],
            facts["run_id"],
            facts["task_id"],
            decision,
            registration,
            week=decision.get("week") or facts["week"],
            trigger=facts["trigger"],
        )
    if event == "drift_retrain":
        check = ti.xcom_pull(task_ids="check") if ti is not None else None
        conf = (check or {}).get("conf") or {}
        if not conf:
            return None
        triggered = ti.xcom_pull(task_ids=ti.task_id, key="trigger_run_id")
        return drift_retrain_notification(facts["dag_id"], facts["run_id"], facts["task_id"], conf, triggered)
    raise ValueError(f"unknown notification event {event!r}; choose one of {', '.join(EVENTS)}")


# ---- channels ----------------------------------------------------------------------------------


class LogNotifier(BaseNotifier):
    """Writes a notification as one line to the ``recsys.airflow.notify`` logger (the task log under Airflow)."""

    def __init__(self, notification: Notification, level: int = logging.WARNING, **kwargs: Any):
        super().__init__(**kwargs)
        self.notification = notification
        self.level = level

    def notify(self, context: Any) -> None:
        logging.getLogger(LOGGER_NAME).log(self.level, "%s", self.notification.line())


def build_notifiers(notification: Notification, channels: Sequence[Channel]) -> list[BaseNotifier]:
    """One Airflow notifier per channel (e-mails on the same connection merged into one message).

    Raises ConfigError when a channel's provider package is not installed.
    """
    notifiers: list[BaseNotifier] = []
    recipients: dict[str | None, list[str]] = {}
    for channel in channels:
        if channel.kind == "log":
            notifiers.append(LogNotifier(notification))
        elif channel.kind == "email":
            recipients.setdefault(channel.conn_id, []).append(str(channel.target))
        elif channel.kind == "slack":
            try:
                # deferred: an optional provider, needed only for a slack channel (DAG parsing stays light)
                from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier
            except ImportError as exc:
                raise ConfigError(
                    f"{NOTIFY_ENV}: the slack channel needs apache-airflow-providers-slack ({exc})"
                ) from None
            notifiers.append(
                SlackWebhookNotifier(slack_webhook_conn_id=str(channel.target), text=notification.text())
            )
        else:
            raise ConfigError(f"{NOTIFY_ENV}: unknown channel {channel.kind!r}")
    if recipients:
        try:
            # deferred: an optional provider, needed only for an email channel (DAG parsing stays light)
            from airflow.providers.smtp.notifications.smtp import SmtpNotifier
        except ImportError as exc:
            raise ConfigError(
                f"{NOTIFY_ENV}: the email channel needs apache-airflow-providers-smtp ({exc})"
            ) from None
        for conn_id, to in recipients.items():
            notifiers.append(
                SmtpNotifier(
                    to=to,
                    subject=notification.subject,
                    html_content=notification.html(),
                    smtp_conn_id=conn_id,  # None: Airflow's [email] email_conn_id (smtp_default)
                )
            )
    return notifiers


def send(
    notification: Notification, context: Mapping[str, Any] | None = None, spec: str | None = None
) -> list[str]:
    """Send ``notification`` to every channel of ``spec`` (default: ``RECSYS_NOTIFY``).

    Never raises: a bad configuration is logged and the notification goes to the log; a channel
    that fails (SMTP down, unknown connection) is logged and the others still get it (the log, when
    all failed). Returns the names of the notifiers that succeeded.
    """
    try:
        channels = parse_channels(notify_spec() if spec is None else spec)
        notifiers = build_notifiers(notification, channels)
    except ConfigError as exc:
        log.error("notification settings: %s; sending to the log instead", exc)
        notifiers = [LogNotifier(notification)]
    # the channels get final text; without the DAG, what they still render (SmtpNotifier: the sender
    # from the connection) uses Airflow's default Jinja environment: `airflow dags test` hands DAG
    # callbacks a SerializedDAG, which has none
    context = {key: value for key, value in (context or {}).items() if key != "dag"}
    sent = []
    for notifier in notifiers:
        try:
            # notify(), not __call__: the message is final text, not a Jinja template (an error
            # message with "{{" in it must not be rendered)
            notifier.notify(context)
            sent.append(type(notifier).__name__)
        except Exception as exc:  # noqa: BLE001 - one channel down must not silence the others
            log.error(
                "%s could not send %r: %s: %s",
                type(notifier).__name__,
                notification.subject,
                type(exc).__name__,
                exc,
            )
    if notifiers and not sent and not any(isinstance(n, LogNotifier) for n in notifiers):
        LogNotifier(notification).notify({})  # every channel failed: keep it in the log at least
    return sent


class RecsysNotifier(BaseNotifier):
    """The callback the DAGs wire: builds the ``event``'s notification from the callback context and
    sends it to the channels configured (``RECSYS_NOTIFY``, read when the callback runs; ``channels``
    overrides it). See the module docstring for the events."""

    def __init__(self, event: str, channels: str | None = None, **kwargs: Any):
        if event not in EVENTS:
            raise ValueError(f"unknown notification event {event!r}; choose one of {', '.join(EVENTS)}")
        super().__init__(**kwargs)
        self.event = event
        self.channels = channels

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        """Nothing to render (no template fields). Skipping it also keeps ``airflow dags test``
        working: it hands DAG callbacks a SerializedDAG, which has no Jinja environment."""

    def notify(self, context: Any) -> None:
        try:
            notification = notification_from_context(self.event, context)
        except Exception as exc:  # noqa: BLE001 - a broken context must not swallow a failure notice
            log.exception("could not build the %s notification", self.event)
            facts = _run_facts(context)
            notification = Notification(
                self.event,
                f"{self.event.replace('_', ' ')} (details unavailable: {scrub(exc, 200)})",
                **facts,
            )
        if notification is not None:
            send(notification, context, self.channels)
