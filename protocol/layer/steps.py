"""The secure interactive layer: u = e_B·W with W only ever encrypted.

One function per numbered step and role, and at the end the sequences (`INIT`, `TRAINING_STEP`,
`FORWARD_ONLY`) that put them in the one order both roles run them in (`walk`). B keeps [W] packed by
rows, A by columns.

  init     both: [W0] from the coordinator, in each party's layout     init_receive_weights
  step 1   B: [u] = e_B·[W]; [u + R] decrypted for A, R sent to A       b_forward_contribution
  step 2-3 A: u = (u + R) - R; A's model learns                         a_receive_contribution, a_top_model
  step 4   A: [g] = δ·[W]ᵀ; [g + R'] decrypted for B; R', [δ] to B      a_send_gradients
  step 5   B: g = (g + R') - R'; tower B backward                       b_receive_gradient, b_tower_backward
  step 6   B: [W'] = 2^s·[W] - L·Σ_i e_B[i,:]ᵀ·[δ_i]                     b_update_weights
  step 7   refresh: [W' + M] decrypted for A, [M'] to A                 b_send_masked_update
           A: [Q] by rows and columns                                   a_refresh_weights
           B: the coordinator checks [Q] by rows; B removes M'          b_finish_refresh

The protocol itself, told once, is in docs/design.md: "The secure interactive layer" (the steps,
who submits each decryption, evaluation, fixed point and the plan), "Both layouts hold one W" (W0
from the coordinator, B's check of A's [Q], what is assumed of B), "Numerics of the packed
ciphertexts" (masks, slots, bounds) and "Departures from the original contract" (step 7's low mask
M'', δ at the per-user scale).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from protocol import messages
from protocol.compute.workers import WorkerPool
from protocol.crypto import fixedpoint, packing
from protocol.crypto.packing import Layout, Packed
from protocol.crypto.paillier import Encryptor, PublicKey
from protocol.errors import ProtocolError
from protocol.layer.decryption import (Step, check_refresh, receive_plaintexts, receive_unmasked, send_masked,
                                       submit)
from protocol.layer.timing import StepClock
from protocol.messages.coordinator import InitialWeights
from protocol.messages.layer import EncryptedDelta, RefreshMask, RefreshedRows
from protocol.messages.plan import LayerPlan
from protocol.net.transport import Endpoint
from protocol.roles import A, B, C, other_party
from protocol.wire.message import Message


class TopModel(Protocol):
    """A's model as the layer needs it: learn from u, return δ = ∂L/∂u (one row per user)."""

    def learn(self, u: np.ndarray) -> np.ndarray: ...


class UserTower(Protocol):
    """B's tower as the layer needs it: e_B for some users, then learn from g = ∂L/∂e_B for the same users."""

    def embed(self, users: np.ndarray) -> np.ndarray: ...

    def learn(self, g: np.ndarray) -> None: ...


@dataclass
class Side:
    """One party's handle on the layer, holding its own layout of [W] (`w`)."""

    endpoint: Endpoint
    public: PublicKey
    enc: Encryptor
    pool: WorkerPool | None
    plan: LayerPlan
    w: Packed | None = None
    rows: Layout = field(init=False)
    cols: Layout = field(init=False)

    def __post_init__(self) -> None:
        self.rows, self.cols = self.plan.layouts(self.public)

    @property
    def role(self) -> str:
        return self.endpoint.cfg.role

    @property
    def peer(self) -> str:
        return other_party(self.role)

    def receive(self, kind: type[messages.M], label: str) -> messages.M:
        """The peer's next `kind` message, which must belong to step `label`."""
        message = messages.receive(self.endpoint, self.peer, kind)
        messages.expect_label(message, label, self.peer)
        return message

    def checked(self, message: Message, name: str, layout: Layout, scale: int, bound: int, rows: int,
                sender: str | None = None) -> Packed:
        """Field `name` of the peer's (or `sender`'s) message as an encrypted matrix of `rows` rows in the plan's
        layout and scale. It carries the plan's `bound` from here on, whatever smaller bound the sender declared, so
        every bound this party derives from it (and every slot check) is the plan's, never the sender's."""
        what = f"{type(message).__name__}.{name} from {sender or self.peer}"
        packed = Packed.from_wire(getattr(message, name), self.public, what)
        if packed.layout != layout or packed.scale != scale or packed.bound > bound or packed.rows != rows:
            raise ProtocolError(f"{what}: {packed.rows} rows in layout {packed.layout} at 2^{packed.scale} bounded "
                                f"by 2^{packed.bound.bit_length()}, expected {rows} in {layout} at 2^{scale} "
                                f"bounded by 2^{bound.bit_length()}")
        return Packed(packed.public, packed.layout, packed.scale, bound, packed.cts)

    def encrypt(self, values: np.ndarray, layout: Layout, scale: int, bound: int) -> Packed:
        return packing.encrypt(self.enc, values, layout, scale, bound, self.pool)


