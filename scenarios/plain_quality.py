"""Model quality without the secure layer: A's baselines, A alone and centralised, over several seeds.

    python -m scenarios.plain_quality --story ecommerce_bank --users 2000 --seeds 0 1 2

For each seed it writes a story's tables and configs (no processes are started),
aligns the shared users in plaintext (the intersection PSI would find), fits
popularity, item-kNN and EASE on A's training events, and trains our model twice
with the federated run's loop: with u = 0 (A alone) and with B's tower and W in the
clear (centralised, which the federated model matches up to fixed-point rounding).
Every model is scored on the test lists, our models for the epoch chosen on
validation. Prints mean ± standard deviation over seeds, overall and for cold users.
A development tool: the secure run is what the product reports.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from party_a import config as party_a_config
from party_a.models.baselines import chosen_ease_lambda, fit_baselines
from party_a.models.evaluate import evaluation_lists, metrics
from party_b import config as party_b_config
from scenarios import bank_offers, ecommerce_bank
from scenarios.centralised import PlainLayer, load_joined, train
from scenarios.experiment import spread_table
from scenarios.launch import LocalRun

STORIES = {"ecommerce_bank": ecommerce_bank, "bank_offers": bank_offers}


def plain_align(run: LocalRun) -> None:
    """Write both parties' aligned rows for the shared users, in A's row order, as PSI would."""
    _, ids_a = party_a_config.load(run.configs["party_a"]).users.load()
    _, ids_b = party_b_config.load(run.configs["party_b"]).users.load()
    row_b = {uid: r for r, uid in enumerate(ids_b)}
    shared = [(a, row_b[uid]) for a, uid in enumerate(ids_a) if uid in row_b]
    for role, column in (("party_a", 0), ("party_b", 1)):
        out = run.workdir(role) / "psi"
        out.mkdir(parents=True, exist_ok=True)
        rows = np.array([[k, pair[column]] for k, pair in enumerate(shared)], dtype=np.int64)
        np.savetxt(out / "aligned_rows.csv", rows, fmt="%d", delimiter=",", header="position,row", comments="")


def one_seed(story: str, root: Path, users: int, epochs: int, seed: int,
             **settings: object) -> tuple[int, dict[str, dict]]:
    """k and the test metrics of every model for one seed of the synthetic data."""
    run = STORIES[story].prepare(root, users, epochs, seed, progress=False, **settings)
    plain_align(run)
    joined = load_joined(run.configs["party_a"], run.configs["party_b"])
    data, e = joined.data, joined.training.eval
    lists = evaluation_lists(data, joined.training)
    valid, test = lists["valid"], lists["test"]
    results: dict[str, dict] = {}
    baselines = fit_baselines(data, valid, e.k)
    for b in baselines:
        results[b.name] = metrics(b.scores(test), test.cold, e.k)
        print(f"  seed {seed} {b.name}: {b.setting}", flush=True)
    lam, plan = chosen_ease_lambda(baselines), joined.training.plan()
    w0 = np.random.default_rng(seed).normal(0, 1 / math.sqrt(plan.d), (plan.d, plan.h))
    trained = train(data, joined.b_features, joined.training, joined.tower, PlainLayer(w0, plan.lr_w),
                    ease_lambda=lam)
    results["a_alone"], results["centralised"] = trained.alone.test, trained.test
    print(f"  seed {seed} a_alone: {trained.alone.stopper.choice().reason}", flush=True)
    print(f"  seed {seed} centralised: {trained.choice.reason}", flush=True)
    return e.k, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--story", choices=sorted(STORIES), default="ecommerce_bank")
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--dir", type=Path, default=Path("runs/plain_quality"))
    parser.add_argument("--out", type=Path, help="also write the per-seed metrics as JSON here")
    args = parser.parse_args()
    runs = [one_seed(args.story, args.dir / f"seed{s}", args.users, args.epochs, s) for s in args.seeds]
    per_seed = [results for _, results in runs]
    print(spread_table(per_seed, runs[0][0]))
    if args.out:
        args.out.write_text(json.dumps(per_seed, indent=2) + "\n")


if __name__ == "__main__":
    main()
