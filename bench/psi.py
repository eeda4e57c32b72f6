"""PSI benchmark: our ECDH-PSI end to end with three real processes, against openmined-psi.

    python -m bench.psi                      # 100k x 100k and 1M x 1M, 50 % overlap
    python -m bench.psi --sizes 100000       # just one size
    python -m bench.psi --delta [--ids N]    # full, delta and full rerun, N x N (1M unless set)

For each size it writes two generated tables (the same customers' e-mails written
differently on each side), runs coordinator + party A + party B as processes over
mutual TLS and reports wall time (process start to exit), the PSI phase time, IDs
per second per party and bytes each way, and each party's serial part against its
single-core time (`serial_part`; --workers 1 for the figure in docs/benchmarks.md). In the same
run it times openmined-psi (C++ ECDH-PSI on P-256, one thread, in process, no
network) on the 100k x 100k sets, and the curve libraries we chose between. Results also go to runs/bench/psi.json.

With --delta it runs `python -m party_a psi` and `python -m party_b psi` (two processes,
no coordinator): a full PSI of N x N IDs (N/2 shared); then each side gains 1 % new IDs
(half of them shared) and loses 0.5 % of its rows at random; then a delta PSI, and a full
rerun on the changed tables. It prints each run's PSI phase (from the parties' first
message to the state written), wall time (process start to exit) and bytes (sent and
received, both parties), the delta's ratio to the full run, and checks that the delta's
active shared users are the rerun's (positions differ by design). Results go to
runs/bench/psi_delta.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

from psi.session import PsiSettings
from protocol.roles import Role
from psi.shared import read_shared
from scenarios.launch import LocalRun, Outcome, set_compute, start, wait_all, write_local_run

OUT = Path("runs/bench")


def make_tables(root: Path, n: int) -> tuple[Path, Path]:
    """n IDs each, n/2 shared: e-mails in the shop's and the bank's own formats."""
    half = n // 2
    root.mkdir(parents=True, exist_ok=True)
    a, b = root / "shop.csv", root / "bank.csv"
    pd.DataFrame({"email": [f" Customer.{i}@Example.COM" for i in range(n)]}).to_csv(a, index=False)
    pd.DataFrame({"mail": [f"customer.{i}@example.com" for i in range(half, half + n)]}).to_csv(b, index=False)
    return a, b


def party_sections(a: Path, b: Path, workers: int) -> dict[str, dict]:
    """Both parties' config sections for a PSI of tables `a` and `b` (e-mail IDs)."""
    psi = {"chunk_size": PsiSettings.chunk_size, "progress": False}
    email = {"kind": "email"}
    return {"party_a": {"workers": workers, "psi": psi, "users": {"table": str(a), "id_column": "email", "ids": email}},
            "party_b": {"workers": workers, "psi": psi, "users": {"table": str(b), "id_column": "mail", "ids": email}}}


def run_ours(root: Path, n: int, workers: int, compute: dict | None = None) -> dict:
    """Our PSI n x n with three processes; `compute`: every role's [compute] section (default: local)."""
    sections = party_sections(*make_tables(root, n), workers)
    sections["coordinator"] = {"workers": 0}  # it only announces its key
    set_compute(sections, compute=compute)
    run = write_local_run(root / "run", sections, run_id=f"bench-psi-{n}")
    start = time.perf_counter()
    out, peaks, pool_cpu = run_watched(run, timeout=24 * 3600)
    wall = time.perf_counter() - start
    failed = {r: o.output[-3000:] for r, o in out.items() if o.returncode != 0}
    if failed:
        raise SystemExit(f"PSI run failed: {failed}")
    sa = json.loads((run.workdir("party_a") / "psi" / "summary.json").read_text())
    sb = json.loads((run.workdir("party_b") / "psi" / "summary.json").read_text())
    assert sa["intersection_size"] == sb["intersection_size"] == n // 2
    return {"n": n, "wall_s": wall, "psi_s": max(sa["seconds"], sb["seconds"]),
            "ids_per_s_a": (sa["own_size"] + sa["peer_size"]) / sa["seconds"],
            "ids_per_s_b": (sb["own_size"] + sb["peer_size"]) / sb["seconds"],
            "mb_a_to_b": sa["bytes_sent"] / 1e6, "mb_b_to_a": sb["bytes_sent"] / 1e6,
            "intersection": sa["intersection_size"], "peak_rss_mb_a": peaks["party_a"] / 2**20,
            "peak_rss_mb_b": peaks["party_b"] / 2**20,
            "serial": {party: serial_part(summary, pool_cpu[party], n) for party, summary in (("party_a", sa),
                                                                                                ("party_b", sb))}}