@dataclass
class ATurn:
    """One pass of A through a sequence: the step's label and users, A's model, and what A's stages hand each
    other."""

    label: str
    users: np.ndarray
    model: TopModel | None = None
    decrypt_as: Step = Step.FORWARD  # steps 1-3 during training, or Step.EVALUATE
    u: np.ndarray | None = None  # u at 2^(e_bits + w_bits)
    delta_q: np.ndarray | None = None  # δ·batch_users at 2^delta_bits


@dataclass
class BTurn:
    """One pass of B through a sequence: the step's label and users, tower B, and what B's stages hand each
    other."""

    label: str
    users: np.ndarray
    model: UserTower | None = None
    decrypt_as: Step = Step.FORWARD  # steps 1-3 during training, or Step.EVALUATE
    e_q: np.ndarray | None = None  # e_B at 2^e_bits
    g: np.ndarray | None = None  # g at 2^(delta_bits + w_bits)
    delta: Packed | None = None  # [δ] by rows
    w_new: Packed | None = None  # [W'] before the refresh
    m_prime: np.ndarray | None = None  # the refresh mask's high part


Turn = ATurn | BTurn


def _within(values: np.ndarray, low: int, high: int, what: str, peer: str) -> np.ndarray:
    """Refuse decrypted values outside what the plan allows: the peer did not submit what it should have."""
    if values.size and (min(values.ravel()) < low or max(values.ravel()) > high):
        raise ProtocolError(f"{what} as {peer} had it decrypted is outside the plan's bounds "
                            f"[-2^{(-low).bit_length()}, 2^{high.bit_length()}]")
    return values


def _as_w(p: Packed, side: Side) -> Packed:
    """[W] with the layer's assumed bound |W| ≤ w_max (the value is W; its tracked bound included masks)."""
    return Packed(p.public, p.layout, side.plan.w_bits, side.plan.w_bound, p.cts)


def draw_initial_weights(plan: LayerPlan, rng: np.random.Generator) -> np.ndarray:
    """W0 at 2^w_bits (d x h): normal with the plan's std (1/sqrt(d) by default), clipped to ±w_max. The
    coordinator draws it (coordinator/service.py); no party ever knows it."""
    std = plan.init_std or 1 / math.sqrt(plan.d)
    w0 = np.clip(rng.normal(0.0, std, size=(plan.d, plan.h)), -plan.w_max, plan.w_max)
    return np.array([[int(v) for v in row] for row in np.rint(w0 * 2**plan.w_bits)], dtype=object)


# ---- initialisation ---------------------------------------------------------------------


def init_receive_weights(side: Side, turn: Turn) -> None:
    """Both: [W0] from the coordinator in this party's layout (A by columns, B by rows), held to the plan's bound."""
    layout, rows = (side.cols, side.plan.h) if side.role == A else (side.rows, side.plan.d)
    sent = messages.receive(side.endpoint, C, InitialWeights)
    messages.expect_label(sent, turn.label, C)
    side.w = side.checked(sent, "w", layout, side.plan.w_bits, side.plan.w_bound, rows, sender=C)


# ---- forward ------------------------------------------------------------------------------


def b_forward_contribution(b: Side, turn: BTurn) -> None:
    """Step 1 (B): e_B from tower B, [u] = e_B·[W] by rows, decrypted through a mask for A."""
    turn.e_q = fixedpoint.encode(turn.model.embed(turn.users), b.plan.e_bits).astype(np.int64)
    u = packing.lincomb(turn.e_q, b.plan.e_bound, b.plan.e_bits, b.w, b.pool)
    send_masked(b.endpoint, turn.decrypt_as, turn.label, u, b.enc, b.pool)


