"""`python -m party_a psi` and `python -m party_b psi` as real processes over mutual TLS, without the coordinator:
a full PSI, both tables changed, a delta, a full rerun, and a delta on states that do not belong together."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest

from psi.ids import Normalizer
from psi.shared import read_shared
from psi.state import state_dir
from scenarios.launch import LocalRun, Outcome, start, wait_all, write_local_run

pytestmark = pytest.mark.integration
EMAIL = Normalizer(kind="email")
PARTIES = ("party_a", "party_b")
CONNECT_TIMEOUT = 40  # a PSI waiting on the absent coordinator would take this long at least


def write_tables(root: Path, shop: range | list[int], bank: range | list[int]) -> None:
    """The same customers as two organisations write them."""
    pd.DataFrame({"email": [f"  Customer.{i}@Example.COM" for i in shop]}).to_csv(root / "shop.csv", index=False)
    pd.DataFrame({"mail": [f"customer.{i}@example.com" for i in bank]}).to_csv(root / "bank.csv", index=False)


def psi_only_run(root: Path) -> LocalRun:
    root.mkdir(parents=True, exist_ok=True)
    psi = {"chunk_size": 64, "progress": False}
    sections = {"party_a": {"workers": 0, "psi": psi, "users": {"table": str(root / "shop.csv"), "id_column": "email",
                                                                "ids": {"kind": "email"}}},
                "party_b": {"workers": 0, "psi": psi, "users": {"table": str(root / "bank.csv"), "id_column": "mail",
                                                                "ids": {"kind": "email"}}}}
    return write_local_run(root / "run", sections, connect_timeout=CONNECT_TIMEOUT)


def psi(run: LocalRun, *args: str) -> dict[str, Outcome]:
    """Both parties' `psi` command, and nothing else (no coordinator process)."""
    for role in PARTIES:
        run.output(role).unlink(missing_ok=True)
    procs = {role: start(run, role, "psi", *args) for role in PARTIES}
    return wait_all(run, procs, timeout=120)


def active_ids(run: LocalRun, role: str) -> list[str]:
    frame = read_shared(run.workdir(role))
    return frame.loc[frame["active"], "user_id"].tolist()


def traffic(run: LocalRun, summary: str) -> int:
    """Bytes sent and received, both parties, by the last PSI of that kind."""
    return sum(doc["bytes_sent"] + doc["bytes_received"]
               for doc in (json.loads((run.workdir(role) / "psi" / summary).read_text()) for role in PARTIES))


def emails(indices: set[int]) -> set[str]:
    return {f"customer.{i}@example.com" for i in indices}


def test_full_then_delta_then_rerun_and_a_mismatched_state(tmp_path: Path) -> None:
    shop, bank = set(range(0, 200)), set(range(100, 300))
    write_tables(tmp_path, sorted(shop), sorted(bank))
    run = psi_only_run(tmp_path)

    started = time.monotonic()
    out = psi(run)
    assert all(o.returncode == 0 for o in out.values()), {r: o.output[-2000:] for r, o in out.items()}
    assert time.monotonic() - started < CONNECT_TIMEOUT  # the coordinator's absence held nothing up
    assert "coordinator" not in out["party_a"].output + out["party_b"].output
    full = read_shared(run.workdir("party_a"))
    assert full.equals(read_shared(run.workdir("party_b")))
    assert set(full["user_id"]) == emails(shop & bank) and full["active"].all()
    rows = pd.read_csv(run.workdir("party_a") / "psi" / "aligned_rows.csv")
    assert full["position"].tolist() == rows["position"].tolist()
    assert full["user_id"].tolist() == [EMAIL(f"  Customer.{sorted(shop)[r]}@Example.COM") for r in rows["row"]]
    assert state_dir(run.workdir("party_b")).stat().st_mode & 0o777 == 0o700

    # both tables change: A loses 10 customers (5 shared), B loses 8 (4 shared); both gain 6 shared ones (300..305)
    # and each gains 4 the other lacks; B gains 3 that A already had and A gains 2 that B already had
    shop2 = (shop - set(range(0, 5)) - set(range(150, 155))) | set(range(300, 306)) | set(range(400, 404)) | {250, 251}
    bank2 = (bank - set(range(296, 300)) - set(range(180, 184))) | set(range(300, 306)) | set(range(500, 504)) | \
        {10, 11, 12}
    write_tables(tmp_path, sorted(shop2), sorted(bank2))
    out = psi(run, "--delta")
    assert all(o.returncode == 0 for o in out.values()), {r: o.output[-2000:] for r, o in out.items()}
    delta = read_shared(run.workdir("party_a"))
    assert delta.equals(read_shared(run.workdir("party_b")))
    assert set(active_ids(run, "party_a")) == emails(shop2 & bank2)
    assert delta["user_id"][: len(full)].tolist() == full["user_id"].tolist()  # every position kept
    assert set(delta.loc[~delta["active"], "user_id"]) == emails(set(range(150, 155)) | set(range(180, 184)))
    assert set(delta["user_id"][len(full):]) == emails(set(range(300, 306)) | {250, 251, 10, 11, 12})
    summary = json.loads((run.workdir("party_a") / "psi" / "delta_summary.json").read_text())
    assert (summary["own_added"], summary["own_removed"], summary["peer_added"], summary["peer_removed"]) == \
        (12, 10, 13, 8)
    assert traffic(run, "delta_summary.json") * 5 < traffic(run, "summary.json")

    kept = tmp_path / "state-after-delta"
    shutil.copytree(run.workdir("party_a") / "psi", kept)
    out = psi(run)  # a full rerun on the changed tables (a fresh secret at both)
    assert all(o.returncode == 0 for o in out.values()), {r: o.output[-2000:] for r, o in out.items()}
    assert set(active_ids(run, "party_a")) == set(delta.loc[delta["active"], "user_id"])
    assert read_shared(run.workdir("party_a")).equals(read_shared(run.workdir("party_b")))

    # A's state from before the rerun against B's from after it: refused at both, nothing written
    shutil.rmtree(run.workdir("party_a") / "psi")
    shutil.copytree(kept, run.workdir("party_a") / "psi")
    before = {role: read_shared(run.workdir(role)) for role in PARTIES}
    out = psi(run, "--delta")
    for role in PARTIES:
        assert out[role].returncode == 2, out[role].output[-2000:]
        assert "the PSI states of party_a and party_b differ" in out[role].output
        assert "A full PSI is needed" in out[role].output
        assert read_shared(run.workdir(role)).equals(before[role])
    out = psi(run, "--delta", "--full-if-needed")
    assert all(o.returncode == 0 for o in out.values()), {r: o.output[-2000:] for r, o in out.items()}
    assert "a full PSI instead of a delta" in out["party_a"].output
