"""Serving latency and throughput: A's real HTTP service (uvicorn) under a real HTTP client.

    python -m bench.serve                       # story 1 (2048-bit run) and a 100k-item catalogue
    python -m bench.serve --skip-big            # story 1 only
    python -m bench.serve --users 2000 --requests 3000

Story 1: the e-commerce + bank scenario is trained (three processes, 2048-bit key,
`--epochs` epochs), then `python -m party_a serve` answers GET
/v1/users/{id}/recommendations?k=10 for random users of A (shared ones, A's others
and a few unknown IDs) at concurrency 1, 8 and 32: p50, p95, p99 latency and
requests per second. In the same run the same server runs with `--alone` (every
known user served by A alone, u = 0) beside it, and the rounds alternate between
the two, so the cost of federation at request time is a ratio. Then B's
`refresh --all` runs through the coordinator's refresh service (users/s as B logs
it: from its worker pool's start to A's confirmation, process start-up excluded)
and `recommend` writes the top-20 of every user of A.

Large catalogue: 100k items, 100k users of A with 10 purchases each, 60k of them
shared with a u store. Nothing is trained (the weights are random; latency does not
depend on their values, but the user side is drawn away from its zero start so that
A alone's answers differ between users as a trained model's do) and the model runs
without its EASE part ([model]
item_item = false: P would be 100k × 100k). Scoring is the exact product over the
whole catalogue, which for this model is the full score: retrieval recall@100
against exhaustive scoring is 1.0 by construction. Then `recommend` for all 100k users.

The client runs on the same two cores as the server: its threads take CPU the server
would otherwise have, so requests/s at high concurrency is a lower bound.

Promotions (`--promote-every S`): story 1 is trained twice on the same data (two real
runs, so every role stores two models with their own IDs; the second is in service).
A's service then answers a time-bounded load (`--seconds` per round, `--concurrency`
keep-alive connections) in rounds that alternate between no promotions (the baseline)
and promotions: S seconds in, `python -m party_a models promote <the first model>`,
S seconds after it returned `python -m party_a models rollback`, and so on, each a
subprocess on the same cores (at A only: B and the coordinator do not serve requests). Each promote or
rollback makes the service load a whole new Recommender in the background and swap
it in. Printed: requests, failed requests (must be 0), answers per model_id, req/s
and p50/p99 of both, and their ratios. `--servers N` runs N service processes
sharing the port (SO_REUSEPORT, `[serve] reuse_port = true`; only the first takes
refresh sessions), each following CURRENT on its own.

    python -m bench.serve --promote-every 5 [--seconds 20] [--rounds 3] [--concurrency 32] [--servers 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import json
import random
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd

from protocol.keys.keyfiles import write_private
from scenarios.launch import ROOT, LocalRun, _env, free_ports, run_all, start, write_local_run

TOKEN = "bench-token"  # the servers' bearer token (the service requires one), in <party_a>/serve.token
AUTH = {"Authorization": f"Bearer {TOKEN}"}

CONCURRENCY = (1, 8, 32)


@dataclasses.dataclass(frozen=True)
class Load:
    concurrency: int
    requests: int
    seconds: float
    latencies_ms: np.ndarray

    def row(self, name: str) -> dict:
        p50, p95, p99 = np.percentile(self.latencies_ms, [50, 95, 99])
        return {"server": name, "concurrency": self.concurrency, "requests": self.requests,
                "p50_ms": round(float(p50), 2), "p95_ms": round(float(p95), 2), "p99_ms": round(float(p99), 2),
                "requests_per_s": round(self.requests / self.seconds, 1)}


def drive(port: int, paths: list[str], concurrency: int) -> Load:
    """Send every path once, `concurrency` keep-alive connections at a time; per-request latency."""
    latencies: list[float] = []
    lock = threading.Lock()
    queue = iter(paths)
    failures: list[str] = []

    def worker() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = []
        while True:
            with lock:
                path = next(queue, None)
            if path is None:
                break
            started = time.perf_counter()
            connection.request("GET", path, headers=AUTH)
            response = connection.getresponse()
            body = response.read()
            mine.append((time.perf_counter() - started) * 1000)
            if response.status != 200:
                failures.append(f"{path}: {response.status} {body[:200]!r}")
        connection.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed, first: {failures[0]}")
    return Load(concurrency, len(paths), seconds, np.array(latencies))


def wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the service stopped while starting; see its output.log")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/healthz", headers=AUTH)
            return json.loads(connection.getresponse().read())
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"no /healthz answer within {timeout}s")


def serve_configs(run: LocalRun) -> tuple[tuple[LocalRun, int], tuple[LocalRun, int]]:
    """A's config with a [serve] section, and a copy for the A-alone server on another port with refreshes off
    (only one process can take them, on [network] listen); each with its HTTP port."""
    base = run.configs["party_a"].read_text()
    ports = free_ports(2)
    token_file = run.configs["party_a"].with_name("serve.token")
    token_file.unlink(missing_ok=True)
    write_private(token_file, TOKEN.encode())
    alone_path = run.configs["party_a"].with_name("party_a_alone.toml")
    alone_path.write_text(base + f'\n[serve]\nlisten = "127.0.0.1:{ports[1]}"\nrefresh = false\n'
                                 f'token_file = "{token_file}"\n')
    run.configs["party_a"].write_text(base + f'\n[serve]\nlisten = "127.0.0.1:{ports[0]}"\n'
                                             f'token_file = "{token_file}"\n')
    alone = LocalRun(run.root, {**run.configs, "party_a": alone_path})
    return (run, ports[0]), (alone, ports[1])


def measure_servers(run: LocalRun, user_ids: list[str], requests: int,
                    rounds: int) -> tuple[dict[str, list[Load]], int]:
    """The federated server and the A-alone one (`--alone`), both up at once and idle in turn: each round runs
    every concurrency on one, then on the other, so that drift hits both alike. Per server and concurrency the
    rounds are pooled (all latencies; requests over the summed time). Also returns the federated server's port."""
    servers = dict(zip(("federated", "A alone (u = 0)"), serve_configs(run)))
    procs = {name: start(r, "party_a", "serve", *(["--alone"] if name != "federated" else []))
             for name, (r, _) in servers.items()}
    rng = random.Random(0)
    paths = [f"/v1/users/{quote(u, safe='')}/recommendations?k=10" for u in user_ids]
    measured: dict[str, dict[int, list[Load]]] = {name: {c: [] for c in CONCURRENCY} for name in servers}
    try:
        for name, (_, port) in servers.items():
            wait_healthy(port, procs[name])
            drive(port, [rng.choice(paths) for _ in range(300)], 4)  # warm-up
        for _ in range(rounds):
            for c in CONCURRENCY:
                for name, (_, port) in servers.items():
                    measured[name][c].append(drive(port, [rng.choice(paths) for _ in range(requests)], c))
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(timeout=30)
    pooled = {name: [Load(c, sum(m.requests for m in loads), sum(m.seconds for m in loads),
                          np.concatenate([m.latencies_ms for m in loads])) for c, loads in by_c.items()]
              for name, by_c in measured.items()}
    return pooled, servers["federated"][1]


