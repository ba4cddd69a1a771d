"""Notifications: channel parsing, messages, the log notifier, the real e-mail and Slack notifiers
against loopback servers, the DAG wiring, and through Airflow itself (`airflow dags test`): a gate
rejection and a failed run, each showing its notification line in the run's output."""

from __future__ import annotations

import csv
import json
import logging
import socketserver
import subprocess
import sys
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

from recsys.airflow.notify import (
    LOGGER_NAME,
    Channel,
    LogNotifier,
    RecsysNotifier,
    build_notifiers,
    drift_retrain_notification,
    failure_notification,
    gate_rejection_notification,
    parse_channels,
    scrub,
    send,
)
from recsys.core.errors import ConfigError, DataNotFoundError
from recsys.core.settings import notify_spec
from recsys.promotion.gates import GateThresholds, evaluate_gate
from tests.conftest import PROJECT_ROOT, airflow_subprocess_env, install_airflow_db

RUN = "scheduled__2026-11-22T00:00:00+00:00"


def rejected_decision() -> dict:
    candidate = {"ndcg@10": 0.031, "users_evaluated": 250}
    champion = {"ndcg@10": 0.05, "users_evaluated": 250}
    baseline = {"ndcg@10": 0.03, "users_evaluated": 250}
    decision = evaluate_gate(candidate, champion, baseline, GateThresholds()).to_dict()
    assert not decision["passed"]
    return {**decision, "stage": "gate", "week": "2026-11-15"}


REGISTRATION = {
    "name": "recsys_als",
    "version": "4",
    "run_id": "abc",
    "status": "rejected",
    "aliases": [],
    "previous_champion": "3",
}


def notify_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER_NAME and r.levelno == logging.WARNING]


# ---- channels ----------------------------------------------------------------------------------


def test_default_is_the_log():
    assert parse_channels(None) == [Channel("log")]
    assert parse_channels("  ") == [Channel("log")]
    assert notify_spec({}) == "log" and notify_spec({"RECSYS_NOTIFY": " slack "}) == "slack"


def test_channels_parse_with_connections_and_duplicates():
    channels = parse_channels(
        "log, email:ops@example.com, EMAIL:ml@example.com:smtp_ops,slack:recsys_slack,slack,log"
    )
    assert channels == [
        Channel("log"),
        Channel("email", "ops@example.com", None),
        Channel("email", "ml@example.com", "smtp_ops"),
        Channel("slack", "recsys_slack"),
        Channel("slack", "slack_default"),
    ]
    assert parse_channels("none") == []


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("log,sms:0123", "unknown channel 'sms'"),
        ("email", "email needs an address"),
        ("email:ops-at-example.com", "not an e-mail address"),
        ("email:ops@example.com:bad conn", "not an Airflow connection id"),
        ("slack:https://hooks.example.com/x", "not an Airflow connection id"),
        ("log:verbose", "takes no argument"),
        ("none,log", "cannot be combined"),
    ],
)
def test_bad_channel_config_is_a_clear_error(spec, message):
    with pytest.raises(ConfigError, match=message) as raised:
        parse_channels(spec)
    text = str(raised.value)
    assert (
        text.startswith("RECSYS_NOTIFY=") and "email:<address>" in text and "slack[:<connection id>]" in text
    )


# ---- messages ----------------------------------------------------------------------------------


def test_task_failure_message_names_everything_and_unwraps_fail_fast():
    from airflow.sdk.exceptions import AirflowFailException

    try:
        try:
            raise DataNotFoundError("no raw events files for week 2026-11-08")
        except DataNotFoundError as exc:
            raise AirflowFailException(f"ingest of {RUN}: {exc}") from exc
    except AirflowFailException as exc:
        error = exc
    note = failure_notification(
        "weekly_retrain", RUN, "ingest", week="2026-11-08", trigger="schedule", error=error, tries=3
    )
    line = note.line()
    assert "\n" not in line
    assert line.startswith("[recsys] task_failed: task ingest failed after 3 tries | ")
    assert f"dag=weekly_retrain run={RUN} task=ingest week=2026-11-08 trigger=schedule" in line
    assert "error: DataNotFoundError: no raw events files for week 2026-11-08" in line
    assert note.subject == "[recsys] weekly_retrain: task ingest failed after 3 tries (week 2026-11-08)"


