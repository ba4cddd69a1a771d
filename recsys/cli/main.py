"""`recsys`: what a person runs outside the scheduler.

    recsys generate [--until DATE] [--weeks N] [--users N] [--items N] [--seed S]
    recsys load-movielens PATH [--dataset ml-100k|ml-1m|ml-latest-small]
    recsys stage STAGE --date DATE        one stage of the weekly pipeline, without Airflow
    recsys pipeline --date DATE           every stage in order, without Airflow
    recsys summary --date DATE            what the run of that week did
    recsys registry                       versions, aliases and gate status of the model
    recsys run-dates [--until DATE] [--weeks N|all] [--from DATE]   dates for `airflow dags test`
    recsys settings [--get NAME]          the effective settings
    recsys validate PATH [--kind K]       the validation suites on any file or raw partition
    recsys promote --date DATE            approve this week's candidate (promotion mode manual)
    recsys rollback [--to VERSION] --reason TEXT
    recsys erase USER_ID [--reason TEXT]  right to be forgotten
    recsys scan --date DATE               leak scan of what a week's run published
    recsys rekey --new-key-env VAR        rotate the pseudonymization key
    recsys simulate-feedback --date DATE [--seed N]   simulated users' feedback to the week's exposures
    recsys ab-status --date DATE [--json] the A/B readout recorded for the week (see `stage ab_readout`)

DATE is any day (YYYY-MM-DD); the run works on the last complete week (Sunday to Sunday, UTC)
ending on or before it, exactly as the Airflow DAG does with its data interval.
Errors are one line on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from recsys.cli.ops import add_commands
from recsys.core.errors import DataNotFoundError, RecsysError, ValidationFailed
from recsys.core.intervals import partition_week, week_start_of
from recsys.core.settings import Settings, pseudonym_key
from recsys.io.faults import explain
from recsys.io.storage import Lake
from recsys.io.tracking import configure
from recsys.pipeline.config import PipelineConfig
from recsys.pipeline.context import AB_STAGES, STAGES, StageContext
from recsys.pipeline.results import AbReadoutResult, IngestResult
from recsys.pipeline.summary import format_brief, format_summary, summary, write_summary

EXIT_USAGE = 2


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date: {text!r} (expected YYYY-MM-DD)") from None


def _moment(text: str) -> datetime:
    """An ISO date or date-time, in UTC unless it names its offset."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a date-time: {text!r} (expected e.g. 2026-11-25T12:00 or 2026-11-25T12:00+00:00)"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _week_of_day(day: date) -> date:
    return partition_week(datetime.combine(day, datetime.min.time(), tzinfo=UTC))


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _today() -> date:
    return datetime.now(tz=UTC).date()


def cmd_generate(args: argparse.Namespace) -> int:
    from recsys.data.synthetic import config_from, generate  # deferred: keeps `recsys --help` light

    settings = Settings.from_env()
    overrides = {
        "weeks": args.weeks,
        "n_users": args.users,
        "n_items": args.items,
        "seed": args.seed,
        "drift_from": args.drift_from,
        "drift_kind": args.drift_kind,
    }
    config = config_from({k: v for k, v in overrides.items() if v is not None})
    if args.through is not None:
        if args.until is not None:
            raise RecsysError("give --until or --through, not both")
        end_week = week_start_of(args.through)  # the week in progress, landed up to --through
    else:
        end_week = _week_of_day(args.until or _today())
    result = generate(
        Lake.from_settings(settings), config, end_week, progress=_progress, through=args.through
    )
    info = result.to_dict()
    print(
        f"generated {len(info['weeks'])} weeks of synthetic logs ({config.n_users} users, "
        f"{config.n_items} items) into {Lake.from_settings(settings).root / 'raw'}; weeks: "
        f"{info['weeks'][0]} .. {info['weeks'][-1]}"
    )
    return 0


