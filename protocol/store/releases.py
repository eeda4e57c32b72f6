"""A party's release ledger: each noisy row it releases is on disk (written, fsynced) before it leaves the process.

    <workdir>/releases/<run_id>/<what>.jsonl    mode 0600, in a directory of mode 0700

One JSON record a line, appended with one write and fsynced:

    {"key": ..., "users": [...], "rows": <base64 float64>, "d": ..., "rng": ...}  a release of `users` rows
    {"floor": [[user, releases], ...]}   counts raised to what a checkpoint held (they never go down)
    {"snapshot": {...}}                   the whole state: the first line of a compacted file

A line cut short by a crash (no newline at the end) was never followed by a send: it is dropped. When the file
has grown to twice its size after the last compaction, it is replaced (atomically) by one snapshot. The ledger is
never rewound: a checkpoint restore can only raise its counts (`RowNoise.restore`, protocol/privacy.py).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from protocol.errors import StoreError
from protocol.names import as_name
from protocol.store.models import atomic_write, private_dir, sync_dir

COMPACT_AT = 1 << 20  # bytes: below this the file is never compacted


@dataclass
class Released:
    """What a ledger holds: releases per user, each user's last released row with its key, the generator's state
    (only for a seeded run: OS-seeded noise is never written down)."""

    counts: Counter[int] = field(default_factory=Counter)
    last: dict[int, tuple[str | None, np.ndarray]] = field(default_factory=dict)
    rng: dict | None = None


def _ledger_dir(workdir: Path, run_id: str) -> Path:
    return workdir / "releases" / as_name(run_id)


def ledger_path(workdir: Path, run_id: str, what: str) -> Path:
    """Where a party keeps the ledger of `what` it releases in run `run_id`."""
    return _ledger_dir(workdir, run_id) / f"{what}.jsonl"


def open_ledger(workdir: Path | None, run_id: str, what: str) -> "ReleaseLedger | None":
    """The run's ledger of `what` in `workdir`, or None without a work directory (the noise then counts in memory)."""
    return None if workdir is None else ReleaseLedger(ledger_path(workdir, run_id, what))


def remove_ledgers(workdir: Path, run_id: str) -> None:
    """Forget the run's ledgers (it finished: the counts are in its report and model store)."""
    shutil.rmtree(_ledger_dir(workdir, run_id), ignore_errors=True)


def _rows(rows: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(rows, dtype="<f8").tobytes()).decode()


def _unrows(text: str, d: int) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f8").reshape(-1, d).astype(np.float64)


def release_record(key: str | None, users: list[int], rows: np.ndarray, rng: dict | None) -> dict:
    """The ledger's record of one release."""
    return {"key": key, "users": users, "rows": _rows(rows), "d": int(rows.shape[1]), "rng": rng}


def apply_record(state: Released, record: dict) -> None:
    """Take one ledger record into `state`."""
    if "snapshot" in record:
        s = record["snapshot"]
        state.counts = Counter({int(u): int(c) for u, c in s["releases"]})
        rows = _unrows(s["rows"], s["d"]) if s["users"] else np.empty((0, 0))
        state.last = {int(u): (k, row) for u, k, row in zip(s["users"], s["keys"], rows)}
        state.rng = s["rng"]
    elif "floor" in record:
        for u, c in record["floor"]:
            state.counts[int(u)] = max(state.counts[int(u)], int(c))
    else:
        rows = _unrows(record["rows"], record["d"])
        for u, row in zip(record["users"], rows):
            state.counts[int(u)] += 1
            state.last[int(u)] = (record["key"], row)
        state.rng = record["rng"]


def _snapshot(state: Released) -> dict:
    users = sorted(state.last)
    d = int(state.last[users[0]][1].shape[0]) if users else 0
    rows = np.stack([state.last[u][1] for u in users]) if users else np.empty((0, 0))
    return {"snapshot": {"releases": [[u, c] for u, c in sorted(state.counts.items())], "users": users,
                         "keys": [state.last[u][0] for u in users], "rows": _rows(rows), "d": d, "rng": state.rng}}


def _line(record: dict) -> bytes:
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class ReleaseLedger:
    """The durable, monotone record of one party's releases in one run (module docstring)."""

    def __init__(self, path: Path):
        self.path = path
        self.state = Released()
        self._size = self._compacted = 0
        private_dir(path.parent)
        if path.exists():
            self._read()

    def _read(self) -> None:
        data = self.path.read_bytes()
        whole = data.rfind(b"\n") + 1
        for number, line in enumerate(data[:whole].splitlines(), 1):
            try:
                apply_record(self.state, json.loads(line))
            except (ValueError, KeyError, TypeError) as exc:
                raise StoreError(f"{self.path} line {number} is corrupt: {exc}") from None
        if whole < len(data):  # a release cut short by a crash: it was never sent
            with open(self.path, "r+b") as f:
                f.truncate(whole)
                os.fsync(f.fileno())
        self._size = self._compacted = whole

    def append(self, record: dict) -> None:
        """Apply `record` and make it durable before returning (compacting the file once it has doubled)."""
        apply_record(self.state, record)
        line = _line(record)
        if self._size + len(line) > max(COMPACT_AT, 2 * self._compacted):
            self._compact()
            return
        created = self._size == 0
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            _write_all(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            sync_dir(self.path.parent)
        self._size += len(line)

    def _compact(self) -> None:
        """Replace the file by one snapshot of the state, atomically."""
        line = _line(_snapshot(self.state))
        atomic_write(self.path, line)
        self._size = self._compacted = len(line)
