"""What each party submits for decryption is masked by the plan and fresh; what it receives is checked by the plan.

Masks are sized from the plan's bound for the value (u_bound, g_bound), never from a
bound the other party declared; each submission is a fresh encryption, so two
forwards of the same users share no ciphertext; and a party refuses a decrypted
value, or an encrypted matrix's declared bound, beyond the plan. Each test that can
has a negative control running the same steps with the protection switched off.
"""

from __future__ import annotations

import numpy as np
import pytest

from protocol import messages
from protocol.crypto import packing
from protocol.crypto.paillier import Encryptor, generate_keypair
from protocol.errors import ProtocolError
from protocol.layer import steps
from protocol.layer.decryption import ROUTE, Step, send_masked
from protocol.layer.steps import ATurn, BTurn, Side
from protocol.messages.coordinator import DecryptReply, DecryptRequest
from protocol.messages.layer import EncryptedDelta
from protocol.messages.plan import LayerPlan
from protocol.wire import codec
from tests.support.fakes import MemoryNetwork, run_roles

KEY = generate_keypair(1024)
ENC = Encryptor(KEY.public)
PLAN = LayerPlan(d=2, h=2, batch_users=2, lr_w=0.1, e_bits=8, w_bits=8, delta_bits=8, w_max=2.0, delta_max=1.0)
USERS = np.array([0, 1])


class FixedTower:
    def embed(self, users: np.ndarray) -> np.ndarray:
        return np.linspace(-0.9, 0.9, users.size * PLAN.d).reshape(users.size, PLAN.d)


def sides(net: MemoryNetwork) -> tuple[Side, Side]:
    """A and B with the same W in their layouts."""
    a = Side(net.endpoint("party_a"), KEY.public, ENC, None, PLAN)
    b = Side(net.endpoint("party_b"), KEY.public, ENC, None, PLAN)
    w = np.array([[3, -2], [1, 4]], dtype=object)
    b.w = packing.encrypt(ENC, w, b.rows, PLAN.w_bits, PLAN.w_bound)
    a.w = packing.encrypt(ENC, np.ascontiguousarray(w.T), a.cols, PLAN.w_bits, PLAN.w_bound)
    return a, b


def submit_twice(a: Side, b: Side) -> None:
    for _ in range(2):
        steps.b_forward_contribution(b, BTurn("same", USERS, FixedTower()))
        steps.a_send_gradients(a, ATurn("same", USERS, delta_q=np.full((2, PLAN.h), 100, dtype=np.int64)))


def submitted(net: MemoryNetwork, sender: str) -> list[list[int]]:
    return [[int(c) for c in codec.decode(data)["ciphertexts"]] for who, _, tag, data in net.log
            if who == sender and tag == DecryptRequest.TAG]


def test_masks_are_sized_from_the_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    drawn = []
    real = packing.draw_mask
    monkeypatch.setattr(packing, "draw_mask", lambda rows, length, bound: drawn.append(bound) or
                        real(rows, length, bound))
    a, b = sides(MemoryNetwork())
    submit_twice(a, b)
    assert drawn == [PLAN.u_bound, PLAN.g_bound] * 2  # so each mask has bits(bound) + σ bits


def test_two_submissions_for_the_same_users_share_no_ciphertext() -> None:
    net = MemoryNetwork()
    a, b = sides(net)
    submit_twice(a, b)
    held = {int(c) for side in (a, b) for c in side.w.flat()}
    for sender in ("party_b", "party_a"):
        first, second = submitted(net, sender)
        assert not set(first) & set(second), f"{sender} submitted the same ciphertexts twice"
        assert not set(first + second) & held


def test_the_same_check_catches_submissions_without_fresh_masks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packing, "mask", lambda value, enc, pool=None: (value, np.zeros((value.rows,
                                                                                          value.layout.length),
                                                                                         dtype=object)))
    net = MemoryNetwork()
    a, b = sides(net)
    submit_twice(a, b)
    for sender in ("party_b", "party_a"):
        first, second = submitted(net, sender)
        assert first == second


def coordinator_once(net: MemoryNetwork, submitter: str) -> None:
    """Decrypt one submission and send it to the step's receiver, as the coordinator does."""
    c = net.endpoint("coordinator")
    request = messages.receive(c, submitter, DecryptRequest)
    messages.send(c, ROUTE[Step(request.step)][1], DecryptReply(request.step, request.label,
                                                                [KEY.raw_decrypt(x) for x in request.ciphertexts],
                                                                None))


def test_b_refuses_g_beyond_the_plan() -> None:
    net = MemoryNetwork()
    a, b = sides(net)
    too_big = np.full((2, PLAN.d), PLAN.g_bound + 1, dtype=object)  # what a cheating A could submit as "g"
    send_masked(a.endpoint, Step.BACKWARD, "s", packing.encrypt(ENC, too_big, a.cols, 0, PLAN.g_bound + 1), ENC)
    delta = packing.encrypt(ENC, np.zeros((2, PLAN.h), dtype=object), a.rows, PLAN.delta_bits, PLAN.delta_bound)
    messages.send(a.endpoint, "party_b", EncryptedDelta("s", delta.to_wire()))
    with pytest.raises(ProtocolError, match="g as party_a had it decrypted is outside the plan's bounds"):
        run_roles((coordinator_once, net, "party_a"), (steps.b_receive_gradient, b, BTurn("s", USERS)))


def test_b_refuses_a_declared_bound_beyond_the_plan() -> None:
    net = MemoryNetwork()
    a, b = sides(net)
    delta = packing.encrypt(ENC, np.zeros((2, PLAN.h), dtype=object), a.rows, PLAN.delta_bits, 2 * PLAN.delta_bound)
    messages.send(a.endpoint, "party_b", EncryptedDelta("s", delta.to_wire()))
    with pytest.raises(ProtocolError, match=r"EncryptedDelta.delta from party_a: .* expected 2 in .* bounded by"):
        steps.b_receive_gradient(b, BTurn("s", USERS))