def a_receive_contribution(a: Side, turn: ATurn) -> None:
    """Steps 2-3 (A): u from the coordinator's decryption of [u + R] and B's mask R, within the plan's bound."""
    p = a.plan
    turn.u = _within(receive_unmasked(a.endpoint, turn.decrypt_as, turn.label, a.rows, turn.users.size, a.public),
                     -p.u_bound, p.u_bound, "u", a.peer)


def a_top_model(a: Side, turn: ATurn) -> None:
    """A's own work between steps 3 and 4: its model learns from u and gives δ = ∂L/∂u, sent at scale
    δ·batch_users (clipped to ±delta_max) so its fixed-point digits are not wasted."""
    p = a.plan
    delta = turn.model.learn(fixedpoint.decode(turn.u, p.e_bits + p.w_bits))
    turn.delta_q = fixedpoint.encode(delta * p.batch_users, p.delta_bits, bound=p.delta_max).astype(np.int64)


# ---- backward -----------------------------------------------------------------------------


def a_send_gradients(a: Side, turn: ATurn) -> None:
    """Step 4 (A): [g] = δ·[W]ᵀ by columns, decrypted through a mask for B; [δ] by rows to B."""
    p = a.plan
    g = packing.lincomb(turn.delta_q, p.delta_bound, p.delta_bits, a.w, a.pool)
    send_masked(a.endpoint, Step.BACKWARD, turn.label, g, a.enc, a.pool)
    delta = a.encrypt(turn.delta_q, a.rows, p.delta_bits, p.delta_bound)
    messages.send(a.endpoint, B, EncryptedDelta(turn.label, delta.to_wire()))


def b_receive_gradient(b: Side, turn: BTurn) -> None:
    """Step 5 (B): g from the coordinator's decryption of [g + R'] and A's mask R', within the plan's bound;
    keeps [δ] for step 6."""
    p = b.plan
    turn.delta = b.checked(b.receive(EncryptedDelta, turn.label), "delta", b.rows, p.delta_bits, p.delta_bound,
                           turn.users.size)
    turn.g = _within(receive_unmasked(b.endpoint, Step.BACKWARD, turn.label, b.cols, turn.users.size, b.public),
                     -p.g_bound, p.g_bound, "g", b.peer)


def b_tower_backward(b: Side, turn: BTurn) -> None:
    """B's own work after step 5: tower B learns from g (A sent δ·batch_users, so g is divided back)."""
    turn.model.learn(fixedpoint.decode(turn.g, b.plan.delta_bits + b.plan.w_bits) / b.plan.batch_users)


def b_update_weights(b: Side, turn: BTurn) -> None:
    """Step 6 (B): [W'] = 2^s·[W] - L·[e_Bᵀ δ], at scale 2^(e_bits + delta_bits + lr_bits)."""
    p = b.plan
    grad = packing.lincomb(np.ascontiguousarray(turn.e_q.T), p.e_bound, p.e_bits, turn.delta, b.pool)
    kept = packing.multiply(b.w, 2**p.shift, extra_scale=p.shift)
    turn.w_new = packing.add(kept, packing.multiply(grad, -p.lr_int, extra_scale=p.lr_bits))


# ---- refresh --------------------------------------------------------------------------------


def b_send_masked_update(b: Side, turn: BTurn) -> None:
    """Step 7, B: have the coordinator decrypt [W' + M'·2^s + M''] by rows for A; send A [M'] by columns."""
    p = b.plan
    turn.m_prime = np.array([[secrets.randbits(p.m_prime_bits) for _ in range(p.h)] for _ in range(p.d)],
                            dtype=object)
    low = np.array([[secrets.randbits(p.shift) for _ in range(p.h)] for _ in range(p.d)], dtype=object)
    mask = turn.m_prime * 2**p.shift + low
    masked = packing.add(turn.w_new, b.encrypt(mask, b.rows, turn.w_new.scale, p.refresh_mask_bound))
    submit(b.endpoint, Step.REFRESH, turn.label, masked.flat())
    m_cols = b.encrypt(np.ascontiguousarray(turn.m_prime.T), b.cols, p.w_bits, p.m_prime_bound)
    messages.send(b.endpoint, A, RefreshMask(turn.label, m_cols.to_wire()))


