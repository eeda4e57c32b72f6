"""Story 1: an e-commerce platform (party A) recommends products; a bank (party B) contributes.

    python -m scenarios.ecommerce_bank                      # the default size, what `make demo` runs
    python -m scenarios.ecommerce_bank --users 500 --epochs 3 --dir runs/small
    python -m scenarios.ecommerce_bank --from-postgres postgresql://vfrec@localhost/vfrec --postgres-password-file pw

Generates the shop's users, catalogue and orders and the bank's customer profiles
(scenarios/synth.py tells the story), writes each party's tables, config and
certificates into the run directory, runs the coordinator, the shop and the bank as
three processes over mutual TLS with 2048-bit Paillier keys, trains the centralised
baseline on the same split, and prints the result table. report.json and curves.png
end up in the run directory. --users is the number of shop users; 60 % of them are
also bank customers, and the bank has three times as many customers. With
--from-postgres the tables are copied into that database (schemas shop and bank) and
both parties read them from there. The coordinator draws W0 from --seed (its
`w0_seed`), so the same --seed gives the same report, from files or from PostgreSQL.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from scenarios.experiment import build_run, fresh_run_dir, scenario_main
from scenarios.launch import LocalRun
from scenarios.postgres import to_postgres
from scenarios.synth import CATEGORIES, write_ecommerce_bank

PHONE = {"kind": "phone", "country_code": "1"}
SPEND = [f"spend_{c}" for c in CATEGORIES]
ITEMS_PER_USER = 0.15  # catalogue size relative to the shop's users

SHOP = {
    "users": {"table": "{shop_users}", "id_column": "customer_phone", "categorical": ["signup_channel", "device"],
              "ids": PHONE},
    "interactions": {"table": "{orders}", "user_column": "customer_phone", "item_column": "sku",
                     "label_column": "rating", "threshold": 4.0, "timestamp_column": "timestamp"},
    "items": {"table": "{catalogue}", "id_column": "sku", "categorical": ["category", "brand", "price_band"]},
}
BANK = {
    "users": {"table": "{bank_customers}", "id_column": "phone",
              "numeric": ["tenure_years", "credit_limit", *SPEND, "savings_rate"], "log": ["credit_limit", *SPEND],
              "categorical": ["age_band", "income_band"], "ids": PHONE},
}


def prepare(root: Path, users: int, epochs: int, seed: int, from_postgres: str | None = None,
            postgres_password_file: Path | None = None, **settings: object) -> LocalRun:
    """Tables, certificates and configs of a fresh run in `root` (settings: key_bits, progress, tower, [train] keys).
    With `from_postgres` (a database URL) the tables are copied there and both parties read them from there."""
    fresh_run_dir(root)
    items = max(30, int(users * ITEMS_PER_USER))
    tables = write_ecommerce_bank(root / "party_a" / "data", root / "party_b" / "data", users, items, seed)
    shop, bank = SHOP, BANK
    if from_postgres:
        password = postgres_password_file.resolve() if postgres_password_file else None
        shop, bank = (to_postgres(sections, lambda key: tables[key[1:-1]], from_postgres, password, schema)
                      for sections, schema in ((SHOP, "shop"), (BANK, "bank")))
    return build_run(root, tables, shop, bank, f"ecommerce-bank-{seed}", epochs, w0_seed=seed, **settings)


def postgres_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from-postgres", metavar="URL", help="copy the tables into this PostgreSQL database "
                        "(postgresql://user@host:port/db) and have both parties read them from there")
    parser.add_argument("--postgres-password-file", type=Path, help="the database user's password (mode 0600)")


if __name__ == "__main__":
    scenario_main(__doc__, prepare, "runs/ecommerce_bank", "users of the shop (party A)", 2000, 12, postgres_options)
