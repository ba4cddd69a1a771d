"""The `recsys` command: --help everywhere, one-line errors with exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from recsys.cli.main import build_parser, main

RECSYS = str(Path(sys.executable).parent / "recsys")
COMMANDS = [
    "generate",
    "load-movielens",
    "stage",
    "pipeline",
    "summary",
    "registry",
    "run-dates",
    "settings",
    "validate",
    "promote",
    "rollback",
    "erase",
    "scan",
    "rekey",
]


def test_every_command_has_help(capsys):
    for command in [[]] + [[c] for c in COMMANDS]:
        with pytest.raises(SystemExit) as exit_info:
            main([*command, "--help"])
        assert exit_info.value.code == 0
        assert "usage: recsys" in capsys.readouterr().out


def test_parser_knows_all_stages():
    parser = build_parser()
    args = parser.parse_args(["stage", "train", "--date", "2026-11-23"])
    assert args.stage == "train"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["load-movielens", "/no/such/dir"], "/no/such/dir"),
        (["stage", "prepare", "--date", "2026-11-23"], "anonymized events"),
        (["summary", "--date", "2026-11-23"], "no run recorded"),
        (["settings", "--get", "nope"], "unknown setting"),
        (["rollback", "--reason", "test"], "no champion"),
        (["rekey", "--new-key-env", "NO_SUCH_VAR"], "NO_SUCH_VAR"),
        (["validate", "/no/such/file.csv"], "/no/such/file.csv"),
    ],
)
def test_errors_are_one_line_with_exit_code_2(argv, message, env):
    result = subprocess.run([RECSYS, *argv], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error:") and message in lines[-1]
    assert "Traceback" not in result.stderr


def test_bad_argument_values_are_usage_errors(env):
    for argv in (["generate", "--users", "0"], ["stage", "train", "--date", "tomorrow"], ["stage", "nope"]):
        result = subprocess.run([RECSYS, *argv], capture_output=True, text=True, timeout=60)
        assert result.returncode == 2
        assert "Traceback" not in result.stderr and "error:" in result.stderr


def test_bad_config_file_is_one_line(env, tmp_path, monkeypatch):
    bad = tmp_path / "config.json"
    bad.write_text('{"als": {"rank": -3}}')
    result = subprocess.run(
        [RECSYS, "stage", "prepare", "--date", "2026-11-23"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "PATH": "/usr/bin:/bin", "RECSYS_CONFIG": str(bad)},
    )
    assert result.returncode == 2
    assert "als.rank" in result.stderr and "Traceback" not in result.stderr


def test_generate_then_run_dates(env, capsys):
    assert main(["generate", "--until", "2026-11-23", "--weeks", "2", "--users", "50", "--items", "40"]) == 0
    out = capsys.readouterr().out
    assert "2026-11-08 .. 2026-11-15" in out
    assert main(["run-dates", "--until", "2026-11-23", "--weeks", "2"]) == 0
    assert capsys.readouterr().out.split() == ["2026-11-15", "2026-11-22"]
