"""Checkpoints and resume with three real processes: kill -9 of each role, and a partition longer than the peer timeout.

Story 1 at a tiny size (60 shared users in batches of 20: 3 steps an epoch) with a checkpoint after every step. The
test plays every role afterwards: it decrypts A's [W] by columns and B's [W] by rows with the coordinator's key, and
replays the run's steps in a plaintext twin (tests/support/twin.py): a step applied twice, or one
skipped, moves the models away from the twin by a whole Adam step.
"""

from __future__ import annotations

import json
import random
import subprocess
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest

from party_b.store import read_users
from protocol.data.stored import load_state
from protocol.roles import B
from protocol.store.models import current_model
from scenarios.experiment import decrypt_saved
from scenarios.launch import LocalRun, start, to_toml, wait_all
from scenarios.proxy import route_through_proxy
from tests.support.twin import assert_states_agree, small_run, twin

pytestmark = [pytest.mark.integration, pytest.mark.long]
ROLES = ("coordinator", "party_a", "party_b")
EPOCHS, STEPS = 3, 9  # 3 steps an epoch (the partition test)


NOISE = {"a_extra": {"privacy": {"noise_multiplier": 0.5, "seed": 5}},
         "b_extra": {"privacy": {"noise_multiplier": 0.5, "seed": 6}}}


def resume_run(root: Path, peer_timeout: float, epochs: int = EPOCHS, **extra: dict) -> LocalRun:
    """The tiny story with a checkpoint after every step, keeping 3, at every role, running all `epochs`; `extra`:
    more config sections of A and B (a_extra, b_extra)."""
    run = small_run(root, shop_users=100, items=40, batch_users=20, **extra)
    for role in ROLES:
        config = tomllib.loads(run.configs[role].read_text())
        config["network"]["peer_timeout"] = peer_timeout
        config["checkpoint"] = {"every_steps": 1, "keep": 3}
        if role == "party_a":  # every epoch runs: early stopping would end the run where the twin does not
            config["train"]["epochs"] = config["train"]["patience"] = epochs
        run.configs[role].write_text(to_toml(config) + "\n")
    return run


def held_by_all(run: LocalRun, step: int, procs: dict[str, subprocess.Popen], timeout: float = 180) -> None:
    """Wait until A logs that the checkpoint at `step` is held by all three."""
    deadline = time.monotonic() + timeout
    while f"checkpoint at step {step} held by all three" not in run.output("party_a").read_text(errors="replace"):
        assert time.monotonic() < deadline, f"no checkpoint at step {step} within {timeout:.0f}s"
        assert all(p.poll() is None for p in procs.values()), {r: p.returncode for r, p in procs.items()}
        time.sleep(0.05)


def count(run: LocalRun, role: str, text: str) -> int:
    return run.output(role).read_text(errors="replace").count(text)


def assert_twin_agrees(run: LocalRun, steps: int = STEPS, defended: bool = False) -> None:
    """[W] by columns at A is [W] by rows at B transposed, and both parties' models are the plaintext twin's after
    `steps` steps (`defended`: with both parties' noise, drawn from the same seeds in one go): no step was applied
    twice or lost, and each party's noise stream was used once, in order (a redone step re-sent its released rows;
    nothing was drawn again or skipped)."""
    _, plan, layer, trained = twin(run, defended, steps=steps)
    assert len(layer.delta_seen) == steps
    w_rows = decrypt_saved(run, "party_b", "w_rows")
    assert (decrypt_saved(run, "party_a", "w_cols").T == w_rows).all(), "A's and B's [W] hold different W"
    units = np.abs((w_rows - layer.w).astype(np.int64))
    assert units.max() <= 2 * steps, f"W differs by {units.max()} units of 2^-{plan.w_bits}"
    for name, saved, ours in (("A", run.workdir("party_a") / "model" / "active.pt", trained.model),
                              ("B", run.workdir("party_b") / "model" / "tower_b.pt", trained.tower)):
        assert_states_agree(name, load_state(saved.parent, saved.name), ours.state_dict())


def assert_released_once_an_epoch(run: LocalRun, epochs: int) -> None:
    """Each shared user's e_B row (B's store) and δ row (A's report) counted once an epoch, however many steps were
    redone: a redone step re-sent the rows its first attempt released."""
    directory, _ = current_model(run.workdir("party_b"), B)
    assert (read_users(directory)["releases"] == epochs).all(), read_users(directory)["releases"].value_counts()
    report = json.loads((run.workdir("party_a") / "report.json").read_text())
    assert report["privacy"]["releases_per_user"] == epochs, report["privacy"]
    assert not [p for role in ("party_a", "party_b") for p in (run.workdir(role) / "releases").glob("*/*")]


