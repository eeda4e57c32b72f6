"""The secure layer between the parties (protocol/layer/steps.py).

Their tags and routes: protocol/messages/__init__.py; their meaning: docs/design.md."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from protocol.crypto.packing import EncryptedMatrix
from protocol.wire.message import BigIntList, Message


@dataclass(frozen=True)
class MaskShare(Message):
    """Steps 1 and 4: the mask the sender added to what it had the coordinator decrypt for the receiver,
    packed as the plaintexts of the ciphertexts it masked, so the receiver can remove it."""

    TAG: ClassVar[str] = "layer/mask"
    label: str
    packed: BigIntList


@dataclass(frozen=True)
class EncryptedDelta(Message):
    """Step 4, A → B: [δ] by rows, for B's update of [W]."""

    TAG: ClassVar[str] = "layer/delta"
    label: str
    delta: EncryptedMatrix


@dataclass(frozen=True)
class RefreshMask(Message):
    """Step 7, B → A: [M'] by columns, the part of B's refresh mask A removes from its own [W]."""

    TAG: ClassVar[str] = "layer/refresh"
    label: str
    m_cols: EncryptedMatrix


@dataclass(frozen=True)
class RefreshedRows(Message):
    """Step 7, A → B: [Q] = [(W' + M) / 2^s] by rows, freshly encrypted."""

    TAG: ClassVar[str] = "layer/q_rows"
    label: str
    q_rows: EncryptedMatrix
