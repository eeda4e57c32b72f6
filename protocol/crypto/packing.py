"""Packed fixed-point Paillier: matrices of signed integers, many values per ciphertext.

A row vector v of `length` integers is cut into groups of `slots` values; each group
becomes one plaintext P = Σ_t v_t·2^(w·t) (w = slot bits), encrypted under the
coordinator's key. Decoding maps P > n/2 to P - n and reads signed w-bit digits from
the bottom up. Addition and multiplication by a signed scalar act slot by slot as
long as every slot stays inside ±2^(w-1); with slots·w ≤ bits(n) - 1 the packed
plaintext then stays inside ±n/2 as well.

Every `Packed` matrix carries its fixed-point scale and a bound on |value| that does
not depend on the data (so it may travel with the ciphertexts). Each operation
computes the bound of its result and refuses, with a ProtocolError naming the
operation, anything that could overflow a slot. Masks for the coordinator are
uniform over 2^σ times the value bound (σ = 60) and are added as fresh encryptions,
so the ciphertext it decrypts is re-randomised too.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import gmpy2
import numpy as np

from protocol.compute.workers import WorkerPool
from protocol.crypto.multiexp import parallel_power_products
from protocol.crypto.paillier import Encryptor, PrivateKey, PublicKey
from protocol.errors import ProtocolError
from protocol.wire.codec import BigInts
from protocol.wire.message import BigIntList, Message

mpz = gmpy2.mpz
SIGMA = 60  # statistical distance 2^-60 per masked slot; a run that decrypts 10^9 slots stays below 2^-30
_PARALLEL_ENCRYPTIONS = 16


@dataclass(frozen=True)
class Layout(Message):
    """`length` values per row vector, `slots` of `slot_bits` bits per ciphertext."""

    length: int
    slot_bits: int
    slots: int

    @classmethod
    def fit(cls, length: int, slot_bits: int, public: PublicKey) -> "Layout":
        slots = min(length, (public.bits - 1) // slot_bits)
        if slots < 1:
            raise ProtocolError(f"a {slot_bits}-bit slot does not fit a {public.bits}-bit key")
        return cls(length, slot_bits, slots)

    @property
    def ciphertexts(self) -> int:
        return -(-self.length // self.slots)

    @property
    def capacity(self) -> int:
        """The largest |value| a slot holds."""
        return (1 << (self.slot_bits - 1)) - 1

    def check(self, bound: int, what: str) -> None:
        if bound > self.capacity:
            raise ProtocolError(f"{what}: values up to 2^{bound.bit_length()} would overflow {self.slot_bits}-bit "
                                f"slots (at most 2^{self.slot_bits - 1}); widen the slots or lower a fixed-point scale")

    def check_key(self, public: PublicKey) -> None:
        if self.slot_bits < 2 or self.slots < 1 or self.slots > self.length or \
                self.slots * self.slot_bits > public.bits - 1:
            raise ProtocolError(f"layout of {self.slots} slots of {self.slot_bits} bits does not fit a "
                                f"{public.bits}-bit key")


def pack(values: np.ndarray, layout: Layout) -> list[list[int]]:
    """Signed plaintext integers, `layout.ciphertexts` per row."""
    w, s = layout.slot_bits, layout.slots
    out = []
    for row in values:
        groups = []
        for start in range(0, layout.length, s):
            p = 0
            for v in reversed(row[start : start + s]):
                p = (p << w) + int(v)
            groups.append(p)
        out.append(groups)
    return out


def pack_flat(values: np.ndarray, layout: Layout) -> list[int]:
    """`pack`, row after row in one list: the plaintexts of a matrix's ciphertexts in order."""
    return [p for row in pack(values, layout) for p in row]


def unpack(plaintexts: list, layout: Layout, rows: int, n: mpz) -> np.ndarray:
    """Values (rows x length, Python ints) from decrypted plaintexts in [0, n), row-major."""
    w, s = layout.slot_bits, layout.slots
    full, half = 1 << w, 1 << (w - 1)
    out = np.empty((rows, layout.length), dtype=object)
    per_row = layout.ciphertexts
    for r in range(rows):
        for g in range(per_row):
            p = int(plaintexts[r * per_row + g])
            p = p - int(n) if p > int(n) // 2 else p
            for t in range(min(s, layout.length - g * s)):
                digit = p & (full - 1)
                if digit >= half:
                    digit -= full
                out[r, g * s + t] = digit
                p = (p - digit) >> w
    return out


def _as_int_matrix(values: np.ndarray, length: int, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=object)
    if arr.ndim != 2 or arr.shape[1] != length:
        raise ProtocolError(f"{what}: expected a matrix with {length} columns, got shape {arr.shape}")
    return arr


def _max_abs(arr: np.ndarray) -> int:
    return max((abs(int(v)) for v in arr.ravel()), default=0)


