"""Roles played in the test's own process against real ones: a tiny run of 30 shared e-mail IDs (orders for
training optional) and the PSI phase played by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from protocol.compute.workers import WorkerPool
from protocol.net.transport import Endpoint
from protocol.roles import A, B
from psi.align import run_phase
from psi.session import PsiSettings
from scenarios.launch import LocalRun, passphrase, write_local_run

IDS = [f"customer{i}@example.com" for i in range(30)]


def small_run(root: Path, train: bool = False) -> LocalRun:
    """A's and B's configs over IDS in `root`; with `train`, A's orders table and training settings too."""
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"email": IDS}).to_csv(root / "a.csv", index=False)
    pd.DataFrame({"email": IDS, "x": np.arange(len(IDS), dtype=float)}).to_csv(root / "b.csv", index=False)
    pd.DataFrame({"email": IDS * 3, "item": [f"i{k % 7}" for k in range(3 * len(IDS))]}).to_csv(root / "orders.csv",
                                                                                              index=False)
    users = {"id_column": "email", "ids": {"kind": "email"}}
    a = {"users": {"table": str(root / "a.csv"), **users}, "psi": {"progress": False}, "workers": 0}
    if train:
        a["interactions"] = {"table": str(root / "orders.csv"), "user_column": "email", "item_column": "item"}
        a["train"] = {"progress": False}
    b = {"users": {"table": str(root / "b.csv"), "numeric": ["x"], **users}, "psi": {"progress": False},
         "workers": 0}
    return write_local_run(root / "run", {A: a, B: b}, peer_timeout=20)


def play_psi(run: LocalRun, endpoint: Endpoint, peer: str) -> None:
    """Play the PSI phase of the role of `endpoint` in this process (its files go to that role's work directory)."""
    role = endpoint.cfg.role
    run_phase(endpoint, peer, IDS, WorkerPool(0), PsiSettings(show_progress=False), run.workdir(role),
              passphrase(run, role))