def test_run_failure_message_gives_reason_and_task():
    note = failure_notification("drift_monitor", "r1", "check", reason="task_failure", run_level=True)
    assert note.event == "run_failed"
    assert "run failed at task check" in note.line() and "reason: task_failure" in note.line()


def test_gate_rejection_message_has_version_week_reasons_and_metrics():
    note = gate_rejection_notification(
        "weekly_retrain", RUN, "register", rejected_decision(), REGISTRATION, trigger="schedule"
    )
    line = note.line()
    assert line.startswith("[recsys] gate_rejected: gate rejected candidate recsys_als version 4 (")
    assert "week=2026-11-15" in line
    assert "registered as rejected; champion stays version 3" in line
    assert "ndcg@10: candidate 0.0310, baseline 0.0300, champion 0.0500, users_evaluated 250" in line
    assert "FAIL: ndcg@10 0.0310 < champion 0.0500" in line
    assert "PASS:" not in line  # the line names what failed; every check is in the MLflow run
    assert "FAIL: ndcg@10 0.0310 < baseline" in note.text() and note.html().count("<li>") == 4
    unnamed = {**REGISTRATION, "previous_champion": None}
    assert (
        "champion unchanged"
        in gate_rejection_notification("w", RUN, "register", rejected_decision(), unnamed).line()
    )


def test_drift_retrain_message():
    conf = {
        "trigger": "drift",
        "week": "2026-11-22",
        "through": "2026-11-25T06:00:00+00:00",
        "reasons": ["item popularity PSI 0.41 > 0.25"],
        "champion_version": "3",
    }
    line = drift_retrain_notification("drift_monitor", "r", "trigger_retrain", conf, "drift__20261125").line()
    assert "drift triggered an early weekly_retrain run drift__20261125" in line
    assert "week=2026-11-22" in line and "data through 2026-11-25T06:00:00+00:00" in line
    assert "reason: item popularity PSI 0.41 > 0.25" in line


def test_scrub_masks_personal_data_and_registered_secrets():
    from airflow.sdk.log import mask_secret

    mask_secret("s3cr3t-token-value")
    text = scrub("user bob@example.com from 10.1.2.3 with s3cr3t-token-value\nsecond line", limit=200)
    assert text == "user <email> from <ip> with *** second line"
    assert len(scrub("x" * 5000)) == 600


# ---- notifiers ---------------------------------------------------------------------------------


def test_log_notifier_writes_one_line(caplog):
    note = gate_rejection_notification("weekly_retrain", RUN, "register", rejected_decision(), REGISTRATION)
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    LogNotifier(note)({})  # through BaseNotifier.__call__, as Airflow calls it
    assert notify_lines(caplog) == [note.line()]


def test_build_notifiers_uses_airflow_provider_notifiers():
    from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier
    from airflow.sdk import BaseNotifier

    note = failure_notification("weekly_retrain", RUN, "train", error=RuntimeError("boom"))
    notifiers = build_notifiers(
        note, parse_channels("log,email:a@example.com,slack:recsys_slack,email:b@example.com")
    )
    assert [type(n) for n in notifiers] == [LogNotifier, SlackWebhookNotifier, SmtpNotifier]
    assert all(isinstance(n, BaseNotifier) for n in notifiers)
    slack, smtp = notifiers[1], notifiers[2]
    assert slack.slack_webhook_conn_id == "recsys_slack" and "error: RuntimeError: boom" in slack.text
    assert smtp.to == ["a@example.com", "b@example.com"]  # one message on one connection
    assert smtp.smtp_conn_id == "smtp_default" and smtp.subject == note.subject


