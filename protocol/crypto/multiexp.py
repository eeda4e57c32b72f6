"""Many products of powers at once: out_i = Π_k base_k^(s_ik) mod M, all s_ik ≥ 0.

This is the homomorphic linear combination Σ_k s_ik·[C_k] that every secure step
uses. Two ways, chosen by counting modular multiplications:

- comb: per base a table of base^(v·2^(c·l)); each output then costs one
  multiplication per base and non-zero c-bit digit. Pays when many outputs share
  few bases (step 1: n users over d rows of W).
- buckets (Pippenger): per output and c-bit window, multiply each base into the
  bucket of its digit, then sum the buckets with running products. Pays when few
  outputs draw on many bases (step 6: d rows of ∇W over n users).

Both do only multiplications and squarings mod M, so their gmpy2 floor is the plan's
multiplication count. Large jobs are split by output over the role's worker pool.
"""

from __future__ import annotations

from dataclasses import dataclass

import gmpy2
import numpy as np

from protocol.compute.workers import WorkerPool
from protocol.wire.codec import BigInts

mpz = gmpy2.mpz
_MAX_WINDOW = 10
_PARALLEL_MULTS = 1500  # below this a worker round trip costs more than it saves


@dataclass(frozen=True)
class Plan:
    method: str  # "comb" or "buckets"
    window: int
    mults: int  # modular multiplications and squarings, an upper bound


def _comb_mults(bases: int, outputs: int, bits: int, c: int) -> int:
    windows = -(-bits // c)
    return bases * windows * ((1 << c) - 1) + outputs * bases * windows


def _bucket_mults(bases: int, outputs: int, bits: int, c: int) -> int:
    windows = -(-bits // c)
    return outputs * (windows * (bases + 2 * ((1 << c) - 1)) + bits)


def plan(bases: int, outputs: int, bits: int) -> Plan:
    """The cheaper method and window for `outputs` combinations of `bases` with `bits`-bit scalars."""
    bits = max(bits, 1)
    options = [Plan("comb", c, _comb_mults(bases, outputs, bits, c)) for c in range(1, _MAX_WINDOW + 1)]
    options += [Plan("buckets", c, _bucket_mults(bases, outputs, bits, c)) for c in range(1, _MAX_WINDOW + 1)]
    return min(options, key=lambda p: p.mults)


def _comb(bases: list, scalars: np.ndarray, mod: mpz, c: int, bits: int) -> list:
    windows = -(-bits // c)
    mask = (1 << c) - 1
    tables = []
    for base in bases:
        rows, b = [], base
        for level in range(windows):
            row = [None, b]
            for _ in range(2, 1 << c):
                row.append(row[-1] * b % mod)
            rows.append(row)
            if level + 1 < windows:
                b = row[-1] * b % mod
        tables.append(rows)
    digits = [(scalars >> (c * level)) & mask for level in range(windows)]
    out = []
    for i in range(scalars.shape[0]):
        acc = mpz(1)
        for level, d in enumerate(digits):
            for k in np.flatnonzero(d[i]):
                acc = acc * tables[k][level][d[i, k]] % mod
        out.append(acc)
    return out


def _buckets(bases: list, scalars: np.ndarray, mod: mpz, c: int, bits: int) -> list:
    windows = -(-bits // c)
    mask = (1 << c) - 1
    out = []
    for i in range(scalars.shape[0]):
        acc = mpz(1)
        for level in reversed(range(windows)):
            acc = gmpy2.powmod(acc, 1 << c, mod)
            digits = (scalars[i] >> (c * level)) & mask
            buckets: list = [None] * (mask + 1)
            for k in np.flatnonzero(digits):
                d = digits[k]
                buckets[d] = bases[k] if buckets[d] is None else buckets[d] * bases[k] % mod
            running, total = None, None
            for d in range(mask, 0, -1):
                if buckets[d] is not None:
                    running = buckets[d] if running is None else running * buckets[d] % mod
                if running is not None:
                    total = running if total is None else total * running % mod
            if total is not None:
                acc = acc * total % mod
        out.append(acc)
    return out


def power_products(bases: list, scalars: np.ndarray, mod: int) -> list:
    """Π_k bases[k]^scalars[i, k] mod `mod` for every row i; scalars are non-negative int64."""
    scalars = np.asarray(scalars, dtype=np.int64)
    if scalars.ndim != 2 or scalars.shape[1] != len(bases):
        raise ValueError(f"scalars of shape {scalars.shape} do not match {len(bases)} bases")
    if scalars.size and scalars.min() < 0:
        raise ValueError("power_products takes non-negative scalars")
    mod = mpz(mod)
    bits = int(scalars.max()).bit_length() if scalars.size else 1
    p = plan(len(bases), scalars.shape[0], bits)
    run = _comb if p.method == "comb" else _buckets
    return run([mpz(b) for b in bases], scalars, mod, p.window, max(bits, 1))


def power_products_task(bases: list, scalars: np.ndarray, mod: int) -> BigInts:
    """Worker entry for one share of the outputs."""
    return BigInts(power_products(bases, scalars, mod))


def parallel_power_products(bases: list, scalars: np.ndarray, mod: int, pool: WorkerPool | None) -> list:
    """`power_products`, split by output rows over `pool` when the job is big enough to pay for it."""
    scalars = np.asarray(scalars, dtype=np.int64)
    rows = scalars.shape[0]
    bits = int(scalars.max()).bit_length() if scalars.size else 1
    if pool is None or pool.size == 0 or rows < 2 or plan(len(bases), rows, bits).mults < _PARALLEL_MULTS:
        return power_products(bases, scalars, mod)
    parts = np.array_split(np.arange(rows), min(pool.size, rows))
    shipped = BigInts([mpz(b) for b in bases])
    futures = [pool.submit("protocol.crypto.multiexp:power_products_task", shipped, scalars[idx], int(mod))
               for idx in parts]
    return [c for f in futures for c in f.result()]
