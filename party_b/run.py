"""Party B's run: align customers with A, then follow A's commands until A ends the run."""

from __future__ import annotations

import logging
from pathlib import Path

from party_b.config import PartyBConfig, load
from protocol import messages
from protocol.crypto.paillier import PublicKey
from protocol.data.tables import fit_encoding
from protocol.messages import Finish
from protocol.net.transport import Endpoint
from protocol.roles import A, B
from protocol.runtime.cli import setup_logging
from protocol.runtime.party import run_party
from protocol.runtime.workers import WorkerPool
from psi.align import align

log = logging.getLogger(__name__)


def main(config_path: Path) -> None:
    cfg: PartyBConfig = load(config_path)
    workdir = cfg.basics.workdir
    setup_logging(B, workdir)
    frame, ids = cfg.users.stream()
    encoding = fit_encoding(frame, cfg.users.table)
    features = encoding.apply(frame, cfg.users.table)

    def body(endpoint: Endpoint, public: PublicKey, pool: WorkerPool) -> None:
        psi = align(endpoint, A, ids, pool, cfg.psi, workdir)
        first = messages.receive_command(endpoint, A)
        if isinstance(first, Finish):
            log.info("run finished (announced by %s) after PSI", A)
            return
        from party_b.follow import Audit, Follower, SharedUsers  # torch loads only when A asks for training
        from party_b.privacy import embedding_noise
        from protocol.runtime.received import Received

        shared = SharedUsers([ids[r] for r in psi.positions], features.take(psi.positions), encoding)
        audit = Audit(embedding_noise(cfg.privacy) if cfg.privacy.on else None, Received() if cfg.record else None)
        Follower(endpoint, public, pool, shared, cfg.tower, cfg.encryption, workdir, audit).follow(first)

    run_party(cfg.basics, body)
