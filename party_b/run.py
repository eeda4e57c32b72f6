"""Party B's run: align customers with A, then follow A's commands until A ends the run; or resume (from the
newest checkpoint all three roles hold) and follow from there. With `--from current` it starts from the model in
service (party_b/warm.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from party_b.config import PartyBConfig, load
from protocol import messages
from protocol.compute.workers import WorkerPool
from protocol.crypto.paillier import PublicKey
from protocol.data.tables import fit_encoding
from protocol.layer.decryption import receive_public_key
from protocol.messages.commands import Finish
from protocol.messages.run import Starting
from protocol.net.transport import Endpoint
from protocol.roles import A, B
from protocol.runtime.cli import setup_logging
from protocol.runtime.party import run_resumable
from protocol.runtime.resume import Agreed
from psi.align import align, read_aligned_rows

log = logging.getLogger(__name__)


def main(config_path: Path, resume: bool = False, warm: bool = False) -> None:
    cfg: PartyBConfig = load(config_path)
    workdir, run_id = cfg.basics.workdir, cfg.basics.network.run_id
    setup_logging(B, workdir)
    frame, ids = cfg.users.stream()
    start = None
    if warm:
        from party_b.warm import model_in_service

        start = model_in_service(cfg, config_path)
        log.info("warm start from model %s (%s)", start.model_id, start.directory)
    encoding = fit_encoding(frame, cfg.users.table) if start is None else start.encoding
    features = encoding.apply(frame, cfg.users.table)

    def work(endpoint: Endpoint, pool: WorkerPool) -> tuple[Callable[[], None], Callable[[Agreed], None]]:
        from party_b.follow import Follower, SharedUsers  # torch loads only when A asks for training
        from party_b.privacy import embedding_noise
        from protocol.layer.defence import Defence
        from protocol.layer.received import Received

        def follower(positions: np.ndarray, public: PublicKey) -> Follower:
            shared = SharedUsers([ids[r] for r in positions], features.take(positions), encoding)
            noise = embedding_noise(cfg.privacy, workdir, run_id) if cfg.privacy.on else None
            defence = Defence(noise, Received() if cfg.record else None)
            return Follower(endpoint, public, pool, shared, cfg.tower, cfg.encryption, workdir, cfg.checkpoint.keep,
                            defence, start)

        def fresh() -> None:
            messages.send(endpoint, A, Starting(None if start is None else start.model_id))
            public = receive_public_key(endpoint, cfg.basics.public_key_pin)
            if start is not None:
                start.check_key(public)
            psi = align(endpoint, A, ids, pool, cfg.psi, workdir, cfg.basics.network.key_passphrase)
            first = messages.receive_command(endpoint, A)
            if isinstance(first, Finish):
                log.info("run finished (announced by %s) after PSI", A)
                return
            follower(psi.positions, public).follow(first)

        def resumed(agreed: Agreed) -> None:
            from party_b import checkpoint

            state = checkpoint.load(workdir, run_id, agreed.step, cfg.basics.public_key_pin)
            following = follower(read_aligned_rows(workdir), state.public)
            following.restore(state)
            following.follow(messages.receive_command(endpoint, A))

        return fresh, resumed

    run_resumable(cfg.basics, cfg.checkpoint, resume, work)
