"""The secure interactive layer of DESIGN.md: u = e_B·W with W only ever encrypted.

B keeps [W] packed by rows ([W_k,:], d ciphertexts), A by columns ([W_:,j], h
ciphertexts). Each function below is one numbered step for one role:

  init    both: [W0] = [W_A] + [W_B], each party encrypting a secret random share
  step 1  B: [u_i] = Σ_k e_B[i,k]·[W_k,:], sent to A                 b_forward_contribution
  step 2-3 A: masks [u], the coordinator decrypts u + R, A removes R  a_unmask_contribution
  step 4  A: [g_i] = Σ_j δ[i,j]·[W_:,j] and [δ_i], sent to B           a_send_gradients
  step 5  B: masks [g], the coordinator decrypts, B removes the mask  b_unmask_gradient
  step 6  B: [W'] = 2^s·[W] - L·Σ_i e_B[i,:]ᵀ·[δ_i]                    b_update_weights
  step 7  refresh: B sends [W' + M] with M = M'·2^s + M'' and [M'] by columns
          (b_send_masked_update); A has it decrypted, takes Q = floor(·/2^s), sends
          [Q] by rows and removes [M'] from [Q] by columns (a_refresh_weights); B
          removes M' from [Q] by rows (b_finish_refresh).

Fixed point: e_B at 2^e_bits (|e_B| ≤ 1, tanh), W at 2^w_bits, δ at 2^delta_bits.
A sends δ̃ = δ·batch_users (per-user scale, clipped to ±delta_max) so its digits
are not wasted; B divides g by batch_users and the W step size is L = lr_w /
batch_users at 2^lr_bits. s = e_bits + delta_bits + lr_bits - w_bits brings W' back
to its scale.

Departure from DESIGN.md step 7: the mask also has a low part M'' uniform on
[0, 2^s). With M = M'·2^s alone, A and the coordinator would read W' mod 2^s, which
is -L·∇W mod 2^s: low digits of the gradient, hence of e_B. With M'' the division
becomes unbiased stochastic rounding of W'/2^s (error below one unit 2^-w_bits).

What nobody can check is that |W| stays within w_max: no role ever sees W. The
slot widths leave room for that bound, and the plan states it.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import asdict, dataclass, field
from functools import cached_property

import numpy as np

from protocol.crypto import packing
from protocol.layer.decryption import decrypt_masked, request_decryption
from protocol.errors import ProtocolError
from protocol.crypto.packing import SIGMA, Layout, Packed
from protocol.crypto.paillier import Encryptor, PublicKey
from protocol.net.transport import Endpoint
from protocol.runtime.workers import WorkerPool

A, B = "party_a", "party_b"
COMMANDS = "cmd"  # A's orders to B, in sequence: init, step, forward, done


@dataclass(frozen=True)
class LayerPlan:
    """Everything both parties must agree on for the layer; A decides and sends it to B."""

    d: int
    h: int
    batch_users: int
    lr_w: float
    e_bits: int = 14
    w_bits: int = 16
    delta_bits: int = 16
    w_max: float = 8.0
    delta_max: float = 2.0
    init_std: float = 0.0  # std of W0; 0 means 1/sqrt(d)

    def __post_init__(self) -> None:
        for name in ("d", "h", "batch_users", "e_bits", "w_bits", "delta_bits"):
            if getattr(self, name) <= 0:
                raise ProtocolError(f"layer plan: {name} must be positive")
        if not (self.lr_w > 0 and self.w_max > 0 and self.delta_max > 0):
            raise ProtocolError("layer plan: lr_w, w_max and delta_max must be positive")

    def to_message(self) -> dict:
        return asdict(self)

    @classmethod
    def from_message(cls, msg: dict) -> "LayerPlan":
        try:
            return cls(**msg)
        except TypeError as exc:
            raise ProtocolError(f"malformed layer plan: {exc}") from None

    # ---- integer bounds at each scale --------------------------------------------------

    @property
    def e_bound(self) -> int:
        return 1 << self.e_bits

    @property
    def w_bound(self) -> int:
        return math.ceil(self.w_max * 2**self.w_bits)

    @property
    def delta_bound(self) -> int:
        return math.ceil(self.delta_max * 2**self.delta_bits)

    @property
    def lr_bits(self) -> int:
        """Enough bits for L = lr_w / batch_users to keep 16 significant bits."""
        return 16 + max(0, math.ceil(math.log2(self.batch_users / self.lr_w)))

    @property
    def lr_int(self) -> int:
        return max(1, round(self.lr_w / self.batch_users * 2**self.lr_bits))

    @property
    def shift(self) -> int:
        return self.e_bits + self.delta_bits + self.lr_bits - self.w_bits

    @property
    def u_bound(self) -> int:
        return self.d * self.e_bound * self.w_bound

    @property
    def g_bound(self) -> int:
        return self.h * self.delta_bound * self.w_bound

    @property
    def grad_bound(self) -> int:
        return self.batch_users * self.e_bound * self.delta_bound

    @property
    def update_bound(self) -> int:
        return self.w_bound * 2**self.shift + self.lr_int * self.grad_bound

    @property
    def m_prime_bits(self) -> int:
        return (self.update_bound >> self.shift).bit_length() + 1 + SIGMA

    @property
    def m_prime_bound(self) -> int:
        return (1 << self.m_prime_bits) - 1

    @property
    def refresh_mask_bound(self) -> int:
        return self.m_prime_bound * 2**self.shift + 2**self.shift - 1

    @property
    def q_bound(self) -> int:
        return ((self.update_bound + self.refresh_mask_bound) >> self.shift) + 1

    @staticmethod
    def _masked(bound: int) -> int:
        return bound + (1 << (bound.bit_length() + SIGMA))

    @property
    def row_slot_bits(self) -> int:
        """Slots of W by rows hold u + R, W' + M, Q and δ."""
        need = max(self._masked(self.u_bound), self.update_bound + self.refresh_mask_bound, self.q_bound,
                   self.delta_bound, self.w_bound)
        return need.bit_length() + 1

    @property
    def col_slot_bits(self) -> int:
        """Slots of W by columns hold g + R' and Q - M' on the way."""
        need = max(self._masked(self.g_bound), self.q_bound + self.m_prime_bound, self.w_bound)
        return need.bit_length() + 1

    def describe(self, public: PublicKey) -> str:
        rows, cols = self.layouts(public)
        return (f"secure layer d={self.d} h={self.h}: fixed point e 2^-{self.e_bits}, W 2^-{self.w_bits}, "
                f"delta 2^-{self.delta_bits}; |W| assumed <= {self.w_max}; rows {rows.slots}x{rows.slot_bits}-bit "
                f"slots ({rows.ciphertexts} ct), columns {cols.slots}x{cols.slot_bits}-bit ({cols.ciphertexts} ct)")

    def layouts(self, public: PublicKey) -> tuple[Layout, Layout]:
        return Layout.fit(self.h, self.row_slot_bits, public), Layout.fit(self.d, self.col_slot_bits, public)


