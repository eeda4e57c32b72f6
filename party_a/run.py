"""Party A's run: it drives. Align customers with B, then end the run for everyone."""

from __future__ import annotations

import logging
from pathlib import Path

from party_a.config import PEER, ROLE, PartyAConfig, load
from protocol.cli import setup_logging
from protocol.decryption import COORDINATOR, DONE_TAG
from protocol.paillier import PublicKey
from protocol.party import run_party
from protocol.tables import encode_features
from protocol.transport import Endpoint
from protocol.workers import WorkerPool
from psi.align import align

log = logging.getLogger(__name__)


def main(config_path: Path) -> None:
    cfg: PartyAConfig = load(config_path)
    setup_logging(ROLE, cfg.basics.workdir)
    frame, ids = cfg.users.load()
    encode_features(frame, cfg.users.table)

    def body(endpoint: Endpoint, public: PublicKey, pool: WorkerPool) -> None:
        align(endpoint, PEER, ids, pool, cfg.psi, cfg.basics.workdir)
        for peer in (COORDINATOR, PEER):
            endpoint.send(peer, DONE_TAG, None)
        log.info("run finished")

    run_party(cfg.basics, body)