def timed(run: LocalRun, role: str, *args: str) -> tuple[float, str]:
    started = time.perf_counter()
    out = subprocess.run(run.command(role, *args), cwd=ROOT, env=_env(), capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{role} {' '.join(args)} failed: {out.stderr[-2000:]}")
    return time.perf_counter() - started, out.stderr


def logged_rate(stderr: str, marker: str) -> float:
    """The users/s a command logged on its summary line."""
    line = next(line for line in stderr.splitlines() if marker in line)
    return float(line.rsplit("(", 1)[1].split(" users/s")[0])


def story_one(root: Path, users: int, epochs: int, requests: int, rounds: int) -> dict:
    from scenarios import ecommerce_bank

    run = ecommerce_bank.prepare(root / "story1", users=users, epochs=epochs, seed=0, progress=False)
    out = run_all(run, timeout=3600)
    if any(o.returncode for o in out.values()):
        raise RuntimeError({r: o.output[-2000:] for r, o in out.items() if o.returncode})
    ids = pd.read_csv(next((run.dir("party_a") / "data").glob("shop_users.csv")), dtype=str)["customer_phone"]
    loads, port = measure_servers(run, list(ids) + [f"unknown{i}" for i in range(20)], requests, rounds)
    print_loads(f"story 1 catalogue ({users} shop users)", loads)
    services = [start(run, "coordinator", "refresh"), start(run, "party_a", "serve")]
    try:
        wait_healthy(port, services[1])
        _, stderr = timed(run, "party_b", "refresh", "--all")
        refresh = logged_rate(stderr, "refreshed u of")
    finally:
        for proc in services:
            proc.kill()
            proc.wait()
    seconds, stderr = timed(run, "party_a", "recommend", "--k", "20", "--out", str(root / "story1_recs.parquet"))
    return {"loads": loads, "refresh_users_per_s": refresh, "recommend_seconds": seconds,
            "recommend_users_per_s": logged_rate(stderr, "users/s")}


def big_catalogue(root: Path, items: int, users: int, requests: int, rounds: int) -> dict:
    """A 100k-item store built without training, served and scored offline."""
    import torch

    from party_a.config import load
    from party_a.data.tables import align, load_tables
    from party_a.models.model import ActiveModel
    from party_a.serving.store import save_active_model

    rng = np.random.default_rng(0)
    data_dir = root / "big" / "party_a" / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    user_ids = [f"u{i}@example.com" for i in range(users)]
    item_ids = [f"sku{j}" for j in range(items)]
    popularity = rng.zipf(1.3, size=items).astype(float)
    chosen = rng.choice(items, size=(users, 10), p=popularity / popularity.sum())
    pd.DataFrame({"email": user_ids}).to_csv(data_dir / "users.csv", index=False)
    pd.DataFrame({"sku": item_ids, "category": [f"c{j % 50}" for j in range(items)]}).to_csv(data_dir / "items.csv",
                                                                                          index=False)
    pd.DataFrame({"email": np.repeat(user_ids, 10), "sku": [item_ids[j] for j in chosen.ravel()],
                  "ts": np.tile(np.arange(10), users)}).to_csv(data_dir / "orders.csv", index=False)
    sections = {"party_a": {
        "users": {"table": "data/users.csv", "id_column": "email", "ids": {"kind": "email"}},
        "interactions": {"table": "data/orders.csv", "user_column": "email", "item_column": "sku",
                         "timestamp_column": "ts"},
        "items": {"table": "data/items.csv", "id_column": "sku", "categorical": ["category"]},
        "model": {"item_item": False},
    }}
    run = write_local_run(root / "big", sections, run_id="bench-big")
    cfg = load(run.configs["party_a"])
    frame, ids = cfg.users.load()
    t = cfg.training
    tables = load_tables(frame, ids, cfg.users.table, cfg.users.normalizer, t.interactions, t.items)
    shared = np.arange(int(users * 0.6))
    data = align(tables, shared)
    settings = t.model
    model = ActiveModel(data, settings)
    with torch.no_grad():  # the user side starts at zero (party_a/models/model.py): untrained, A alone ranks all alike
        model.mix.weight.normal_(0, 0.3)
    h = model.bias.shape[0]
    manifest = {"run_id": "bench-big", "created": time.time(), "key_fingerprint": "none (bench, not trained)",
                "plan": t.plan().to_message(), "model_settings": dataclasses.asdict(settings), "ease_lambda": None,
                "items": items, "shared_users": int(shared.size), "epochs": {"federated": 0, "a_alone": 0}}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    u = rng.normal(0, 0.5, size=(shared.size, h)).astype(np.float32)
    with torch.no_grad():
        save_active_model(cfg.basics.workdir, "bench-big-model", manifest, {"federated": state, "a_alone": state},
                          tables.items, [ids[r] for r in shared], u)
    loads, _ = measure_servers(run, ids + ["nobody@example.com"], requests, rounds)
    seconds, stderr = timed(run, "party_a", "recommend", "--k", "20", "--out", str(root / "big_recs.parquet"))
    return {"loads": loads, "recommend_seconds": seconds, "recommend_users_per_s": logged_rate(stderr, "users/s"),
            "users": users, "items": items}


@dataclasses.dataclass(frozen=True)
class Round:
    """A time-bounded load on one server: what was asked and answered, by which model."""

    seconds: float
    latencies_ms: np.ndarray
    failed: list[str]
    by_model: Counter
    events: list[str]  # the promotions and rollbacks run meanwhile


def drive_for(port: int, paths: list[str], concurrency: int, seconds: float) -> tuple[float, np.ndarray, list[str],
                                                                                     Counter]:
    """Send random paths for `seconds` on `concurrency` keep-alive connections: the time taken, the latencies of the
    answered requests, the failures (a status other than 200, or a broken connection) and answers per model_id."""
    latencies: list[float] = []
    failed: list[str] = []
    by_model: Counter = Counter()
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine, models, errors = [], Counter(), []
        while time.perf_counter() < deadline:
            path = rng.choice(paths)
            started = time.perf_counter()
            try:
                connection.request("GET", path, headers=AUTH)
                response = connection.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException) as exc:
                errors.append(f"{path}: {exc!r}")
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                continue
            mine.append((time.perf_counter() - started) * 1000)
            if response.status != 200:
                errors.append(f"{path}: {response.status} {body[:200]!r}")
            else:
                models[json.loads(body)["model_id"]] += 1
        connection.close()
        with lock:
            latencies.extend(mine)
            by_model.update(models)
            failed.extend(errors)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started, np.array(latencies), failed, by_model


