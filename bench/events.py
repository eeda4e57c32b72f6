"""A's events larger than memory: peak memory of reading them chunk by chunk against reading the table whole.

    python -m bench.events                                  # 1M users, 30M events
    python -m bench.events --users 200000 --events 5000000

It writes a generated interactions table (Parquet, `--events` rows over `--users` users
and 5,000 items, popularity skewed) and, each in a fresh process so that peak resident
memory is that job's alone:
- whole table: `read_table` of the three columns A reads, which is where reading
  events in memory starts (the old path then built more arrays from it);
- ours: `load_tables` (chunks of `CHUNK_ROWS`, histories on disk), `align` with every
  user shared and one epoch of the sampler (256 users a batch, histories of 50), so
  every event is read again through the batches.
Results also go to runs/bench/events.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

OUT = Path("runs/bench")
ITEMS = 5000
WRITE_ROWS = 1 << 20


def make_tables(root: Path, users: int, events: int, seed: int = 0) -> tuple[Path, Path]:
    """A users table and an interactions table (user, item, ts), written a slice at a time."""
    rng = np.random.default_rng(seed)
    users_path, events_path = root / "users.parquet", root / "events.parquet"
    pd.DataFrame({"user": [f"c{k}" for k in range(users)]}).to_parquet(users_path, index=False)
    weights = 1.0 / np.arange(1, ITEMS + 1) ** 0.8
    weights /= weights.sum()
    schema = pa.schema([("user", pa.string()), ("item", pa.string()), ("ts", pa.int64())])
    with pq.ParquetWriter(events_path, schema) as writer:
        for lo in range(0, events, WRITE_ROWS):
            n = min(WRITE_ROWS, events - lo)
            who = rng.integers(0, users, n)
            what = rng.choice(ITEMS, size=n, p=weights)
            writer.write_table(pa.table({"user": [f"c{k}" for k in who], "item": [f"p{j}" for j in what],
                                         "ts": rng.integers(0, 10**9, n)}, schema=schema))
    return users_path, events_path


def child(job: str, users_path: Path, events_path: Path) -> dict:
    """One job in this (fresh) process; its time and this process's peak RSS."""
    from party_a.data import InteractionsSpec, align, load_tables
    from party_a.sampler import Sampler
    from protocol.data.tables import TableSpec, read_table
    from psi.ids import Normalizer

    started = time.perf_counter()
    out: dict = {"job": job}
    if job == "whole table":
        frame = read_table(events_path, ["user", "item", "ts"], ["user", "item"])
        out["rows"] = len(frame)
    else:
        users = pd.read_parquet(users_path)
        ids = users["user"].tolist()
        out["base_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # imports, users table
        spec = InteractionsSpec(events_path, "user", "item", None, 1.0, "ts")
        tables = load_tables(users, ids, TableSpec(users_path, "user"), Normalizer(), spec, None)
        out["load_s"] = time.perf_counter() - started
        data = align(tables, np.arange(len(ids)))
        read = 0
        for batch in Sampler(data, batch_users=256, history=50, targets=4, seed=0).epoch(1):
            read += int((batch.history >= 0).sum())
        out["rows"], out["history_items_read"] = int(tables.histories.offsets[-1]), read
    out["seconds"] = time.perf_counter() - started
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is in KiB
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=30_000_000)
    parser.add_argument("--child", nargs=3, metavar=("JOB", "USERS", "EVENTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], Path(args.child[1]), Path(args.child[2]))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        print(f"writing {args.events:,} events of {args.users:,} users ...", flush=True)
        users_path, events_path = make_tables(Path(tmp), args.users, args.events)
        size_gb = events_path.stat().st_size / 2**30
        rows = []
        for job in ("whole table", "ours"):
            print(f"{job} ...", flush=True)
            done = subprocess.run([sys.executable, "-m", "bench.events", "--child", job, str(users_path),
                                   str(events_path)], capture_output=True, text=True, check=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    whole, ours = rows
    result = {"users": args.users, "events": args.events, "parquet_gb": size_gb, "jobs": rows,
              "rss_ratio": ours["peak_rss_gb"] / whole["peak_rss_gb"]}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "events.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nA's events: {args.events:,} events of {args.users:,} users ({size_gb:.2f} GB of Parquet)")
    print(f"{'job':>34} | {'seconds':>8} | {'peak RSS GB':>11}")
    print(f"{'whole table in pandas (baseline)':>34} | {whole['seconds']:8.1f} | {whole['peak_rss_gb']:11.2f}")
    print(f"{'ours: load, align, one epoch':>34} | {ours['seconds']:8.1f} | {ours['peak_rss_gb']:11.2f}")
    print(f"ours / whole table: {result['rss_ratio']:.2f}x the memory; ours before reading any event (imports, "
          f"the users table): {ours['base_rss_gb']:.2f} GB; load {ours['load_s']:.0f} s, "
          f"{ours['history_items_read']:,} history items read through the batches")


if __name__ == "__main__":
    main()
