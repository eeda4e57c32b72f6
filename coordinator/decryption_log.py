"""Append-only log of every decryption request, served or refused: who asked, for which step and label, how many.

The file is the coordinator's `audit_log` (docs/configuration.md).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from pathlib import Path


class DecryptionLog:
    """The log file, opened for appending; `entries` counts its lines (a checkpoint keeps the position)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._lock = threading.Lock()
        with open(path, "rb") as f:
            self.entries = sum(1 for _ in f)  # the position a checkpoint keeps

    def record(self, who: str, run: str, step: str, label: str, count: int, refused: str | None = None) -> None:
        """Append one request, durably (fsync), with why it was refused if it was."""
        entry = {"time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"), "who": who,
                 "run": run, "step": step, "label": label, "count": count}
        if refused:
            entry["refused"] = refused
        line = (json.dumps(entry, sort_keys=True) + "\n").encode()
        with self._lock:
            os.write(self._fd, line)
            os.fsync(self._fd)
            self.entries += 1

    def close(self) -> None:
        os.close(self._fd)
