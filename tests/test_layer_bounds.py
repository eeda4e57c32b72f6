"""A party sizes its masks and checks what it decrypts by the plan, never by what the other party declares.

A cheating A could declare a tiny bound on [g] so that B's mask is short and the
coordinator reads g; or send [g] holding more than the plan allows. B masks with
the plan's bound and refuses decrypted values outside it.
"""

from __future__ import annotations

import numpy as np
import pytest

from protocol import messages
from protocol.crypto import packing
from protocol.crypto.packing import Packed
from protocol.crypto.paillier import Encryptor, generate_keypair
from protocol.errors import ProtocolError
from protocol.layer import steps
from protocol.layer.plan import LayerPlan
from protocol.layer.steps import Side, Turn
from protocol.messages import DecryptReply, DecryptRequest, Gradients
from tests.fakes import MemoryNetwork, run_roles

KEY = generate_keypair(1024)
ENC = Encryptor(KEY.public)
PLAN = LayerPlan(d=2, h=2, batch_users=2, lr_w=0.1, e_bits=8, w_bits=8, delta_bits=8, w_max=2.0, delta_max=1.0)
USERS = np.array([0, 1])


def coordinator_once(net: MemoryNetwork) -> None:
    """Decrypt one request from party_b, as the coordinator would."""
    c = net.endpoint("coordinator")
    request = messages.receive(c, "party_b", DecryptRequest)
    messages.send(c, "party_b", DecryptReply(request.step, request.label,
                                             [KEY.raw_decrypt(x) for x in request.ciphertexts], None))


def gradients_from_a(net: MemoryNetwork, g: np.ndarray, declared: int) -> None:
    """party_a sends [g] holding `g` but declaring bound `declared`, and an honest [δ]."""
    b_side = Side(net.endpoint("party_b"), KEY.public, ENC, None, PLAN)
    g_ct = packing.encrypt(ENC, g, b_side.cols, PLAN.delta_bits + PLAN.w_bits, max(abs(int(v)) for v in g.ravel()))
    g_ct = Packed(g_ct.public, g_ct.layout, g_ct.scale, declared, g_ct.cts)
    delta = packing.encrypt(ENC, np.zeros((2, PLAN.h), dtype=object), b_side.rows, PLAN.delta_bits, PLAN.delta_bound)
    messages.send(net.endpoint("party_a"), "party_b", Gradients("s", g_ct.to_wire(), delta.to_wire()))


def b_unmask(net: MemoryNetwork) -> Turn:
    b = Side(net.endpoint("party_b"), KEY.public, ENC, None, PLAN)
    turn = Turn("s", USERS)
    run_roles((coordinator_once, net), (steps.b_unmask_gradient, b, turn))
    return turn


def test_b_masks_g_by_the_plan_even_when_a_declares_a_tiny_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    drawn = []
    real = packing.draw_mask
    monkeypatch.setattr(packing, "draw_mask", lambda rows, length, bound: drawn.append(bound) or
                        real(rows, length, bound))
    net = MemoryNetwork()
    g = np.array([[1, -1], [0, 2]], dtype=object)
    gradients_from_a(net, g, declared=1)
    turn = b_unmask(net)
    assert (turn.g == g).all()
    assert drawn == [PLAN.g_bound]  # so the mask has bits(g_bound) + σ bits, not bits(1) + σ


def test_b_refuses_g_beyond_the_plan() -> None:
    net = MemoryNetwork()
    gradients_from_a(net, np.full((2, PLAN.h), PLAN.g_bound * 4, dtype=object), declared=PLAN.g_bound)
    with pytest.raises(ProtocolError, match=r"\[g\] from party_a decrypts to values outside the plan's bounds"):
        b_unmask(net)


def test_b_refuses_a_declared_bound_beyond_the_plan() -> None:
    net = MemoryNetwork()
    gradients_from_a(net, np.zeros((2, PLAN.h), dtype=object), declared=PLAN.g_bound * 2)
    b = Side(net.endpoint("party_b"), KEY.public, ENC, None, PLAN)
    with pytest.raises(ProtocolError, match=r"Gradients.g from party_a: .* expected 2 in .* bounded by"):
        steps.b_unmask_gradient(b, Turn("s", USERS))
