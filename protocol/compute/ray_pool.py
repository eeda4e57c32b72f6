"""The worker pool on a Ray cluster of the role's own organisation.

Each worker is a Ray actor of one CPU that runs the same "module:function" tasks as
the local worker processes (`protocol.compute.workers.handle`: only functions of
protocol/ and psi/, and of the role's own package when its pool allows it: A's
`recommend`). Ray pickles what it moves; here that is only `bytes`: request and
answer frames of our own codec, and the names of those packages, so no object of
ours is ever unpickled by a worker or by the role. The actors keep their caches between tasks like the local
workers do, and `broadcast` reaches each of them (this is how the coordinator's
private key reaches the actors that decrypt, inside the coordinator's own cluster).

The actors import this tree's code: they get its root on PYTHONPATH, which on a
multi-host cluster means vfrec must be installed at the same path on every node.
"""

from __future__ import annotations

import logging

import ray

from protocol.compute.workers import ROOT, WorkerPool, checked_packages, handle, request
from protocol.errors import ConfigError
from protocol.settings.config import Compute

log = logging.getLogger(__name__)

START_TIMEOUT = 120.0  # seconds for every actor to start: longer means the cluster lacks free CPUs


class _Actor:
    """A worker on the cluster: keeps its caches (keys, tables) between tasks, like a worker process."""

    def __init__(self, packages: bytes):
        self.packages = checked_packages(tuple(packages.decode("ascii").split()))

    def run(self, frame: bytes) -> bytes:
        return handle(frame, self.packages)


class RayWorker:
    """One actor; a frame at a time, like a worker process's pipes."""

    def __init__(self, actor: "ray.actor.ActorHandle", index: int):
        self.actor = actor
        self.name = f"Ray worker {index}"

    def exchange(self, frame: bytes) -> bytes | None:
        try:
            return ray.get(self.actor.run.remote(frame))
        except ray.exceptions.RayError as exc:
            log.error("%s failed: %s", self.name, exc)
            return None

    def stop(self) -> None:
        ray.kill(self.actor)


def connect(address: str, workers: int | None) -> None:
    """Join the organisation's cluster at `address`, or start a private one ("local") with `workers` CPUs."""
    settings = {"log_to_driver": False, "logging_level": logging.WARNING}
    if address == "local":
        ray.init(num_cpus=workers, include_dashboard=False, **settings)
    else:
        ray.init(address=address, **settings)


def ray_pool(compute: Compute, packages: tuple[str, ...] = ()) -> WorkerPool:
    """`compute.workers` actors (default: one per CPU of the cluster) behind the `WorkerPool` interface; they
    also run tasks of `packages` (the role's own)."""
    connect(compute.address, compute.workers)
    try:
        cpus = int(ray.cluster_resources().get("CPU", 0))
        size = compute.workers or max(1, cpus)
        remote = ray.remote(num_cpus=1, max_restarts=0)(_Actor).options(
            runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
        names = " ".join(checked_packages(packages)).encode("ascii")  # bytes, as everything Ray moves for us
        actors = [remote.remote(names) for _ in range(size)]
        try:
            ray.get([a.run.remote(request("protocol.compute.workers:ready", ())) for a in actors],
                    timeout=START_TIMEOUT)
        except ray.exceptions.GetTimeoutError:
            raise ConfigError(f"the Ray cluster at {compute.address} did not start {size} workers of one CPU each "
                              f"within {START_TIMEOUT:.0f} s (it has {cpus} CPUs); lower `workers`") from None
        log.info("Ray backend: %d workers on the cluster at %s (%d CPUs)", size, compute.address, cpus)
        return WorkerPool(max_in_flight=compute.max_in_flight, workers=[RayWorker(a, i) for i, a in enumerate(actors)],
                          on_close=ray.shutdown, packages=packages)
    except BaseException:
        ray.shutdown()
        raise
