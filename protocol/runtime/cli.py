"""What the three entry points share: argument parsing, logging, and errors as exit codes."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from protocol import observe
from protocol.errors import VfrecError
from protocol.runtime import progress

log = logging.getLogger("vfrec")

LOG_FORMATS = ("text", "json")
CONFIG_HELP = "TOML config of this role"
FORMAT_HELP = "text: timestamped lines (default); json: one JSON object per line, for a log aggregator"
_log_format = "text"
_prog: str | None = None  # the name usage lines show, when the `vfrec` console command runs the role


class JsonLines(logging.Formatter):
    """One JSON object per line, for a log aggregator: time (UTC), level, role, and the run ID, generation, epoch and
    step where the process knows them (protocol/observe.py), the logger and the message."""

    def __init__(self, role: str):
        super().__init__()
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
                 "level": record.levelname, "role": self.role, **observe.log_context(), "logger": record.name,
                 "message": record.getMessage()}
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(role: str, workdir: Path | None = None) -> None:
    """Log lines on stderr, and the same in `<workdir>/<role>.log` once a workdir is known: timestamped text, or with
    `--log-format json` one JSON object per line (progress lines and warnings included)."""
    if _log_format == "json":
        fmt: logging.Formatter = JsonLines(role)
        progress.lines_to_log()
        logging.captureWarnings(True)
    else:
        fmt = logging.Formatter(f"%(asctime)s.%(msecs)03d {role} %(levelname)s %(message)s", "%H:%M:%S")
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(fmt)
        root.addHandler(handler)
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(workdir / f"{role}.log")
        handler.setFormatter(fmt)
        root.addHandler(handler)


@dataclass(frozen=True)
class Command:
    """A subcommand, `python -m <role> NAME --config FILE [its own arguments]`; `main` gets the parsed arguments."""

    help: str
    main: Callable[[argparse.Namespace], None]
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None


def run_as(prog: str) -> None:
    """Name the program `prog` in usage lines (protocol/runtime/console.py runs a role's __main__ as `vfrec ROLE`)."""
    global _prog
    _prog = prog


def common_arguments(parser: argparse.ArgumentParser) -> None:
    """--config and --log-format on a command's parser. SUPPRESS: a value given before the command name is not
    overwritten by this parser's default."""
    parser.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=CONFIG_HELP)
    parser.add_argument("--log-format", choices=LOG_FORMATS, default=argparse.SUPPRESS, help=FORMAT_HELP)


def run(role: str, description: str, main: Callable[[Path, bool, bool], None],
        commands: dict[str, Command] | None = None) -> None:
    """Parse the command line, run `main(config_path, resume, warm)` (warm: `--from current`) or the named command,
    and turn our errors into a message and exit code. Without a command name the role does its default job, so
    `python -m <role> --config FILE` still works."""
    parser = argparse.ArgumentParser(prog=_prog or f"python -m {role}", description=description)
    parser.add_argument("--config", type=Path, required=not commands, help=CONFIG_HELP)
    parser.add_argument("--log-format", choices=LOG_FORMATS, default="text", help=FORMAT_HELP)
    parser.add_argument("--resume", action="store_true",
                        help="resume the run from the newest checkpoint all three roles hold (a role restarted with "
                             "checkpoints of its run on disk resumes without it; with it, holding none is an error)")
    parser.add_argument("--from", dest="start", choices=("current",), default=None,
                        help="current: a warm start from the model in service at this role (models/CURRENT); all "
                             "three roles must start from the same model, and the new one is put in service only if "
                             "it validates better")
    if commands:
        names = parser.add_subparsers(dest="command", metavar="COMMAND",
                                      help=f"one of {', '.join(commands)}; without one, the default job runs")
        for name, command in commands.items():
            sub = names.add_parser(name, help=command.help, description=command.help)
            common_arguments(sub)
            if command.add_arguments is not None:
                command.add_arguments(sub)
    args = parser.parse_args()
    if args.config is None:
        parser.error("the following arguments are required: --config")
    global _log_format
    _log_format = args.log_format
    setup_logging(role)
    try:
        if getattr(args, "command", None):
            commands[args.command].main(args)
        else:
            main(args.config, args.resume, args.start == "current")
    except VfrecError as exc:
        log.error("%s", exc)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        log.warning("%s: interrupted", role)
        sys.exit(130)
