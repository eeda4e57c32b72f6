"""Training through the Ray backend: each role's pool on a local Ray cluster gives what the local pool gives.

One Ray cluster (loopback, 6 CPUs: two one-CPU workers for each party; the coordinator,
asked for Ray too, decrypts on local processes so its key never goes to an actor) serves
the module. It stands in for the organisations' clusters; the roles still talk to each
other only over gRPC with mutual TLS, with real 2048-bit keys.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from psi.align import read_aligned_rows
from scenarios.launch import LocalRun, run_all
from scenarios.ray_cluster import local_cluster
from tests.support.twin import assert_first_steps_exact, assert_matches_twin, small_run

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="the ray extra is not installed")]
ROLES = ("coordinator", "party_a", "party_b")


@pytest.fixture(scope="module")
def ray_compute() -> Iterator[dict]:
    with local_cluster(head_cpus=2 * len(ROLES)) as address:
        yield {"backend": "ray", "address": address}


def run_ok(run: LocalRun, backend: str) -> None:
    out = run_all(run, timeout=300)
    assert all(o.returncode == 0 for o in out.values()), {r: o.output[-3000:] for r, o in out.items()}
    for role in ROLES:  # each party says which backend ran its work; the coordinator's key stays off Ray
        assert ("Ray backend: 2 workers" in out[role].output) == (backend == "ray" and role != "coordinator"), role
    assert ("not used by the coordinator" in out["coordinator"].output) == (backend == "ray")


def test_two_steps_on_ray_match_the_twin(tmp_path: Path, ray_compute: dict) -> None:
    """As the local backend's exactness test: the same model after step 2, to float rounding."""
    run = small_run(tmp_path, shop_users=34, items=30, batch_users=10, workers=2, compute=ray_compute)
    run_ok(run, "ray")
    assert_first_steps_exact(run)


def test_two_epochs_on_ray_and_on_local_workers_agree(tmp_path: Path, ray_compute: dict) -> None:
    """The same tables through both backends: the same intersection, and models within the twin's bound."""
    runs = {}
    for backend, compute in (("ray", ray_compute), ("local", None)):
        runs[backend] = small_run(tmp_path / backend, shop_users=34, items=30, batch_users=10, epochs=2, workers=2,
                                  compute=compute)
        run_ok(runs[backend], backend)
    for party in ("party_a", "party_b"):
        rows = {backend: np.sort(read_aligned_rows(run.workdir(party))) for backend, run in runs.items()}
        assert rows["ray"].size == 20 and np.array_equal(rows["ray"], rows["local"]), party
    for run in runs.values():
        assert_matches_twin(run, steps=4)  # 20 shared users in batches of 10, two epochs
