"""Party B's run: align customers with A, then follow A's commands until A ends the run."""

from __future__ import annotations

import logging
from pathlib import Path

from party_b.config import PEER, ROLE, PartyBConfig, load
from protocol.runtime.cli import setup_logging
from protocol.crypto.paillier import PublicKey
from protocol.runtime.party import run_party
from protocol.layer.steps import COMMANDS
from protocol.data.tables import encode_features
from protocol.net.transport import Endpoint
from protocol.runtime.workers import WorkerPool
from psi.align import align

log = logging.getLogger(__name__)


def main(config_path: Path) -> None:
    cfg: PartyBConfig = load(config_path)
    workdir = cfg.basics.workdir
    setup_logging(ROLE, workdir)
    frame, ids = cfg.users.load()
    features = encode_features(frame, cfg.users.table)

    def body(endpoint: Endpoint, public: PublicKey, pool: WorkerPool) -> None:
        psi = align(endpoint, PEER, ids, pool, cfg.psi, workdir)
        first = endpoint.recv(PEER, COMMANDS)
        if isinstance(first, dict) and first.get("op") == "done":
            log.info("run finished (announced by %s) after PSI", PEER)
            return
        from party_b.follow import follow  # torch loads only when A asks for training

        follow(endpoint, public, pool, features.take(psi.positions), cfg.tower, cfg.encryption, workdir, first)

    run_party(cfg.basics, body)
