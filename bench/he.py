"""Homomorphic-encryption benchmark: packed engine vs naive phe vs the gmpy2 floor.

    python -m bench.he                 # 2048 and 3072 bits
    python -m bench.he --bits 2048 --users 256

Workloads are those of the secure interactive layer at d = h = 16:
- encrypt: n vectors of 16 values (packed: one ciphertext per vector);
- decrypt: the same ciphertexts back to values (one core; the coordinator adds threads);
- forward linear combination: u_i = Σ_k e_ik·[W_k,:] for n users (step 1).

"naive phe" is python-paillier with one EncryptedNumber per value (W as 256 of them,
e_B as floats), as FATE-style split learning does. "floor" times exactly the gmpy2
operations the packed engine performs for the same inputs (modular multiplications,
exponentiations, inversions counted from the actual scalars), in a bare loop: the
engine's overhead over it is packing, bound checks and Python glue. All figures come
from this one run; the machine drifts, so read the ratios. Also writes runs/bench/he.json.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import time
from pathlib import Path

import gmpy2
import numpy as np
from phe import paillier as phe_paillier

from party_a.config import ModelSettings, SecureSettings, TrainSettings, layer_plan
from protocol.compute.workers import WorkerPool
from protocol.crypto import packing
from protocol.crypto.multiexp import plan
from protocol.crypto.paillier import Encryptor, PrivateKey, PublicKey

PLAN = layer_plan(ModelSettings(), TrainSettings(), SecureSettings())  # the default run's layer
D, H = PLAN.d, PLAN.h
E_BITS, W_BITS = PLAN.e_bits, PLAN.w_bits  # fixed-point bits of e_B (|e_B| ≤ 1) and of W
SLOT_BITS = PLAN.row_slot_bits


def timed(fn, repeat: int = 3) -> float:
    """Best of `repeat` wall times (the machine's speed drifts)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def exact_mults(scalars: np.ndarray, bases: int) -> tuple[int, int]:
    """(multiplications, squarings) power_products does for these non-negative scalars."""
    bits = max(int(scalars.max()).bit_length(), 1)
    p = plan(bases, scalars.shape[0], bits)
    c, windows, mask = p.window, -(-bits // p.window), (1 << p.window) - 1
    digits = [(scalars >> (c * lvl)) & mask for lvl in range(windows)]
    if p.method == "comb":
        table = bases * (windows * ((1 << c) - 1) - 1)
        return table + sum(int(np.count_nonzero(d)) for d in digits), 0
    mults = 0
    for i in range(scalars.shape[0]):
        for d in digits:
            used = np.unique(d[i][d[i] > 0])
            mults += int(np.count_nonzero(d[i])) - len(used) + 2 * len(used) + 1  # buckets, running sums, accumulate
    return mults, scalars.shape[0] * windows * c


def floor_seconds(public: PublicKey, mults: int, squarings: int, powmods: list[tuple[gmpy2.mpz, int]],
                  inversions: int) -> float:
    """Time of the given gmpy2 operation counts on random operands mod n^2."""
    n2 = public.n2
    pool = [gmpy2.mpz(secrets.randbelow(int(n2))) for _ in range(64)]

    def run() -> None:
        acc = pool[0]
        for i in range(mults):
            acc = acc * pool[i & 63] % n2
        for _ in range(squarings):
            acc = acc * acc % n2
        for mod, exponent in powmods:
            gmpy2.powmod(pool[0] % mod, exponent, mod)
        for i in range(inversions):
            gmpy2.invert(pool[i & 63], n2)

    return timed(run)


def bench_bits(bits: int, users: int, naive_users: int, pool: WorkerPool) -> dict:
    phe_pub, phe_priv = phe_paillier.generate_paillier_keypair(n_length=bits)
    key = PrivateKey(PublicKey(gmpy2.mpz(phe_pub.n)), gmpy2.mpz(phe_priv.p), gmpy2.mpz(phe_priv.q))
    public = key.public
    enc = Encryptor(public)
    layout = packing.Layout.fit(H, SLOT_BITS, public)
    rng = np.random.default_rng(0)
    w = rng.integers(-PLAN.w_bound, PLAN.w_bound, size=(D, H)).astype(object)
    x = rng.integers(-(2**40), 2**40, size=(users, H)).astype(object)
    e = rng.integers(-(PLAN.e_bound), PLAN.e_bound, size=(users, D))
    cw = packing.encrypt(enc, w, layout, W_BITS, PLAN.w_bound)
    cx = packing.encrypt(enc, x, layout, 0, 2**40)
    values = users * H
    out: dict = {"bits": bits, "users": users}

    # encrypt
    t_enc = timed(lambda: packing.encrypt(enc, x, layout, 0, 2**40))
    t_enc_pool = timed(lambda: packing.encrypt(enc, x, layout, 0, 2**40, pool))
    windows = -(-enc._exp_bits // 8)
    t_enc_floor = floor_seconds(public, users * (windows + 2), 0, [], 0)
    naive_vals = [float(v) / 2**20 for v in rng.standard_normal(naive_users * 4)]
    t_enc_naive = timed(lambda: [phe_pub.encrypt(v) for v in naive_vals], repeat=1)
    out["encrypt"] = {"packed": values / t_enc, "packed_pool": values / t_enc_pool, "floor": values / t_enc_floor,
                      "naive": len(naive_vals) / t_enc_naive}

    # decrypt
    cts = cx.flat()
    t_dec = timed(lambda: packing.unpack([key.raw_decrypt(c) for c in cts], layout, users, public.n))
    crt = [(key.p * key.p, key.p - 1), (key.q * key.q, key.q - 1)]
    t_dec_floor = floor_seconds(public, 0, 0, crt * len(cts), 0)
    naive_cts = [phe_pub.encrypt(v) for v in naive_vals]
    t_dec_naive = timed(lambda: [phe_priv.decrypt(c) for c in naive_cts], repeat=1)
    out["decrypt"] = {"packed": values / t_dec, "floor": values / t_dec_floor, "naive": len(naive_cts) / t_dec_naive}

    # forward linear combination, step 1
    t_lin = timed(lambda: packing.lincomb(e, PLAN.e_bound, E_BITS, cw))
    t_lin_pool = timed(lambda: packing.lincomb(e, PLAN.e_bound, E_BITS, cw, pool))
    mults, squarings = exact_mults(e + PLAN.e_bound, D)
    correction = D + users  # product of the column, and one multiplication per output
    t_lin_floor = floor_seconds(public, mults + correction, squarings, [(public.n2, PLAN.e_bound)], 1)
    w_naive = [[phe_pub.encrypt(float(v) / 2**W_BITS) for v in row] for row in w]
    e_naive = e[:naive_users] / 2.0**E_BITS

    def naive_forward() -> None:
        for i in range(naive_users):
            for j in range(H):
                acc = w_naive[0][j] * float(e_naive[i, 0])
                for k in range(1, D):
                    acc = acc + w_naive[k][j] * float(e_naive[i, k])

    t_lin_naive = timed(naive_forward, repeat=1)
    out["lincomb"] = {"packed": values / t_lin, "packed_pool": values / t_lin_pool, "floor": values / t_lin_floor,
                      "naive": naive_users * H / t_lin_naive}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bits", default="2048,3072", help="comma-separated key sizes")
    parser.add_argument("--users", type=int, default=256, help="vectors per workload for the packed engine")
    parser.add_argument("--naive-users", type=int, default=4, help="users for naive phe (it is slow)")
    args = parser.parse_args()
    results = []
    with WorkerPool() as pool:
        for bits in (int(b) for b in args.bits.split(",")):
            print(f"measuring {bits}-bit keys ...", flush=True)
            results.append(bench_bits(bits, args.users, args.naive_users, pool))
        workers = pool.size
    print(f"\nvalues per second (d = {D}, h = {H}, one core unless marked; pool = {workers} worker processes)")
    print(f"{'bits':>5} {'operation':>9} | {'naive phe':>10} | {'packed':>10} | {'pool':>10} | {'floor':>10} | "
          f"{'packed/naive':>12} | {'floor/packed':>12}")
    for r in results:
        for op in ("encrypt", "decrypt", "lincomb"):
            f = r[op]
            pooled = f"{f['packed_pool']:10,.0f}" if "packed_pool" in f else f"{'-':>10}"
            print(f"{r['bits']:>5} {op:>9} | {f['naive']:10,.0f} | {f['packed']:10,.0f} | {pooled} | "
                  f"{f['floor']:10,.0f} | {f['packed'] / f['naive']:11.1f}x | {f['floor'] / f['packed']:11.2f}x")
    print("\nfloor/packed is how much slower the engine is than bare gmpy2 doing its operations (target <= 1.5);")
    print("packed/naive for lincomb is the forward pattern's gain over one EncryptedNumber per value (target >= 30).")
    Path("runs/bench").mkdir(parents=True, exist_ok=True)
    Path("runs/bench/he.json").write_text(json.dumps({"cores": os.cpu_count(), "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