def cmd_load_movielens(args: argparse.Namespace) -> int:
    from recsys.data.movielens import land_movielens  # deferred: keeps `recsys --help` light

    settings = Settings.from_env()
    weeks = land_movielens(
        Lake.from_settings(settings),
        Path(args.path),
        args.dataset,
        progress=_progress,
        last_weeks=args.last_weeks,
    )
    print(
        f"landed {len(weeks)} weekly partitions ({weeks[0]} .. {weeks[-1]}) into {Lake.from_settings(settings).root / 'raw'}"
    )
    return 0


def cmd_stage(args: argparse.Namespace) -> int:
    # deferred: keeps `recsys --help` light (the stages load the data, model and MLflow helpers)
    from recsys.pipeline.runner import run_stage

    ctx = StageContext.create(_week_of_day(args.date), lease_wait=args.wait)
    _progress(f"{args.stage} for week {ctx.week} ...")
    result = run_stage(args.stage, ctx)
    print(json.dumps(result.to_xcom(), indent=2, default=str))
    return 0


def cmd_ab_status(args: argparse.Namespace) -> int:
    # deferred: keeps `recsys --help` light (the A/B job loads the feedback log and the registry)
    from recsys.pipeline.experiment import format_readout

    week = _week_of_day(args.date)
    record = Lake.from_settings(Settings.from_env()).read_stage_result(week, AbReadoutResult.stage)
    if record is None:
        raise DataNotFoundError(
            f"no A/B readout of week {week.isoformat()}: run `recsys stage ab_readout --date {args.date}` "
            "or the ab_readout Dag first"
        )
    result = AbReadoutResult.from_record(record)
    print(json.dumps(result.to_xcom(), indent=2, default=str) if args.json else format_readout(result))
    return 0


def cmd_pipeline(args: argparse.Namespace) -> int:
    # deferred: keeps `recsys --help` light (the stages load the data, model and MLflow helpers)
    from recsys.pipeline.runner import run_all

    ctx = StageContext.create(_week_of_day(args.date), lease_wait=args.wait)
    run_all(ctx, progress=_progress)
    print(format_summary(summary(ctx)))
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    ctx = StageContext.create(_week_of_day(args.date))
    if ctx.recorded(IngestResult) is None:
        raise RecsysError(f"no run recorded for week {ctx.week} under {ctx.lake.root / 'runs'}")
    data = summary(ctx)
    write_summary(ctx)
    if args.json:
        print(json.dumps(data, indent=2, default=str))
    else:
        print(format_brief(data) if args.brief else format_summary(data))
    return 0


def cmd_registry(args: argparse.Namespace) -> int:
    from recsys.promotion.registry import registry_state  # deferred: keeps `recsys --help` light

    settings = Settings.from_env()
    rows = registry_state(configure(settings), settings.model_name)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no versions of {settings.model_name} registered at {settings.mlflow_tracking_uri}")
        return 0
    print(f"{settings.model_name} at {settings.mlflow_tracking_uri}")
    print(f"{'version':>7}  {'aliases':<20} {'status':<9} {'week':<10} {'trigger':<9} {'ndcg@10':>9}  run")
    for r in rows:
        print(
            f"{r['version']:>7}  {','.join(r['aliases']) or '-':<20} {r['status'] or '-':<9} "
            f"{r['week'] or '-':<10} {r['trigger'] or '-':<9} {r['ndcg@10'] or '-':>9}  {r['run_id']}"
        )
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Run the validate stage's suites on a raw file or partition; exit 2 when the batch must stop."""
    # deferred: keeps `recsys --help` light
    from recsys.validation.report import format_accounting
    from recsys.validation.validate import validate_path

    config = PipelineConfig.load(Settings.from_env().config_file).validation
    result = validate_path(
        Path(args.path),
        kind=args.kind,
        week=args.week,
        items=Path(args.items) if args.items else None,
        out=Path(args.out) if args.out else None,
        config=config,
    )
    print(f"validated {result.kind} of week {result.week.isoformat()}: {result.path}")
    for line in format_accounting(result.run.accounting()):
        print(f"  {line}")
    for note in result.notes:
        print(f"  note: {note}")
    print(f"quarantine: {result.quarantine_file()}")
    print(f"report: {result.run.report_html}")
    if not result.passed:
        raise ValidationFailed(result.run.message())
    print("passed: the batch may go on")
    return 0


