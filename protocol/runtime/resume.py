"""Resume from the newest checkpoint all three roles hold: the handshake, and the loop that runs it when a peer is lost.

A leads. Each role that resumes (one restarted with its checkpoints on disk, or a survivor
whose peer was lost, which rolls back in-process) leaves its generation
(transport.Endpoint.suspend), then:

- B and C send A `Resume` (the plan their checkpoints are of, the steps they hold, the newest
  generation they were in, a fresh nonce) every second until A answers that nonce;
- A tells both it resumes (`ResumeCall`: a role still waiting in the old generation stops
  waiting), takes both `Resume`s and answers each with `Resumed`: the newest step all three
  hold and the generation max(all) + 1, which all three enter (fresh streams, fresh labels).

Each then loads its checkpoint of that step and goes on. A role that does not come back
within the wait ([network] peer_timeout for survivors, connect_timeout for a role started to
resume) is named in the error that stops the others.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from protocol import messages
from protocol.errors import PeerError, PeerLost, ProtocolError
from protocol.messages.run import Resume, ResumeCall, Resumed
from protocol.net.transport import Endpoint
from protocol.roles import A, PEERS
from protocol.runtime.checkpoint import CheckpointSettings, held, newest_common, newest_plan

log = logging.getLogger(__name__)
T = TypeVar("T")
_RESEND = 1.0  # seconds between a follower's Resume messages while A has not answered


@dataclass(frozen=True)
class Agreed:
    """Where the three resume: the checkpoint's step and the generation they continue in."""

    step: int
    generation: int


@dataclass(frozen=True)
class Holding:
    """What a role brings to the handshake: the plan digest of its checkpoints and the steps it holds."""

    plan: str
    held: list[int]

    @classmethod
    def of(cls, workdir: Path, run_id: str) -> "Holding":
        return cls(newest_plan(workdir, run_id), held(workdir, run_id))


def lead(endpoint: Endpoint, own: Holding, timeout: float) -> Agreed:
    """A's side of the handshake."""
    endpoint.suspend()
    deadline = time.monotonic() + timeout
    followers = tuple(str(p) for p in PEERS[A])
    for peer in followers:  # in the background: an unreachable one would hold the others' call for its timeout
        threading.Thread(target=_call, args=(endpoint, peer), daemon=True).start()
    got: dict[str, Resume] = {}
    while missing := [p for p in followers if p not in got]:
        if time.monotonic() > deadline:
            raise PeerError(f"{' and '.join(missing)} did not come back within {timeout:.0f}s to resume")
        for peer in missing:
            body = endpoint.take_resume(peer, Resume.TAG, timeout=0.2)
            if body is not None:
                got[peer] = Resume.from_message(body, peer)
    holdings = {str(A): own.held, **{p: [int(s) for s in r.held] for p, r in got.items()}}
    plans = {p: r.plan for p, r in got.items()} | {str(A): own.plan}
    step = newest_common(*holdings.values())
    error = None
    runs = {p: r.run_id for p, r in got.items() if r.run_id != endpoint.cfg.run_id}
    if runs:
        error = f"asked to resume other runs ({runs}) than {endpoint.cfg.run_id!r}"
    elif len({plan for plan in plans.values() if plan}) > 1:
        error = f"the roles' checkpoints are of different plans ({plans}): resume with the configs they were made with"
    elif step is None:
        error = (f"no checkpoint all three hold ({'; '.join(f'{p}: {h}' for p, h in holdings.items())}); start the "
                 f"run again without them")
    generation = max(endpoint.last_generation, *(r.generation for r in got.values())) + 1
    for peer, r in got.items():
        messages.send(endpoint, peer, Resumed(step, generation, r.nonce, error))
    if error is not None:
        raise ProtocolError(error)
    endpoint.enter(generation)
    return Agreed(step, generation)


def _call(endpoint: Endpoint, peer: str) -> None:
    try:
        messages.send(endpoint, peer, ResumeCall(secrets.token_hex(8)))
    except PeerError:
        pass  # gone: it comes back with a Resume of its own when restarted


def follow(endpoint: Endpoint, own: Holding, timeout: float) -> Agreed:
    """B's or C's side of the handshake."""
    endpoint.suspend()
    nonce = secrets.token_hex(8)
    hello = Resume(endpoint.cfg.run_id, own.plan, np.array(own.held, dtype=np.int64), endpoint.last_generation, nonce)
    deadline, sent = time.monotonic() + timeout + 2 * _RESEND, -_RESEND  # A gives up first, and says why
    while True:
        if time.monotonic() > deadline:
            raise PeerError(f"{A} did not take {endpoint.cfg.role} back within {timeout:.0f}s to resume")
        if time.monotonic() - sent >= _RESEND:
            try:
                messages.send(endpoint, A, hello)
                sent = time.monotonic()
            except PeerLost:
                time.sleep(0.2)  # A is gone: it may be restarting
                continue
        body = endpoint.take_resume(A, Resumed.TAG, timeout=0.2)
        answer = None if body is None else Resumed.from_message(body, A)
        if answer is not None and answer.nonce == nonce:
            break
    if answer.error is not None:
        raise ProtocolError(f"{A} cannot resume: {answer.error}")
    endpoint.enter(answer.generation)
    return Agreed(answer.step, answer.generation)


def resumable(endpoint: Endpoint, settings: CheckpointSettings, holding: Callable[[], Holding],
              fresh: Callable[[], T], resume: Callable[[Agreed], T], resuming: bool) -> T:
    """Run `fresh()`, or when `resuming` the handshake then `resume(agreed)`; whenever a peer is lost on the way
    (and [checkpoint] rejoin is on, and this role holds a checkpoint to go back to), roll back: the handshake
    again, then `resume` from the agreed checkpoint. At most [checkpoint] max_rollbacks times: any peer can force a
    rollback (a Resume with a fresh nonce), so one that keeps doing so stops the run instead of holding it in a loop."""
    cfg = endpoint.cfg
    timeout, cause, rollbacks = cfg.connect_timeout, None, 0
    while True:
        try:
            if not resuming:
                return fresh()
            try:
                agreed = (lead if cfg.role == A else follow)(endpoint, holding(), timeout)
            except PeerError as exc:
                if cause is None or isinstance(exc, PeerLost):
                    raise
                raise PeerError(f"{exc} ([network] peer_timeout), after: {cause}") from None
            log.info("resuming from the checkpoint at step %d, generation %d", agreed.step, agreed.generation)
            return resume(agreed)
        except PeerLost as exc:
            if not settings.rejoin or not holding().held:
                raise
            if rollbacks >= settings.max_rollbacks:
                raise PeerError(f"{exc}; not rolling back again: {cfg.role} has rolled back {rollbacks} times in this "
                                f"run, the most [checkpoint] max_rollbacks = {settings.max_rollbacks} allows") from None
            rollbacks += 1
            log.warning("%s; rolling back to the newest checkpoint all three hold, waiting up to %.0fs "
                        "([network] peer_timeout) for the others", exc, cfg.peer_timeout)
            resuming, timeout, cause = True, cfg.peer_timeout, exc
