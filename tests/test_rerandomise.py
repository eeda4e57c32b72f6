"""What one party sends the other is freshly randomised: the receiver cannot link it to ciphertexts it made.

After a refresh every row of B's [W] is A's own encryption, so without fresh
randomness A could recognise [u] = e_B·[W] and test guesses of e_B against it; the
same holds for [g] from A to B. The negative control runs the same steps with
re-randomisation switched off and sees the ciphertexts repeat.
"""

from __future__ import annotations

import numpy as np
import pytest

from protocol.crypto import packing
from protocol.crypto.paillier import Encryptor, generate_keypair
from protocol.layer import steps
from protocol.layer.plan import LayerPlan
from protocol.layer.steps import Side, Turn
from protocol.net import codec
from tests.fakes import MemoryNetwork

KEY = generate_keypair(1024)
PLAN = LayerPlan(d=4, h=4, batch_users=3, lr_w=0.1)


class FixedTower:
    def embed(self, users: np.ndarray) -> np.ndarray:
        return np.linspace(-0.9, 0.9, users.size * PLAN.d).reshape(users.size, PLAN.d)


def sides() -> tuple[MemoryNetwork, Side, Side]:
    net = MemoryNetwork()
    enc = Encryptor(KEY.public)
    a = Side(net.endpoint("party_a"), KEY.public, enc, None, PLAN)
    b = Side(net.endpoint("party_b"), KEY.public, enc, None, PLAN)
    w = np.arange(PLAN.d * PLAN.h).reshape(PLAN.d, PLAN.h).astype(object)
    b.w = packing.encrypt(enc, w, b.rows, PLAN.w_bits, PLAN.w_bound)
    a.w = packing.encrypt(enc, np.ascontiguousarray(w.T), a.cols, PLAN.w_bits, PLAN.w_bound)
    return net, a, b


def sent(net: MemoryNetwork, tag: str) -> list[list[int]]:
    """The ciphertexts of every message under `tag`, message by message."""
    out = []
    for _, _, t, data in net.log:
        if t == tag:
            body = codec.decode(data)
            matrix = body.get("u") or body.get("g")
            out.append([int(c) for c in matrix["cts"]])
    return out


def twice(a: Side, b: Side) -> None:
    users = np.array([0, 1, 2])
    for _ in range(2):
        steps.b_forward_contribution(b, Turn("same", users, FixedTower()))
        steps.a_send_gradients(a, Turn("same", users, delta_q=np.full((3, PLAN.h), 1000, dtype=np.int64)))


def test_two_forwards_of_the_same_users_differ_and_match_nothing_the_receiver_holds() -> None:
    net, a, b = sides()
    twice(a, b)
    for tag, receiver_holds in (("layer/u", b.w), ("layer/gradients", a.w)):
        first, second = sent(net, tag)
        assert not set(first) & set(second), f"{tag}: the same users gave the same ciphertexts twice"
        assert not set(first + second) & {int(c) for c in receiver_holds.flat()}


def test_the_same_check_catches_a_layer_without_rerandomisation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packing, "rerandomise", lambda p, enc, pool=None: p)
    net, a, b = sides()
    twice(a, b)
    for tag in ("layer/u", "layer/gradients"):
        first, second = sent(net, tag)
        assert first == second
