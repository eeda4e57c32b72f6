"""Warm start against a retrain from scratch on grown data: quality and secure training time, over seeds.

    python -m bench.warm_start                               # story 1, 2000 shop users, seeds 0 1 2
    python -m bench.warm_start --users 500 --seeds 0 --epochs 4   # a quick look

Per seed, story 1's tables are generated at full size (scenarios/synth.py), then
shrunk for a first run: a random tenth of the people leave both parties' tables (the
shop's users and the bank's customers, and their orders), and the latest tenth of the
remaining orders (by timestamp) go too. The first run trains from scratch on the shrunk
tables and puts its model in service at all three roles. Then the full tables come back
(10 % more users at each party, 10 % more orders from the first run's users on top of
the new users' own) and two runs follow on them, through three processes with 2048-bit
keys as always: (a) a warm start, `--from current` at all three roles, and (b) a
retrain from scratch. The table gives, per seed and as mean ± sd, the test HR@10 and
NDCG@10 (overall and cold users) of the federated model each run leaves in service (for
(a): the new model if it was promoted, else the model in service, scored on the same
run's lists as its epoch 0), its secure training time (A's, training steps only) and
whole run, and the ratio of (a)'s training time to (b)'s. The two runs' lists differ in
their sampled negatives (each PSI orders the users afresh), as two seeds' do.
runs/bench/warm_start/warm_start.json keeps the figures.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from party_a.config import TrainSettings
from scenarios.ecommerce_bank import prepare
from scenarios.experiment import spread
from scenarios.launch import LocalRun, start, wait_all

ROLES = ("coordinator", "party_a", "party_b")
METRICS = (("overall", "hr"), ("overall", "ndcg"), ("cold", "hr"), ("cold", "ndcg"))
HEADS = ("HR@10", "NDCG@10", "cold HR@10", "cold NDCG@10")
TABLES = {"party_a": ("shop_users.csv", "orders.csv"), "party_b": ("bank_customers.csv",)}


def digits(phone: pd.Series) -> pd.Series:
    """A phone number's last 10 digits, however the party writes it: the person it names."""
    return phone.str.replace(r"\D", "", regex=True).str[-10:]


def shrink(run: LocalRun, seed: int, share: float) -> dict[str, int]:
    """Keep the full tables aside (`*.full`) and leave the first run's in place: less `share` of the people at
    both parties and less the latest `share` of the other orders. Returns the sizes before and after."""
    shop, bank, orders = (run.dir(role) / "data" / name for role, name in
                          (("party_a", "shop_users.csv"), ("party_b", "bank_customers.csv"),
                           ("party_a", "orders.csv")))
    frames = {path: pd.read_csv(path, dtype=str, keep_default_na=False) for path in (shop, bank, orders)}
    for path in frames:
        shutil.copyfile(path, path.with_suffix(".csv.full"))
    people = pd.concat([digits(frames[shop]["customer_phone"]), digits(frames[bank]["phone"])]).unique()
    gone = set(np.random.default_rng(seed).choice(people, size=int(round(share * people.size)), replace=False))
    kept_orders = frames[orders][~digits(frames[orders]["customer_phone"]).isin(gone)]
    latest = kept_orders["timestamp"].rank(method="first", ascending=False) <= share * len(kept_orders)
    first = {shop: frames[shop][~digits(frames[shop]["customer_phone"]).isin(gone)],
             bank: frames[bank][~digits(frames[bank]["phone"]).isin(gone)], orders: kept_orders[~latest]}
    for path, frame in first.items():
        frame.to_csv(path, index=False)
    return {f"{path.stem}_first": len(first[path]) for path in first} | \
        {f"{path.stem}_grown": len(frames[path]) for path in frames}


def grow(run: LocalRun) -> None:
    """Put the full tables back for the runs that follow."""
    for role, names in TABLES.items():
        for name in names:
            path = run.dir(role) / "data" / name
            shutil.copyfile(path.with_suffix(".csv.full"), path)


def one_run(run: LocalRun, *args: str) -> dict:
    """All three roles with `args` (e.g. --from current); A's report with the run's wall time."""
    started = time.perf_counter()
    out = wait_all(run, {role: start(run, role, *args) for role in ROLES}, timeout=14400)
    failed = {role: o.output[-2000:] for role, o in out.items() if o.returncode != 0}
    if failed:
        raise SystemExit(f"the run in {run.root} failed: {failed}")
    report = json.loads((run.workdir("party_a") / "report.json").read_text())
    return {**report, "wall_seconds": time.perf_counter() - started}