def audit_labels(run: LocalRun) -> list[dict]:
    return [json.loads(line) for line in (run.workdir("coordinator") / "audit.jsonl").read_text().splitlines()]


def test_each_role_killed_at_three_points_is_taken_back_and_no_step_is_applied_twice(tmp_path: Path) -> None:
    """A, B and the coordinator each killed with SIGKILL three times, at random moments, each kill once the run has
    made a new checkpoint since the last one was taken back, and restarted with the same config: the others roll back
    in-process and take it back; the run completes as the plaintext twin (both parties' noise on and seeded: the
    twin draws it in one go), no redone step is refused, and no release is counted twice."""
    epochs = 5
    run = resume_run(tmp_path, peer_timeout=20.0, epochs=epochs, **NOISE)
    rng = random.Random(3)
    procs = {role: start(run, role) for role in ROLES}
    try:
        for role in ROLES * 3:
            held = count(run, "party_a", "held by all three")
            deadline = time.monotonic() + 120
            while count(run, "party_a", "held by all three") <= held:
                assert time.monotonic() < deadline and all(p.poll() is None for p in procs.values()), role
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 0.3))
            resumed = count(run, role, "resuming from the checkpoint")
            procs[role].kill()
            procs[role].wait()
            procs[role] = start(run, role)
            while count(run, role, "resuming from the checkpoint") <= resumed:
                assert time.monotonic() < deadline and procs[role].poll() is None, role
                time.sleep(0.05)
        out = wait_all(run, procs, timeout=300)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    assert all(o.returncode == 0 for o in out.values()), {r: o.output[-3000:] for r, o in out.items()}
    assert_twin_agrees(run, steps=3 * epochs, defended=True)
    assert_released_once_an_epoch(run, epochs)
    for role in ROLES:
        assert count(run, role, "resuming from the checkpoint") >= 9, role  # each resumed at each of the 9 kills
    assert "rolling back to the newest checkpoint" in out["party_a"].output
    entries = audit_labels(run)
    assert not [e for e in entries if "refused" in e], "a redone step was refused as a replay"
    generations = {e["label"].rsplit("/g", 1)[1] for e in entries if "/g" in e["label"]}
    assert generations >= {str(g) for g in range(1, 9)}  # every resume but the last was followed by a step
    assert not [p for role in ROLES for p in (run.workdir(role) / "checkpoints").glob("*/*")]  # a finished run forgets


def test_a_partition_longer_than_the_peer_timeout_stops_all_and_resume_continues(tmp_path: Path) -> None:
    """A↔B cut for longer than the peer timeout after the checkpoint at step 2: all three stop naming the peer;
    started again with --resume (the network healed) they go on from step 2 and finish as the twin. Both parties'
    noise is on and seeded: the twin draws it in one go, so the resumed processes must go on with the generator's
    state in each party's release ledger (a checkpoint no longer holds it) and re-send what the step cut short
    released."""
    run = resume_run(tmp_path, peer_timeout=6.0, **NOISE)
    proxies = [route_through_proxy(run, "party_a", "party_b"), route_through_proxy(run, "party_b", "party_a")]
    try:
        procs = {role: start(run, role) for role in ROLES}
        held_by_all(run, 2, procs)
        for proxy in proxies:
            proxy.partition(120.0)
        out = wait_all(run, procs, timeout=60)
    finally:
        for proxy in proxies:
            proxy.close()
    assert all(o.returncode != 0 for o in out.values()), {r: o.output[-2000:] for r, o in out.items()}
    last = {role: o.output.strip().splitlines()[-1] for role, o in out.items()}
    assert "party_b" in last["party_a"] and "did not come back" in last["party_a"], last
    assert "party_a" in last["party_b"], last
    for role, peer in (("party_a", "party_b"), ("party_b", "party_a")):  # back to direct addresses
        config = tomllib.loads(run.configs[role].read_text())
        config["peers"][peer]["address"] = tomllib.loads(run.configs[peer].read_text())["network"]["listen"]
        run.configs[role].write_text(to_toml(config) + "\n")
    procs = {role: start(run, role, "--resume") for role in ROLES}
    out = wait_all(run, procs, timeout=300)
    assert all(o.returncode == 0 for o in out.values()), {r: o.output[-3000:] for r, o in out.items()}
    for role in ROLES:
        assert "resuming from the checkpoint at step 2" in out[role].output or \
               "resuming from the checkpoint at step 3" in out[role].output, role
    assert_twin_agrees(run, defended=True)
    assert_released_once_an_epoch(run, EPOCHS)
