"""A peer cannot grow another role's inbox without bound, and generations keep a resumed peer's streams apart (real
gRPC over mutual TLS, in-process endpoints).

Messages far ahead of the next expected sequence number, and messages past the
inbox's byte budget, are refused with RESOURCE_EXHAUSTED and not kept.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest

from protocol import messages
from protocol.errors import PeerLost, ProtocolError
from protocol.messages import MaskShare, Resume
from protocol.net import codec
from protocol.net.transport import _AHEAD, _INBOX_LIMIT, Endpoint
from protocol.roles import A, B
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


def kept(endpoint: Endpoint, peer: str) -> tuple[int, int]:
    """(messages, bytes) waiting in `endpoint`'s inbox from `peer`."""
    return sum(len(q) for key, q in endpoint._pending.items() if key[0] == peer), endpoint._inbox_bytes[peer]


def test_a_flood_of_far_future_messages_is_refused(tmp_path: Path) -> None:
    run = write_local_run(tmp_path, {})
    with run.endpoint(A) as a, run.endpoint(B) as b:
        assert raw_deliver(b, A, 10**9, {}) == grpc.StatusCode.RESOURCE_EXHAUSTED
        codes = [raw_deliver(b, A, seq, {}) for seq in range(1, _AHEAD + 50)]  # seq 0 never comes
        assert codes[: _AHEAD - 1] == [None] * (_AHEAD - 1)
        assert set(codes[_AHEAD - 1:]) == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert kept(a, B)[0] == _AHEAD - 1


def test_the_inbox_holds_a_bounded_number_of_bytes(tmp_path: Path) -> None:
    run = write_local_run(tmp_path, {})
    for role in (A, B):  # 1 MiB messages at most, so the inbox holds at most a few MiB per sender
        path = run.configs[role]
        path.write_text(path.read_text().replace("[network]\n", "[network]\nmax_message_mb = 1\n"))
    with run.endpoint(A) as a, run.endpoint(B) as b:
        chunk = b"x" * 900_000
        codes = [raw_deliver(b, A, seq, {"pad": chunk}) for seq in range(1, 2 * _INBOX_LIMIT)]
        assert codes[: _INBOX_LIMIT] == [None] * _INBOX_LIMIT
        assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes[_INBOX_LIMIT:]
        assert kept(a, B)[1] <= _INBOX_LIMIT * a.cfg.max_message_bytes


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