def promote_and_roll_back(run: LocalRun, model_id: str, every: float, stop: threading.Event,
                          events: list[str]) -> None:
    """Until `stop`: every `every` seconds, `models promote model_id` at A, then `models rollback`, as subprocesses;
    each outcome is noted in `events`."""
    commands = (("models", "promote", model_id), ("models", "rollback"))
    turn = 0
    while not stop.wait(every):
        args = commands[turn % 2]
        out = subprocess.run(run.command("party_a", *args), cwd=ROOT, env=_env(), capture_output=True, text=True)
        events.append(f"{' '.join(args[1:2])}: {'ok' if out.returncode == 0 else out.stderr[-300:]}")
        turn += 1


def stored_ids(run: LocalRun) -> list[str]:
    """A's stored model IDs, oldest first."""
    models = run.workdir("party_a") / "models"
    return sorted((d.name for d in models.iterdir() if d.is_dir() and not d.name.startswith(".")),
                  key=lambda name: json.loads((models / name / "manifest.json").read_text())["created"])


def serve_processes(run: LocalRun, servers: int) -> tuple[list[subprocess.Popen], int]:
    """`servers` service processes of A on one port (the first takes refresh sessions), and the port."""
    (primary, port), _ = serve_configs(run)
    if servers == 1:
        return [start(primary, "party_a", "serve")], port
    base = primary.configs["party_a"].read_text()
    primary.configs["party_a"].write_text(base.replace("\n[serve]\n", "\n[serve]\nreuse_port = true\n"))
    procs = [start(primary, "party_a", "serve")]
    for i in range(1, servers):
        path = primary.configs["party_a"].with_name(f"party_a_serve{i}.toml")
        path.write_text(base.replace("\n[serve]\n", "\n[serve]\nreuse_port = true\nrefresh = false\n"))
        procs.append(start(LocalRun(run.root, {**run.configs, "party_a": path}), "party_a", "serve"))
    return procs, port