@dataclass
class Side:
    """One party's handle on the layer."""

    endpoint: Endpoint
    public: PublicKey
    enc: Encryptor
    pool: WorkerPool | None
    plan: LayerPlan
    rows: Layout = field(init=False)
    cols: Layout = field(init=False)

    def __post_init__(self) -> None:
        self.rows, self.cols = self.plan.layouts(self.public)

    @cached_property
    def peer(self) -> str:
        return B if self.endpoint.cfg.role == A else A

    def checked(self, msg: dict, what: str, layout: Layout, scale: int, bound: int | None = None) -> Packed:
        """An encrypted matrix from the peer's message, checked against what the plan implies."""
        packed = Packed.from_message(msg, self.public, f"{what} from {self.peer}")
        if packed.layout != layout or packed.scale != scale or (bound is not None and packed.bound > bound):
            raise ProtocolError(f"{what} from {self.peer}: layout {packed.layout} at 2^{packed.scale} bounded by "
                                f"2^{packed.bound.bit_length()}, expected {layout} at 2^{scale}")
        return packed

    def receive(self, tag: str, what: str, layout: Layout, scale: int) -> Packed:
        return self.checked(self.endpoint.recv(self.peer, tag), what, layout, scale)

    def encrypt(self, values: np.ndarray, layout: Layout, scale: int, bound: int) -> Packed:
        return packing.encrypt(self.enc, values, layout, scale, bound, self.pool)


