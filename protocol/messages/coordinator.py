"""The coordinator's key and its decryption service: what A and B send C and what C answers
(coordinator/, protocol/layer/decryption.py).

Their tags and routes: protocol/messages/__init__.py; their meaning: docs/design.md."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from protocol.crypto.packing import EncryptedMatrix
from protocol.messages.plan import LayerPlan
from protocol.wire.message import BigIntList, Message


@dataclass(frozen=True)
class PublicKeyAnnouncement(Message):
    """C → A, B: the Paillier public key every ciphertext of the run is under."""

    TAG: ClassVar[str] = "coordinator/public_key"
    n: int
    fingerprint: str


@dataclass(frozen=True)
class DecryptRequest(Message):
    """A or B → C: masked ciphertexts the sender computed in one protocol step, to be decrypted for the step's
    other party (never for the sender: protocol/layer/decryption.py ROUTE)."""

    TAG: ClassVar[str] = "coordinator/decrypt"
    step: str
    label: str
    ciphertexts: BigIntList


@dataclass(frozen=True)
class DecryptReply(Message):
    """C → the step's receiving party: the plaintexts in [0, n), or why the request was refused."""

    TAG: ClassVar[str] = "coordinator/decrypted"
    step: str
    label: str
    plaintexts: BigIntList | None
    error: str | None


@dataclass(frozen=True)
class Registration(Message):
    """A, B → C: the layer plan and the number of shared users, from each party; the coordinator serves
    decryptions only once both have registered the same, and only what that plan's schedule allows."""

    TAG: ClassVar[str] = "coordinator/register"
    plan: LayerPlan
    shared_users: int
    init: bool = False  # a new layer: the coordinator draws W0 (training); False: [W] exists (a refresh session)


@dataclass(frozen=True)
class InitialWeights(Message):
    """C → A, B: [W0] in the receiver's layout (by columns to A, by rows to B), drawn and encrypted by the
    coordinator once both parties registered a new layer, so that each layout of W0 comes from neither party."""

    TAG: ClassVar[str] = "coordinator/weights"
    label: str
    w: EncryptedMatrix


@dataclass(frozen=True)
class RefreshCheck(Message):
    """B → C, after step 7: Σ_i ρ_i·[Q_i] over the ciphertexts of the [Q] by rows A sent, with B's secret
    random weights ρ; the coordinator compares its decryption with the same combination of ⌊(W' + M)/2^s⌋
    from the refresh it decrypted."""

    TAG: ClassVar[str] = "coordinator/check"
    label: str
    combined: int
    weights: BigIntList


@dataclass(frozen=True)
class RefreshChecked(Message):
    """C → B: whether A's [Q] by rows holds what the coordinator decrypted (error None) or why not."""

    TAG: ClassVar[str] = "coordinator/checked"
    label: str
    error: str | None
