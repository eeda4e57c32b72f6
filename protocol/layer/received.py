"""What a role received per user, kept for the leakage audit (`[audit] record = true`; off by default).

Each kind of value (A: `u_train`, `u_eval`; B: `g`) is written to `<workdir>/audit/` as
`<kind>.npy` (float32, one row per user and release) and `<kind>_index.npy` (int64
columns: epoch, training step counted over the run (0 for an evaluation), user position
in the shared order). Plain .npy, never pickled.
The audit (`python -m audit`) attacks these files with the attacker's own data only.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from protocol.store.models import private_dir


class Received:
    """Rows a role received, by kind, with the epoch, step and shared-user position of each."""

    def __init__(self) -> None:
        self.rows: dict[str, list[np.ndarray]] = {}
        self.index: dict[str, list[np.ndarray]] = {}

    def add(self, kind: str, epoch: int, step: int, users: np.ndarray, values: np.ndarray) -> None:
        users = np.asarray(users, dtype=np.int64)
        self.rows.setdefault(kind, []).append(np.asarray(values, dtype=np.float32).reshape(users.size, -1))
        self.index.setdefault(kind, []).append(np.column_stack([np.full(users.size, epoch), np.full(users.size, step),
                                                                users]))

    def arrays(self, kind: str) -> tuple[np.ndarray, np.ndarray]:
        """(rows, index) of one kind, as `load_received` reads them back."""
        return np.concatenate(self.rows[kind]), np.concatenate(self.index[kind]).astype(np.int64)

    def write(self, workdir: Path, privacy: dict | None = None) -> Path:
        """Write every kind to `<workdir>/audit/`, and `privacy.json` (the defence and its ε) when given."""
        out = workdir / "audit"
        private_dir(out)  # what this role received from its peer: its owner's alone
        for kind in self.rows:
            values, index = self.arrays(kind)
            np.save(out / f"{kind}.npy", values, allow_pickle=False)
            np.save(out / f"{kind}_index.npy", index, allow_pickle=False)
        if privacy is not None:
            (out / "privacy.json").write_text(json.dumps(privacy, indent=2) + "\n")
        return out


def load_received(workdir: Path, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(rows, index) of one kind a role recorded; index columns: epoch, step, user."""
    out = workdir / "audit"
    return (np.load(out / f"{kind}.npy", allow_pickle=False),
            np.load(out / f"{kind}_index.npy", allow_pickle=False))
