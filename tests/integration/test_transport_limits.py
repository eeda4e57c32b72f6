"""A peer cannot grow another role's inbox without bound, and generations keep a resumed peer's streams apart (real
gRPC over mutual TLS, in-process endpoints).

Messages far ahead of the next expected sequence number, and messages past the
inbox's byte or decode budget, are refused with RESOURCE_EXHAUSTED and not kept; a
message is refused by its envelope (tag, run) before its body is decoded, and a body
that would decode past its own budget is refused as undecodable.
"""

from __future__ import annotations

import re
from pathlib import Path

import grpc
import msgpack
import numpy as np
import pytest

from protocol import messages
from protocol.errors import PeerLost, ProtocolError
from protocol.messages.coordinator import DecryptRequest
from protocol.messages.layer import MaskShare
from protocol.messages.run import Resume
from protocol.net.inbox import AHEAD, INBOX_LIMIT
from protocol.net.transport import Endpoint
from protocol.roles import A, B
from protocol.wire import codec
from scenarios.launch import write_local_run

pytestmark = pytest.mark.integration


def raw_deliver(sender: Endpoint, receiver: str, seq: int, body: object, gen: int = 0) -> grpc.StatusCode | None:
    """Deliver an envelope with a sequence number (and generation) of our choosing; the refusal's status, or None."""
    data = codec.encode({"run": sender.cfg.run_id, "tag": MaskShare.TAG, "seq": seq, "gen": gen, "body": body})
    try:
        sender._deliver[receiver](data, timeout=10)
    except grpc.RpcError as exc:
        return exc.code()
    return None


def refusal(sender: Endpoint, receiver: str, data: bytes) -> grpc.RpcError | None:
    """Deliver raw bytes as a message; the refusal, or None."""
    try:
        sender._deliver[receiver](data, timeout=10)
    except grpc.RpcError as exc:
        return exc
    return None


def with_body(envelope: dict, body: bytes) -> bytes:
    """`envelope` (its last field "body" None) with raw msgpack bytes as its body."""
    return codec.encode({**envelope, "body": None})[:-1] + body


def kept(endpoint: Endpoint, peer: str) -> tuple[int, int]:
    """(messages, bytes) waiting in `endpoint`'s inbox from `peer`."""
    return sum(len(q) for key, q in endpoint._inbox.pending.items() if key[0] == peer), endpoint._inbox.bytes[peer]


def test_a_flood_of_far_future_messages_is_refused(tmp_path: Path) -> None:
    run = write_local_run(tmp_path, {})
    with run.endpoint(A) as a, run.endpoint(B) as b:
        assert raw_deliver(b, A, 10**9, {}) == grpc.StatusCode.RESOURCE_EXHAUSTED
        codes = [raw_deliver(b, A, seq, {}) for seq in range(1, AHEAD + 50)]  # seq 0 never comes
        assert codes[: AHEAD - 1] == [None] * (AHEAD - 1)
        assert set(codes[AHEAD - 1:]) == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert kept(a, B)[0] == AHEAD - 1


def test_the_inbox_holds_a_bounded_number_of_bytes(tmp_path: Path) -> None:
    run = write_local_run(tmp_path, {})
    for role in (A, B):  # 1 MiB messages at most, so the inbox holds at most a few MiB per sender
        path = run.configs[role]
        path.write_text(path.read_text().replace("[network]\n", "[network]\nmax_message_mb = 1\n"))
    with run.endpoint(A) as a, run.endpoint(B) as b:
        chunk = b"x" * 900_000
        codes = [raw_deliver(b, A, seq, {"pad": chunk}) for seq in range(1, 2 * INBOX_LIMIT)]
        assert codes[: INBOX_LIMIT] == [None] * INBOX_LIMIT
        assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes[INBOX_LIMIT:]
        assert kept(a, B)[1] <= INBOX_LIMIT * a.cfg.max_message_bytes