def test_bad_config_at_notification_time_falls_back_to_the_log(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    note = failure_notification("weekly_retrain", RUN, "train", error=RuntimeError("boom"))
    assert send(note, {}, "pager:42") == ["LogNotifier"]
    assert any(
        "unknown channel 'pager'" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR
    )
    assert notify_lines(caplog) == [note.line()]


def test_a_failing_channel_does_not_silence_the_others(caplog, monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_NO_SUCH_CONN", raising=False)
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    note = failure_notification("weekly_retrain", RUN, "train", error=RuntimeError("boom"))
    assert send(note, {}, "slack:no_such_conn,log") == ["LogNotifier"]
    assert any("could not send" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
    caplog.clear()
    assert send(note, {}, "slack:no_such_conn") == []  # every channel failed: the log still has it
    assert notify_lines(caplog) == [note.line()]


class _Webhook(BaseHTTPRequestHandler):
    received: list[tuple[str, dict]] = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, json.loads(body)))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


class _SmtpSink(socketserver.StreamRequestHandler):
    received: list[str] = []

    def handle(self):
        self.wfile.write(b"220 sink\r\n")
        data = None
        while line := self.rfile.readline():
            if data is not None:
                if line == b".\r\n":
                    self.received.append(b"".join(data).decode())
                    data = None
                    self.wfile.write(b"250 ok\r\n")
                else:
                    data.append(line)
            elif line[:4].upper() == b"DATA":
                data = []
                self.wfile.write(b"354 go on\r\n")
            elif line[:4].upper() == b"QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"250 ok\r\n")


def _serve(server):
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_slack_and_email_really_send_through_airflow_connections(monkeypatch):
    """SlackWebhookNotifier and SmtpNotifier against loopback servers, connections from the environment."""
    import base64
    import email

    webhook = _serve(HTTPServer(("127.0.0.1", 0), _Webhook))
    smtp = _serve(socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SmtpSink))
    try:
        monkeypatch.setenv(
            "AIRFLOW_CONN_RECSYS_SLACK",
            json.dumps(
                {
                    "conn_type": "slackwebhook",
                    "password": "T000/B000/XXXX",
                    "host": f"http://127.0.0.1:{webhook.server_address[1]}/services",
                }
            ),
        )
        extra = {"from_email": "airflow@example.com", "disable_tls": True, "disable_ssl": True}
        monkeypatch.setenv(
            "AIRFLOW_CONN_RECSYS_SMTP",
            json.dumps(
                {"conn_type": "smtp", "host": "127.0.0.1", "port": smtp.server_address[1], "extra": extra}
            ),
        )
        note = gate_rejection_notification(
            "weekly_retrain", RUN, "register", rejected_decision(), REGISTRATION
        )
        spec = "slack:recsys_slack,email:ops@example.com:recsys_smtp,email:ml@example.com:recsys_smtp"
        # a DAG without a Jinja environment, like the SerializedDAG `airflow dags test` hands DAG callbacks
        context = {"dag": SimpleNamespace(dag_id="weekly_retrain")}
        assert send(note, context, spec) == ["SlackWebhookNotifier", "SmtpNotifier"]
    finally:
        webhook.shutdown()
        smtp.shutdown()
    ((path, payload),) = _Webhook.received
    assert path == "/services/T000/B000/XXXX"
    assert payload["text"].startswith(note.subject) and "FAIL: ndcg@10 0.0310 < champion" in payload["text"]
    (raw,) = _SmtpSink.received
    message = email.message_from_string(raw)
    assert message["Subject"] == note.subject and message["To"] == "ops@example.com, ml@example.com"
    body = base64.b64decode(message.get_payload()[0].get_payload()).decode()
    assert "FAIL: ndcg@10 0.0310 &lt; champion 0.0500" in body


# ---- the callback ------------------------------------------------------------------------------


class FakeTI:
    def __init__(self, task_id: str, xcoms: dict):
        self.task_id, self.try_number, self.xcoms = task_id, 1, xcoms

    def xcom_pull(self, task_ids=None, key="return_value"):
        return self.xcoms.get((task_ids or self.task_id, key))


