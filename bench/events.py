"""A's events larger than memory: peak memory of reading them chunk by chunk against reading the table whole.

    python -m bench.events                                  # 1M users, 30M events
    python -m bench.events --users 200000 --events 5000000
    python -m bench.events --users 200000 --events 5000000 --against 8e5ab4c   # load rate against a commit

It writes a generated interactions table (Parquet, `--events` rows over `--users` users
and 5,000 items, popularity skewed) and, each in a fresh process so that peak resident
memory is that job's alone:
- whole table: `read_table` of the three columns A reads, which is where reading
  events in memory starts (the old path then built more arrays from it);
- ours: `load_tables` (chunks of `CHUNK_ROWS`, histories on disk), `align` with every
  user shared and one epoch of the sampler (256 users a batch, histories of 50), so
  every event is read again through the batches.
Its load rate is events read per second of `load_tables`.

With --against REV only `load_tables` runs (the "load" job: the same call at both
commits), at commit REV (checked out into a temporary git worktree) and in this tree,
alternating --repeat times, each in a fresh process with that tree first on the path;
the table gives per run the rate and peak RSS, then this tree's rate as a ratio of REV's
(means) and its peak memory as a ratio of REV's (maxima). Results also go to
runs/bench/events.json (events_against.json with --against).
"""

from __future__ import annotations

import argparse
import json
import os
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
    """One job in this (fresh) process; its time and this process's peak RSS ("load": `load_tables` alone, timed
    from after reading the users table)."""
    from party_a.data.tables import InteractionsSpec, align, load_tables
    from party_a.data.sampler import Sampler
    from protocol.data.tables import TableSpec, read_table
    from psi.ids import Normalizer

    started = time.perf_counter()
    out: dict = {"job": job}
    if job == "whole table":
        frame = read_table(events_path, ["user", "item", "ts"], ["user", "item"])
        out["rows"] = len(frame)
    elif job == "load":
        users = pd.read_parquet(users_path)
        spec = InteractionsSpec(events_path, "user", "item", None, 1.0, "ts")
        started = time.perf_counter()
        tables = load_tables(users, users["user"].tolist(), TableSpec(users_path, "user"), Normalizer(), spec, None)
        out["rows"] = pq.ParquetFile(events_path).metadata.num_rows
        out["events_per_s"] = out["rows"] / (time.perf_counter() - started)
        out["histories"] = int(tables.histories.offsets[-1])
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


# this file run in a fresh process as it is here, whichever tree is on the path (run as a script, bench/ would come
# first on the path and its psi.py hide the psi package)
_THIS_FILE = "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"


def run_child(tree: Path, job: str, users_path: Path, events_path: Path) -> dict:
    """`child(job)` in a fresh process running this file with the code of `tree` first on the path."""
    done = subprocess.run([sys.executable, "-c", _THIS_FILE, str(Path(__file__).resolve()), "--child", job,
                           str(users_path), str(events_path)], cwd=tree, env=dict(os.environ, PYTHONPATH=str(tree)),
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def against(rev: str, users_path: Path, events_path: Path, repeat: int) -> dict:
    """The load job at commit `rev` and in this tree, alternating; per-run rate and peak RSS, and the ratios."""
    from bench.against import checkout  # not at the top: a child runs this file with another tree on the path

    here_tree = Path(__file__).resolve().parent.parent
    runs: dict[str, list[dict]] = {rev: [], "this tree": []}
    with checkout(rev) as tree:
        for k in range(repeat):
            for name, where in ((rev, tree), ("this tree", here_tree)):
                print(f"run {k + 1}/{repeat}: {name} ...", flush=True)
                runs[name].append(run_child(where, "load", users_path, events_path))
    here, there = runs["this tree"], runs[rev]
    return {"rev": rev, "runs": runs,
            "rate_ratio": float(np.mean([r["events_per_s"] for r in here]) /
                                np.mean([r["events_per_s"] for r in there])),
            "rss_ratio": max(r["peak_rss_gb"] for r in here) / max(r["peak_rss_gb"] for r in there)}


def print_against(result: dict) -> None:
    print(f"\n{'run':>3} | {'tree':>12} | {'events/s':>12} | {'peak RSS GB':>11}")
    for k in range(len(result["runs"]["this tree"])):
        for name, runs in result["runs"].items():
            print(f"{k + 1:>3} | {name:>12} | {runs[k]['events_per_s']:12,.0f} | {runs[k]['peak_rss_gb']:11.2f}")
    print(f"this tree / {result['rev']}: {result['rate_ratio']:.1f}x the load rate (means), "
          f"{result['rss_ratio']:.2f}x the peak memory (maxima)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=30_000_000)
    parser.add_argument("--against", metavar="REV", help="only the load, also at commit REV, interleaved; the ratio")
    parser.add_argument("--repeat", type=int, default=2, help="runs per tree with --against")
    parser.add_argument("--child", nargs=3, metavar=("JOB", "USERS", "EVENTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], Path(args.child[1]), Path(args.child[2]))))
        return
    here_tree = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        print(f"writing {args.events:,} events of {args.users:,} users ...", flush=True)
        users_path, events_path = make_tables(Path(tmp), args.users, args.events)
        size_gb = events_path.stat().st_size / 2**30
        if args.against:
            result = {"users": args.users, "events": args.events, "parquet_gb": size_gb,
                      **against(args.against, users_path, events_path, args.repeat)}
        else:
            rows = []
            for job in ("whole table", "ours"):
                print(f"{job} ...", flush=True)
                rows.append(run_child(here_tree, job, users_path, events_path))
    OUT.mkdir(parents=True, exist_ok=True)
    if args.against:
        (OUT / "events_against.json").write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nA's events: {args.events:,} events of {args.users:,} users ({size_gb:.2f} GB of Parquet), "
              f"load_tables")
        print_against(result)
        return
    whole, ours = rows
    result = {"users": args.users, "events": args.events, "parquet_gb": size_gb, "jobs": rows,
              "rss_ratio": ours["peak_rss_gb"] / whole["peak_rss_gb"]}
    (OUT / "events.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nA's events: {args.events:,} events of {args.users:,} users ({size_gb:.2f} GB of Parquet)")
    print(f"{'job':>34} | {'seconds':>8} | {'peak RSS GB':>11}")
    print(f"{'whole table in pandas (baseline)':>34} | {whole['seconds']:8.1f} | {whole['peak_rss_gb']:11.2f}")
    print(f"{'ours: load, align, one epoch':>34} | {ours['seconds']:8.1f} | {ours['peak_rss_gb']:11.2f}")
    print(f"ours / whole table: {result['rss_ratio']:.2f}x the memory; ours before reading any event (imports, "
          f"the users table): {ours['base_rss_gb']:.2f} GB; load {ours['load_s']:.0f} s "
          f"({args.events / ours['load_s']:,.0f} events/s), {ours['history_items_read']:,} history items read "
          f"through the batches")


if __name__ == "__main__":
    main()
