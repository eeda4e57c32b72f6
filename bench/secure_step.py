"""Secure interactive layer throughput: three real processes, 2048-bit keys, d = h = 16.

    python -m bench.secure_step                     # 2048 shared users, batches of 32 and 256
    python -m bench.secure_step --users 1024 --batches 256
    python -m bench.secure_step --against 0822b3d   # also an older commit, interleaved, and the ratio

A user-step is one user's share of one training step (steps 1-7 of docs/design.md). For
each batch size the bench runs one epoch over generated tables with the real
coordinator, A and B processes over mutual TLS and reports user-steps per second of
the secure training (evaluation excluded), and where each role spends its busy time
(wall time minus time blocked on a peer), per step.

In the same run it times the layer done FATE-style with unpacked python-paillier:
B encrypts e_B element by element, A holds W in the clear and computes [u] = [e_B]·W
and [∇W] = [e_B]ᵀ·δ, the key holder decrypts u per user and ∇W once per batch. That
baseline runs in one process with no network at all, which only flatters it.

With --against REV the same secure training also runs at commit REV (checked out
into a temporary git worktree, run with this interpreter), alternating with this
tree --repeat times per batch size so that drift hits both alike, and the table
gives this tree's throughput as a ratio of REV's. Results also go to
runs/bench/secure_step.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from phe import paillier as phe_paillier

from bench.against import checkout
from party_a.config import ModelSettings
from protocol.crypto.paillier import DEFAULT_BITS
from protocol.layer.decryption import Step
from protocol.layer.steps import TRAINING_STEP
from scenarios.launch import run_all, set_compute, write_local_run

MODEL = ModelSettings()  # the runs below use A's default model, hence its d and h
D, H = MODEL.d, MODEL.h


def make_tables(root: Path, users: int, items: int = 64, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    ids = [f"user{i}@example.com" for i in range(users)]
    paths = {"a_users": root / "a_users.csv", "b_users": root / "b_users.csv", "orders": root / "orders.csv"}
    pd.DataFrame({"email": ids}).to_csv(paths["a_users"], index=False)
    pd.DataFrame({"email": ids, **{f"x{k}": rng.normal(size=users) for k in range(10)}}).to_csv(paths["b_users"],
                                                                                               index=False)
    orders = [(ids[u], f"item{rng.integers(items)}") for u in range(users) for _ in range(3)]
    pd.DataFrame(orders, columns=["email", "item"]).to_csv(paths["orders"], index=False)
    return paths


def run_ours(root: Path, users: int, batch_users: int, workers: int | None = None, compute: dict | None = None) -> dict:
    """One secure epoch over generated tables; `workers`, `compute`: every role's (default: one local worker
    process per core)."""
    paths = make_tables(root, users)
    sections = {
        "party_a": {"users": {"table": str(paths["a_users"]), "id_column": "email"},
                    "interactions": {"table": str(paths["orders"]), "user_column": "email", "item_column": "item"},
                    "train": {"epochs": 1, "batch_users": batch_users, "progress": False},
                    "psi": {"progress": False}},
        "party_b": {"users": {"table": str(paths["b_users"]), "id_column": "email",
                              "numeric": [f"x{k}" for k in range(10)]}, "psi": {"progress": False}},
    }
    set_compute(sections, workers, compute)
    run = write_local_run(root / "run", sections, run_id=f"bench-step-{batch_users}")
    start = time.perf_counter()
    out = run_all(run, timeout=24 * 3600)
    wall = time.perf_counter() - start
    failed = {r: o.output[-3000:] for r, o in out.items() if o.returncode}
    if failed:
        raise SystemExit(f"run failed: {failed}")
    report = json.loads((run.workdir("party_a") / "report.json").read_text())
    timing = report["timing"]
    steps = -(-users // batch_users)
    training = f"{TRAINING_STEP.name}:"  # the parties' phases of a training step; the rest is evaluation
    roles = {"A": {k: v for k, v in timing["phases"].items() if k.startswith(training)},
             "B": {k: v for k, v in json.loads((run.workdir("party_b") / "timing.json").read_text()).items()
                   if k.startswith(training)},
             "C": {k: v for k, v in json.loads((run.workdir("coordinator") / "timing.json").read_text()).items()
                   if k != f"decrypt {Step.EVALUATE}"}}
    return {"batch_users": batch_users, "users": users, "steps": steps, "wall_s": wall,
            "seconds": timing["secure_training_seconds"], "user_steps_per_s": timing["user_steps_per_second"],
            "roles": roles}


def fate_style(batch_users: int, sample_users: int = 3) -> dict:
    """Seconds per user-step of the unpacked layer, measured on a few users and one batch's ∇W decryption."""
    public, private = phe_paillier.generate_paillier_keypair(n_length=DEFAULT_BITS)
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.25, size=(D, H))
    start = time.perf_counter()
    for _ in range(sample_users):
        e_b = [public.encrypt(float(v)) for v in np.tanh(rng.normal(size=D))]  # B
        u = [sum((e_b[k] * float(w[k, j]) for k in range(1, D)), e_b[0] * float(w[0, j])) for j in range(H)]  # A
        [private.decrypt(c) for c in u]  # key holder (masking omitted, which only helps the baseline)
        delta = rng.normal(0, 0.1, size=H)
        grad = [[e_b[k] * float(delta[j]) for j in range(H)] for k in range(D)]  # A: [∇W] += [e_B]ᵀ δ
    per_user = (time.perf_counter() - start) / sample_users
    start = time.perf_counter()
    [private.decrypt(c) for row in grad for c in row]  # ∇W once per batch
    per_batch = time.perf_counter() - start
    seconds = per_user + per_batch / batch_users
    return {"seconds_per_user_step": seconds, "user_steps_per_s": 1 / seconds}


