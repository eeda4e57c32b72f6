"""PSI: both parties run the same steps (psi/session.py).

Their tags and routes: protocol/messages/__init__.py; their meaning: docs/design.md."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from protocol.wire.message import Message


@dataclass(frozen=True)
class PsiHello(Message):
    """Step 1: a fresh nonce for the session salt, the set size and the chunk size the sender will use."""

    TAG: ClassVar[str] = "psi/hello"
    version: int
    nonce: bytes
    size: int
    chunk: int


@dataclass(frozen=True)
class PsiBlinded(Message):
    """Step 2: one chunk of the sender's blinded IDs, 32 bytes each."""

    TAG: ClassVar[str] = "psi/blinded"
    points: bytes


@dataclass(frozen=True)
class PsiDoubled(Message):
    """Step 3: the receiver's chunk blinded again, in the order received, cut to the match length."""

    TAG: ClassVar[str] = "psi/double"
    values: bytes


@dataclass(frozen=True)
class PsiOpen(Message):
    """Before any PSI step: the PSI version, whether the sender asks for a full or a delta run (and may fall back to
    a full one), the ID of the state it kept from the last PSI (empty: none it can use) and why it cannot run a
    delta (empty: it can). Both sides choose from the two the same way (psi/mode.py)."""

    TAG: ClassVar[str] = "psi/open"
    version: int
    want: str
    fallback: bool
    state: bytes
    blocked: str

    def __post_init__(self) -> None:
        if self.want not in ("full", "delta"):
            raise ValueError(f"field 'want' = {self.want!r}, expected 'full' or 'delta'")
        if len(self.state) not in (0, 32):
            raise ValueError(f"field 'state' of {len(self.state)} bytes, expected 0 or 32")
        if len(self.blocked) > 1000 or not self.blocked.isprintable():  # it goes into the receiver's log
            raise ValueError("field 'blocked' must be one printable line of at most 1000 characters")


@dataclass(frozen=True)
class PsiDeltaHello(Message):
    """Delta step 1: how many IDs the sender added and removed since the state both kept, and its chunk size."""

    TAG: ClassVar[str] = "psi/delta"
    added: int
    removed: int
    chunk: int


@dataclass(frozen=True)
class PsiRemoved(Message):
    """Delta step 2: one chunk of the doubly-blinded values of the sender's removed IDs."""

    TAG: ClassVar[str] = "psi/removed"
    values: bytes


@dataclass(frozen=True)
class PsiDone(Message):
    """Last PSI step: the ID of the state the sender arrived at; both must arrive at the same."""

    TAG: ClassVar[str] = "psi/done"
    state: bytes