def promotions(root: Path, users: int, epochs: int, every: float, seconds: float, rounds: int, concurrency: int,
               servers: int) -> dict:
    """Story 1 trained twice; its service under load in rounds without and with promotions and rollbacks."""
    from scenarios import ecommerce_bank

    run = ecommerce_bank.prepare(root / "promote", users=users, epochs=epochs, seed=0, progress=False)
    for _ in range(2):
        out = run_all(run, timeout=3600)
        if any(o.returncode for o in out.values()):
            raise RuntimeError({r: o.output[-2000:] for r, o in out.items() if o.returncode})
    first, second = stored_ids(run)[-2:]
    ids = pd.read_csv(next((run.dir("party_a") / "data").glob("shop_users.csv")), dtype=str)["customer_phone"]
    paths = [f"/v1/users/{quote(u, safe='')}/recommendations?k=10" for u in ids]
    procs, port = serve_processes(run, servers)
    measured: dict[str, list[Round]] = {"baseline": [], "promotions": []}
    try:
        for proc in procs:
            wait_healthy(port, proc)
        drive_for(port, paths, 4, 3)  # warm-up
        for _ in range(rounds):
            for mode in measured:
                events: list[str] = []
                stop = threading.Event()
                promoter = threading.Thread(target=promote_and_roll_back, args=(run, first, every, stop, events))
                if mode == "promotions":
                    promoter.start()
                taken, latencies, failed, by_model = drive_for(port, paths, concurrency, seconds)
                stop.set()
                if mode == "promotions":
                    promoter.join()
                    subprocess.run(run.command("party_a", "models", "promote", second), cwd=ROOT, env=_env(),
                                   capture_output=True, check=True)
                    drive_for(port, paths, concurrency, 5)  # requests make every server load the second model again
                measured[mode].append(Round(taken, latencies, failed, by_model, events))
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)
    return {"models": (first, second), "rounds": measured}


