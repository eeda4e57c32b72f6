"""Scale benchmark: the Ray backend against local worker processes, PSI at 10M x 10M, and scaling over Ray nodes.

    python -m bench.scale                                  # the full sizes (hours on 2 cores)
    python -m bench.scale --psi-ids 200000 --users 2000 --parts overhead scaling
    python -m bench.scale --parts scaling                  # on a quiet machine

In one run:
1. Ray overhead on the same cores: PSI n x n (--psi-ids) and one secure epoch of
   --users users, each with three real processes over mutual TLS, with local worker
   processes and with every role's pool on one local Ray cluster with as many logical
   CPUs as there are local workers (two per role), alternating --repeat times. The
   times compared are the PSI phase and the secure training (evaluation excluded),
   which leave out process and pool start-up; the ratio is Ray's mean time over
   local's (target <= 1.15).
2. PSI at --big-ids x --big-ids (default 10M; part "big") end to end with
   local workers, and each party's peak resident memory: its process and its worker
   processes, sampled every 0.2 s (target <= 4 GB).
3. Measured alone, in this process: the coordinator's decryption throughput
   (2048-bit CRT decryptions through `coordinator.decrypt.Decryptor`) and one party's
   PSI blinding throughput (hash to curve and X25519 in chunks through the pool), on
   a Ray cluster of 1 and then 2 worker nodes of one CPU each (the head has none).
   Scaling efficiency = rate with 2 nodes / (2 x rate with 1 node) (target >= 0.85).

--parts chooses among "overhead", "big" and "scaling" (all by default); each part's
results replace that part's in runs/bench/scale.json and keep the others'.

Results also go to runs/bench/scale.json. Ray is imported only once the first local
cluster is up (scenarios/ray_cluster.py keeps it on loopback).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import tempfile
import time
from pathlib import Path

from bench import psi as psi_bench
from bench import secure_step
from coordinator.decrypt import Decryptor
from protocol.compute.pool import open_pool
from protocol.crypto.paillier import DEFAULT_BITS, Encryptor, generate_keypair
from protocol.settings.config import Compute
from psi.ecdh import new_secret
from psi.session import PsiSettings
from scenarios.ray_cluster import local_cluster

OUT = Path("runs/bench")
WORKERS = 2  # per role, for both backends
PARTS = ("overhead", "big", "scaling")
ROLES = 3


def overhead(root: Path, psi_ids: int, users: int, batch_users: int, repeat: int) -> list[dict]:
    """PSI and one secure epoch with local workers and on one Ray cluster of as many CPUs, alternating `repeat`
    times so that drift in the machine's load hits both alike; the ratio of the mean times."""
    rows = []
    with local_cluster(head_cpus=WORKERS * ROLES) as address:
        ray = {"backend": "ray", "address": address}
        for name, job in (("PSI", lambda c, d: psi_bench.run_ours(d, psi_ids, WORKERS, c)["psi_s"]),
                          ("secure epoch", lambda c, d: secure_step.run_ours(d, users, batch_users, WORKERS,
                                                                            c)["seconds"])):
            seconds: dict[str, list[float]] = {"local": [], "ray": []}
            for k in range(repeat):
                for backend, compute in (("local", None), ("ray", ray)):
                    print(f"{name} with the {backend} backend, run {k + 1}/{repeat} ...", flush=True)
                    seconds[backend].append(job(compute, root / f"{name}-{backend}-{k}".replace(" ", "-")))
            size = f"{psi_ids:,} x {psi_ids:,}" if name == "PSI" else f"{users:,} users"
            local_s, ray_s = (sum(v) / repeat for v in (seconds["local"], seconds["ray"]))
            rows.append({"job": name, "size": size, "runs": seconds, "local_s": local_s, "ray_s": ray_s,
                         "ratio": ray_s / local_s})
    return rows


def decryption_rate(pool: object, count: int) -> float:
    """CRT decryptions per second through the coordinator's Decryptor on `pool`."""
    key = generate_keypair(DEFAULT_BITS)
    enc = Encryptor(key.public)
    plain = [secrets.randbelow(int(key.public.n)) for _ in range(count)]  # full width, as masked values are
    cts = [enc.encrypt(m) for m in plain]
    decryptor = Decryptor(key, pool)
    decryptor.decrypt(cts[: 4 * pool.size])  # warm every worker
    start = time.perf_counter()
    assert decryptor.decrypt(cts) == plain
    return count / (time.perf_counter() - start)


