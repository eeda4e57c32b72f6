"""Malformed and misrouted messages against real roles over mutual TLS.

- Each role's endpoint refuses a tag it does not accept from that sender, and the
  sender gets a ProtocolError naming the refusing role and the tag.
- The coordinator process answers a malformed decryption request with an error that
  names the peer and the field, and serves the next request.
- The party processes stop with a ProtocolError naming the peer and the field (exit
  code 1, one line, no traceback) when the other party sends a malformed message.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from protocol import messages
from protocol.crypto import packing
from protocol.crypto.paillier import Encryptor, PublicKey, generate_keypair
from protocol.errors import ProtocolError
from protocol.layer.decryption import (Step, receive_public_key, receive_unmasked, register_layer, send_masked,
                                       train_label)
from protocol.messages.commands import Init
from protocol.messages.coordinator import DecryptReply, PublicKeyAnnouncement, Registration
from protocol.messages.plan import LayerPlan
from protocol.messages.run import RunDone, Starting
from protocol.net.transport import Endpoint
from protocol.roles import PEERS, A, B, C
from scenarios.launch import LocalRun, Outcome, start, wait_all
from tests.support.played_roles import play_psi, small_run

pytestmark = pytest.mark.integration


def announce_key(coordinator: Endpoint, parties: tuple[str, ...]) -> PublicKey:
    """Play the coordinator's first message with a fresh 2048-bit key."""
    public = generate_keypair(2048).public
    for party in parties:
        messages.send(coordinator, party, PublicKeyAnnouncement(int(public.n), public.fingerprint))
    return public


def test_each_role_refuses_tags_it_does_not_accept(tmp_path: Path) -> None:
    run = small_run(tmp_path)
    ends = {role: run.endpoint(role).start() for role in (A, B, C)}
    try:
        for sender, endpoint in ends.items():
            for receiver in PEERS[sender]:
                with pytest.raises(ProtocolError, match=f"{receiver}: {sender} may not send it messages tagged "
                                                        f"'no/such/tag'"):
                    endpoint.send(receiver, "no/such/tag", {})
        # a real tag on a route the protocol does not have
        with pytest.raises(ProtocolError, match="coordinator: party_b may not send it messages tagged 'control/done'"):
            messages.send(ends[B], C, RunDone(None))
        with pytest.raises(ProtocolError, match="party_b: party_a may not send it messages tagged 'layer/refresh'"):
            ends[A].send(B, "layer/refresh", {})
    finally:
        for endpoint in ends.values():
            endpoint.close()


def test_coordinator_answers_malformed_requests_and_goes_on(tmp_path: Path) -> None:
    run = small_run(tmp_path)
    coordinator = start(run, C)
    a, b = run.endpoint(A).start(), run.endpoint(B).start()
    try:
        public = receive_public_key(a, None)
        bad = [({"step": "forward", "label": "x"}, "without field 'ciphertexts'"),
               ({"step": "forward", "label": "x", "ciphertexts": ["x"]}, "DecryptRequest.ciphertexts as list"),
               ({"step": 5, "label": "x", "ciphertexts": []}, "DecryptRequest.step as int"),
               ({"step": "forward", "label": "x", "ciphertexts": [], "more": 1}, "unexpected field 'more'"),
               ("not a map", "expected a map of fields")]
        for body, match in bad:
            a.send(C, "coordinator/decrypt", body)
            reply = messages.receive(a, C, DecryptReply)
            assert reply.plaintexts is None and "party_a sent" in reply.error and match in reply.error
        enc = Encryptor(public)
        plan = LayerPlan(d=16, h=16, batch_users=1, lr_w=0.05, key_fingerprint=public.fingerprint)
        for party in (a, b):
            register_layer(party, plan, 1)
        values = np.arange(-8, 8).reshape(1, 16).astype(object)
        u = packing.encrypt(enc, values, packing.Layout.fit(16, 96, public), 0, 8)
        send_masked(b, Step.FORWARD, train_label(1, 0), u, enc)
        assert (receive_unmasked(a, Step.FORWARD, train_label(1, 0), u.layout, 1, public) == values).all()
        messages.send(a, C, RunDone(None))
        out = wait_all(run, {C: coordinator}, timeout=30)
        assert out[C].returncode == 0, out[C].output
    finally:
        a.close()
        b.close()
        if coordinator.poll() is None:
            coordinator.kill()


def party_b_after(run: LocalRun, send: Callable[[Endpoint, PublicKey], None]) -> Outcome:
    """Run B as a process, play the coordinator and A in this one up to PSI, then let `send` talk to B."""
    b = start(run, B)
    c, a = run.endpoint(C).start(), run.endpoint(A).start()
    try:
        public = announce_key(c, (B,))
        play_psi(run, a, B)
        send(a, public)
        return wait_all(run, {B: b}, timeout=60)[B]
    finally:
        a.close()
        c.close()


def test_party_b_stops_on_a_malformed_command(tmp_path: Path) -> None:
    out = party_b_after(small_run(tmp_path),
                        lambda a, public: a.send(B, "layer/command", {"op": "step", "label": "e1/b0"}))
    assert out.returncode == 1, out.output
    assert "party_a sent TrainStep without field 'users'" in out.output
    assert "Traceback" not in out.output


def test_party_b_refuses_a_plan_for_another_key(tmp_path: Path) -> None:
    other = generate_keypair(2048).public.fingerprint
    out = party_b_after(small_run(tmp_path), lambda a, public: messages.send(
        a, B, Init(LayerPlan(d=16, h=16, batch_users=8, lr_w=0.05, key_fingerprint=other))))
    assert out.returncode == 1, out.output
    assert f"layer plan is for Paillier key {other}, but the coordinator's key is sha256:" in out.output
    assert "Traceback" not in out.output


def test_party_a_stops_on_malformed_initial_weights(tmp_path: Path) -> None:
    run = small_run(tmp_path, train=True)
    a = start(run, A)
    c, b = run.endpoint(C).start(), run.endpoint(B).start()
    try:
        announce_key(c, (A,))
        for peer in (b, c):
            messages.send(peer, A, Starting(None))
        play_psi(run, b, A)
        init = messages.receive_command(b, A)
        assert isinstance(init, Init) and init.plan.batch_users > 0
        messages.receive(c, A, Registration)
        c.send(A, "coordinator/weights", {"label": "init", "w": {"layout": "rows"}})
        out = wait_all(run, {A: a}, timeout=60)[A]
    finally:
        b.close()
        c.close()
    assert out.returncode == 1, out.output
    assert "coordinator sent a malformed InitialWeights.w.layout: expected a map of fields, got str" in out.output
    assert "Traceback" not in out.output
