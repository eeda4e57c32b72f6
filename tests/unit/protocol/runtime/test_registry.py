"""The model registry (protocol/runtime/registry.py) on stores written by the real store writers: promote, rollback
through HISTORY, prune that never removes the current or the previous model, errors naming the model and the
directory, `models list`'s table; and the `vfrec` console command, run as the installed script."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from party_a.serving.store import model_facts as a_facts
from party_a.serving.store import save_active_model
from party_b.store import USERS, users_bytes
from party_b.store import model_facts as b_facts
from protocol.errors import StoreError
from protocol.runtime.registry import (current_id, history, model_table, previous_id, promote, prune, rollback,
                                       stored_models)
from protocol.store.models import write_model
from scenarios.launch import write_local_run

VFREC = Path(sys.executable).parent / "vfrec"
B = "party_b"


def store_b(workdir: Path, model_id: str, created: float, releases: int = 0, noise: float = 0.0) -> Path:
    """One of B's models as B's writer lays it out (write_model, users.parquet), made current as training does."""
    manifest = {"role": B, "files": [USERS], "created": created, "epoch": 2,
                "privacy": {"clip": 1.0, "noise_multiplier": noise, "dp_delta": 1e-5}}
    users = users_bytes(["u1", "u2", "u3"], ["d1", "d2", "d3"], np.array([releases, 1, 0]))
    return write_model(workdir, model_id, manifest, {USERS: users})


def models(workdir: Path, count: int) -> list[str]:
    ids = [f"run-m{i}" for i in range(1, count + 1)]
    for i, model_id in enumerate(ids):
        store_b(workdir, model_id, created=1_700_000_000 + 3600 * i)
    return ids


def test_a_rollback_goes_back_to_the_model_in_service_before_and_a_second_one_further(tmp_path: Path) -> None:
    m1, m2, m3 = models(tmp_path, 3)
    assert (current_id(tmp_path), previous_id(tmp_path)) == (m3, m2)
    assert rollback(tmp_path, B) == (m3, m2)
    assert (current_id(tmp_path), previous_id(tmp_path)) == (m2, m1)
    assert rollback(tmp_path, B) == (m2, m1)
    with pytest.raises(StoreError, match=rf"HISTORY names no stored model in service before '{m1}'"):
        rollback(tmp_path, B)
    assert promote(tmp_path, B, m3) == m1
    assert (current_id(tmp_path), previous_id(tmp_path)) == (m3, m1)
    assert promote(tmp_path, B, m3) is None  # already in service: no change, no line
    assert [(model, action) for _, model, action in history(tmp_path)] == [
        (m1, "trained"), (m2, "trained"), (m3, "trained"), (m2, "rollback"), (m1, "rollback"), (m3, "promote")]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", when) for when, _, _ in history(tmp_path))
    assert (tmp_path / "models" / "HISTORY").stat().st_mode & 0o777 == 0o600


def test_promote_refuses_an_unknown_or_incomplete_model_naming_it_and_the_directory(tmp_path: Path) -> None:
    m1, m2 = models(tmp_path, 2)
    root = tmp_path / "models"
    with pytest.raises(StoreError, match=re.escape(f"no model 'run-m9' in {root} (stored: {m2}, {m1})")):
        promote(tmp_path, B, "run-m9")
    with pytest.raises(StoreError, match="not a safe name"):
        promote(tmp_path, B, "../elsewhere")
    (root / m1 / USERS).unlink()
    with pytest.raises(StoreError, match=re.escape(f"cannot promote '{m1}': model '{m1}' in {root / m1} is not "
                                                   f"whole: {root / m1 / USERS} is missing")):
        promote(tmp_path, B, m1)
    with pytest.raises(StoreError, match=rf"cannot roll back to '{m1}'.*users.parquet is missing"):
        rollback(tmp_path, B)
    assert current_id(tmp_path) == m2  # nothing changed
    with pytest.raises(StoreError, match=r"models does not exist"):
        rollback(tmp_path / "elsewhere", B)


def test_prune_keeps_the_newest_and_never_the_current_or_previous_one(tmp_path: Path) -> None:
    m1, m2, m3, m4, m5 = models(tmp_path, 5)
    promote(tmp_path, B, m2)
    promote(tmp_path, B, m1)  # current m1 (the oldest), previous m2
    assert prune(tmp_path, B, keep=1) == [m4, m3]  # newest first, of those beyond the newest one
    assert [s.model_id for s in stored_models(tmp_path, B)] == [m5, m2, m1]
    assert rollback(tmp_path, B) == (m1, m2)
    assert (current_id(tmp_path), previous_id(tmp_path)) == (m2, m5)
    assert rollback(tmp_path, B) == (m2, m5)
    assert previous_id(tmp_path) == m2  # m4 and m3, in service before m5, are gone
    assert prune(tmp_path, B, keep=0) == [m1]  # in service three changes ago: neither current nor previous now
    assert [s.model_id for s in stored_models(tmp_path, B)] == [m5, m2]
    assert [a for _, m, a in history(tmp_path) if m in (m3, m4)].count("pruned") == 2
    assert not list((tmp_path / "models").glob(".*pruned*"))


def test_list_shows_each_roles_columns_newest_first_and_what_is_not_whole(tmp_path: Path) -> None:
    store_b(tmp_path, "run-old", created=1_700_000_000, releases=0)
    store_b(tmp_path, "run-noisy", created=1_700_003_600, releases=12, noise=1.0)
    (tmp_path / "models" / "run-broken").mkdir()
    lines = model_table(tmp_path, B, b_facts).splitlines()
    assert lines[0].split() == ["model_id", "created", "(UTC)", "service", "shared", "users", "epoch", "ε", "note"]
    broken, noisy, old = lines[1:]  # the broken directory's time is its mtime: now
    assert noisy.split()[:7] == ["run-noisy", "2023-11-14", "23:13", "current", "3", "2", noisy.split()[6]]
    assert float(noisy.split()[6]) > 0
    assert old.split()[3:7] == ["previous", "3", "2", "off"]
    assert broken.startswith("run-broken") and "not whole:" in broken and "manifest.json is missing" in broken


def test_list_shows_as_metrics_and_epsilon_from_its_manifest(tmp_path: Path) -> None:
    state = {"w": torch.zeros(2)}
    manifest = {"run_id": "r", "created": 1_700_000_000, "items": 2, "shared_users": 2,
                "epochs": {"federated": 3, "a_alone": 1},
                "metrics": {"k": 10, "valid": {"overall": {"hr": 0.41234, "ndcg": 0.2}},
                            "test": {"overall": {"hr": 0.39, "ndcg": 0.18766}}},
                "privacy": {"epsilon": 4.5}}
    save_active_model(tmp_path, "r-a1", manifest, {"federated": state, "a_alone": state}, ["i1", "i2"],
                      ["u1", "u2"], np.zeros((2, 4), dtype=np.float32))
    table = model_table(tmp_path, "party_a", a_facts)
    assert table.splitlines()[0].split() == ["model_id", "created", "(UTC)", "service", "shared", "users", "items",
                                             "epoch", "valid", "HR@10", "valid", "NDCG@10", "test", "HR@10", "test",
                                             "NDCG@10", "ε"]
    assert table.splitlines()[1].split()[3:] == ["current", "2", "2", "3", "0.412", "0.200", "0.390", "0.188",
                                                 "4.50"]


# ---- the console command ------------------------------------------------------------------------------------------

def vfrec(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(VFREC), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_vfrec_help_lists_the_roles_and_their_commands(tmp_path: Path) -> None:
    assert VFREC.is_file(), f"{VFREC} is missing: pip install -e . installs the console script"
    out = vfrec("--help", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    for role, commands in (("party-a", ("serve", "recommend", "models")), ("party-b", ("refresh", "models")),
                           ("coordinator", ("refresh", "models"))):
        block = out.stdout.split(f"\n  {role} ")[1].split("\n\n")[0]
        assert all(re.search(rf"^    {c} ", block, re.M) for c in commands), (role, block)
    role = vfrec("party-a", "--help", cwd=tmp_path)
    assert role.returncode == 0 and role.stdout.startswith("usage: vfrec party-a ")
    assert re.search(r"^    serve ", role.stdout, re.M)
    assert vfrec("party_b", "models", "prune", "--help", cwd=tmp_path).stdout.startswith(
        "usage: vfrec party-b models prune ")
    unknown = vfrec("party-c", cwd=tmp_path)
    assert unknown.returncode == 2 and "unknown role 'party-c'" in unknown.stderr


def test_vfrec_coordinator_models_on_a_store(tmp_path: Path) -> None:
    run = write_local_run(tmp_path / "run", {})
    config = str(run.configs["coordinator"])
    workdir = run.workdir("coordinator")
    for i, model_id in enumerate(("run-c1", "run-c2")):
        write_model(workdir, model_id, {"role": "coordinator", "created": 1_700_000_000 + i, "files": [],
                                        "key_fingerprint": "ab" * 16, "key_bits": 2048,
                                        "key_file": str(tmp_path / "gone.sealed")}, {})
    listed = vfrec("coordinator", "models", "list", "--config", config, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    rows = listed.stdout.splitlines()
    assert rows[0].split() == ["model_id", "created", "(UTC)", "service", "key", "bits", "key", "file"]
    assert rows[1].split()[:6] == ["run-c2", "2023-11-14", "22:13", "current", "ab" * 6, "2048"]
    assert rows[2].split()[3] == "previous" and "missing" in rows[2]
    rolled = vfrec("coordinator", "models", "rollback", "--config", config, cwd=tmp_path)
    assert rolled.returncode == 0 and "rolled back from run-c2 to run-c1" in rolled.stdout
    refused = vfrec("coordinator", "models", "promote", "run-c9", "--config", config, cwd=tmp_path)
    assert refused.returncode == 2 and f"no model 'run-c9' in {workdir / 'models'}" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert (workdir / "models" / "CURRENT").read_text() == "run-c1"