@dataclass(frozen=True)
class Packed:
    """[X] for an integer matrix X: one list of ciphertexts per row."""

    public: PublicKey
    layout: Layout
    scale: int
    bound: int
    cts: list[list[mpz]]

    @property
    def rows(self) -> int:
        return len(self.cts)

    def flat(self) -> list[mpz]:
        return [c for row in self.cts for c in row]

    def to_wire(self) -> "EncryptedMatrix":
        return EncryptedMatrix(self.layout, self.scale, self.bound, self.rows, self.flat())

    @classmethod
    def from_wire(cls, m: "EncryptedMatrix", public: PublicKey, what: str) -> "Packed":
        """Rebuild a matrix that arrived as `m`, refusing one that does not fit the key or is not ciphertexts."""
        m.layout.check_key(public)
        m.layout.check(m.bound, what)
        if m.bound < 0:
            raise ProtocolError(f"{what}: negative bound {m.bound}")
        if m.rows < 0 or len(m.cts) != m.rows * m.layout.ciphertexts:
            raise ProtocolError(f"{what}: {len(m.cts)} ciphertexts for {m.rows} rows of {m.layout.ciphertexts}")
        for i, c in enumerate(m.cts):
            public.check_ciphertext(c, f"{what}: ciphertext {i}")
        per = m.layout.ciphertexts
        return cls(public, m.layout, m.scale, m.bound, [m.cts[r * per : (r + 1) * per] for r in range(m.rows)])

    @classmethod
    def from_message(cls, body: object, public: PublicKey, what: str, peer: str = "the file") -> "Packed":
        """`from_wire` for a raw message body (a saved matrix, or a test's hand-made body)."""
        return cls.from_wire(EncryptedMatrix.from_message(body, peer, what), public, what)


@dataclass(frozen=True)
class EncryptedMatrix(Message):
    """A `Packed` matrix as it travels: layout, scale, bound, row count and the ciphertexts row by row."""

    layout: Layout
    scale: int
    bound: int
    rows: int
    cts: BigIntList


# ---- encryption and decryption ------------------------------------------------------

_ENCRYPTORS: dict[tuple[int, str], Encryptor] = {}


def _encryptor(n: int, mode: str) -> Encryptor:
    key = (int(n), mode)
    if key not in _ENCRYPTORS:
        _ENCRYPTORS[key] = Encryptor(PublicKey(mpz(n)), mode)
    return _ENCRYPTORS[key]


def encrypt_task(n: int, mode: str, plaintexts: list) -> BigInts:
    """Worker entry: fresh encryptions under the key n (each worker keeps its own DJN table)."""
    enc = _encryptor(n, mode)
    return BigInts([enc.encrypt(int(p)) for p in plaintexts])


def encrypt_plaintexts(enc: Encryptor, plaintexts: list, pool: WorkerPool | None) -> list[mpz]:
    """Fresh encryptions of signed integers, spread over the pool when there are many."""
    if pool is None or pool.size == 0 or len(plaintexts) < _PARALLEL_ENCRYPTIONS:
        return [enc.encrypt(p) for p in plaintexts]
    parts = np.array_split(np.arange(len(plaintexts)), min(pool.size, len(plaintexts)))
    n = int(enc.public.n)
    futures = [pool.submit("protocol.crypto.packing:encrypt_task", n, enc.mode, [int(plaintexts[i]) for i in idx])
               for idx in parts]
    return [c for f in futures for c in f.result()]


def encrypt(enc: Encryptor, values: np.ndarray, layout: Layout, scale: int, bound: int,
            pool: WorkerPool | None = None) -> Packed:
    """[values] for an integer matrix with every |value| ≤ bound."""
    values = _as_int_matrix(values, layout.length, "encrypt")
    layout.check_key(enc.public)
    layout.check(bound, "encrypt")
    if _max_abs(values) > bound:
        raise ProtocolError(f"encrypt: a value of magnitude 2^{_max_abs(values).bit_length()} exceeds the declared "
                            f"bound 2^{bound.bit_length()}")
    flat = pack_flat(values, layout)
    cts = encrypt_plaintexts(enc, flat, pool)
    per = layout.ciphertexts
    return Packed(enc.public, layout, scale, bound, [cts[r * per : (r + 1) * per] for r in range(len(values))])


def decrypt(key: PrivateKey, packed: Packed) -> np.ndarray:
    """The integer matrix behind `packed` (local use: tests and benches; parties ask the coordinator)."""
    plaintexts = [key.raw_decrypt(c) for c in packed.flat()]
    return unpack(plaintexts, packed.layout, packed.rows, key.public.n)


# ---- homomorphic operations ----------------------------------------------------------


