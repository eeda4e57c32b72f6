"""The null partner through three processes: story 1 with B's columns shuffled to noise, a small run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from scenarios import null_partner
from scenarios.experiment import run_experiment, summary_table


@pytest.mark.integration
def test_null_partner_runs_end_to_end(tmp_path: Path) -> None:
    run = null_partner.prepare(tmp_path, users=300, epochs=1, seed=0, progress=False, batch_users=16)
    bank = pd.read_csv(tmp_path / "party_b" / "data" / "bank_customers.csv", dtype={"phone": str})
    assert len(bank) == 900
    report = run_experiment(run, 600, stream=False)
    assert report["shared_users"] == 180 and report["key_bits"] == 2048
    assert json.loads((tmp_path / "report.json").read_text())["chosen"]["federated"]["test"]["overall"]["users"]
    assert "federated" in summary_table(report)
    fed, alone = report["chosen"]["federated"], report["a_alone"]
    valid = alone["valid"] if fed["epoch"] == 0 else report["epochs"][fed["epoch"] - 1]["federated"]
    assert valid["overall"]["ndcg"] >= alone["valid"]["overall"]["ndcg"], "never below A alone on validation"
    if fed["epoch"] == 0:
        assert fed["test"] == alone["test"], "the federated start is A alone's model"