def summary(report: dict) -> dict:
    """What a run leaves in service: its federated model's test metrics, its training time, whether it went in
    service (a warm start's only if it validated better)."""
    test = report["chosen"]["federated"]["test"]
    return {**{f"{scope} {name}": test[scope][name] for scope, name in METRICS},
            "secure_seconds": report["timing"]["secure_training_seconds"], "wall_seconds": report["wall_seconds"],
            "epochs": len(report["epochs"]), "chosen_epoch": report["chosen"]["federated"]["epoch"],
            "promoted": report["model"].get("promoted", True)}


def one_seed(root: Path, users: int, epochs: int, warm_epochs: int, seed: int, share: float) -> dict:
    run = prepare(root, users, epochs, seed, progress=False, warm_epochs=warm_epochs)
    sizes = shrink(run, seed, share)
    first = one_run(run)
    print(f"seed {seed}: first run from scratch on {sizes}: federated epoch {first['chosen']['federated']['epoch']}, "
          f"{first['timing']['secure_training_seconds']:.0f}s secure training", flush=True)
    grow(run)
    warm = summary(one_run(run, "--from", "current"))
    print(f"seed {seed}: warm start: {warm}", flush=True)
    full = summary(one_run(run))
    print(f"seed {seed}: from scratch: {full}", flush=True)
    return {"seed": seed, "sizes": sizes, "warm": warm, "full": full}


def table(results: list[dict]) -> str:
    names = [f"{scope} {name}" for scope, name in METRICS]
    head = f"{'run':<32} | " + " ".join(f"{h:>17}" for h in HEADS) + \
        f" | {'secure s':>15} {'whole run s':>15} {'epochs':>6}"
    lines = [head, "-" * len(head)]
    for kind, label in (("warm", "warm (--from current)"), ("full", "from scratch")):
        for r in results:
            m = r[kind]
            lines.append(f"{label + ' seed ' + str(r['seed']):<32} | " + " ".join(f"{m[n]:>17.4f}" for n in names) +
                         f" | {m['secure_seconds']:>15.1f} {m['wall_seconds']:>15.1f} {m['epochs']:>6d}")
        if len(results) > 1:
            lines.append(f"{label + ' mean ± sd':<32} | " + " ".join(f"{spread([r[kind][n] for r in results]):>17}"
                                                                   for n in names) +
                         f" | {spread([r[kind]['secure_seconds'] for r in results], 1):>15} "
                         f"{spread([r[kind]['wall_seconds'] for r in results], 1):>15}")
    return "\n".join(lines)


def verdict(results: list[dict]) -> list[str]:
    """The target: warm within the retrain's seed spread (mean ± sd) on every metric, or above it, in at most 30 %
    of its secure training time."""
    lines = []
    for name in (f"{scope} {n}" for scope, n in METRICS):
        warm, full = [r["warm"][name] for r in results], [r["full"][name] for r in results]
        sd = float(np.std(full, ddof=1)) if len(full) > 1 else 0.0
        gap = np.mean(warm) - np.mean(full)
        where = "within" if abs(gap) <= sd else "above" if gap > 0 else "below"
        lines.append(f"{name}: warm - scratch {gap:+.4f} (scratch's sd over seeds {sd:.4f}): {where} the spread")
    ratio = sum(r["warm"]["secure_seconds"] for r in results) / sum(r["full"]["secure_seconds"] for r in results)
    wall = sum(r["warm"]["wall_seconds"] for r in results) / sum(r["full"]["wall_seconds"] for r in results)
    lines.append(f"secure training time, warm / scratch: {ratio:.3f} ({'within' if ratio <= 0.3 else 'above'} the "
                 f"30 % target); whole run: {wall:.3f}")
    promoted = sum(r["warm"]["promoted"] for r in results)
    lines.append(f"warm starts put in service (validated better than the model in service): {promoted} of "
                 f"{len(results)}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=2000, help="users of the shop (party A) in the grown tables")
    parser.add_argument("--epochs", type=int, default=TrainSettings.epochs, help="[train] epochs from scratch")
    parser.add_argument("--warm-epochs", type=int, default=TrainSettings.warm_epochs, help="[train] warm_epochs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--share", type=float, default=0.1, help="share of people and of orders the first run lacks")
    parser.add_argument("--dir", type=Path, default=Path("runs/bench/warm_start"))
    args = parser.parse_args()
    results = [one_seed(args.dir / f"seed{seed}", args.users, args.epochs, args.warm_epochs, seed, args.share)
               for seed in args.seeds]
    print(f"\nstory 1, {args.users} shop users grown by {args.share:.0%} of people and orders; test metrics of the "
          f"federated model each run leaves in service")
    print(table(results))
    print("\n".join(verdict(results)))
    (args.dir / "warm_start.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                          "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