def cmd_run_dates(args: argparse.Namespace) -> int:
    """Dates for `airflow dags test`, one per week, oldest first: the Sunday that ends each week (its data
    interval end). The last week is the last complete one before --until; without --until, the lake's
    newest week of raw events (today's last complete week on an empty lake). ``--weeks all``: every week
    of raw events in the lake up to there (from --from on)."""
    lake = Lake.from_settings(Settings.from_env())
    history = lake.raw_weeks("events")
    if args.until is not None:
        last = _week_of_day(args.until)
    elif history:
        last = history[-1]
    else:
        last = _week_of_day(_today())
    if args.weeks == "all":
        weeks = [w for w in history if w <= last]
        if not weeks:
            raise RecsysError(
                f"--weeks all: the lake at {lake.root} has no raw events up to week {last.isoformat()} "
                "(land data with `recsys generate`, `recsys load-movielens` or `recsys land-csv`)"
            )
    else:
        weeks = [last - timedelta(weeks=i) for i in range(int(args.weeks) - 1, -1, -1)]
    if args.from_day is not None:
        weeks = [w for w in weeks if w >= week_start_of(args.from_day)]
    for week in weeks:
        print((week + timedelta(weeks=1)).isoformat())
    return 0


def _weeks_arg(text: str) -> int | str:
    """``--weeks``: a positive number of weeks, or ``all``."""
    return "all" if text.strip().lower() == "all" else _positive(text)


def cmd_settings(args: argparse.Namespace) -> int:
    values = {k: str(v) if v is not None else None for k, v in Settings.from_env().__dict__.items()}
    if args.get:
        if args.get not in values:
            raise RecsysError(f"unknown setting {args.get!r}; known: {', '.join(values)}")
        print(values[args.get])
    else:
        print(json.dumps(values, indent=2))
    return 0


def cmd_simulate_feedback(args: argparse.Namespace, week: date) -> int:
    # deferred: keeps `recsys --help` light
    from recsys.experiments.feedback_log import simulate_week
    from recsys.experiments.simulation import FeedbackConfig

    config = FeedbackConfig() if args.seed is None else FeedbackConfig(seed=args.seed)
    result = simulate_week(Lake.from_settings(Settings.from_env()), week, pseudonym_key(), config)
    print(
        f"simulated feedback of week {result['week']}: {result['rows']} events ({result['clicks']} clicks, "
        f"{result['plays']} plays) from {result['users']} users on {result['exposures']} exposures "
        f"({sum(result['skipped'].values())} skipped) into {result['path']}"
    )
    return 0


def _at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


_positive = _at_least(1)
_non_negative = _at_least(0)


