"""Every message type, malformed every way, is a ProtocolError naming the sender and the field.

The roles receive only through `messages.receive`, `messages.receive_command` and the
coordinator's `serve_one`, all of which parse with `from_message`; so checking each
type here, after a trip through the real codec, checks what each role does with it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import messages
from protocol.crypto.packing import EncryptedMatrix, Layout
from protocol.errors import ProtocolError
from protocol.messages import ROUTES, commands
from protocol.messages.commands import Checkpoint, Command, Finish, Forward, Init, Keep, TrainStep
from protocol.messages.coordinator import (DecryptReply, DecryptRequest, InitialWeights, PublicKeyAnnouncement,
                                           RefreshCheck, RefreshChecked, Registration)
from protocol.messages.layer import EncryptedDelta, MaskShare, RefreshMask, RefreshedRows
from protocol.messages.plan import LayerPlan
from protocol.messages.psi import PsiBlinded, PsiDeltaHello, PsiDone, PsiDoubled, PsiHello, PsiOpen, PsiRemoved
from protocol.messages.run import CheckpointDone, CoordinatorCheckpoint, Resume, ResumeCall, Resumed, RunDone, Starting
from protocol.messages.serving import RefreshDone, RefreshRequest
from protocol.wire import codec
from protocol.wire.message import Message

MATRIX = EncryptedMatrix(Layout(3, 64, 3), 16, 2**20, 1, [12345])
EXAMPLES: list[Message] = [
    PublicKeyAnnouncement(2**2047 + 1, "sha256:00"),
    Registration(LayerPlan(d=2, h=3, batch_users=4, lr_w=0.1, key_fingerprint="sha256:00"), 100, True),
    DecryptRequest("forward", "e1/b0", [5, 7]),
    DecryptReply("forward", "e1/b0", [5], None),
    RunDone("run-1-20261123T070000Z-abcdef", False),
    Starting("run-1-20261123T070000Z-abcdef"),
    PsiHello(2, b"n" * 32, 10, 5),
    PsiBlinded(b"p" * 32),
    PsiDoubled(b"v" * 16),
    PsiOpen(3, "delta", False, b"s" * 32, ""),
    PsiDeltaHello(10, 5, 8),
    PsiRemoved(b"v" * 16),
    PsiDone(b"s" * 32),
    Init(LayerPlan(d=2, h=3, batch_users=4, lr_w=0.1)),
    TrainStep("e1/b0", np.arange(3)),
    Forward("eval/e1/b0", np.arange(3)),
    Keep(3),
    Finish("run-1-20261123T070000Z-abcdef", 3, False),
    InitialWeights("init", MATRIX),
    RefreshCheck("train/e1/b0", 2**2000 + 3, [5, 7]),
    RefreshChecked("train/e1/b0", None),
    MaskShare("e1/b0", [3, 2**90]),
    EncryptedDelta("e1/b0", MATRIX),
    RefreshMask("e1/b0", MATRIX),
    RefreshedRows("e1/b0", MATRIX),
    RefreshRequest("run-1-20261123T070000Z-abcdef", np.arange(3), 12, "0f" * 16),
    RefreshDone("run-1-20261123T070000Z-abcdef", 3),
    Checkpoint(40),
    CoordinatorCheckpoint(40),
    CheckpointDone(40),
    ResumeCall("0f1e"),
    Resume("run-1", "ab12", np.array([20, 40]), 2, "0f1e"),
    Resumed(40, 3, "0f1e", None),
]
WRONG = {str: 5, int: "5", float: "0.1", bytes: "text", bool: 1}


def parse(kind: type[Message], body: object, peer: str) -> Message:
    """What the receiving role does with a body under `kind`'s tag."""
    if issubclass(kind, Command):
        return commands.command_from_message(body, peer)
    return kind.from_message(body, peer)


def wire(message: Message) -> dict:
    return codec.decode(codec.encode(message.to_message()))


def field_paths(body: dict, prefix: tuple = ()) -> list[tuple]:
    """Every field of a body, nested ones included, as key paths (the command's `op` is not a field)."""
    paths = []
    for key, value in body.items():
        if key == "op":
            continue
        paths.append(prefix + (key,))
        if isinstance(value, dict):
            paths += field_paths(value, prefix + (key,))
    return paths


def replaced(body: dict, path: tuple, value: object) -> dict:
    out = dict(body)
    if len(path) == 1:
        if value is _DELETE:
            del out[path[0]]
        else:
            out[path[0]] = value
    else:
        out[path[0]] = replaced(out[path[0]], path[1:], value)
    return out


