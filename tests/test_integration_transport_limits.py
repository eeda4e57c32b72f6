"""A peer cannot grow another role's inbox without bound (real gRPC over mutual TLS, in-process endpoints).

Messages far ahead of the next expected sequence number, and messages past the
inbox's byte budget, are refused with RESOURCE_EXHAUSTED and not kept.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from protocol.messages import MaskShare
from protocol.net import codec
from protocol.net.transport import _AHEAD, _INBOX_LIMIT, Endpoint
from protocol.roles import A, B
from scenarios.launch import write_local_run

pytestmark = pytest.mark.integration


def raw_deliver(sender: Endpoint, receiver: str, seq: int, body: object) -> grpc.StatusCode | None:
    """Deliver an envelope with a sequence number of our choosing; the refusal's status, or None."""
    data = codec.encode({"run": sender.cfg.run_id, "tag": MaskShare.TAG, "seq": seq, "body": body})
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
