"""PSI with three real processes over mutual TLS on loopback."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from coordinator import config as coordinator_config
from protocol.keys.certs import make_dev_pki
from protocol.net.recording import read_recording
from psi.ids import Normalizer
from psi.shared import read_shared
from psi.state import load_state
from scenarios.experiment import coordinator_key
from scenarios.launch import LocalRun, passphrase, run_all, start, wait_all, write_local_run

pytestmark = pytest.mark.integration
EMAIL = Normalizer(kind="email")


def emails(indices: range | list[int], style: str) -> list[str]:
    """The same customers as two organisations write them."""
    if style == "shop":
        return [f"  Customer.{i}@Example.COM" for i in indices]
    return [f"customer.{i}@example.com" for i in indices]


def psi_run(tmp_path: Path, ids_a: list[str], ids_b: list[str], record: bool = False, **timeouts: float) -> LocalRun:
    tmp_path.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"email": ids_a, "segment": ["x"] * len(ids_a)}).to_csv(tmp_path / "shop.csv", index=False)
    pd.DataFrame({"mail": ids_b, "age": np.arange(len(ids_b)) % 60 + 20}).to_csv(tmp_path / "bank.csv", index=False)
    sections = {
        "party_a": {"workers": 2, "users": {"table": str(tmp_path / "shop.csv"), "id_column": "email",
                                            "categorical": ["segment"], "ids": {"kind": "email"}},
                    "psi": {"chunk_size": 4096, "progress": False}},
        "party_b": {"workers": 2, "users": {"table": str(tmp_path / "bank.csv"), "id_column": "mail",
                                            "numeric": ["age"], "ids": {"kind": "email"}},
                    "psi": {"chunk_size": 4096, "progress": False}},
    }
    return write_local_run(tmp_path / "run", sections, record=record, **timeouts)


def aligned(run: LocalRun, role: str, ids: list[str]) -> list[str]:
    rows = pd.read_csv(run.workdir(role) / "psi" / "aligned_rows.csv")
    assert rows["position"].tolist() == list(range(len(rows)))
    return [EMAIL(ids[r]) for r in rows["row"]]


def test_psi_aligns_both_parties_in_one_order(tmp_path: Path) -> None:
    ids_a, ids_b = emails(range(0, 3000), "shop"), emails(range(1000, 6000), "bank")
    run = psi_run(tmp_path, ids_a, ids_b)
    out = run_all(run, timeout=180)
    assert all(o.returncode == 0 for o in out.values()), {r: o.output[-2000:] for r, o in out.items()}
    shared_a, shared_b = aligned(run, "party_a", ids_a), aligned(run, "party_b", ids_b)
    assert shared_a == shared_b
    assert set(shared_a) == {EMAIL(x) for x in ids_a} & {EMAIL(x) for x in ids_b}
    summary = json.loads((run.workdir("party_a") / "psi" / "summary.json").read_text())
    assert summary["intersection_size"] == 2000 and summary["peer_size"] == 5000
    # the run's full PSI leaves what a delta needs: the shared list in the aligned order, and each party's state
    shared = read_shared(run.workdir("party_a"))
    assert shared["user_id"].tolist() == shared_a and shared["active"].all()
    assert read_shared(run.workdir("party_b")).equals(shared)
    states = [load_state(run.workdir(role), passphrase(run, role), role, peer)
              for role, peer in (("party_a", "party_b"), ("party_b", "party_a"))]
    assert states[0][1] == states[1][1] and len(states[0][0].peer_values) == 5000
    key_file = coordinator_config.load(run.configs["coordinator"]).key_file
    assert key_file == run.workdir("coordinator") / "keys" / "local.sealed"  # one key per run, named by its id
    assert key_file.stat().st_mode & 0o777 == 0o600
    key = coordinator_key(run)
    assert format(int(key.p), "x").encode() not in key_file.read_bytes()  # sealed: p is not in the clear
    assert key.public.bits >= 2047  # 2048-bit by default


def test_wire_holds_no_id_nor_its_hash(tmp_path: Path) -> None:
    ids_a, ids_b = emails(range(0, 400), "shop"), emails(range(200, 700), "bank")
    run = psi_run(tmp_path, ids_a, ids_b, record=True)
    out = run_all(run, timeout=120)
    assert all(o.returncode == 0 for o in out.values())
    frames = [f for path in run.root.glob("*/wire/*.wire") for f in read_recording(str(path))]
    assert len(frames) > 10 and {f["dir"] for f in frames} == {"in", "out"}
    wire = b"\n".join(f["data"] for f in frames)
    normalised = {EMAIL(x) for x in ids_a + ids_b}
    needles = set()
    for raw in ids_a + ids_b:
        needles.add(raw.strip().encode())
    for ident in normalised:
        digest = hashlib.sha256(ident.encode()).digest()
        needles |= {ident.encode(), digest, digest[:16], digest.hex().encode()}
    leaked = [n for n in needles if n in wire]
    assert leaked == []


def test_certificate_from_another_ca_is_refused(tmp_path: Path) -> None:
    run = psi_run(tmp_path, emails(range(50), "shop"), emails(range(50), "bank"), connect_timeout=8)
    other = tmp_path / "other-ca"
    make_dev_pki(other, passphrase(run, "party_b"), ("party_b",), "Some other CA")
    for suffix in ("pem", "key"):
        shutil.copy(other / f"party_b.{suffix}", run.dir("party_b") / "certs" / f"party_b.{suffix}")
    start_time = time.monotonic()
    out = run_all(run, timeout=90)
    assert out["party_a"].returncode != 0
    assert "party_b" in out["party_a"].output and "TLS handshake" in out["party_a"].output
    assert "CERTIFICATE_VERIFY_FAILED" in out["party_a"].output
    assert out["party_b"].returncode != 0 and out["coordinator"].returncode != 0
    assert time.monotonic() - start_time < 60


def test_killing_b_mid_psi_stops_a_naming_b(tmp_path: Path) -> None:
    ids_a, ids_b = emails(range(0, 120_000), "shop"), emails(range(60_000, 180_000), "bank")
    run = psi_run(tmp_path, ids_a, ids_b, peer_timeout=4)
    procs = {role: start(run, role) for role in ("coordinator", "party_a", "party_b")}
    b_log = run.output("party_b")
    deadline = time.monotonic() + 60
    while "PSI with party_a" not in b_log.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    assert procs["party_a"].poll() is None, "PSI finished before B could be killed; grow the sets"
    killed_at = time.monotonic()
    procs["party_b"].kill()
    procs["party_a"].wait(timeout=60)
    out = wait_all(run, procs, timeout=30)
    assert time.monotonic() - killed_at < 30
    assert out["party_a"].returncode != 0
    assert "party_b" in out["party_a"].output.splitlines()[-1]
    assert out["coordinator"].returncode != 0  # no orphan: the coordinator stops too


def test_empty_intersection_stops_both_parties(tmp_path: Path) -> None:
    run = psi_run(tmp_path, emails(range(0, 100), "shop"), emails(range(100, 200), "bank"))
    out = run_all(run, timeout=120)
    for role in ("party_a", "party_b"):
        assert out[role].returncode != 0
        assert "found no shared customers" in out[role].output
    assert out["coordinator"].returncode != 0


def test_peer_that_never_connects(tmp_path: Path) -> None:
    run = psi_run(tmp_path, emails(range(10), "shop"), emails(range(10), "bank"), connect_timeout=5)
    procs = {role: start(run, role) for role in ("coordinator", "party_a")}
    out = wait_all(run, procs, timeout=60)
    assert out["party_a"].returncode != 0
    assert "party_b" in out["party_a"].output and "never answered within 5s" in out["party_a"].output
    assert out["coordinator"].returncode != 0


def test_wrong_public_key_pin_is_refused(tmp_path: Path) -> None:
    run = psi_run(tmp_path, emails(range(10), "shop"), emails(range(10), "bank"))
    config = run.configs["party_a"]
    config.write_text(config.read_text() + "\n[coordinator]\npublic_key_fingerprint = \"sha256:" + "0" * 64 + "\"\n")
    out = run_all(run, timeout=90)
    assert out["party_a"].returncode != 0
    assert "does not match the pinned [coordinator] public_key_fingerprint" in out["party_a"].output
