"""Story 2: a bank (party A) recommends its own products; an e-commerce platform (party B) contributes.

    python -m scenarios.bank_offers
    python -m scenarios.bank_offers --users 1000 --epochs 3 --dir runs/offers-small

The bank's customers, its catalogue of cards, instalment plans, insurance and savings
products and its customers' take-up history are party A's tables; the shop's
behaviour columns (orders per category, basket size, return rate, recency) are party
B's (scenarios/synth.py tells the story). Same machinery as story 1 with the roles
swapped: nothing in the code knows which organisation plays which role. With 16
products, each held-out product is ranked against 10 sampled ones and hits count in
the top 3. --users is the number of shop users; the bank has three times as many
customers and 60 % of the shop's users are among them.
"""

from __future__ import annotations

from pathlib import Path

from scenarios.experiment import build_run, fresh_run_dir, scenario_main
from scenarios.launch import LocalRun
from scenarios.synth import CATEGORIES, write_bank_offers

PHONE = {"kind": "phone", "country_code": "1"}
ORDERS = [f"orders_{c}" for c in CATEGORIES]

BANK = {
    "users": {"table": "{bank_customers}", "id_column": "phone", "numeric": ["tenure_years"],
              "categorical": ["age_band", "segment"], "ids": PHONE},
    "interactions": {"table": "{takeup}", "user_column": "customer", "item_column": "product_id",
                     "timestamp_column": "opened_day"},
    "items": {"table": "{products}", "id_column": "product_id", "categorical": ["kind"]},
    "eval": {"negatives": 10, "k": 3},
}
SHOP = {
    "users": {"table": "{shop_behaviour}", "id_column": "customer_phone",
              "numeric": [*ORDERS, "avg_basket", "return_rate", "days_since_last_order"],
              "log": [*ORDERS, "avg_basket"], "categorical": ["device"], "ids": PHONE},
}


def prepare(root: Path, users: int, epochs: int, seed: int, **settings: object) -> LocalRun:
    """Tables, certificates and configs of a fresh run in `root` (settings: key_bits, progress, tower, [train] keys)."""
    fresh_run_dir(root)
    tables = write_bank_offers(root / "party_a" / "data", root / "party_b" / "data", users, seed)
    return build_run(root, tables, BANK, SHOP, f"bank-offers-{seed}", epochs, **settings)


if __name__ == "__main__":
    scenario_main(__doc__, prepare, "runs/bank_offers", "users of the shop (party B)", 1000, 12)
