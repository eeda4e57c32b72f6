"""Story 1: an e-commerce platform (party A) recommends products; a bank (party B) contributes.

    python -m scenarios.ecommerce_bank                       # the default size, what `make demo` runs
    python -m scenarios.ecommerce_bank --shop-users 500 --epochs 3 --dir runs/small

Generates the shop's users, catalogue and orders and the bank's customer profiles
(scenarios/synth.py tells the story), writes each party's tables, config and
certificates into its own directory, runs the coordinator, the shop and the bank as
three processes over mutual TLS with 2048-bit Paillier keys, trains the centralised
baseline on the same split, and prints the result table. report.json and curves.png
end up in the run directory.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from scenarios.experiment import run_experiment, summary_table
from scenarios.launch import write_local_run
from scenarios.synth import CATEGORIES, write_ecommerce_bank

PHONE = {"kind": "phone", "country_code": "1"}
SPEND = [f"spend_{c}" for c in CATEGORIES]


def sections(paths: dict, epochs: int, key_bits: int = 2048, progress: bool = True, **train: object) -> dict:
    """Each role's own config sections for the generated tables."""
    return {
        "coordinator": {"key": {"bits": key_bits}},
        "party_a": {
            "users": {"table": str(paths["shop_users"]), "id_column": "customer_phone",
                      "categorical": ["signup_channel", "device"], "ids": PHONE},
            "interactions": {"table": str(paths["orders"]), "user_column": "customer_phone", "item_column": "sku",
                             "label_column": "rating", "threshold": 4.0, "timestamp_column": "timestamp"},
            "items": {"table": str(paths["catalogue"]), "id_column": "sku",
                      "categorical": ["category", "brand", "price_band"]},
            "train": {"epochs": epochs, "progress": progress, **train},
            "psi": {"progress": progress},
        },
        "party_b": {
            "users": {"table": str(paths["bank_customers"]), "id_column": "phone",
                      "numeric": ["tenure_years", "credit_limit", *SPEND, "savings_rate"],
                      "log": ["credit_limit", *SPEND], "categorical": ["age_band", "income_band"], "ids": PHONE},
            "psi": {"progress": progress},
        },
    }


def prepare(root: Path, shop_users: int, items: int, epochs: int, seed: int, key_bits: int = 2048,
            progress: bool = True, **train: object):
    """Tables, certificates and configs of a fresh run in `root`; returns the LocalRun."""
    if root.exists():
        if not (root / "party_a.toml").exists() and any(root.iterdir()):
            raise SystemExit(f"{root} exists and does not hold a previous run; choose another --dir")
        shutil.rmtree(root)
    paths = {k: p.relative_to(root) for k, p in write_ecommerce_bank(root / "data", shop_users, items, seed).items()}
    return write_local_run(root, sections(paths, epochs, key_bits, progress, **train), run_id=f"ecommerce-bank-{seed}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path("runs/ecommerce_bank"), help="run directory (replaced)")
    parser.add_argument("--shop-users", type=int, default=2000, help="users of the shop (60 %% are bank customers)")
    parser.add_argument("--items", type=int, default=300, help="items in the catalogue")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    run = prepare(args.dir, args.shop_users, args.items, args.epochs, args.seed)
    print(f"tables, certificates and configs in {args.dir}; starting coordinator, shop (A) and bank (B)", flush=True)
    report = run_experiment(run)
    print()
    print(summary_table(report))
    t = report["timing"]
    print(f"\nsecure training {t['secure_training_seconds']:.0f}s ({t['user_steps_per_second']:.0f} user-steps/s), "
          f"whole run {report['wall_seconds']['total']:.0f}s; report {args.dir / 'report.json'}, "
          f"curves {args.dir / 'curves.png'}")


if __name__ == "__main__":
    main()
