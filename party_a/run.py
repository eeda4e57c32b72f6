"""Party A's run: it drives. Align customers with B, train if configured, end the run for everyone."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from party_a.config import PartyAConfig, load
from party_a.data import align, load_tables
from protocol import messages
from protocol.crypto.paillier import PublicKey
from protocol.data.tables import encode_features
from protocol.messages import Finish, RunDone
from protocol.net.transport import Endpoint
from protocol.roles import A, B, C
from protocol.runtime.cli import setup_logging
from protocol.runtime.party import run_party
from protocol.runtime.workers import WorkerPool
from psi.align import align as align_ids

log = logging.getLogger(__name__)


def main(config_path: Path) -> None:
    cfg: PartyAConfig = load(config_path)
    workdir = cfg.basics.workdir
    setup_logging(A, workdir)
    frame, ids = cfg.users.stream()
    training = cfg.training
    if training is None:
        encode_features(frame, cfg.users.table)
    else:
        tables = load_tables(frame, ids, cfg.users.table, cfg.users.normalizer, training.interactions, training.items)

    def body(endpoint: Endpoint, public: PublicKey, pool: WorkerPool) -> None:
        psi = align_ids(endpoint, B, ids, pool, cfg.psi, workdir)
        model_id, epoch = None, None
        if training is not None:
            from party_a.train import Names, run_training  # torch loads only when there is training to do

            names = Names([ids[r] for r in psi.positions], tables.items)
            report = run_training(endpoint, public, pool, align(tables, psi.positions), training, workdir, names)
            report["psi"] = json.loads((workdir / "psi" / "summary.json").read_text())
            (workdir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
            log.info("report written to %s", workdir / "report.json")
            model_id, epoch = report["model"]["id"], report["model"]["epoch"]
        messages.send(endpoint, B, Finish(model_id, epoch))
        messages.send(endpoint, C, RunDone(model_id))
        log.info("run finished")

    run_party(cfg.basics, body)