def context_for(task_id: str, xcoms: dict, dag_id: str = "weekly_retrain", **extra) -> dict:
    dag_run = SimpleNamespace(dag_id=dag_id, run_id=RUN, run_type="scheduled", conf={})
    return {
        "dag": SimpleNamespace(dag_id=dag_id),
        "dag_run": dag_run,
        "run_id": RUN,
        "ti": FakeTI(task_id, xcoms),
        "data_interval_end": datetime(2026, 11, 22, tzinfo=UTC),
        **extra,
    }


def test_callback_notifies_a_rejected_gate_and_not_a_passed_one(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    rejected = {("gate", "return_value"): rejected_decision(), ("register", "return_value"): REGISTRATION}
    RecsysNotifier("gate_rejected", channels="log")(context_for("register", rejected))
    (line,) = notify_lines(caplog)
    assert "gate rejected candidate recsys_als version 4" in line and "trigger=schedule" in line
    caplog.clear()
    passed = {("gate", "return_value"): {"passed": True, "reasons": ["PASS: fine"]}}
    RecsysNotifier("gate_rejected", channels="log")(context_for("register", passed))
    assert notify_lines(caplog) == []


def test_callback_task_failure_derives_the_week_from_the_run(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    context = context_for("train", {}, exception=ValueError("Spark said no"))
    RecsysNotifier("task_failed", channels="log")(context)
    (line,) = notify_lines(caplog)
    assert "task train failed after 1 try" in line and "week=2026-11-15 trigger=schedule" in line
    assert "error: ValueError: Spark said no" in line


def test_callback_run_failure_with_full_or_minimal_context(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    context = context_for("check", {}, "drift_monitor", reason="task_failure")
    context["data_interval_end"] = datetime(2026, 11, 25, 1, tzinfo=UTC)
    RecsysNotifier("run_failed", channels="log")(context)
    # the DAG processor's context when the failed task is unknown: the DAG, the run, the reason
    minimal = {"dag": SimpleNamespace(dag_id="weekly_retrain"), "run_id": RUN, "reason": "timed_out"}
    RecsysNotifier("run_failed", channels="log")(minimal)
    first, second = notify_lines(caplog)
    assert "run failed at task check" in first and "week=2026-11-22" in first  # the week in progress
    assert second.startswith(f"[recsys] run_failed: run failed | dag=weekly_retrain run={RUN} task=- week=?")
    assert "reason: timed_out" in second


def test_callback_drift_retrain_only_when_a_run_was_asked_for(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    conf = {"trigger": "drift", "week": "2026-11-22", "reasons": ["activity PSI 0.6 > 0.25"]}
    xcoms = {("check", "return_value"): {"conf": conf}, ("trigger_retrain", "trigger_run_id"): "drift__x"}
    RecsysNotifier("drift_retrain", channels="log")(context_for("trigger_retrain", xcoms, "drift_monitor"))
    (line,) = notify_lines(caplog)
    assert "drift triggered an early weekly_retrain run drift__x" in line and "activity PSI" in line
    with pytest.raises(ValueError, match="unknown notification event"):
        RecsysNotifier("gate_passed")


def test_dags_wire_the_notifiers():
    from airflow.dag_processing.dagbag import DagBag

    dags = DagBag(dag_folder=str(PROJECT_ROOT / "dags")).dags

    def events(callbacks) -> set[str]:
        callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
        return {c.event for c in callbacks if isinstance(c, RecsysNotifier)}

    for dag_id in ("weekly_retrain", "drift_monitor"):
        dag = dags[dag_id]
        assert events(dag.on_failure_callback) == {"run_failed"}, dag_id
        for task in dag.tasks:
            assert events(task.on_failure_callback) == {"task_failed"}, task.task_id
    assert events(dags["weekly_retrain"].get_task("register").on_success_callback) == {"gate_rejected"}
    assert events(dags["drift_monitor"].get_task("trigger_retrain").on_success_callback) == {"drift_retrain"}


# ---- through Airflow ---------------------------------------------------------------------------

BIN = Path(sys.executable).parent
UNTIL = "2026-11-23"  # data for the week 2026-11-15 .. 2026-11-22 only


def _run(cmd: list[str], env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=PROJECT_ROOT)
    if check and result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-60:])
        pytest.fail(f"{' '.join(cmd)} exited {result.returncode}:\n{tail}")
    return result


def _notifications(output: str) -> list[str]:
    return [line[line.index("[recsys] ") :] for line in output.splitlines() if "[recsys] " in line]


def _finished(output: str) -> str:
    finished = [line for line in output.splitlines() if "DagRun Finished" in line]
    assert finished, "\n".join(output.splitlines()[-60:])
    return finished[-1]


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory: pytest.TempPathFactory, migrated_airflow_db: Path) -> dict[str, str]:
    root = tmp_path_factory.mktemp("notify")
    strict = root / "strict_gate.json"
    # no model reaches the floor: rejected (and no tuning: the subject is the notification)
    strict.write_text(json.dumps({"gate": {"min_primary": 0.99}, "tuning": {"enabled": False}}))
    env = airflow_subprocess_env(
        root, RECSYS_MODEL_NAME="notify_als", RECSYS_NOTIFY="log", RECSYS_CONFIG=str(strict)
    )
    install_airflow_db(migrated_airflow_db, env)
    generate = [str(BIN / "recsys"), "generate", "--until", UNTIL, "--weeks", "1", "--users", "300"]
    _run([*generate, "--items", "150"], env)
    return env


@pytest.mark.slow
@pytest.mark.integration
def test_dags_test_gate_rejection_is_notified_and_the_run_succeeds(airflow_env):
    result = _run([str(BIN / "airflow"), "dags", "test", "weekly_retrain", "2026-11-22"], airflow_env)
    output = result.stdout + result.stderr
    assert "state=success" in _finished(output)  # a rejected candidate is not a failure
    (line,) = _notifications(output)
    assert line.startswith("[recsys] gate_rejected: gate rejected candidate notify_als version 1 (4/5 checks")
    assert "dag=weekly_retrain" in line and "task=register week=2026-11-15 trigger=manual" in line
    assert "registered as rejected; no champion yet" in line
    assert "FAIL: ndcg@10 " in line and "< floor 0.9900" in line
    users = Path(airflow_env["RECSYS_HOME"]) / "lake" / "raw" / "users" / "week=2026-11-15" / "users.csv"
    with users.open(newline="", encoding="utf-8") as handle:
        raw = [(row["user_id"], row["email"]) for row in csv.DictReader(handle)]
    assert raw and not any(email in line or user_id in line for user_id, email in raw)
    versions = json.loads(_run([str(BIN / "recsys"), "registry", "--json"], airflow_env).stdout)
    assert [(v["version"], v["status"], v["aliases"]) for v in versions] == [("1", "rejected", [])]


@pytest.mark.slow
@pytest.mark.integration
def test_dags_test_failed_run_is_notified_with_the_error(airflow_env):
    # the week 2026-11-08 .. 2026-11-15 has no raw data: the first task fails (no retries in tests)
    result = _run(
        [str(BIN / "airflow"), "dags", "test", "weekly_retrain", "2026-11-15"], airflow_env, check=False
    )
    output = result.stdout + result.stderr
    assert "state=failed" in _finished(output)
    task_line, run_line = _notifications(output)
    assert task_line.startswith("[recsys] task_failed: task window failed after 1 try | dag=weekly_retrain")
    assert "task=window week=2026-11-08" in task_line
    assert "error: DataNotFoundError: week 2026-11-08 cannot be run: no raw events in " in task_line
    assert "the lake's raw events cover 1 week, 2026-11-15" in task_line
    assert run_line.startswith("[recsys] run_failed: run failed at task window | dag=weekly_retrain")
    assert "week=2026-11-08" in run_line and "reason: task_failure" in run_line
