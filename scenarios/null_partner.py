"""Story 1 with a partner that knows nothing: the bank's columns are noise.

    python -m scenarios.null_partner
    python -m scenarios.null_partner --users 500 --epochs 3 --dir runs/null-small

The shop's tables, the bank's customers and their phone numbers are exactly story 1's
(`scenarios/ecommerce_bank.py`, same seed, same sizes), so PSI finds the same
intersection; then every column of the bank's table but the phone is shuffled on its
own across the bank's rows. Each column keeps its type and its values (the same
marginal distribution, the same encoding at B), but no longer belongs to the person
in its row, nor goes with the other columns: B's side is well-formed and carries no
signal about anyone. The federated model must then do as well as A alone, within
noise: whatever it learns from B is fitted to nothing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from scenarios.ecommerce_bank import BANK, ITEMS_PER_USER, SHOP
from scenarios.experiment import build_run, fresh_run_dir, scenario_main
from scenarios.launch import LocalRun
from scenarios.synth import write_ecommerce_bank

NOISE_SEED = 0x6E756C6C  # mixed with the story's seed, so the shuffles are not the story's own draws


def noise_columns(frame: pd.DataFrame, keep: str, seed: int) -> pd.DataFrame:
    """`frame` with every column but `keep` shuffled on its own across the rows (types and values kept)."""
    rng = np.random.default_rng([NOISE_SEED, seed])
    return pd.DataFrame({c: frame[c].to_numpy() if c == keep else frame[c].to_numpy()[rng.permutation(len(frame))]
                         for c in frame.columns})


def prepare(root: Path, users: int, epochs: int, seed: int, **settings: object) -> LocalRun:
    """Tables, certificates and configs of a fresh run in `root` (settings: key_bits, progress, tower, [train] keys)."""
    fresh_run_dir(root)
    items = max(30, int(users * ITEMS_PER_USER))
    tables = write_ecommerce_bank(root / "party_a" / "data", root / "party_b" / "data", users, items, seed)
    bank = tables["bank_customers"]
    original = pd.read_csv(bank, dtype={"phone": str})
    noise_columns(original, "phone", seed).to_csv(bank, index=False)
    return build_run(root, tables, SHOP, BANK, f"null-partner-{seed}", epochs, **settings)


if __name__ == "__main__":
    scenario_main(__doc__, prepare, "runs/null_partner", "users of the shop (party A)", 2000, 12)