def _add_wait(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="when another run works on the week, wait up to this long for it (default: fail at once)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recsys", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("generate", help="write synthetic weekly logs into the raw lake")
    p.add_argument(
        "--until", type=_day, help="any day; generation ends with the last complete week before it"
    )
    p.add_argument("--weeks", type=_positive, help="number of weeks (default 4)")
    p.add_argument("--users", type=_positive, help="number of users")
    p.add_argument("--items", type=_positive, help="number of catalogue items")
    p.add_argument("--seed", type=int, help="random seed (same seed, same data)")
    p.add_argument("--drift-from", type=_day, help="inject drift from this day's week on (default: none)")
    p.add_argument("--drift-kind", choices=["popular_genre", "activity", "catalogue"], help="what drifts")
    p.add_argument(
        "--through",
        type=_moment,
        help="land the week in progress up to this date-time (UTC), after the complete weeks before it",
    )
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser(
        "load-movielens", help="land a MovieLens dataset into the raw lake, one partition a week"
    )
    p.add_argument("path", help="dataset directory, e.g. ../shared/data/movielens/ml-100k")
    p.add_argument("--dataset", choices=["ml-100k", "ml-1m", "ml-latest-small"], help="default: detect")
    p.add_argument(
        "--last-weeks", type=_positive, help="land only the newest N weeks (ml-latest-small spans 1,084)"
    )
    p.set_defaults(func=cmd_load_movielens)

    p = sub.add_parser("stage", help="run one stage for a week, without Airflow")
    p.add_argument("stage", choices=STAGES + AB_STAGES)
    p.add_argument("--date", type=_day, required=True, help="any day; its last complete week is used")
    _add_wait(p)
    p.set_defaults(func=cmd_stage)

    p = sub.add_parser("ab-status", help="show the A/B readout recorded for a week")
    p.add_argument("--date", type=_day, required=True, help="any day; its last complete week is used")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_ab_status)

    p = sub.add_parser("pipeline", help="run every stage for a week, without Airflow")
    p.add_argument("--date", type=_day, required=True, help="any day; its last complete week is used")
    _add_wait(p)
    p.set_defaults(func=cmd_pipeline)

    p = sub.add_parser("summary", help="summarize the run of a week")
    p.add_argument("--date", type=_day, required=True, help="any day; its last complete week is used")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--brief", action="store_true", help="one line: window, gate, registered version")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("registry", help="show the model registry: versions, aliases, gate status")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_registry)

    p = sub.add_parser(
        "validate", help="check a raw file or partition with the validate stage's suites, without Airflow"
    )
    p.add_argument(
        "path", help="a CSV(.gz) file or a raw partition folder, e.g. var/lake/raw/events/week=2026-11-15"
    )
    p.add_argument(
        "--kind", choices=["events", "items", "users"], help="default: from the path, else the header"
    )
    p.add_argument(
        "--week", type=_day, help="the week the data belongs to (any day of it); default: from the path"
    )
    p.add_argument(
        "--items",
        help="catalogue (file or folder) events must reference; default: the lake's, for a lake partition",
    )
    p.add_argument("--out", help="output folder (default: validation-<name> beside PATH)")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("run-dates", help="dates to pass to `airflow dags test`, one per week, oldest first")
    p.add_argument(
        "--until", type=_day, help="any day (default: the lake's newest week of raw events, else today)"
    )
    p.add_argument(
        "--weeks", type=_weeks_arg, default=1, help="how many weeks ending there, or 'all' the lake has"
    )
    p.add_argument("--from", dest="from_day", type=_day, help="leave out weeks before this day's week")
    p.set_defaults(func=cmd_run_dates)

    p = sub.add_parser(
        "simulate-feedback",
        help="simulate the users' clicks and plays on a week's A/B exposures (synthetic lakes only)",
    )
    p.add_argument("--date", type=_day, required=True, help="any day; its last complete week is used")
    p.add_argument("--seed", type=_non_negative, help="seed of the simulated behaviour (default 0)")
    p.set_defaults(func=_with_week(cmd_simulate_feedback))

    p = sub.add_parser("settings", help="show the effective settings")
    p.add_argument("--get", help="print one setting's value")
    p.set_defaults(func=cmd_settings)
    add_commands(sub, _day, _with_week, _moment)
    return parser


def _with_week(handler):  # noqa: ANN001, ANN202 - wraps a (args, week) handler as an args handler
    def run(args: argparse.Namespace) -> int:
        return handler(args, _week_of_day(args.date))

    return run


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # MLflow logs a store error's whole traceback, then raises it: one line is enough
        logging.getLogger("mlflow.store.db.utils").addFilter(_no_caught_tracebacks)
    try:
        return int(args.func(args))
    except RecsysError as exc:
        return _error(str(exc))
    except BrokenPipeError:  # the reader went away (`recsys run-dates | head -1`): nothing to say
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - Python flushes stdout again at exit
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        # a full or read-only disk, a read-only MLflow store, a service down: one line naming it
        fault = explain(exc, _settings_or_none())
        if fault is not None:
            return _error(str(fault))
        if isinstance(exc, ValueError | FileNotFoundError | PermissionError):
            return _error(f"{exc.__class__.__name__}: {_first_line(exc)}")
        raise


def _no_caught_tracebacks(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("SQLAlchemy database error. The following exception is caught")


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _settings_or_none() -> Settings | None:
    try:
        return Settings.from_env()
    except RecsysError:
        return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


if __name__ == "__main__":
    sys.exit(main())
