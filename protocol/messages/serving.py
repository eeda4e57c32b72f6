"""Refreshing B's contribution for serving (party_b/refresh.py).

Their tags and routes: protocol/messages/__init__.py; their meaning: docs/design.md."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from protocol.names import check_name
from protocol.wire.message import IntVector, Message


@dataclass(frozen=True)
class RefreshRequest(Message):
    """B → A, C: a refresh session for stored model `model_id`: u recomputed for these shared users (positions
    in the model's roster: its users in the aligned order, then those who joined the intersection since, as
    psi/membership.py derives them), in batches of the plan's size, each an evaluation forward (steps 1-3).
    `roster_size` and `roster_digest` let A check that it derived the same roster."""

    TAG: ClassVar[str] = "serve/refresh"
    model_id: str
    users: IntVector
    roster_size: int
    roster_digest: str

    def __post_init__(self) -> None:
        check_name(self.model_id, "model_id")  # it becomes part of the session's run ID


@dataclass(frozen=True)
class RefreshDone(Message):
    """A → B: the refreshed u of `users` users are in A's u store (swapped in whole)."""

    TAG: ClassVar[str] = "serve/refreshed"
    model_id: str
    users: int

    def __post_init__(self) -> None:
        check_name(self.model_id, "model_id")
