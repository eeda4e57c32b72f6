"""Which tasks a worker pool runs: protocol/ and psi/ always, the role's own package only where the pool allows it."""

from __future__ import annotations

import numpy as np
import pytest

from protocol.compute.pool import open_pool
from protocol.compute.workers import WorkerPool, resolve
from protocol.errors import ProtocolError
from protocol.settings.config import Compute

SHARED_ONLY = "not a function of protocol/ or psi/"
WITH_A = "not a function of protocol/, psi/ or party_a/"


@pytest.mark.parametrize("workers", [0, 1])
def test_a_pool_runs_no_role_task_unless_it_allows_that_role(workers: int) -> None:
    with WorkerPool(workers) as pool:
        assert pool.submit("protocol.compute.workers:ready").result() is True
        for op in ("party_a.models.scoring:top_k", "os:system", "party_b.refresh:main"):
            with pytest.raises(ProtocolError, match=SHARED_ONLY):
                pool.submit(op, "true").result()


@pytest.mark.parametrize("workers", [0, 1])
def test_a_pool_of_party_a_runs_its_tasks_and_still_refuses_the_others(workers: int) -> None:
    with open_pool(Compute("local", workers), own="party_a") as pool:
        top = pool.submit("party_a.models.scoring:top_k", np.array([0.5, 2.0, 1.0]), 2).result()
        assert top.tolist() == [1, 2]
        for op in ("os:system", "party_b.refresh:main", "party_ab:x", "party_a"):
            with pytest.raises(ProtocolError, match=WITH_A):
                pool.submit(op, "true").result()


def test_own_packages_must_be_top_level_names() -> None:
    for package in ("", "party_a.models.scoring", "os.path"):
        with pytest.raises(ValueError, match="top-level package"):
            WorkerPool(0, packages=(package,))
    with pytest.raises(ProtocolError, match=SHARED_ONLY):
        resolve("party_a.models.scoring:top_k")
