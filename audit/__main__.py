"""The leakage audit's command line.

    python -m audit --story ecommerce_bank --seeds 0 1 2              # the sweep on the plaintext twin
    python -m audit --run runs/ecommerce_bank                           # a real run's records ([audit] record)

Prints the result tables (the federated model's quality and each party's ε per
setting; every attack against its no-federation baseline) and writes audit.json and
privacy_utility.png into the run directory (the sweep: --dir).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from audit.parties import load_parties
from audit.report import FRACTIONS, Outcome, attack_run, attack_table, plot_curve, quality_table, seeds_table
from audit.sweep import DEFENDERS, STORIES, TARGETS, a_alone, ease_lambda, prepare_story, sweep
from party_a import config as party_a_config
from party_b import config as party_b_config
from protocol.layer.received import load_received


def attack_recorded(root: Path) -> tuple[list[Outcome], dict, int]:
    """The attacks on a real run's records (both parties ran with [audit] record = true)."""
    configs = {role: root / role / f"{role}.toml" for role in ("party_a", "party_b")}
    work_a = party_a_config.load(configs["party_a"]).basics.workdir
    work_b = party_b_config.load(configs["party_b"]).basics.workdir
    parties = load_parties(configs["party_a"], configs["party_b"])
    report = json.loads((work_a / "report.json").read_text())
    spent_b = json.loads((work_b / "audit" / "privacy.json").read_text())
    outcome = Outcome("run", report["privacy"]["epsilon"], spent_b["epsilon"],
                      report["chosen"]["federated"]["test"])
    outcome.attacks = attack_run(parties, load_received(work_a, "u_eval"), load_received(work_a, "u_train"),
                                 load_received(work_b, "g"))
    return [outcome], report["chosen"]["a_alone"]["test"], report["eval"]["k"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="attack a real run's records instead of sweeping")
    parser.add_argument("--story", choices=sorted(STORIES), default="ecommerce_bank")
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one sweep per seed of the story's data")
    parser.add_argument("--targets", type=float, nargs="+", default=list(TARGETS), help="ε of each defended setting")
    parser.add_argument("--defend", choices=DEFENDERS, default="both", help="whose defence the sweep turns on")
    parser.add_argument("--dir", type=Path, help="the sweep's directory (replaced); default runs/audit/<story>")
    args = parser.parse_args()
    runs, alones, seeds = [], [], args.seeds
    if args.run is not None:
        out = args.run
        outcomes, alone, k = attack_recorded(out)
        runs, alones, seeds = [outcomes], [alone], ["run"]
    else:
        out = args.dir or Path("runs/audit") / args.story
        for seed in seeds:
            parties = prepare_story(args.story, out / f"seed{seed}", args.users, args.epochs, seed)
            lam = ease_lambda(parties)
            runs.append(sweep(parties, lam, tuple(args.targets), seed, args.defend))
            alones.append(a_alone(parties, lam))
            k = parties.joined.training.eval.k
    for seed, outcomes, alone in zip(seeds, runs, alones):
        print(f"\nseed {seed}\n")
        print(quality_table(outcomes, alone, k))
        for fraction in FRACTIONS:
            print()
            print(attack_table(outcomes, fraction))
    if len(runs) > 1:
        print(f"\nover seeds {' '.join(map(str, seeds))} (mean ± standard deviation; leakage: largest attack − "
              "baseline)\n")
        print(seeds_table(runs, alones, k))
    per_seed = [{"seed": seed, "outcomes": [dataclasses.asdict(o) for o in outcomes], "a_alone": alone}
                for seed, outcomes, alone in zip(seeds, runs, alones)]
    (out / "audit.json").write_text(json.dumps({"seeds": per_seed}, indent=2, default=str) + "\n")
    plot_curve(runs, alones, k, out / "privacy_utility.png")
    print(f"\naudit.json and privacy_utility.png in {out}")


if __name__ == "__main__":
    main()