def _as_w(p: Packed, side: Side) -> Packed:
    """[W] with the layer's assumed bound |W| ≤ w_max (the value is W; its tracked bound included masks)."""
    return Packed(p.public, p.layout, side.plan.w_bits, side.plan.w_bound, p.cts)


def _draw_share(plan: LayerPlan, rng: np.random.Generator) -> np.ndarray:
    """A secret share of W0: normal with half the variance, clipped so two shares stay within w_max."""
    std = (plan.init_std or 1 / math.sqrt(plan.d)) / math.sqrt(2)
    share = np.clip(rng.normal(0.0, std, size=(plan.d, plan.h)), -plan.w_max / 2, plan.w_max / 2)
    return np.array([[int(v) for v in row] for row in np.rint(share * 2**plan.w_bits)], dtype=object)


def _secret_rng() -> np.random.Generator:
    return np.random.default_rng(secrets.randbits(128))


# ---- initialisation ---------------------------------------------------------------------


def init_a_share_weights(a: Side, label: str) -> Packed:
    """A: encrypt its share both ways, send the rows to B, add B's columns. Returns A's [W0] by columns."""
    share = _draw_share(a.plan, _secret_rng())
    half = a.plan.w_bound // 2 + 1
    a.endpoint.send(B, f"{label}/share_rows", a.encrypt(share, a.rows, a.plan.w_bits, half).to_message())
    theirs = a.receive(f"{label}/share_cols", "B's share of W0", a.cols, a.plan.w_bits)
    return _as_w(packing.add(a.encrypt(share.T, a.cols, a.plan.w_bits, half), theirs), a)


def init_b_share_weights(b: Side, label: str) -> Packed:
    """B: encrypt its share both ways, send the columns to A, add A's rows. Returns B's [W0] by rows."""
    share = _draw_share(b.plan, _secret_rng())
    half = b.plan.w_bound // 2 + 1
    b.endpoint.send(A, f"{label}/share_cols", b.encrypt(share.T, b.cols, b.plan.w_bits, half).to_message())
    theirs = b.receive(f"{label}/share_rows", "A's share of W0", b.rows, b.plan.w_bits)
    return _as_w(packing.add(b.encrypt(share, b.rows, b.plan.w_bits, half), theirs), b)


# ---- forward ------------------------------------------------------------------------------


def b_forward_contribution(b: Side, label: str, w_rows: Packed, e_q: np.ndarray) -> None:
    """Step 1 (B): [u] = e_B·[W] by rows, sent to A."""
    u = packing.lincomb(e_q, b.plan.e_bound, b.plan.e_bits, w_rows, b.pool)
    b.endpoint.send(A, f"{label}/u", u.to_message())


def a_unmask_contribution(a: Side, label: str) -> np.ndarray:
    """Steps 2-3 (A): mask [u], have the coordinator decrypt u + R, remove R. Integers at 2^(e_bits + w_bits)."""
    u = a.receive(f"{label}/u", "[u]", a.rows, a.plan.e_bits + a.plan.w_bits)
    return decrypt_masked(a.endpoint, "forward", label, u, a.enc, a.pool)


# ---- backward -----------------------------------------------------------------------------


def a_send_gradients(a: Side, label: str, w_cols: Packed, delta_q: np.ndarray) -> None:
    """Step 4 (A): [g] = δ·[W]ᵀ by columns and [δ] by rows, sent to B."""
    g = packing.lincomb(delta_q, a.plan.delta_bound, a.plan.delta_bits, w_cols, a.pool)
    delta = a.encrypt(delta_q, a.rows, a.plan.delta_bits, a.plan.delta_bound)
    a.endpoint.send(B, f"{label}/gradients", {"g": g.to_message(), "delta": delta.to_message()})


