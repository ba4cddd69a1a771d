"""Operational commands of the `recsys` CLI: registry lifecycle and privacy.

recsys land-csv --events FILE_OR_DIR --items FILE [--users FILE]   your own CSV history -> weekly raw partitions
recsys promote --date DATE              approve this week's candidate (promotion mode manual)
recsys rollback [--to VERSION] --reason TEXT
recsys erase USER_ID [--reason TEXT]    right to be forgotten (needs RECSYS_PSEUDONYM_KEY)
recsys scan --date DATE                 leak scan of what the week's run published
recsys rekey --new-key-env VAR          rotate the pseudonymization key of the anonymized store
recsys drift-check [--at DATETIME]      the drift monitor's refresh + check, without Airflow
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from recsys.core.errors import ConfigError
from recsys.core.settings import Settings, pseudonym_key
from recsys.io.storage import Lake
from recsys.io.tracking import configure
from recsys.pipeline.config import PipelineConfig
from recsys.pipeline.context import StageContext
from recsys.privacy import erase_user, require_clean, scan_for_leaks


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "cli"


def cmd_land_csv(args: argparse.Namespace) -> int:
    from recsys.data.csv_history import land_csv_history  # deferred: keeps `recsys --help` light

    settings = Settings.from_env()
    weeks = land_csv_history(
        Lake.from_settings(settings),
        Path(args.events),
        Path(args.items),
        Path(args.users) if args.users else None,
        progress=lambda m: print(m, file=sys.stderr, flush=True),
    )
    print(
        f"landed {len(weeks)} weekly partitions ({weeks[0]} .. {weeks[-1]}) into {Lake.from_settings(settings).root / 'raw'}"
    )
    return 0


def cmd_promote(args: argparse.Namespace, week: date) -> int:
    # deferred: keeps `recsys --help` light (the release stages load the registry and the models)
    from recsys.pipeline.runner import run_stage

    # through run_stage: the week's lease, so an approval never races a run of the same week
    result = run_stage("promote", StageContext.create(week), approved_by=args.by or _user())
    changed = "now champion" if result.changed else "already champion"
    print(f"version {result.version} is {changed} (approved by {result.approved_by})")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from recsys.promotion.registry import rollback  # deferred: keeps `recsys --help` light

    settings = Settings.from_env()
    result = rollback(
        configure(settings), settings.model_name, args.to, reason=args.reason, by=args.by or _user()
    )
    if result["changed"]:
        print(
            f"champion of {settings.model_name} moved from version {result['from']} to {result['champion']}"
        )
    else:
        print(
            f"version {result['champion']} already is the champion of {settings.model_name}: nothing changed"
        )
    return 0


def cmd_erase(args: argparse.Namespace) -> int:
    record = erase_user(
        Settings.from_env(),
        args.user_id,
        pseudonym_key(),
        requested_by=args.by or _user(),
        reason=args.reason or "",
    )
    print(
        json.dumps(record.to_dict() if hasattr(record, "to_dict") else record.__dict__, indent=2, default=str)
    )
    return 0


def cmd_scan(args: argparse.Namespace, week: date) -> int:
    settings = Settings.from_env()
    window_weeks = PipelineConfig.load(settings.config_file).prepare.window_weeks
    report = scan_for_leaks(settings, week, [Path(p) for p in args.logs or []], window_weeks=window_weeks)
    data: dict[str, Any] = report.to_dict()
    print(
        json.dumps(data, indent=2, default=str)
        if args.json
        else f"scanned {data.get('files_scanned')} files for week {week}: "
        f"{'clean' if report.clean else str(len(data.get('findings', []))) + ' findings'}"
    )
    require_clean(report)
    return 0


def cmd_rekey(args: argparse.Namespace) -> int:
    from recsys.privacy.rekey import rekey_store  # deferred: keeps `recsys --help` light

    new = os.environ.get(args.new_key_env, "")
    if len(new) < 16:
        raise ConfigError(f"{args.new_key_env} must hold the new key (at least 16 characters)")
    settings = Settings.from_env()
    record = rekey_store(
        Lake.from_settings(settings),
        pseudonym_key(),
        new.encode("utf-8"),
        allow_unmapped=args.allow_unmapped,
        progress=lambda m: print(m, file=sys.stderr),
    )
    print(
        f"re-keyed {record['files']} files ({record['users']} user ids); key {record['old_key']} -> "
        f"{record['new_key']}, now the lake's recorded key. Set RECSYS_PSEUDONYM_KEY to the new key "
        "(the pipeline refuses the old one from now on) and retrain."
    )
    return 0


def cmd_drift_check(args: argparse.Namespace) -> int:
    # deferred: keeps `recsys --help` light (the monitor loads the stages, drift statistics and registry)
    from recsys.pipeline.monitor import check, refresh

    settings = Settings.from_env()
    config = PipelineConfig.load(settings.config_file)
    at = args.at or datetime.now(tz=UTC)
    if config.drift.refresh and not args.no_refresh:
        refreshed = refresh(at, settings, config)
        print(f"refresh: {refreshed.get('status')} {refreshed.get('reason') or ''}".rstrip(), file=sys.stderr)
    result = check(at, settings, config)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print(f"drift check at {at.isoformat()}: {result.decision}")
    print(f"  {result.message}")
    if result.report is not None:
        for name, value in sorted(result.report.metrics.items()):
            print(f"  {name:<22} {value:.4f}" if value == value else f"  {name:<22} n/a")
    if result.trigger:
        print(
            "  early retrain asked for: airflow dags trigger weekly_retrain -c '"
            + json.dumps({k: v for k, v in result.retrain_conf().items() if k != "figures"})
            + "'"
        )
    print(f"  MLflow run {result.mlflow_run_id} (experiment {settings.mlflow_experiment}_drift)")
    return 0


def add_commands(sub: Any, day: Any, with_week: Any, moment: Any = None) -> None:
    """Register the commands on the CLI's subparsers; ``with_week`` wraps a handler taking a week."""
    p = sub.add_parser(
        "land-csv",
        help="land your own interaction history (flat CSV exports) into the raw lake, one partition a week",
    )
    p.add_argument(
        "--events",
        required=True,
        metavar="FILE_OR_DIR",
        help="events CSV (.csv / .csv.gz, raw events columns) or a folder of them, any number of weeks",
    )
    p.add_argument("--items", required=True, metavar="FILE", help="the catalogue CSV (raw items columns)")
    p.add_argument(
        "--users",
        metavar="FILE",
        help="user profiles CSV (raw users columns); default: the lake's, else one row per user id",
    )
    p.set_defaults(func=cmd_land_csv)

    p = sub.add_parser(
        "promote", help="approve this week's candidate: move champion to it (gate must have passed)"
    )
    p.add_argument("--date", type=day, required=True, help="any day; its last complete week is used")
    p.add_argument("--by", help="who approves (default: your login)")
    p.set_defaults(func=with_week(cmd_promote))

    p = sub.add_parser("rollback", help="move champion back to a named or the previous version")
    p.add_argument("--to", help="version to restore (default: the current champion's predecessor)")
    p.add_argument("--reason", required=True, help="why (recorded on both versions)")
    p.add_argument("--by", help="who (default: your login)")
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser("erase", help="erase a user's data everywhere (right to be forgotten)")
    p.add_argument("user_id", help="the raw user id (never logged)")
    p.add_argument("--reason", help="why, e.g. a ticket number (no personal data)")
    p.add_argument("--by", help="who asked (default: your login)")
    p.set_defaults(func=cmd_erase)

    p = sub.add_parser("scan", help="scan what a week's run published for personal data")
    p.add_argument("--date", type=day, required=True, help="any day; its last complete week is used")
    p.add_argument("--logs", nargs="*", help="Airflow task log folders to scan too")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=with_week(cmd_scan))

    p = sub.add_parser("drift-check", help="check the newest data for drift against the champion's")
    p.add_argument("--at", type=moment, help="check time, ISO date-time in UTC (default: now)")
    p.add_argument("--no-refresh", action="store_true", help="do not process the week in progress first")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_drift_check)

    p = sub.add_parser("rekey", help="rotate the pseudonymization key of the anonymized store")
    p.add_argument(
        "--new-key-env",
        required=True,
        metavar="VAR",
        help="name of the environment variable holding the new key (keys never go on a command line)",
    )
    p.add_argument(
        "--allow-unmapped",
        action="store_true",
        help="drop rows whose pseudonym the old key does not produce (e.g. erased users)",
    )
    p.set_defaults(func=cmd_rekey)