def blinding_rate(pool: object, ids: int) -> float:
    """IDs hashed to the curve and blinded per second, in PSI's chunks, through `pool`."""
    chunk = PsiSettings.chunk_size
    salt, secret = os.urandom(32), new_secret()
    pool.map("psi.ecdh:blind_ids", [([f"warm{i}"], salt, secret) for i in range(2 * pool.size)])
    tasks = [([f"customer.{k}@example.com" for k in range(i, min(i + chunk, ids))], salt, secret)
             for i in range(0, ids, chunk)]
    start = time.perf_counter()
    pool.map("psi.ecdh:blind_ids", tasks)
    return ids / (time.perf_counter() - start)


def scaling(ciphertexts: int, ids: int) -> list[dict]:
    rates: dict[str, dict[int, float]] = {"decryptions/s (coordinator)": {}, "IDs blinded/s (one party)": {}}
    for nodes in (1, 2):
        with local_cluster(head_cpus=0, worker_nodes=nodes) as address:
            with open_pool(Compute("ray", None, address)) as pool:
                assert pool.size == nodes
                print(f"decrypting and blinding on {nodes} Ray worker node(s) ...", flush=True)
                rates["decryptions/s (coordinator)"][nodes] = decryption_rate(pool, ciphertexts)
                rates["IDs blinded/s (one party)"][nodes] = blinding_rate(pool, ids)
    return [{"work": work, "one_node": r[1], "two_nodes": r[2], "efficiency": r[2] / (2 * r[1]),
             "load_average": os.getloadavg()[0]} for work, r in rates.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--psi-ids", type=int, default=1_000_000, help="IDs per party for the PSI overhead run")
    parser.add_argument("--users", type=int, default=20_000, help="users of the secure epoch overhead run")
    parser.add_argument("--batch-users", type=int, default=256, help="users per secure step")
    parser.add_argument("--repeat", type=int, default=2, help="alternating runs per backend in the overhead part")
    parser.add_argument("--big-ids", type=int, default=10_000_000, help="IDs per party for the memory run")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="which parts to run")
    parser.add_argument("--ciphertexts", type=int, default=4000, help="decryptions per scaling measurement")
    parser.add_argument("--blind-ids", type=int, default=262144, help="IDs blinded per scaling measurement")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    stored = OUT / "scale.json"
    results: dict = json.loads(stored.read_text()) if stored.exists() else {}
    results.update({"cores": os.cpu_count(), "workers_per_role": WORKERS})

    def save() -> None:
        stored.write_text(json.dumps(results, indent=2) + "\n")

    with tempfile.TemporaryDirectory() as tmp:
        if "overhead" in args.parts:
            results["overhead"] = overhead(Path(tmp), args.psi_ids, args.users, args.batch_users, args.repeat)
            save()
            print(f"\nRay overhead on the same {os.cpu_count()} cores ({WORKERS} workers per role, both backends; "
                  f"mean of {args.repeat} alternating runs; PSI phase and secure training time)")
            print(f"{'job':>13} | {'size':>21} | {'local s':>8} | {'Ray s':>8} | {'Ray / local':>11}")
            for r in results["overhead"]:
                print(f"{r['job']:>13} | {r['size']:>21} | {r['local_s']:8.1f} | {r['ray_s']:8.1f} | "
                      f"{r['ratio']:10.2f}x", flush=True)
        if "big" in args.parts:
            print(f"\nPSI {args.big_ids:,} x {args.big_ids:,} with local workers ...", flush=True)
            b = results["big_psi"] = psi_bench.run_ours(Path(tmp) / "big", args.big_ids, WORKERS)
            save()
            print(f"PSI {b['n']:,} x {b['n']:,} end to end: {b['wall_s']:.0f} s wall ({b['psi_s']:.0f} s PSI), "
                  f"peak RSS A {b['peak_rss_mb_a'] / 1024:.2f} GB, B {b['peak_rss_mb_b'] / 1024:.2f} GB", flush=True)
    if "scaling" in args.parts:
        results["scaling"] = scaling(args.ciphertexts, args.blind_ids)
        save()
        print(f"\nScaling over Ray worker nodes of one CPU each, measured alone (load average "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores: others' work takes cores from the nodes)")
        print(f"{'work':>28} | {'1 node':>9} | {'2 nodes':>9} | {'efficiency':>10}")
        for r in results["scaling"]:
            print(f"{r['work']:>28} | {r['one_node']:9,.0f} | {r['two_nodes']:9,.0f} | {r['efficiency']:10.2f}")

if __name__ == "__main__":
    main()