_DELETE = object()


def wrong_value(value: object) -> object:
    if isinstance(value, dict) or isinstance(value, np.ndarray):
        return "not a map or array"
    if isinstance(value, list):
        return ["x"]
    return WRONG.get(type(value), b"bytes")


def cases() -> list[tuple[Message, str, str]]:
    return [(example, str(sender), str(receiver)) for example in EXAMPLES
            for sender, receiver in ROUTES[Command if isinstance(example, Command) else type(example)]]


def test_every_message_type_has_an_example() -> None:
    kinds = {type(e) for e in EXAMPLES}
    assert set(ROUTES) - {Command} <= kinds
    assert set(commands.COMMANDS.values()) <= kinds


@pytest.mark.parametrize("example, sender, receiver", cases(), ids=lambda v: getattr(v, "__name__", str(v)))
def test_round_trip(example: Message, sender: str, receiver: str) -> None:
    again = parse(type(example), wire(example), sender)
    assert type(again) is type(example)
    for f in dataclasses.fields(example):
        mine, theirs = getattr(example, f.name), getattr(again, f.name)
        assert (mine == theirs).all() if isinstance(mine, np.ndarray) else mine == theirs


@pytest.mark.parametrize("example, sender, receiver", cases(), ids=lambda v: getattr(v, "__name__", str(v)))
def test_missing_and_mistyped_fields_name_the_peer_and_the_field(example: Message, sender: str,
                                                                 receiver: str) -> None:
    body = wire(example)
    for path in field_paths(body):
        for bad, what in ((_DELETE, "without field"), (wrong_value(_get(body, path)), "")):
            with pytest.raises(ProtocolError) as err:
                parse(type(example), replaced(body, path, bad), sender)
            text = str(err.value)
            assert text.startswith(sender), text
            assert repr(path[-1]) in text or f".{path[-1]}" in text, (path, text)
            assert what in text, text
    with pytest.raises(ProtocolError, match=f"^{sender} sent .*unexpected field 'extra'"):
        parse(type(example), {**body, "extra": 1}, sender)
    with pytest.raises(ProtocolError, match=f"^{sender} sent"):
        parse(type(example), [body], sender)


def _get(body: dict, path: tuple) -> object:
    for key in path:
        body = body[key]
    return body


def test_commands_need_a_known_op() -> None:
    with pytest.raises(ProtocolError, match="party_a sent a command with op 'launch'"):
        commands.command_from_message({"op": "launch"}, "party_a")
    with pytest.raises(ProtocolError, match="party_a sent a command with no field 'op'"):
        commands.command_from_message({"label": "x"}, "party_a")


def test_a_step_message_for_another_step_is_refused() -> None:
    with pytest.raises(ProtocolError, match=r"party_b sent RefreshMask with field 'label' = 'e1/b0' while this role "
                                            r"is in step 'e1/b1'"):
        messages.expect_label(RefreshMask("e1/b0", MATRIX), "e1/b1", "party_b")


def test_inboxes_follow_the_routes() -> None:
    assert messages.inbox_tags("coordinator") == {
        "party_a": {"coordinator/register", "coordinator/decrypt", "control/done", "coordinator/checkpoint",
                    "resume/call", "resume/agreed"},
        "party_b": {"coordinator/register", "coordinator/decrypt", "coordinator/check", "serve/refresh"}}
    assert "layer/command" in messages.inbox_tags("party_b")["party_a"]
    assert "layer/command" not in messages.inbox_tags("party_a")["party_b"]
    # each party's layout of [W0] comes from the coordinator alone: no party sends the other a share of it
    assert "coordinator/weights" in messages.inbox_tags("party_a")["coordinator"]
    assert "coordinator/weights" in messages.inbox_tags("party_b")["coordinator"]
    assert "layer/share" not in messages.inbox_tags("party_a")["party_b"] | messages.inbox_tags("party_b")["party_a"]


_leaves = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=5) | \
    st.binary(max_size=8)
_bodies = st.recursive(_leaves, lambda inner: st.lists(inner, max_size=3) |
                       st.dictionaries(st.sampled_from(["op", "label", "users", "u", "layout", "cts", "step", "plan",
                                                        "n", "size", "chunk", "nonce", "ciphertexts"]) | st.text(),
                                       inner, max_size=5), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(EXAMPLES), _bodies)
def test_garbage_is_a_protocol_error_never_a_crash(example: Message, body: object) -> None:
    try:
        parse(type(example), codec.decode(codec.encode(body)), "party_b")
    except ProtocolError as exc:
        assert str(exc).startswith("party_b")
