"""What the three entry points share: argument parsing, logging, and errors as exit codes."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from protocol.errors import VfrecError

log = logging.getLogger("vfrec")


def setup_logging(role: str, workdir: Path | None = None) -> None:
    """Timestamped lines on stderr, and the same in `<workdir>/<role>.log` once a workdir is known."""
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


def run(role: str, description: str, main: Callable[[Path], None]) -> None:
    """Parse `--config`, run `main(config_path)`, and turn our errors into a message and exit code."""
    parser = argparse.ArgumentParser(prog=f"python -m {role}", description=description)
    parser.add_argument("--config", type=Path, required=True, help="TOML config of this role")
    args = parser.parse_args()
    setup_logging(role)
    try:
        main(args.config)
    except VfrecError as exc:
        log.error("%s", exc)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print(f"{role}: interrupted", file=sys.stderr)
        sys.exit(130)
