"""The null partner: story 1 with B's columns shuffled to noise; well-formed, but unrelated to anyone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from scenarios import null_partner
from scenarios.synth import INCOME_BANDS, write_ecommerce_bank


def test_noise_keeps_shapes_types_and_values_but_not_who_holds_them(tmp_path: Path) -> None:
    paths = write_ecommerce_bank(tmp_path / "a", tmp_path / "b", 1000, 150, seed=0)
    original = pd.read_csv(paths["bank_customers"], dtype={"phone": str})
    noise = null_partner.noise_columns(original, "phone", seed=0)
    assert noise.shape == original.shape and list(noise.columns) == list(original.columns)
    assert (noise.dtypes == original.dtypes).all()
    assert noise["phone"].equals(original["phone"])
    for column in original.columns.drop("phone"):
        assert sorted(noise[column]) == sorted(original[column])  # the same values: the same marginal
        same_row = (noise[column] == original[column]).mean()
        chance = (original[column].value_counts(normalize=True) ** 2).sum()
        assert same_row < chance + 0.05, column  # a value stays with its person no more often than by chance
    spend = [c for c in original.columns if c.startswith("spend_")]
    numeric = spend + ["tenure_years", "credit_limit", "savings_rate"]
    cross = np.corrcoef(noise[numeric].to_numpy().T, original[numeric].to_numpy().T)[:len(numeric), len(numeric):]
    assert np.abs(cross).max() < 0.1  # no column of the noise follows any column of the signal
    band = {b: i for i, b in enumerate(INCOME_BANDS)}
    assert np.corrcoef(original["credit_limit"], original["income_band"].map(band))[0, 1] > 0.5  # both follow
    assert abs(np.corrcoef(noise["credit_limit"], noise["income_band"].map(band))[0, 1]) < 0.1  # affluence; not here
    assert not null_partner.noise_columns(original, "phone", seed=1).equals(noise)