def a_refresh_weights(a: Side, turn: ATurn) -> None:
    """Step 7, A: W' + M from the coordinator, divided by 2^s, re-encrypted both ways: A's new [W] by columns."""
    p = a.plan
    m_cols = a.checked(a.receive(RefreshMask, turn.label), "m_cols", a.cols, p.w_bits, p.m_prime_bound, p.h)
    plaintexts = receive_plaintexts(a.endpoint, Step.REFRESH, turn.label, p.d * a.rows.ciphertexts)
    plain = _within(packing.unpack(plaintexts, a.rows, p.d, a.public.n), -p.update_bound,
                    p.update_bound + p.refresh_mask_bound, "W' + M", a.peer)
    q = plain >> p.shift  # floor division: exact for the M' part, stochastic rounding of W'/2^s thanks to M''
    messages.send(a.endpoint, B, RefreshedRows(turn.label, a.encrypt(q, a.rows, p.w_bits, p.q_bound).to_wire()))
    q_cols = a.encrypt(np.ascontiguousarray(q.T), a.cols, p.w_bits, p.q_bound)
    a.w = _as_w(packing.add(q_cols, packing.multiply(m_cols, -1)), a)


def b_finish_refresh(b: Side, turn: BTurn) -> None:
    """Step 7, B: have the coordinator check that A's [Q] by rows is ⌊(W' + M)/2^s⌋, then remove M' from it: B's
    new [W] by rows."""
    q_rows = b.checked(b.receive(RefreshedRows, turn.label), "q_rows", b.rows, b.plan.w_bits, b.plan.q_bound,
                       b.plan.d)
    check_refresh(b.endpoint, turn.label, q_rows)
    b.w = _as_w(packing.add_plain(q_rows, -turn.m_prime, b.plan.m_prime_bound), b)


# ---- the sequences both roles run ------------------------------------------------------------

StageFn = Callable[[Side, Turn], None]


@dataclass(frozen=True)
class Stage:
    """One entry of a sequence: what A does and what B does there (either may be nothing)."""

    name: str
    a: StageFn | None = None
    b: StageFn | None = None


@dataclass(frozen=True)
class Sequence:
    name: str
    stages: tuple[Stage, ...]


INIT = Sequence("init", (Stage("[W0] from C, each party's layout", a=init_receive_weights,
                               b=init_receive_weights),))

_STEP_1 = Stage("step 1: tower B, [u] = e_B·[W], [u + R] to C for A", b=b_forward_contribution)
_STEPS_2_3 = Stage("steps 2-3: u + R from C, R from B", a=a_receive_contribution)

TRAINING_STEP = Sequence("train", (
    _STEP_1,
    _STEPS_2_3,
    Stage("top model forward and backward", a=a_top_model),
    Stage("step 4: [g + R'] to C for B, [delta] to B", a=a_send_gradients),
    Stage("step 5: g + R' from C, R' from A", b=b_receive_gradient),
    Stage("tower B backward and update", b=b_tower_backward),
    Stage("step 6: [W'] from [e_B^T delta]", b=b_update_weights),
    Stage("step 7: [W' + M] to C for A, [M'] to A", b=b_send_masked_update),
    Stage("step 7: W' + M from C, [Q] re-encrypted both ways", a=a_refresh_weights),
    Stage("step 7: [Q] by rows checked through C, M' removed", b=b_finish_refresh),
))

FORWARD_ONLY = Sequence("forward", (_STEP_1, _STEPS_2_3))


def walk(sequence: Sequence, side: Side, turn: Turn, clock: StepClock | None = None) -> Turn:
    """Run this role's part of `sequence`, stage by stage. Both roles walk the same list, so every message
    is received at a stage after the one that sends it, and the two can never wait on each other."""
    for stage in sequence.stages:
        act = stage.a if side.role == A else stage.b
        if act is not None:
            act(side, turn)
            if clock is not None:
                clock.lap(f"{sequence.name}: {stage.name}")
    return turn
