"""The plan of the secure layer: widths, fixed-point scales, bounds and slot layouts.

A decides the plan and sends it to B with the first command; both derive every
integer bound and slot width from it, so neither has to trust a bound the other
declares later. B refuses a plan outside `LIMITS` (which would size its masks or its
work from absurd numbers) or one made for another Paillier key than the one B holds.
See docs/design.md, "Numerics of the packed ciphertexts".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from protocol.crypto.packing import SIGMA, Layout
from protocol.crypto.paillier import PublicKey
from protocol.errors import ProtocolError
from protocol.wire.message import Message

LIMITS: dict[str, tuple[float, float]] = {  # (low, high] for each number of the plan
    "d": (0, 1024), "h": (0, 1024), "batch_users": (0, 65536),
    "e_bits": (0, 32), "w_bits": (0, 32), "delta_bits": (0, 32),
    "lr_w": (0, 1024), "w_max": (0, 65536), "delta_max": (0, 65536),
}


@dataclass(frozen=True)
class LayerPlan(Message):
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
    key_fingerprint: str = ""  # the coordinator's Paillier key the plan is for; A fills it in before sending

    def __post_init__(self) -> None:
        for name, (low, high) in LIMITS.items():
            value = getattr(self, name)
            if not low < value <= high:
                raise ProtocolError(f"layer plan: {name} = {value} is outside ({low}, {high}]")
        if not 0 <= self.init_std <= self.w_max:
            raise ProtocolError(f"layer plan: init_std = {self.init_std} is outside [0, w_max]")

    def check_key(self, fingerprint: str) -> None:
        """Refuse a plan made for another key than the coordinator's key this party received."""
        if self.key_fingerprint != fingerprint:
            raise ProtocolError(f"layer plan is for Paillier key {self.key_fingerprint or '(none)'}, but the "
                                f"coordinator's key is {fingerprint}")

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
