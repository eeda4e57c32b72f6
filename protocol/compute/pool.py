"""A role's worker pool as its config's `workers` and [compute] ask for.

`local` (the default) is the role's own child processes; `ray` is actors in the
role's own organisation's Ray cluster (`protocol/compute/ray_pool.py`, which alone
imports Ray, so a role that does not ask for it never needs it installed). Either
way the pool has the same interface and the same tasks (protocol/ and psi/, plus the
role's own package where it asks: A's `recommend`), and roles still talk to
each other only over gRPC with mutual TLS.
"""

from __future__ import annotations

from protocol.compute.workers import WorkerPool
from protocol.settings.config import Compute


def open_pool(compute: Compute, own: str | None = None) -> WorkerPool:
    """The role's pool; `workers = 0` works inline whatever the backend. `own`: the role's package, whose
    functions its tasks may also name (only A's `recommend` asks, for "party_a")."""
    packages = () if own is None else (own,)
    if compute.backend == "ray" and compute.workers != 0:
        from protocol.compute.ray_pool import ray_pool

        return ray_pool(compute, packages)
    return WorkerPool(compute.workers, max_in_flight=compute.max_in_flight, packages=packages)
