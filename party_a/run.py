"""Party A's run: it drives. Align customers with B, train if configured, end the run for everyone; or resume
training from the newest checkpoint all three roles hold (protocol/runtime/resume.py). With `--from current` the
run starts from the model in service (party_a/training/warm.py), and B and the coordinator must start from the same
one."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

from party_a.config import PartyAConfig, load
from party_a.data.tables import align, load_tables
from protocol import messages
from protocol.compute.workers import WorkerPool
from protocol.data.tables import encode_features
from protocol.errors import ConfigError, StoreError
from protocol.layer.decryption import receive_public_key
from protocol.messages.commands import Finish
from protocol.messages.run import RunDone, Starting
from protocol.net.transport import Endpoint
from protocol.roles import A, B, C
from protocol.runtime.checkpoint import remove_all
from protocol.runtime.cli import setup_logging
from protocol.runtime.party import run_resumable
from protocol.runtime.resume import Agreed
from protocol.store.releases import remove_ledgers
from psi.align import align as align_ids
from psi.align import read_aligned_rows

log = logging.getLogger(__name__)


def check_starts(endpoint: Endpoint, start: str | None) -> None:
    """B and the coordinator must start from the model A starts from, or all three from scratch."""
    def name(model_id: str | None) -> str:
        return "scratch" if model_id is None else f"model {model_id!r}"

    for peer in (B, C):
        theirs = messages.receive(endpoint, peer, Starting).model_id
        if theirs != start:
            raise StoreError(f"{peer} starts from {name(theirs)}, but {A} starts from {name(start)}: all three roles "
                             f"must start from the same model (each its own models/CURRENT with --from current, or "
                             f"none without it)")


def main(config_path: Path, resume: bool = False, warm: bool = False) -> None:
    cfg: PartyAConfig = load(config_path)
    workdir, run_id = cfg.basics.workdir, cfg.basics.network.run_id
    setup_logging(A, workdir)
    frame, ids = cfg.users.stream()
    training = cfg.training
    start = None
    if warm and training is None:
        raise ConfigError(f"{config_path}: --from current starts training from the model in service, but this "
                          f"config has no [interactions] to train on")
    if warm:
        from party_a.training.warm import model_in_service  # torch loads only when there is training to do

        start = model_in_service(workdir, training, config_path)
        log.info("warm start from model %s (%s)", start.model_id, start.directory)
    if training is None:
        encode_features(frame, cfg.users.table)
    else:
        tables = load_tables(frame, ids, cfg.users.table, cfg.users.normalizer, training.interactions, training.items,
                             encodings=None if start is None else start.encodings)

    def finish(endpoint: Endpoint, report: dict | None) -> None:
        model_id, epoch, promote = None, None, True
        if report is not None:
            report["psi"] = json.loads((workdir / "psi" / "summary.json").read_text())
            (workdir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
            log.info("report written to %s", workdir / "report.json")
            model_id, epoch, promote = report["model"]["id"], report["model"]["epoch"], report["model"]["promoted"]
        messages.send(endpoint, B, Finish(model_id, epoch, promote))
        messages.send(endpoint, C, RunDone(model_id, promote))
        remove_all(workdir, run_id)
        remove_ledgers(workdir, run_id)
        log.info("run finished")

    def work(endpoint: Endpoint, pool: WorkerPool) -> tuple[Callable[[], None], Callable[[Agreed], None]]:
        def fresh() -> None:
            public = receive_public_key(endpoint, cfg.basics.public_key_pin)
            check_starts(endpoint, None if start is None else start.model_id)
            if start is not None:
                start.check_key(public)
            psi = align_ids(endpoint, B, ids, pool, cfg.psi, workdir, cfg.basics.network.key_passphrase)
            report = None
            if training is not None:
                from party_a.training.loop import Names, run_training  # torch loads only when there is training to do

                names = Names([ids[r] for r in psi.positions], tables.items, tables.encodings)
                report = run_training(endpoint, public, pool, align(tables, psi.positions), training, workdir, names,
                                      cfg.checkpoint, start)
            finish(endpoint, report)

        def resumed(agreed: Agreed) -> None:
            from party_a.training.loop import Names, resume_training

            positions = read_aligned_rows(workdir)
            names = Names([ids[r] for r in positions], tables.items, tables.encodings)
            finish(endpoint, resume_training(endpoint, pool, align(tables, positions), training, workdir, names,
                                             cfg.checkpoint, agreed, cfg.basics.public_key_pin))

        return fresh, resumed

    run_resumable(cfg.basics, cfg.checkpoint, resume, work)
