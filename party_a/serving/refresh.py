"""A's side of refreshes: the serving process takes B's recomputed u into its u store.

While `python -m party_a serve` runs, a thread waits for B's refresh sessions
(party_b/refresh.py), one at a time: B names the model and the shared users, the
coordinator announces the model's key, and for every batch A receives u + R from the
coordinator and R from B (steps 2-3), checked against the plan's bound. When every
batch is in, A writes the new u store whole (atomically) and confirms to B; the
service picks it up without a restart. What A learns is what it learnt at every
evaluation in training: u of shared users. Users who joined the intersection since
the model was trained (a delta PSI: psi/membership.py) are appended to the u store,
each with its first u, once A has checked that B derived the same roster.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time

from pathlib import Path

import numpy as np
import pandas as pd

from party_a.config import PartyAConfig
from party_a.serving.store import read_u_store, u_frame, write_u_store
from protocol import messages
from protocol.crypto import fixedpoint
from protocol.crypto.paillier import Encryptor
from protocol.errors import ProtocolError, StoreError, VfrecError
from protocol.layer import steps
from protocol.layer.decryption import Step, receive_public_key, refresh_batches, register_layer
from protocol.layer.steps import FORWARD_ONLY, Side, ATurn
from protocol.messages.plan import LayerPlan
from protocol.messages.serving import RefreshDone, RefreshRequest
from protocol.net.transport import Endpoint
from protocol.roles import A, B
from protocol.store.models import current_model, refresh_run_id
from psi.membership import membership_since, roster_digest

log = logging.getLogger(__name__)


def receive_session(cfg: PartyAConfig, endpoint: Endpoint) -> int:
    """One refresh session, from B's request to A's confirmation; returns the number of users refreshed."""
    directory, manifest = current_model(cfg.basics.workdir, A)
    model_id = manifest["model_id"]
    request = messages.receive(endpoint, B, RefreshRequest, idle=True)
    if request.model_id != model_id:
        raise StoreError(f"{B} refreshes model {request.model_id!r}, but {A} serves {model_id!r}")
    public = receive_public_key(endpoint, cfg.basics.public_key_pin)
    if public.fingerprint != manifest["key_fingerprint"]:
        raise StoreError(f"the coordinator announced key {public.fingerprint}, but model {model_id!r} was trained "
                         f"under {manifest['key_fingerprint']}")
    plan = LayerPlan.from_message(manifest["plan"], "A's model store")
    store = with_joined(read_u_store(directory, plan.h), plan.h, cfg.basics.workdir, request)
    users = request.users
    if users.size == 0 or users.min() < 0 or users.max() >= len(store) or np.unique(users).size != users.size:
        raise ProtocolError(f"{B} sent RefreshRequest with field 'users' naming users outside the {len(store)} "
                            f"shared ones, or one twice, or none")
    register_layer(endpoint, plan, users.size)
    side = Side(endpoint, public, Encryptor(public), None, plan)
    u = store[[f"u{j}" for j in range(plan.h)]].to_numpy(dtype=np.float32, copy=True)
    for label, batch in refresh_batches(users, plan):
        turn = steps.walk(FORWARD_ONLY, side, ATurn(label, batch, decrypt_as=Step.EVALUATE))
        u[batch] = fixedpoint.decode(turn.u, plan.e_bits + plan.w_bits)
    written = store["written"].to_numpy(copy=True)
    written[users] = time.time()
    store[[f"u{j}" for j in range(plan.h)]] = u
    store["written"] = written
    write_u_store(directory, store)
    messages.send(endpoint, B, RefreshDone(model_id, int(users.size)))
    return int(users.size)


def with_joined(store: pd.DataFrame, h: int, workdir: Path, request: RefreshRequest) -> pd.DataFrame:
    """The u store with the users who joined the intersection since the model was trained appended (u zero and
    `written` 0 until this session computes it), once checked to be the roster B refreshes, every joined user in
    the session."""
    stored = list(store["user_id"])
    roster = stored + membership_since(workdir, stored).joined
    if (len(roster), roster_digest(roster)) != (request.roster_size, request.roster_digest):
        raise ProtocolError(f"{B}'s refresh is of {request.roster_size} shared users, but {A}'s u store and shared "
                            f"list make {len(roster)} (or other users): both parties must hold the same PSI result; "
                            f"run `psi --delta` at both before refreshing")
    joined = roster[len(stored):]
    left_out = np.setdiff1d(np.arange(len(stored), len(roster)), request.users)
    if left_out.size:
        raise ProtocolError(f"{B} sent RefreshRequest leaving out {left_out.size} users who joined the intersection "
                            f"and have no u yet")
    if not joined:
        return store
    return pd.concat([store, u_frame(joined, np.zeros((len(joined), h), np.float32), np.zeros(len(joined)))],
                     ignore_index=True)


class RefreshListener:
    """The serving process's thread that takes refresh sessions one after another until stopped."""

    def __init__(self, cfg: PartyAConfig):
        self.cfg = cfg
        self.endpoint: Endpoint | None = None
        self.stopping = threading.Event()
        self.switching = threading.Event()
        self.thread = threading.Thread(target=self.run, name="refresh", daemon=True)

    def start(self) -> "RefreshListener":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self.endpoint is not None:
            self.endpoint.close()
        self.thread.join(timeout=5)

    def follow(self, model_id: str) -> None:
        """Take refresh sessions of `model_id` from now on (the service put it in service): the endpoint of the
        previous model's sessions (their run ID is the model's) is closed, a session in progress with it too (B
        runs its refresh again), and the loop opens one for the model CURRENT names."""
        endpoint = self.endpoint
        if endpoint is not None and endpoint.cfg.run_id != refresh_run_id(model_id):
            self.switching.set()
            endpoint.close()

    def run(self) -> None:
        while not self.stopping.is_set():
            _, manifest = current_model(self.cfg.basics.workdir, A)
            network = dataclasses.replace(self.cfg.basics.network, run_id=refresh_run_id(manifest["model_id"]))
            self.endpoint = Endpoint(network, messages.inbox_tags(A)).start()
            try:
                users = receive_session(self.cfg, self.endpoint)
                log.info("refresh: u of %d shared users swapped in", users)
            except Exception as exc:  # noqa: BLE001 - one failed session must not end the serving process's refreshes
                if self.switching.is_set():
                    self.switching.clear()
                    log.info("refresh: the model in service changed; refresh sessions of %s end",
                             self.endpoint.cfg.run_id.removesuffix("/refresh"))
                elif not self.stopping.is_set():
                    log.warning("refresh session failed: %s", exc, exc_info=not isinstance(exc, VfrecError))
                    self.endpoint.abort(f"{A} stopped the refresh session: {exc}")
            finally:
                self.endpoint.close()