def serial_part(summary: dict, pool_s: float, n: int, cores: int = 32) -> dict:
    """PSI's serial part at one party (its summary's serial_cpu_seconds: reading, normalising and checking its IDs and
    its own work outside the exchange of blinded points) against its single-core time (its process's CPU seconds,
    which add the transport's threads, plus its workers'), the efficiency on `cores` cores this serial fraction
    allows (Amdahl), and how many workers its own threads during the exchange (overlapped_cpu_seconds, beside the
    pool's work and bound to one core by the GIL) can keep busy."""
    serial_s, overlapped_s, process_s = (summary[f"{k}_cpu_seconds"] for k in ("serial", "overlapped", "process"))
    single = process_s + pool_s
    fraction = serial_s / single
    return {"serial_s": serial_s, "overlapped_s": overlapped_s, "process_s": process_s, "pool_s": pool_s,
            "single_core_s": single, "serial_us_per_id": serial_s / n * 1e6, "fraction": fraction,
            "process_fraction": process_s / single, "cores": cores,
            "efficiency": 1 / (fraction + (1 - fraction) / cores) / cores, "workers_fed": pool_s / overlapped_s}


def _process_tree(pid: int) -> dict[int, tuple[int, float]]:
    """Resident bytes and CPU seconds (user and system) of a process and each of its descendants now, by process ID
    (none once it has gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        rss = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) * 1024
        ticks = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[11:13]  # utime, stime
        children = [int(c) for task in Path(f"/proc/{pid}/task").iterdir()
                    for c in (task / "children").read_text().split()]
    except (OSError, StopIteration, ValueError):
        return {}
    tree = {pid: (rss, sum(map(int, ticks)) / os.sysconf("SC_CLK_TCK"))}
    for c in children:
        tree.update(_process_tree(c))
    return tree


def run_watched(run: LocalRun, timeout: float) -> tuple[dict[str, Outcome], dict[str, int], dict[str, float]]:
    """`run_all`, sampling each role's resident memory and CPU time (its process and its worker processes) every
    0.2 s; returns the outcomes, each role's peak memory in bytes and its workers' CPU seconds (as last sampled: up
    to 0.2 s of each worker's last work may be missing)."""
    procs = {role: start(run, role) for role in Role}
    peaks = dict.fromkeys(procs, 0)
    cpu: dict[str, dict[int, float]] = {role: {} for role in procs}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            for role, proc in procs.items():
                tree = _process_tree(proc.pid)
                peaks[role] = max(peaks[role], sum(rss for rss, _ in tree.values()))
                cpu[role].update({pid: seconds for pid, (_, seconds) in tree.items() if pid != proc.pid})

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        return wait_all(run, procs, timeout), peaks, {role: sum(cpu[role].values()) for role in procs}
    finally:
        done.set()
        sampler.join()


def run_openmined(n: int) -> dict:
    import private_set_intersection.python as omp

    half = n // 2
    client_items = [f"customer.{i}@example.com" for i in range(n)]
    server_items = [f"customer.{i}@example.com" for i in range(half, half + n)]
    client = omp.client.CreateWithNewKey(True)
    server = omp.server.CreateWithNewKey(True)
    start = time.perf_counter()
    setup = server.CreateSetupMessage(1e-9, len(client_items), server_items, omp.DataStructure.RAW)
    request = client.CreateRequest(client_items)
    response = server.ProcessRequest(request)
    shared = client.GetIntersection(setup, response)
    seconds = time.perf_counter() - start
    assert len(shared) == half
    return {"n": n, "seconds": seconds,
            "mb": (setup.ByteSize() + request.ByteSize() + response.ByteSize()) / 1e6}


def curve_rates(count: int = 10000) -> dict[str, float]:
    """Variable-base scalar multiplications per second on Curve25519, per library."""
    import nacl.bindings
    from Crypto.PublicKey import ECC
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

    from psi.ecdh import hash_to_point

    points = [hash_to_point(b"bench", i.to_bytes(4, "little")) for i in range(count)]
    secret = os.urandom(32)
    rates = {}
    start = time.perf_counter()
    for p in points:
        nacl.bindings.crypto_scalarmult(secret, p)
    rates["pynacl (libsodium) X25519"] = count / (time.perf_counter() - start)
    key = X25519PrivateKey.from_private_bytes(secret)
    start = time.perf_counter()
    for p in points:
        key.exchange(X25519PublicKey.from_public_bytes(p))
    rates["cryptography (OpenSSL) X25519"] = count / (time.perf_counter() - start)
    q = ECC.generate(curve="curve25519").public_key().pointQ
    scalar = int.from_bytes(hashlib.sha256(secret).digest(), "little") >> 2
    small = count // 10
    start = time.perf_counter()
    for _ in range(small):
        q * scalar
    rates["pycryptodome Curve25519"] = small / (time.perf_counter() - start)
    start = time.perf_counter()
    for i in range(count):
        hash_to_point(b"bench", i.to_bytes(4, "little"))
    rates["hash to curve (ours)"] = count / (time.perf_counter() - start)
    return rates


def psi_only(run: LocalRun, *args: str) -> float:
    """Both parties' `psi` command (no coordinator); the wall time from start to the last exit."""
    begin = time.perf_counter()
    out = wait_all(run, {role: start(run, role, "psi", *args) for role in ("party_a", "party_b")}, 24 * 3600)
    failed = {r: o.output[-3000:] for r, o in out.items() if o.returncode != 0}
    if failed:
        raise SystemExit(f"psi {' '.join(args)} failed: {failed}")
    return time.perf_counter() - begin


def phase_figures(run: LocalRun, summary: str, wall: float) -> dict:
    """A PSI's phase seconds (the slower party), wall time and bytes sent and received by both parties."""
    docs = [json.loads((run.workdir(role) / "psi" / summary).read_text()) for role in ("party_a", "party_b")]
    return {"phase_s": max(d["phase_seconds"] for d in docs), "wall_s": wall,
            "mb": sum(d["bytes_sent"] + d["bytes_received"] for d in docs) / 1e6}


def active_users(run: LocalRun, role: str) -> set[str]:
    frame = read_shared(run.workdir(role))
    return set(frame.loc[frame["active"], "user_id"])


def change_tables(a: Path, b: Path, n: int, seed: int = 5) -> None:
    """1 % new IDs at each side (half of them at both) and 0.5 % of each side's rows removed at random."""
    rng = np.random.default_rng(seed)
    new = n // 100
    both = [f"New.{i}@Example.com" for i in range(new // 2)]
    for path, column, own in ((a, "email", "shop"), (b, "mail", "bank")):
        frame = pd.read_csv(path, dtype=str)
        frame = frame.drop(index=rng.choice(len(frame), n // 200, replace=False))
        added = both + [f"new.{own}.{i}@example.com" for i in range(new - len(both))]
        pd.concat([frame, pd.DataFrame({column: added})]).to_csv(path, index=False)


def run_delta_bench(root: Path, n: int, workers: int) -> dict:
    """Full PSI, changes, delta, full rerun (module doc)."""
    a, b = make_tables(root, n)
    sections = party_sections(a, b, workers)
    run = write_local_run(root / "run", sections, run_id=f"bench-psi-delta-{n}")
    print(f"full PSI {n:,} x {n:,} ...", flush=True)
    full = phase_figures(run, "summary.json", psi_only(run))
    change_tables(a, b, n)
    print("delta PSI ...", flush=True)
    delta = phase_figures(run, "delta_summary.json", psi_only(run, "--delta"))
    changes = json.loads((run.workdir("party_a") / "psi" / "delta_summary.json").read_text())
    after_delta = {role: active_users(run, role) for role in ("party_a", "party_b")}
    print("full rerun on the changed tables ...", flush=True)
    rerun = phase_figures(run, "summary.json", psi_only(run))
    same = after_delta["party_a"] == after_delta["party_b"] == active_users(run, "party_a")
    return {"n": n, "workers": workers, "full": full, "delta": delta, "rerun": rerun, "changes": changes,
            "delta_equals_rerun": same, "shared_after": len(after_delta["party_a"]),
            "ratio": {k: delta[k] / full[k] for k in ("phase_s", "wall_s", "mb")}}


def print_serial(ours: list[dict]) -> None:
    cores = ours[0]["serial"]["party_a"]["cores"]
    print("\nserial part: CPU s of a party's reading and checking of its IDs and its own work outside the exchange of "
          "blinded points,\nagainst its single-core time (its process's CPU s, with the transport's threads, + its "
          "workers'); process: all of its\nprocess's CPU s; workers fed: its workers' CPU s / its threads' during the "
          "exchange (the pool size at which those would\nbe the bottleneck)")
    print(f"{'set sizes':>21} | {'party':>7} | {'serial s':>8} | {'µs/ID':>6} | {'1-core s':>8} | {'serial':>6} | "
          f"{'process':>7} | {f'{cores}-core efficiency':>18} | {'workers fed':>11}")
    for r in ours:
        for party, f in r["serial"].items():
            print(f"{r['n']:>9,} x {r['n']:>9,} | {party:>7} | {f['serial_s']:8.2f} | {f['serial_us_per_id']:6.2f} | "
                  f"{f['single_core_s']:8.1f} | {f['fraction']:6.2%} | {f['process_fraction']:7.2%} | "
                  f"{f['efficiency']:18.3f} | {f['workers_fed']:11.0f}")


def print_delta(r: dict) -> None:
    c = r["changes"]
    print(f"\n{r['n']:,} x {r['n']:,} IDs, {r['workers']} workers per party; A +{c['own_added']:,} "
          f"-{c['own_removed']:,}, B +{c['peer_added']:,} -{c['peer_removed']:,}: {c['joined']:,} joined, "
          f"{c['left']:,} left, {r['shared_after']:,} shared after")
    print(f"{'':>6} | {'PSI phase s':>11} | {'wall s':>7} | {'MB both sides':>13}")
    for name in ("full", "delta", "rerun"):
        f = r[name]
        print(f"{name:>6} | {f['phase_s']:11.2f} | {f['wall_s']:7.1f} | {f['mb']:13.2f}")
    ratio = r["ratio"]
    print(f"delta / full: PSI phase {ratio['phase_s']:.1%}, wall {ratio['wall_s']:.1%}, bytes {ratio['mb']:.1%}")
    print(f"the delta's shared users equal the rerun's: {r['delta_equals_rerun']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated set sizes per party")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="worker processes per party")
    parser.add_argument("--no-openmined", action="store_true", help="skip the openmined-psi baseline")
    parser.add_argument("--delta", action="store_true", help="full PSI, delta and full rerun (module doc)")
    parser.add_argument("--ids", type=int, default=1_000_000, help="with --delta: IDs per party")
    args = parser.parse_args()
    if args.delta:
        with tempfile.TemporaryDirectory() as tmp:
            result = run_delta_bench(Path(tmp), args.ids, args.workers)
        print_delta(result)
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "psi_delta.json").write_text(json.dumps(result, indent=2) + "\n")
        if not result["delta_equals_rerun"]:
            raise SystemExit("the delta's shared users differ from the full rerun's")
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    results: dict = {"cores": os.cpu_count(), "curves": curve_rates(), "ours": []}
    print("curve libraries, scalar multiplications per second (one core):")
    for name, rate in results["curves"].items():
        print(f"  {name:32s} {rate:10,.0f}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            print(f"running our PSI {n:,} x {n:,} ...", flush=True)
            results["ours"].append(run_ours(Path(tmp) / str(n), n, args.workers))
    if not args.no_openmined and 100_000 in sizes:
        print("running openmined-psi 100,000 x 100,000 ...", flush=True)
        results["openmined"] = run_openmined(100_000)

    print(f"\n{'set sizes':>21} | {'wall s':>7} | {'PSI s':>7} | {'IDs/s A':>9} | {'IDs/s B':>9} | "
          f"{'MB A->B':>8} | {'MB B->A':>8}")
    for r in results["ours"]:
        print(f"{r['n']:>9,} x {r['n']:>9,} | {r['wall_s']:7.1f} | {r['psi_s']:7.1f} | {r['ids_per_s_a']:9,.0f} | "
              f"{r['ids_per_s_b']:9,.0f} | {r['mb_a_to_b']:8.1f} | {r['mb_b_to_a']:8.1f}")
    print_serial(results["ours"])
    if "openmined" in results:
        om = results["openmined"]
        ours = next(r for r in results["ours"] if r["n"] == 100_000)
        results["ratio_vs_openmined_wall"] = om["seconds"] / ours["wall_s"]
        results["ratio_vs_openmined_psi"] = om["seconds"] / ours["psi_s"]
        print(f"\nopenmined-psi 100,000 x 100,000: {om['seconds']:.1f} s, {om['mb']:.1f} MB in all")
        print(f"ours is {results['ratio_vs_openmined_wall']:.1f}x faster end to end (process start to exit), "
              f"{results['ratio_vs_openmined_psi']:.1f}x on the PSI phase alone")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "psi.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