def _same_shape(a: Packed, b: Packed, what: str) -> None:
    if a.layout != b.layout or a.rows != b.rows or a.public != b.public:
        raise ProtocolError(f"{what}: matrices differ in layout, rows or key")
    if a.scale != b.scale:
        raise ProtocolError(f"{what}: fixed-point scales differ (2^{a.scale} and 2^{b.scale})")


def add(a: Packed, b: Packed) -> Packed:
    """[A + B]."""
    _same_shape(a, b, "add")
    bound = a.bound + b.bound
    a.layout.check(bound, "add")
    n2 = a.public.n2
    cts = [[x * y % n2 for x, y in zip(ra, rb)] for ra, rb in zip(a.cts, b.cts)]
    return Packed(a.public, a.layout, a.scale, bound, cts)


def add_plain(a: Packed, values: np.ndarray, bound: int) -> Packed:
    """[A + V] for a plaintext integer matrix V with |V| ≤ bound (no new randomness)."""
    values = _as_int_matrix(values, a.layout.length, "add_plain")
    if _max_abs(values) > bound:
        raise ProtocolError("add_plain: a value exceeds its declared bound")
    total = a.bound + bound
    a.layout.check(total, "add_plain")
    cts = [[a.public.raw_add_plain(c, p) for c, p in zip(row, plains)]
           for row, plains in zip(a.cts, pack(values, a.layout))]
    return Packed(a.public, a.layout, a.scale, total, cts)


def multiply(a: Packed, k: int, extra_scale: int = 0) -> Packed:
    """[k·A] for one signed integer k (e.g. 2^s to change scale, or -lr); inverses computed once per ciphertext."""
    bound = a.bound * abs(k)
    a.layout.check(bound, "multiply")
    cts = [[a.public.raw_mul(c, k) for c in row] for row in a.cts]
    return Packed(a.public, a.layout, a.scale + extra_scale, bound, cts)


def lincomb(scalars: np.ndarray, scalar_bound: int, scalar_scale: int, base: Packed,
            pool: WorkerPool | None = None) -> Packed:
    """[S·B]: row i of the result is Σ_k S[i, k]·[B_k] for a signed integer matrix S with |S| ≤ scalar_bound.

    Negative scalars use an offset: Π_k [B_k]^(S_ik + o) · (Π_k [B_k])^(-o) with o = scalar_bound,
    so one inverse per ciphertext column serves every output.
    """
    s = np.asarray(scalars, dtype=np.int64)
    if s.ndim != 2 or s.shape[1] != base.rows:
        raise ProtocolError(f"lincomb: scalars of shape {s.shape} for {base.rows} encrypted rows")
    if s.size and int(np.abs(s).max()) > scalar_bound:
        raise ProtocolError(f"lincomb: a scalar of magnitude {int(np.abs(s).max())} exceeds its bound {scalar_bound}")
    bound = base.rows * scalar_bound * base.bound
    base.layout.check(bound, "lincomb")
    n2 = base.public.n2
    shifted = s + scalar_bound
    columns = []
    for j in range(base.layout.ciphertexts):
        col = [row[j] for row in base.cts]
        products = parallel_power_products(col, shifted, n2, pool)
        total = mpz(1)
        for c in col:
            total = total * c % n2
        correction = gmpy2.invert(gmpy2.powmod(total, scalar_bound, n2), n2)
        columns.append([p * correction % n2 for p in products])
    cts = [[columns[j][i] for j in range(len(columns))] for i in range(s.shape[0])]
    return Packed(base.public, base.layout, base.scale + scalar_scale, bound, cts)


# ---- masks for the coordinator ---------------------------------------------------------


def draw_mask(rows: int, length: int, bound: int) -> tuple[np.ndarray, int]:
    """Masks uniform over [0, 2^(β+σ)) with β = bits of `bound`, and their bound."""
    bits = bound.bit_length() + SIGMA
    mask = np.empty((rows, length), dtype=object)
    for idx in np.ndindex(rows, length):
        mask[idx] = secrets.randbits(bits)
    return mask, (1 << bits) - 1


def mask(a: Packed, enc: Encryptor, pool: WorkerPool | None = None) -> tuple[Packed, np.ndarray]:
    """([A + R], R) with R a fresh statistical mask added as a fresh encryption."""
    r, r_bound = draw_mask(a.rows, a.layout.length, a.bound)
    a.layout.check(a.bound + r_bound, "mask")
    return add(a, encrypt(enc, r, a.layout, a.scale, r_bound, pool)), r


def unmask(plaintexts: list, packed_mask: list, layout: Layout, rows: int, n: mpz) -> np.ndarray:
    """A from the coordinator's decryption of [A + R], given R as `pack_flat(R, layout)`."""
    return unpack([(p - r) % n for p, r in zip(plaintexts, packed_mask)], layout, rows, n)