def print_promotions(result: dict, concurrency: int, every: float, servers: int) -> dict:
    """The table of both modes, pooled over rounds, and their ratios; returns it as a dict."""
    rows = {}
    print(f"\nstory 1 served at concurrency {concurrency} by {servers} process(es); promotions: promote every "
          f"{every:g} s, roll back {every:g} s later")
    print(f"{'mode':<11} {'requests':>9} {'failed':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'events':>7}  "
          f"answers per model_id")
    for mode, measured in result["rounds"].items():
        latencies = np.concatenate([r.latencies_ms for r in measured])
        by_model = sum((r.by_model for r in measured), Counter())
        row = {"requests": int(latencies.size + sum(len(r.failed) for r in measured)),
               "failed": sum(len(r.failed) for r in measured),
               "requests_per_s": latencies.size / sum(r.seconds for r in measured),
               "p50_ms": float(np.percentile(latencies, 50)), "p99_ms": float(np.percentile(latencies, 99)),
               "events": sum(len(r.events) for r in measured), "by_model": dict(by_model),
               "failures": [f for r in measured for f in r.failed][:5],
               "event_failures": [e for r in measured for e in r.events if not e.endswith(": ok")][:5]}
        rows[mode] = row
        answers = ", ".join(f"{model[-6:]}: {count}" for model, count in sorted(by_model.items()))
        print(f"{mode:<11} {row['requests']:>9} {row['failed']:>7} {row['requests_per_s']:>8.1f} "
              f"{row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} {row['events']:>7}  {answers}")
    base, promo = rows["baseline"], rows["promotions"]
    print(f"promotions / baseline: req/s {promo['requests_per_s'] / base['requests_per_s']:.2f}×, p99 "
          f"{promo['p99_ms'] / base['p99_ms']:.2f}×; models {', '.join(result['models'])}")
    for mode, row in rows.items():
        for failure in row["failures"] + row["event_failures"]:
            print(f"{mode}: {failure}")
    return rows


