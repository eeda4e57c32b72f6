"""Who joined and who left the intersection since a model was trained, as both parties compute it alike.

A model's stores list its shared users in the order of its training run's PSI (A's u
store, B's users). A delta PSI later (psi/shared.py) marks users who left inactive and
appends users who joined. Both parties hold the same shared list (the same normalised
IDs at the same positions), so each derives the same `Membership` for the same model on
its own; a refresh session carries the size and a digest of the model's users with the
joined ones appended (its roster), so that each side checks the other derived the same
(a digest of IDs both already hold tells neither anything new).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from psi.shared import read_shared, shared_path


@dataclass(frozen=True)
class Membership:
    joined: list[str]  # active in the shared list and not among the model's users, in position order
    left: np.ndarray  # per user of the model: no longer active in the shared list (or not in it at all)

    @property
    def active(self) -> np.ndarray:
        """Per user of the model, then per joined user: still shared."""
        return np.concatenate([~self.left, np.ones(len(self.joined), dtype=bool)])


def roster_digest(ids: Sequence[str]) -> str:
    """A digest of a model's users with the joined ones appended, in order, for the two parties to compare."""
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:32]


def membership_since(workdir: Path, model_users: Sequence[str]) -> Membership:
    """The changes of the intersection since the model whose shared users are `model_users` was trained; none when
    this party holds no shared list (a model trained before PSI kept one)."""
    if not shared_path(workdir).is_file():
        return Membership([], np.zeros(len(model_users), dtype=bool))
    shared = read_shared(workdir).sort_values("position", kind="stable")
    active = set(shared.loc[shared["active"], "user_id"])
    known = set(model_users)
    joined = [uid for uid, on in zip(shared["user_id"], shared["active"]) if on and uid not in known]
    left = np.array([uid not in active for uid in model_users], dtype=bool)
    return Membership(joined, left)
