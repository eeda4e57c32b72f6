"""Warm starts through real processes (`python -m <role> --from current`, mutual TLS, 2048-bit key).

A tiny story-1 run trains from scratch; then the three roles start again from the model each has in service.
The warm run's epoch 0 must be the model in service, scored on the new run's validation lists exactly as the
stored model scores them; the new model is stored at all three roles and put in service only if its chosen epoch
is not 0. A warm run whose learning rate wrecks every trained epoch keeps the model in service at all three, and a
role that holds another model in service is refused, with both model IDs named.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from party_a import config as party_a_config
from party_a.data.tables import align, load_tables
from party_a.models.evaluate import evaluation_lists, metrics
from party_a.models.model import ActiveModel, model_scores
from party_a.serving.store import model_settings, stored_encodings
from protocol.data.stored import load_state
from psi.align import read_aligned_rows
from scenarios.ecommerce_bank import BANK, SHOP
from scenarios.experiment import build_run
from scenarios.launch import LocalRun, start, to_toml, wait_all
from scenarios.synth import write_ecommerce_bank

pytestmark = pytest.mark.integration
ROLES = ("coordinator", "party_a", "party_b")


def current(run: LocalRun) -> dict[str, str]:
    return {role: (run.workdir(role) / "models" / "CURRENT").read_text().strip() for role in ROLES}


def warm(run: LocalRun, timeout: float = 300) -> dict:
    """All three roles started with --from current; their outcomes by role."""
    procs = {role: start(run, role, "--from", "current") for role in ROLES}
    return wait_all(run, procs, timeout)


def in_service_validation(run: LocalRun, model_id: str) -> dict:
    """The stored model `model_id` at A scored as serving loads it (its every parameter and buffer, the u it
    stores), on the validation lists of A's last run (its shared users, in its order)."""
    cfg = party_a_config.load(run.configs["party_a"])
    directory = run.workdir("party_a") / "models" / model_id
    manifest = json.loads((directory / "manifest.json").read_text())
    frame, ids = cfg.users.load()
    t = cfg.training
    tables = load_tables(frame, ids, cfg.users.table, cfg.users.normalizer, t.interactions, t.items,
                         encodings=stored_encodings(manifest))
    positions = read_aligned_rows(run.workdir("party_a"))
    data = align(tables, positions)
    lists = evaluation_lists(data, t)
    model = ActiveModel(data, model_settings(manifest), manifest["ease_lambda"])
    model.load_state_dict(load_state(directory, "federated.pt"))
    store = pd.read_parquet(directory / "u.parquet").set_index("user_id")
    u = store.loc[[ids[r] for r in positions], [f"u{j}" for j in range(t.model.h)]].to_numpy(np.float32)
    return metrics(model_scores(model, lists["valid"], u), lists["valid"].cold, t.eval.k)


def set_train(run: LocalRun, **settings: object) -> None:
    path = run.configs["party_a"]
    cfg = tomllib.loads(path.read_text())
    cfg["train"].update(settings)
    path.write_text(to_toml(cfg) + "\n")


def test_a_warm_start_begins_at_the_model_in_service_and_replaces_it_only_if_better(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    tables = write_ecommerce_bank(tmp_path / "party_a" / "data", tmp_path / "party_b" / "data", 120, 40, seed=5)
    run = build_run(tmp_path, tables, {**SHOP, "eval": {"negatives": 20}}, BANK, "warm", epochs=1, progress=False,
                    batch_users=20, warm_epochs=1)
    procs = {role: start(run, role) for role in ROLES}
    out = wait_all(run, procs, 300)
    assert all(o.returncode == 0 for o in out.values()), {r: o.output[-3000:] for r, o in out.items()}
    first = current(run)["party_a"]
    assert current(run) == {role: first for role in ROLES}

    set_train(run, lr=50.0)  # every trained epoch, of A alone and of the federated model, is wrecked
    out = warm(run)
    assert all(o.returncode == 0 for o in out.values()), {r: o.output[-3000:] for r, o in out.items()}
    report = json.loads((run.workdir("party_a") / "report.json").read_text())
    assert report["warm_start"]["from"] == first
    assert report["warm_start"]["valid"] == in_service_validation(run, first)  # epoch 0: the model in service
    second = report["model"]["id"]
    assert report["chosen"]["federated"]["epoch"] == 0 and not report["model"]["promoted"]
    assert all((run.workdir(role) / "models" / second / "manifest.json").is_file() for role in ROLES)
    assert current(run) == {role: first for role in ROLES}, "a model that validated no better went in service"
    assert "not put in service" in out["party_b"].output and "not put in service" in out["coordinator"].output
    for role, state, w in (("party_a", "federated.pt", "w_cols.msgpack"), ("party_b", "tower_b.pt", "w_rows.msgpack")):
        models = run.workdir(role) / "models"  # epoch 0, kept, is the stored model: its state and its [W] ciphertexts
        kept, stored = (load_state(models / m, state) for m in (second, first))
        assert kept.keys() == stored.keys() and all(torch.equal(kept[k], stored[k]) for k in kept), role
        assert (models / second / w).read_bytes() == (models / first / w).read_bytes(), role

    for role in ("party_b", "coordinator"):
        pointer = run.workdir(role) / "models" / "CURRENT"
        pointer.write_text(second)
        try:
            out = warm(run, timeout=120)
        finally:
            pointer.write_text(first)
        assert out["party_a"].returncode == 2, out["party_a"].output[-2000:]
        assert f"{role} starts from model {second!r}, but party_a starts from model {first!r}" \
            in out["party_a"].output, out["party_a"].output[-2000:]
        assert all(out[r].returncode != 0 for r in ROLES)