def print_loads(title: str, loads: dict[str, list[Load]]) -> list[dict]:
    """The latency table, then federated / A alone per concurrency; returns the rows."""
    rows = [load.row(name) for name, measured in loads.items() for load in measured]
    print(f"\n{title}")
    print(f"{'server':<18} {'conc.':>5} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'req/s':>8}")
    for r in rows:
        print(f"{r['server']:<18} {r['concurrency']:>5} {r['p50_ms']:>8.2f} {r['p95_ms']:>8.2f} {r['p99_ms']:>8.2f} "
              f"{r['requests_per_s']:>8.1f}")
    fed, alone = loads["federated"], loads["A alone (u = 0)"]
    for f, a in zip(fed, alone):
        print(f"federated / A alone at concurrency {f.concurrency}: p50 "
              f"{np.percentile(f.latencies_ms, 50) / np.percentile(a.latencies_ms, 50):.2f}×, p99 "
              f"{np.percentile(f.latencies_ms, 99) / np.percentile(a.latencies_ms, 99):.2f}×")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=2000, help="story 1: users of the shop (party A)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--requests", type=int, default=1000, help="requests per concurrency level and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over the concurrency levels, both servers")
    parser.add_argument("--big-items", type=int, default=100_000)
    parser.add_argument("--big-users", type=int, default=100_000)
    parser.add_argument("--skip-big", action="store_true")
    parser.add_argument("--dir", type=Path, default=Path("runs/bench/serve"))
    parser.add_argument("--promote-every", type=float, metavar="S",
                        help="instead: the load with a promote, then a rollback, every S seconds, against the same "
                             "load without (story 1 trained twice)")
    parser.add_argument("--seconds", type=float, default=20, help="with --promote-every: seconds per round and mode")
    parser.add_argument("--concurrency", type=int, default=32, help="with --promote-every: connections")
    parser.add_argument("--servers", type=int, default=1, help="with --promote-every: service processes on the port")
    args = parser.parse_args()
    results: dict = {}
    if args.promote_every is not None:
        result = promotions(args.dir, args.users, args.epochs, args.promote_every, args.seconds, args.rounds,
                            args.concurrency, args.servers)
        rows = print_promotions(result, args.concurrency, args.promote_every, args.servers)
        args.dir.mkdir(parents=True, exist_ok=True)
        (args.dir / "promote.json").write_text(json.dumps(rows, indent=2) + "\n")
        return
    one = story_one(args.dir, args.users, args.epochs, args.requests, args.rounds)
    results["story1"] = {"loads": [load.row(name) for name, measured in one["loads"].items() for load in measured],
                         **{k: v for k, v in one.items() if k != "loads"}}
    print(f"refresh --all: {one['refresh_users_per_s']:.0f} users/s; recommend (top-20, every user of A): "
          f"{one['recommend_seconds']:.1f}s ({one['recommend_users_per_s']:.0f} users/s)")
    if not args.skip_big:
        big = big_catalogue(args.dir, args.big_items, args.big_users, args.requests, args.rounds)
        results["big"] = {"loads": print_loads(f"{args.big_items} items, {args.big_users} users of A", big["loads"]),
                          **{k: v for k, v in big.items() if k != "loads"}}
        print("retrieval recall@100 against exhaustive scoring: 1.0 (the retrieval stage is the exact product over "
              "every item, which is this model's full score)")
        print(f"recommend (top-20, {args.big_users} users): {big['recommend_seconds']:.1f}s "
              f"({big['recommend_users_per_s']:.0f} users/s)")
    args.dir.mkdir(parents=True, exist_ok=True)
    (args.dir / "serve.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
