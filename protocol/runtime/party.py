"""The frame of a party's run: endpoint up, work, and a clean stop.

On any error the party tells its peers it stops (so they stop at once with its
reason instead of waiting for a timeout) and closes its endpoint. A party that
starts by resuming (protocol/runtime/resume.py) starts its endpoint outside any
generation, for the handshake. `run_resumable` is the start-up both parties share:
whether to resume, the frame, and the fresh start or the resume inside it.
"""

from __future__ import annotations

from collections.abc import Callable

from protocol import messages, observe
from protocol.compute.pool import open_pool
from protocol.compute.workers import WorkerPool
from protocol.errors import ConfigError
from protocol.net.transport import Endpoint
from protocol.runtime.checkpoint import CheckpointSettings, held
from protocol.runtime.resume import Agreed, Holding, resumable
from protocol.settings.config import PartyBasics


def resuming(basics: PartyBasics, resume: bool) -> bool:
    """Whether the party resumes: asked to (`--resume`), or it holds checkpoints of its run."""
    holds = bool(held(basics.workdir, basics.network.run_id))
    if resume and not holds:
        raise ConfigError(f"--resume: {basics.network.role} holds no checkpoint of run {basics.network.run_id!r} in "
                          f"{basics.workdir}")
    return holds


def run_party(basics: PartyBasics, body: Callable[[Endpoint, WorkerPool], None], resume: bool) -> None:
    """Run `body` with the party's endpoint and pool, its metrics and health on [observe] listen meanwhile."""
    role = basics.network.role
    endpoint = Endpoint(basics.network, messages.inbox_tags(role), None if resume else 0).start()
    observe.watch(role, basics.network.run_id, endpoint)
    try:
        with observe.serving(basics.observe), open_pool(basics.compute) as pool:
            body(endpoint, pool)
    except BaseException as exc:
        endpoint.abort(f"{role} stopped: {exc or type(exc).__name__}")
        raise
    finally:
        endpoint.close()


Work = Callable[[Endpoint, WorkerPool], tuple[Callable[[], None], Callable[[Agreed], None]]]


def run_resumable(basics: PartyBasics, checkpoints: CheckpointSettings, resume: bool, work: Work) -> None:
    """A party's run that may resume: `work(endpoint, pool)` gives what the party does on a fresh start and what
    it does from an agreed checkpoint; `resumable` picks one (and rolls back when a peer is lost)."""
    resume = resuming(basics, resume)

    def body(endpoint: Endpoint, pool: WorkerPool) -> None:
        fresh, resumed = work(endpoint, pool)
        resumable(endpoint, checkpoints, lambda: Holding.of(basics.workdir, basics.network.run_id), fresh, resumed,
                  resume)

    run_party(basics, body, resume)