_AT_REV = ("import json, pathlib, sys, tempfile; from bench.secure_step import run_ours; "
           "print(json.dumps(run_ours(pathlib.Path(tempfile.mkdtemp()), int(sys.argv[1]), int(sys.argv[2]))))")


def run_at(tree: Path, users: int, batch_users: int) -> dict:
    """`run_ours` as the code checked out in `tree` does it (a separate process, that tree first on the path)."""
    out = subprocess.run([sys.executable, "-c", _AT_REV, str(users), str(batch_users)], cwd=tree,
                         capture_output=True, text=True, check=True, env=dict(os.environ, PYTHONPATH=str(tree)))
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(rev: str, users: int, batches: list[int], repeat: int) -> list[dict]:
    """This tree against commit `rev`, alternating runs; user-steps/s of each, and the ratio of the means."""
    rows = []
    with checkout(rev) as tree, tempfile.TemporaryDirectory() as tmp:
        for b in batches:
            here, there = [], []
            for k in range(repeat):
                print(f"batch {b}, run {k + 1}/{repeat}: {rev}, then this tree ...", flush=True)
                there.append(run_at(tree, users, b)["user_steps_per_s"])
                here.append(run_ours(Path(tmp) / f"b{b}r{k}", users, b)["user_steps_per_s"])
            rows.append({"batch_users": b, "rev": rev, "this_tree": here, "at_rev": there,
                         "ratio": float(np.mean(here) / np.mean(there))})
    print(f"\n{'users/batch':>11} | {'this tree, user-steps/s':>28} | {'at ' + rev + ', user-steps/s':>28} | "
          f"{'ratio':>6}")
    for r in rows:
        print(f"{r['batch_users']:>11} | {', '.join(f'{v:.1f}' for v in r['this_tree']):>28} | "
              f"{', '.join(f'{v:.1f}' for v in r['at_rev']):>28} | {r['ratio']:6.3f}")
    return rows


def print_roles(r: dict) -> None:
    total = r["users"]
    print(f"\nbatch {r['batch_users']}: busy milliseconds per user-step, by role and step")
    for role, phases in r["roles"].items():
        for phase, t in phases.items():
            print(f"  {role} {phase:<62} {1000 * t['busy_s'] / total:7.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=2048, help="shared users (one epoch over all of them)")
    parser.add_argument("--batches", default="32,256", help="comma-separated users per batch")
    parser.add_argument("--against", metavar="REV", help="also run commit REV, interleaved, and print the ratio")
    parser.add_argument("--repeat", type=int, default=2, help="runs per batch size and tree with --against")
    args = parser.parse_args()
    if args.against:
        rows = compare(args.against, args.users, [int(x) for x in args.batches.split(",")], args.repeat)
        Path("runs/bench").mkdir(parents=True, exist_ok=True)
        Path("runs/bench/secure_step_against.json").write_text(json.dumps(rows, indent=2) + "\n")
        return
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for b in (int(x) for x in args.batches.split(",")):
            print(f"secure training, {args.users} users in batches of {b} ...", flush=True)
            results.append(run_ours(Path(tmp) / f"b{b}", args.users, b))
    print("FATE-style unpacked phe layer ...", flush=True)
    fate = {r["batch_users"]: fate_style(r["batch_users"]) for r in results}

    print(f"\n{'users/batch':>11} | {'steps':>5} | {'seconds':>8} | {'user-steps/s':>12} | {'FATE-style/s':>12} | "
          f"{'ratio':>7}")
    for r in results:
        f = fate[r["batch_users"]]
        r["fate_style"] = f
        r["ratio"] = r["user_steps_per_s"] / f["user_steps_per_s"]
        print(f"{r['batch_users']:>11} | {r['steps']:>5} | {r['seconds']:8.1f} | {r['user_steps_per_s']:12.1f} | "
              f"{f['user_steps_per_s']:12.2f} | {r['ratio']:6.0f}x")
    for r in results:
        print_roles(r)
    Path("runs/bench").mkdir(parents=True, exist_ok=True)
    Path("runs/bench/secure_step.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
