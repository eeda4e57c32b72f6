"""Party B's run: align customers with A, then follow A's lead until A ends the run."""

from __future__ import annotations

import logging
from pathlib import Path

from party_b.config import PEER, ROLE, PartyBConfig, load
from protocol.cli import setup_logging
from protocol.decryption import DONE_TAG
from protocol.paillier import PublicKey
from protocol.party import run_party
from protocol.tables import encode_features
from protocol.transport import Endpoint
from protocol.workers import WorkerPool
from psi.align import align

log = logging.getLogger(__name__)


def main(config_path: Path) -> None:
    cfg: PartyBConfig = load(config_path)
    setup_logging(ROLE, cfg.basics.workdir)
    frame, ids = cfg.users.load()
    encode_features(frame, cfg.users.table)

    def body(endpoint: Endpoint, public: PublicKey, pool: WorkerPool) -> None:
        align(endpoint, PEER, ids, pool, cfg.psi, cfg.basics.workdir)
        endpoint.recv(PEER, DONE_TAG)
        log.info("run finished (announced by %s)", PEER)

    run_party(cfg.basics, body)
