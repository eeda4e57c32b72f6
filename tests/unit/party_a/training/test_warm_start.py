"""Warm starts, piece by piece: the stored state carried over to a grown catalogue (item rows matched by item ID),
what a stored model must hold, the promote rule, the epoch-0 evaluation labels, and `--from current` on the
command line. tests/test_integration_warm_start.py runs the whole through three processes."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from coordinator import config as coordinator_config
from coordinator.config import key_path
from coordinator.keys import run_key
from coordinator.ledger import Ledger
from party_a.config import EvalSettings, ModelSettings, SecureSettings, Training, TrainSettings
from party_a.data.tables import ActiveData
from party_a.models.model import ActiveModel
from party_a.training.loop import promoted
from party_a.training.warm import ITEM_ROWS, Start, carried_over, model_in_service
from protocol.crypto.paillier import generate_keypair
from protocol.data.stored import frame_bytes, state_bytes
from protocol.data.tables import Features
from protocol.errors import ConfigError, StoreError
from protocol.layer.decryption import Label, Step, eval_label
from protocol.messages.plan import LayerPlan
from protocol.runtime import cli
from protocol.store.models import write_model
from scenarios.launch import write_local_run

SETTINGS = ModelSettings(d=4, h=4, id_dim=3, feature_dim=2, tower_hidden=(8,), history=4)


def data(items: int, seed: int) -> ActiveData:
    rng = np.random.default_rng(seed)
    train = [rng.choice(items, size=int(rng.integers(1, 5)), replace=False) for _ in range(10)]
    none = np.full(10, -1)
    user = Features(rng.normal(size=(10, 1)).astype(np.float32), np.zeros((10, 0), np.int64), [])
    item = Features(np.zeros((items, 0), np.float32), rng.integers(0, 3, size=(items, 1)), [3], [True])
    return ActiveData(user, item, train, [frozenset(t) for t in train], none, none, [])


def test_a_stored_model_carries_over_to_a_grown_catalogue_by_item_id() -> None:
    old_items, new_items = ["a", "b", "c", "d"], ["e", "c", "a", "f", "d"]  # b dropped, e and f new, reordered
    stored_model = ActiveModel(data(4, 0), SETTINGS, 10.0, 0.5)
    with torch.no_grad():
        for p in stored_model.parameters():
            p.add_(torch.randn_like(p))  # a trained model: nothing left as initialised
    stored = {k: v.clone() for k, v in stored_model.state_dict().items()}
    grown = data(5, 1)
    fresh = ActiveModel(grown, SETTINGS, 10.0, 0.5)
    model = carried_over(ActiveModel(grown, SETTINGS, 10.0, 0.5), stored, old_items, new_items)
    state = model.state_dict()
    for name in ITEM_ROWS:
        for new, item in enumerate(new_items):
            want = stored[name][old_items.index(item)] if item in old_items else fresh.state_dict()[name][new]
            assert torch.equal(state[name][new], want), (name, item)
    assert torch.equal(state["history_embedding.weight"][5], torch.zeros(SETTINGS.h))  # padding
    assert torch.equal(state["p"], fresh.state_dict()["p"]) and not torch.equal(state["p"][:4], stored["p"][:4])
    for name, value in stored.items():
        if name not in (*ITEM_ROWS, "p", "p_diag"):
            assert torch.equal(state[name], value), name
    with pytest.raises(StoreError, match="'item_part.mlp.0.weight' has shape"):
        wider = ActiveModel(grown, ModelSettings(**{**SETTINGS.__dict__, "tower_hidden": (9,)}), 10.0, 0.5)
        carried_over(wider, stored, old_items, new_items)


def test_only_a_warm_start_whose_chosen_epoch_is_not_0_goes_in_service() -> None:
    chosen = {"chosen": {"federated": {"epoch": 0}}}
    assert promoted(chosen)  # from scratch: always
    assert not promoted({**chosen, "warm_start": {"from": "m"}})
    assert promoted({"chosen": {"federated": {"epoch": 2}}, "warm_start": {"from": "m"}})


def training(**model: object) -> Training:
    return Training(None, None, ModelSettings(**model), TrainSettings(), SecureSettings(), EvalSettings())


def stored_a(workdir: Path) -> None:
    """A model store holding what a warm start reads (states aside), as model m-1, in service."""
    manifest = {"role": "party_a", "model_settings": ModelSettings().__dict__, "plan": training().plan().to_message(),
                "ease_lambda": 100.0, "prior_weight": 0.5, "encodings": {}, "key_fingerprint": "sha256:00",
                "files": ["items.parquet", "w_cols.msgpack"]}
    write_model(workdir, "m-1", manifest, {"items.parquet": frame_bytes(pd.DataFrame({"item_id": ["i1", "i2"]})),
                                           "w_cols.msgpack": b""})


def test_a_model_stored_before_warm_starts_or_of_another_shape_is_refused(tmp_path: Path) -> None:
    write_model(tmp_path, "old-1", {"role": "party_a", "model_settings": ModelSettings().__dict__, "files": []}, {})
    with pytest.raises(StoreError, match=r"model 'old-1' .* was stored before warm starts and lacks the encodings "
                                         r"of A's columns, the popularity prior's weight, \[W\] by columns"):
        model_in_service(tmp_path, training(), Path("a.toml"))
    stored_a(tmp_path / "b")
    assert model_in_service(tmp_path / "b", training(), Path("a.toml")).items == ["i1", "i2"]
    with pytest.raises(ConfigError, match=r"a.toml: h = 8 \(the model's: 16\); the plan's h = 8 \(the model's: 16\): "
                                          r"a warm start from model 'm-1' keeps its shape"):
        model_in_service(tmp_path / "b", training(h=8), Path("a.toml"))


def test_evaluation_may_name_epoch_0_and_training_may_not() -> None:
    assert Label.parse(eval_label(0, 3)) == Label(False, 0, 3)
    assert Label.parse("train/e0/b0") is None
    plan = LayerPlan(d=2, h=2, batch_users=4, lr_w=0.1)
    public = generate_keypair(1024).public
    ledger = Ledger(plan, 8, public)
    for label in (eval_label(0, 0), eval_label(0, 1)):
        count = 4 * plan.layouts(public)[0].ciphertexts
        assert ledger.refusal(Step.EVALUATE, label, count) is None
        ledger.record(Step.EVALUATE, label)
    assert "repeats or goes back" in ledger.refusal(Step.EVALUATE, eval_label(0, 1), count)
    assert ledger.refusal(Step.EVALUATE, eval_label(1, 0), count) is None
    assert ledger.refusal(Step.FORWARD, "train/e0/b0", count).reason == "schedule"


@pytest.mark.parametrize("argv, warm", [(["--config", "a.toml"], False), (["--from", "current", "--config", "a.toml"],
                                                                         True)])
def test_from_current_asks_the_default_job_for_a_warm_start(monkeypatch: pytest.MonkeyPatch, argv: list[str],
                                                             warm: bool) -> None:
    seen = []
    monkeypatch.setattr(sys, "argv", ["party_a", *argv])
    monkeypatch.setattr(cli, "setup_logging", lambda role, workdir=None: None)
    cli.run("party_a", "test", lambda config, resume, start: seen.append((config, resume, start)))
    assert seen == [(Path("a.toml"), False, warm)]


def test_from_takes_only_current(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(sys, "argv", ["party_a", "--from", "latest", "--config", "a.toml"])
    with pytest.raises(SystemExit) as stop:
        cli.run("party_a", "test", lambda *args: None)
    assert stop.value.code == 2 and "invalid choice: 'latest'" in capsys.readouterr().err


def test_a_warm_start_at_the_coordinator_takes_the_model_s_key_under_the_same_run_id_only(tmp_path: Path) -> None:
    run = write_local_run(tmp_path / "run", {}, run_id="weekly")
    cfg = coordinator_config.load(run.configs["coordinator"])
    own = run_key(cfg, warm=False)  # the run's key, created
    assert own.start is None and cfg.key_file.is_file()
    manifest = {"role": "coordinator", "key_file": str(cfg.key_file), "key_fingerprint": own.key.public.fingerprint,
                "files": []}
    write_model(cfg.workdir, "weekly-1", manifest, {})
    warm = run_key(cfg, warm=True)
    assert (warm.start, warm.key.public.fingerprint) == ("weekly-1", own.key.public.fingerprint)
    renamed = dataclasses.replace(cfg, key_file=key_path(cfg.key_file.parent, "monthly"))
    with pytest.raises(ConfigError, match=rf"model 'weekly-1' was trained under key {cfg.key_file}, but this "
                                          rf"config's run_id and \[key\] dir name {renamed.key_file}"):
        run_key(renamed, warm=True)


def test_the_federated_model_starts_from_its_own_stored_state_with_a_alone_s_rows_for_new_items(
        tmp_path: Path) -> None:
    old_items, new_items = ["a", "b", "c", "d"], ["c", "a", "e", "d", "b"]
    states = {}
    for seed, name in enumerate(("alone", "federated")):
        model = ActiveModel(data(4, 0), SETTINGS, 10.0, 0.5)
        torch.manual_seed(seed)  # two trained states, unlike each other
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        states[name] = model.state_dict()
        (tmp_path / f"{name}.pt").write_bytes(state_bytes(states[name]))
    start = Start("m-1", tmp_path, {"ease_lambda": 10.0, "prior_weight": 0.5}, old_items, {})
    grown = data(5, 1)
    alone = start.alone(grown, SETTINGS, new_items)
    federated = start.federated(alone, new_items)
    assert federated is not alone
    for name, model in (("alone", alone), ("federated", federated)):
        state = model.state_dict()
        for key, value in states[name].items():
            if key in ITEM_ROWS:
                assert torch.equal(state[key][0], value[2]) and torch.equal(state[key][4], value[1]), (name, key)
            elif key not in ("p", "p_diag"):
                assert torch.equal(state[key], value), (name, key)
    for key in ITEM_ROWS:  # the new item "e": a fresh row in A alone, A alone's row in the federated model
        assert torch.equal(federated.state_dict()[key][2], alone.state_dict()[key][2]), key