def test_generations_keep_a_resumed_peers_streams_apart(tmp_path: Path) -> None:
    """Between generations a role refuses sequenced messages as not yet due; in a newer one it refuses an older
    generation's (its sender must resume too); streams start again at 0; a handshake message with a fresh nonce
    interrupts a wait."""
    run = write_local_run(tmp_path, {})
    with run.endpoint(A) as a, run.endpoint(B) as b:
        b.send(A, MaskShare.TAG, {"n": 1})
        assert a.recv(B, MaskShare.TAG, timeout=5) == {"n": 1}
        a.suspend()
        assert raw_deliver(b, A, 1, {}) == grpc.StatusCode.UNAVAILABLE
        a.enter(1)
        assert raw_deliver(b, A, 1, {}) == grpc.StatusCode.FAILED_PRECONDITION
        with pytest.raises(PeerLost, match="resumed in a newer generation"):
            b.send(A, MaskShare.TAG, {"n": 2})
        b.enter(1)
        b.send(A, MaskShare.TAG, {"n": 3})  # sequence number 0 of generation 1
        assert a.recv(B, MaskShare.TAG, timeout=5) == {"n": 3}
        messages.send(b, A, Resume("local", "", np.array([0]), 1, "fresh"))
        with pytest.raises(PeerLost, match="party_b is resuming"):
            a.recv(B, MaskShare.TAG, timeout=5)
        a.suspend()
        assert a.take_resume(B, Resume.TAG, timeout=0.1) is None  # what came before the handshake is forgotten


def test_a_handshake_message_without_a_string_nonce_is_refused_naming_the_sender(tmp_path: Path) -> None:
    """A list as nonce once crashed the receiver's `suspend` with TypeError (a set of unhashable nonces)."""
    run = write_local_run(tmp_path, {})
    with run.endpoint(A) as a, run.endpoint(B) as b:
        for nonce, shown in (([1, 2], "list"), (None, "NoneType"), (7, "int"), ("", "a string of 0 characters"),
                             ("x" * 65, "a string of 65 characters")):
            with pytest.raises(ProtocolError, match=rf"party_a: party_b sent 'resume/hello' with field 'nonce' as "
                                                    rf"{shown}, expected a string of 1 to 64 characters"):
                messages.send(b, A, Resume("local", "", np.array([0]), 0, nonce))
        a.suspend()
        assert a.take_resume(B, Resume.TAG, timeout=0.1) is None  # nothing of them was kept
        messages.send(b, A, Resume("local", "", np.array([0]), 0, "fresh"))
        assert a.take_resume(B, Resume.TAG, timeout=5)["nonce"] == "fresh"


def test_a_body_that_would_decode_past_its_budget_is_refused_and_a_tag_not_routed_before_decoding(
        tmp_path: Path) -> None:
    """1 MB of nested empty lists decodes into 70 MB: refused as undecodable, nothing kept. A tag not routed from the
    sender is refused by the envelope alone: its body, garbage here, is never decoded."""
    run = write_local_run(tmp_path, {})
    with run.endpoint(A) as a, run.endpoint(B) as b:
        envelope = {"run": "local", "tag": MaskShare.TAG, "seq": 0, "gen": 0}
        exc = refusal(b, A, with_body(envelope, msgpack.packb([[[]] * 100] * 10_000)))
        assert exc is not None and exc.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert re.search(r"party_a: party_b sent message 'layer/mask' that cannot be decoded: .*decode budget",
                         exc.details()), exc.details()
        assert kept(a, B) == (0, 0)
        garbage = b"\xc1"
        exc = refusal(b, A, with_body(envelope, garbage))
        assert exc is not None and "cannot be decoded" in exc.details()
        exc = refusal(b, A, with_body({**envelope, "tag": DecryptRequest.TAG}, garbage))
        assert exc is not None and exc.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert exc.details() == "party_a: party_b may not send it messages tagged 'coordinator/decrypt'"


def test_what_a_senders_kept_messages_decode_into_is_bounded(tmp_path: Path) -> None:
    """Each of these 1 KB bodies decodes into 64 KB, within its own budget (4 KB + 64 KiB); kept out of order, they
    would hold 4,095 × 64 KB = 256 MB. The sender's kept and decoding messages may take 4 × the budget of a largest
    message (16 MiB at max_message_mb = 1), then back-pressure."""
    run = write_local_run(tmp_path, {})
    for role in (A, B):
        path = run.configs[role]
        path.write_text(path.read_text().replace("[network]\n", "[network]\nmax_message_mb = 1\n"))
    with run.endpoint(A) as a, run.endpoint(B) as b:
        body = [[[]] * 100] * 9
        codes = [raw_deliver(b, A, seq, body) for seq in range(1, 400)]  # seq 0 never comes
        assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes, "all 399 kept"
        first = codes.index(grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert 200 < first < 300 and codes[:first] == [None] * first and kept(a, B)[0] == first
        assert a._inbox.decoded[B] <= INBOX_LIMIT * codec.budget(2**20)
