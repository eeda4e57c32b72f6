"""Who may send each message of the roles to whom (ROUTES), and sending and receiving them by their tags.

A tag names a stream between two roles; messages on one stream arrive in order.
Tags are a fixed set, so the transport keeps a bounded inbox and refuses any tag
this module does not route from that sender to that receiver. A message that
belongs to a protocol step carries the step's `label`, and the receiver checks it
against the label it expects (`expect_label`).

The messages themselves are in this package, one module per concern (coordinator.py,
run.py, psi.py, commands.py, layer.py, serving.py; the layer plan in plan.py); their
step-by-step meaning is in docs/design.md; the functions that send and receive them
are in psi/session.py, protocol/layer/ and coordinator/.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from protocol.errors import ProtocolError
from protocol.messages.commands import Command, command_from_message
from protocol.messages.coordinator import (DecryptReply, DecryptRequest, InitialWeights, PublicKeyAnnouncement,
                                           RefreshCheck, RefreshChecked, Registration)
from protocol.messages.layer import EncryptedDelta, MaskShare, RefreshedRows, RefreshMask
from protocol.messages.psi import PsiBlinded, PsiDeltaHello, PsiDone, PsiDoubled, PsiHello, PsiOpen, PsiRemoved
from protocol.messages.run import CheckpointDone, CoordinatorCheckpoint, Resume, ResumeCall, Resumed, RunDone, Starting
from protocol.messages.serving import RefreshDone, RefreshRequest
from protocol.roles import A, B, C, Role
from protocol.wire.message import WHILE_UP, Message

M = TypeVar("M", bound=Message)


# ---- routes --------------------------------------------------------------------------------

ROUTES: dict[type[Message], tuple[tuple[Role, Role], ...]] = {
    PublicKeyAnnouncement: ((C, A), (C, B)),
    Registration: ((A, C), (B, C)),
    InitialWeights: ((C, A), (C, B)),
    RefreshCheck: ((B, C),),
    RefreshChecked: ((C, B),),
    DecryptRequest: ((A, C), (B, C)),
    DecryptReply: ((C, A), (C, B)),
    RunDone: ((A, C),),
    Starting: ((B, A), (C, A)),
    PsiHello: ((A, B), (B, A)),
    PsiBlinded: ((A, B), (B, A)),
    PsiDoubled: ((A, B), (B, A)),
    PsiOpen: ((A, B), (B, A)),
    PsiDeltaHello: ((A, B), (B, A)),
    PsiRemoved: ((A, B), (B, A)),
    PsiDone: ((A, B), (B, A)),
    Command: ((A, B),),
    MaskShare: ((B, A), (A, B)),
    EncryptedDelta: ((A, B),),
    RefreshMask: ((B, A),),
    RefreshedRows: ((A, B),),
    RefreshRequest: ((B, A), (B, C)),
    RefreshDone: ((A, B),),
    CoordinatorCheckpoint: ((A, C),),
    CheckpointDone: ((B, A), (C, A)),
    ResumeCall: ((A, B), (A, C)),
    Resume: ((B, A), (C, A)),
    Resumed: ((A, B), (A, C)),
}


def inbox_tags(receiver: str) -> Mapping[str, frozenset[str]]:
    """For each sender, the tags `receiver` accepts from it; the transport refuses every other tag."""
    tags: dict[str, set[str]] = {}
    for cls, routes in ROUTES.items():
        for sender, to in routes:
            if to == receiver:
                tags.setdefault(str(sender), set()).add(cls.TAG)
    return {sender: frozenset(t) for sender, t in tags.items()}


def send(endpoint: Any, peer: str, message: Message) -> None:
    """Send `message` to `peer` under its tag."""
    endpoint.send(peer, message.TAG, message.to_message())


def receive(endpoint: Any, peer: str, kind: type[M], timeout: float | None = None, idle: bool = False) -> M:
    """The next `kind` message from `peer`, checked field by field (`idle`: transport.Endpoint.recv)."""
    return kind.from_message(endpoint.recv(peer, kind.TAG, timeout=timeout, idle=idle), peer)


def receive_command(endpoint: Any, peer: str) -> Command:
    """A's next command, waited for as long as A is up: between steps A may work for long (evaluation, A alone's
    epoch at scale)."""
    return command_from_message(endpoint.recv(peer, Command.TAG, timeout=WHILE_UP), peer)


def expect_label(message: Message, label: str, peer: str) -> None:
    """Refuse a step message that belongs to another step than the one the receiver is in."""
    got = getattr(message, "label")
    if got != label:
        raise ProtocolError(f"{peer} sent {type(message).__name__} with field 'label' = {got!r} while this role "
                            f"is in step {label!r}")
