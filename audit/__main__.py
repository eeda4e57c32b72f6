"""The leakage audit's command line.

    python -m audit --story ecommerce_bank --users 2000 --epochs 12   # the sweep on the plaintext twin
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
from audit.report import FRACTIONS, Outcome, attack_run, attack_table, plot_curve, quality_table
from audit.sweep import DEFENDERS, STORIES, TARGETS, a_alone, ease_lambda, prepare_story, sweep
from party_a import config as party_a_config
from party_b import config as party_b_config
from protocol.runtime.received import load_received


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
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--targets", type=float, nargs="+", default=list(TARGETS), help="ε of each defended setting")
    parser.add_argument("--defend", choices=DEFENDERS, default="both", help="whose defence the sweep turns on")
    parser.add_argument("--dir", type=Path, help="the sweep's run directory (replaced); default runs/audit/<story>")
    args = parser.parse_args()
    if args.run is not None:
        out = args.run
        outcomes, alone, k = attack_recorded(out)
    else:
        out = args.dir or Path("runs/audit") / args.story
        parties = prepare_story(args.story, out, args.users, args.epochs, args.seed)
        lam = ease_lambda(parties)
        outcomes = sweep(parties, lam, tuple(args.targets), args.seed, args.defend)
        alone, k = a_alone(parties, lam), parties.joined.training.eval.k
    print(quality_table(outcomes, alone, k))
    for fraction in FRACTIONS:
        print()
        print(attack_table(outcomes, fraction))
    (out / "audit.json").write_text(json.dumps({"outcomes": [dataclasses.asdict(o) for o in outcomes],
                                                "a_alone": alone}, indent=2, default=str) + "\n")
    plot_curve(outcomes, alone, k, out / "privacy_utility.png")
    print(f"\naudit.json and privacy_utility.png in {out}")


if __name__ == "__main__":
    main()