def b_unmask_gradient(b: Side, label: str) -> tuple[np.ndarray, Packed]:
    """Step 5 (B): g = δ·Wᵀ through a mask and the coordinator (integers at 2^(delta_bits + w_bits)); and [δ]."""
    p = b.plan
    msg = b.endpoint.recv(A, f"{label}/gradients")
    g = b.checked(msg["g"], "[g]", b.cols, p.delta_bits + p.w_bits)
    delta = b.checked(msg["delta"], "[delta]", b.rows, p.delta_bits, p.delta_bound)
    return decrypt_masked(b.endpoint, "backward", label, g, b.enc, b.pool), delta


def b_update_weights(b: Side, w_rows: Packed, e_q: np.ndarray, delta: Packed) -> Packed:
    """Step 6 (B): [W'] = 2^s·[W] - L·[e_Bᵀ δ], at scale 2^(e_bits + delta_bits + lr_bits)."""
    p = b.plan
    grad = packing.lincomb(np.ascontiguousarray(e_q.T), p.e_bound, p.e_bits, delta, b.pool)
    kept = packing.multiply(w_rows, 2**p.shift, extra_scale=p.shift)
    return packing.add(kept, packing.multiply(grad, -p.lr_int, extra_scale=p.lr_bits))


# ---- refresh --------------------------------------------------------------------------------


def b_send_masked_update(b: Side, label: str, w_new: Packed) -> np.ndarray:
    """Step 7, B: send [W' + M'·2^s + M''] by rows and [M'] by columns; returns M'."""
    p = b.plan
    m_prime = np.array([[secrets.randbits(p.m_prime_bits) for _ in range(p.h)] for _ in range(p.d)], dtype=object)
    low = np.array([[secrets.randbits(p.shift) for _ in range(p.h)] for _ in range(p.d)], dtype=object)
    mask = m_prime * 2**p.shift + low
    masked = packing.add(w_new, b.encrypt(mask, b.rows, w_new.scale, p.refresh_mask_bound))
    m_cols = b.encrypt(np.ascontiguousarray(m_prime.T), b.cols, p.w_bits, p.m_prime_bound)
    b.endpoint.send(A, f"{label}/refresh", {"masked": masked.to_message(), "m_cols": m_cols.to_message()})
    return m_prime


def a_refresh_weights(a: Side, label: str) -> Packed:
    """Step 7, A: decrypt W' + M, divide by 2^s, re-encrypt both ways; returns A's new [W] by columns."""
    p = a.plan
    msg = a.endpoint.recv(B, f"{label}/refresh")
    masked = a.checked(msg["masked"], "[W'+M]", a.rows, p.w_bits + p.shift)
    m_cols = a.checked(msg["m_cols"], "[M']", a.cols, p.w_bits, p.m_prime_bound)
    plain = packing.unpack(request_decryption(a.endpoint, "refresh", label, masked.flat()), a.rows, masked.rows,
                           a.public.n)
    q = plain >> p.shift  # floor division: exact for the M' part, stochastic rounding of W'/2^s thanks to M''
    a.endpoint.send(B, f"{label}/q_rows", a.encrypt(q, a.rows, p.w_bits, p.q_bound).to_message())
    q_cols = a.encrypt(np.ascontiguousarray(q.T), a.cols, p.w_bits, p.q_bound)
    return _as_w(packing.add(q_cols, packing.multiply(m_cols, -1)), a)


def b_finish_refresh(b: Side, label: str, m_prime: np.ndarray) -> Packed:
    """Step 7, B: remove M' from A's [Q] by rows; returns B's new [W] by rows."""
    q_rows = b.receive(f"{label}/q_rows", "[Q] from party_a", b.rows, b.plan.w_bits)
    return _as_w(packing.add_plain(q_rows, -m_prime, b.plan.m_prime_bound), b)
