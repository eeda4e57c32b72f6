"""The coordinator's refresh service: decrypts B's recomputed contributions u for A's serving store.

    python -m coordinator refresh --config c.toml

It runs until stopped and serves the model in service at the coordinator
(`<workdir>/models/CURRENT`) with that model's key, one refresh session at a time.
B opens a session (`RefreshRequest` naming the model and the users), the coordinator
announces the key, both parties register the layer for that many users, and every
batch is an evaluation forward (steps 1-3) under the ledger's rules: B submits
[u + R], A alone receives u + R, each label once, with the plan's count. A session
that fails (a peer that stops, a request for another model) is logged, and the
service waits for the next one.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from coordinator.decryption_log import DecryptionLog
from coordinator.config import CoordinatorConfig, load
from coordinator.decrypt import Decryptor, decryption_pool
from coordinator.keys import model_key
from coordinator.service import Service, serve_one
from protocol import messages, observe
from protocol.errors import StoreError, VfrecError
from protocol.layer.timing import StepClock
from protocol.messages.coordinator import PublicKeyAnnouncement
from protocol.messages.serving import RefreshRequest
from protocol.net.transport import Endpoint
from protocol.roles import PEERS, B, C
from protocol.runtime.cli import setup_logging
from protocol.store.models import refresh_run_id

log = logging.getLogger(__name__)


def serve_session(cfg: CoordinatorConfig, model_id: str, decryptor: Decryptor, decryptions: DecryptionLog) -> int:
    """Serve one refresh session from B's request to the last batch; returns the number of users refreshed."""
    session = dataclasses.replace(cfg, network=dataclasses.replace(cfg.network, run_id=refresh_run_id(model_id)))
    endpoint = Endpoint(session.network, messages.inbox_tags(C)).start()
    observe.watch(C, session.network.run_id, endpoint)
    try:
        request = messages.receive(endpoint, B, RefreshRequest, idle=True)
        if request.model_id != model_id:
            raise StoreError(f"{B} asked to refresh model {request.model_id!r}, but the coordinator serves "
                             f"{model_id!r}")
        public = decryptor.key.public
        for party in PEERS[C]:
            messages.send(endpoint, party, PublicKeyAnnouncement(int(public.n), public.fingerprint))
        service = Service(session, endpoint, decryptor, decryptions, StepClock(endpoint))
        while service.ledger is None or not service.ledger.evaluated_all(1):
            serve_one(service)
        return request.users.size
    except VfrecError as exc:
        endpoint.abort(f"coordinator stopped the refresh session: {exc}")
        raise
    finally:
        endpoint.close()


def main(config_path: Path) -> None:
    cfg = load(config_path)
    setup_logging(C, cfg.workdir)
    model_id, key = model_key(cfg)
    log.info("serving refreshes of model %s (key %s)", model_id, key.public.fingerprint)
    observe.watch(C, refresh_run_id(model_id))
    with observe.serving(cfg.observe), decryption_pool(cfg.compute) as pool:
        decryptor, decryptions = Decryptor(key, pool), DecryptionLog(cfg.audit_log)
        try:
            while True:
                try:
                    users = serve_session(cfg, model_id, decryptor, decryptions)
                    log.info("refresh session done: %d users' u decrypted for %s", users, PEERS[C][0])
                except VfrecError as exc:
                    log.warning("refresh session failed: %s", exc)
        finally:
            decryptions.close()
