"""The coordinator process: holds the Paillier key pair, decrypts masked values on request.

It announces its public key to both parties, then serves requests until party A
announces the end of the run. Requests are dispatched on their type (`HANDLERS`).
Both parties register the layer (plan and shared users); once they agree, a
decryption is served only when the role the step names submits it, only as the
plan's schedule allows (coordinator/ledger.py), and the plaintext goes to the
step's other party alone, never to the submitter (protocol/layer/decryption.py
ROUTE). For a new layer it draws [W0] and sends each party its layout; after each
refresh it checks, for B, that A's [Q] by rows is the refresh it decrypted. Every
request, served or refused, is appended to the decryption log. A refusal
goes to the party waiting for the step's plaintext (or, for a request naming no
step, to its sender); it never stops the service. At A's step boundaries it writes
its checkpoint (coordinator/checkpoint.py); when a party is lost, or when it starts
with checkpoints on disk, it resumes from the newest one all three hold
(protocol/runtime/resume.py).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from coordinator import checkpoint
from coordinator.decryption_log import DecryptionLog
from coordinator.config import CoordinatorConfig, load
from coordinator.decrypt import Decryptor, decryption_pool
from coordinator.keys import run_key
from coordinator.ledger import Ledger, Refusal
from protocol import messages, observe
from protocol.crypto import packing
from protocol.crypto.paillier import Encryptor
from protocol.errors import ConfigError, ProtocolError, VfrecError
from protocol.layer.decryption import ROUTE, Step, refresh_check
from protocol.layer.steps import draw_initial_weights
from protocol.layer.timing import StepClock
from protocol.messages.coordinator import (DecryptReply, DecryptRequest, InitialWeights, PublicKeyAnnouncement,
                                           RefreshCheck, RefreshChecked, Registration)
from protocol.messages.plan import LayerPlan
from protocol.messages.run import CheckpointDone, CoordinatorCheckpoint, RunDone, Starting
from protocol.net.transport import Endpoint
from protocol.roles import PEERS, A, B, C
from protocol.runtime.checkpoint import held, remove_all
from protocol.runtime.cli import setup_logging
from protocol.runtime.resume import Agreed, Holding, resumable
from protocol.store.models import write_model
from protocol.wire.message import WHILE_UP, Message

log = logging.getLogger(__name__)


@dataclass
class Service:
    """What the handlers share."""

    cfg: CoordinatorConfig
    endpoint: Endpoint
    decryptor: Decryptor
    decryptions: DecryptionLog
    clock: StepClock
    registrations: dict[str, Registration] = field(default_factory=dict)
    ledger: Ledger | None = None
    served: int = 0
    done: bool = False
    refreshed: list | None = None  # the plaintexts of the open step's refresh, which B's check is about
    start: str | None = None  # the stored model a warm start starts from


def handle_register(service: Service, peer: str, registration: Registration) -> None:
    """Keep each party's registration; once both agree, decryptions follow that plan's schedule."""
    if peer in service.registrations:
        raise ProtocolError(f"{peer} registered the layer twice")
    public = service.decryptor.key.public
    registration.plan.check_key(public.fingerprint)
    service.registrations[peer] = registration
    if len(service.registrations) == len(PEERS[C]):
        a, b = (service.registrations[p] for p in PEERS[C])
        if a != b:
            raise ProtocolError(f"the parties registered different layers: {PEERS[C][0]} {a.shared_users} users "
                                f"and {a.plan}, {PEERS[C][1]} {b.shared_users} users and {b.plan}")
        service.ledger = Ledger(a.plan, a.shared_users, public)
        log.info("layer registered by both parties: %d shared users, batches of %d", a.shared_users,
                 a.plan.batch_users)
        if a.init:
            send_initial_weights(service, a.plan)


def send_initial_weights(service: Service, plan: LayerPlan) -> None:
    """Init: draw W0 and send [W0] by columns to A and by rows to B, fresh encryptions of one matrix. Drawn here, each
    party's layout holds W0 whatever the other party does; the coordinator knows W0, a draw independent of any data,
    and never sees a later W. With `w0_seed` in its config the draw is that seed's, for a run that can be repeated."""
    public = service.decryptor.key.public
    seed = secrets.randbits(128) if service.cfg.w0_seed is None else service.cfg.w0_seed
    w0 = draw_initial_weights(plan, np.random.default_rng(seed))
    rows, cols = plan.layouts(public)
    enc = Encryptor(public, "full")
    for party, layout, values in ((A, cols, np.ascontiguousarray(w0.T)), (B, rows, w0)):
        packed = packing.encrypt(enc, values, layout, plan.w_bits, plan.w_bound, service.decryptor.pool)
        messages.send(service.endpoint, party, InitialWeights("init", packed.to_wire()))


def handle_decrypt(service: Service, peer: str, request: DecryptRequest) -> None:
    """Decrypt one batch `peer` submitted for the step's other party, if the step is `peer`'s to submit."""
    refused = refusal(service, peer, request)
    receiver = ROUTE[Step(request.step)][1] if request.step in ROUTE else peer
    plaintexts = refuse_or_reply(service, peer, receiver, request.step, request.label, len(request.ciphertexts),
                                 refused, lambda: service.decryptor.decrypt(request.ciphertexts))
    if refused is None:
        service.ledger.record(Step(request.step), request.label)
        if request.step == Step.REFRESH:
            service.refreshed = plaintexts
    service.clock.lap(f"decrypt {request.step}")


def handle_check(service: Service, peer: str, request: RefreshCheck) -> None:
    """B's check of A's [Q] by rows against the refresh decrypted for A: the verdict goes to B alone. A failed check
    stops the run's decryptions: whoever submitted it learns one bit, once."""
    ledger = service.ledger
    refused = UNREGISTERED if ledger is None else ledger.refusal(Step.CHECK, request.label, 1)
    # the ledger served this label's refresh last, so `refreshed` holds its plaintexts
    if refused is None and len(request.weights) != len(service.refreshed):
        refused = Refusal("count", f"{len(request.weights)} weights for the {len(service.refreshed)} ciphertexts of "
                                   f"the refresh")
    if refused is None and any(w >= 1 << 64 for w in request.weights):
        refused = Refusal("malformed", "a weight of 64 bits or more")
    key = service.decryptor.key
    if refused is None:
        try:
            key.public.check_ciphertext(request.combined, "RefreshCheck.combined")
        except ProtocolError as exc:
            refused = Refusal("ciphertext", str(exc))
    if refused is None:
        expected = refresh_check(ledger.plan, key.public, service.refreshed, request.weights)
        if int(key.raw_decrypt(request.combined)) % int(key.public.n) != expected:
            ledger.stopped = f"B's check of {request.label} found A's [Q] by rows differing from the refresh"
            refused = Refusal("check", "its combination differs from the one of the refresh the coordinator "
                                       "decrypted for A")
    service.decryptions.record(peer, service.cfg.network.run_id, Step.CHECK, request.label, 1, refused)
    observe.decryption(Step.CHECK, None if refused is None else refused.reason)
    if refused is None:
        ledger.record(Step.CHECK, request.label)
        service.refreshed = None
    else:
        log.warning("check of %s from %s failed: %s", request.label[:80], peer, refused)
    messages.send(service.endpoint, B, RefreshChecked(request.label, refused))
    service.clock.lap("check refresh")


UNREGISTERED = Refusal("unregistered", "the layer is not registered by both parties yet")


def refusal(service: Service, peer: str, request: DecryptRequest) -> Refusal | None:
    """Why `request` may not be served, or None."""
    if request.step not in ROUTE:
        return Refusal("schedule", f"unknown step {request.step!r}; steps are {', '.join(ROUTE)}")
    if ROUTE[Step(request.step)][0] != peer:
        return Refusal("submitter", f"{peer} may not submit step {request.step!r}: its plaintext would go to {peer} "
                                    f"itself")
    try:
        service.decryptor.validate(request.ciphertexts)
    except ProtocolError as exc:
        return Refusal("ciphertext", str(exc))
    if service.ledger is None:
        return UNREGISTERED
    return service.ledger.refusal(Step(request.step), request.label, len(request.ciphertexts))


def refuse_or_reply(service: Service, peer: str, receiver: str, step: str, label: str, count: int,
                    refused: Refusal | None, decrypt: Callable[[], list]) -> list | None:
    """Audit `peer`'s request, then send the plaintexts (and return them) or the refusal to `receiver` alone."""
    service.decryptions.record(peer, service.cfg.network.run_id, step, label, count, refused)
    observe.decryption(step if step in ROUTE else "other", None if refused is None else refused.reason)
    if refused:
        log.warning("refused a decryption of %s/%s from %s: %s", step[:40], label[:80], peer, refused)
        messages.send(service.endpoint, receiver, DecryptReply(step, label, None, f"{peer}'s request: {refused}"))
        return None
    plaintexts = decrypt()
    messages.send(service.endpoint, receiver, DecryptReply(step, label, plaintexts, None))
    service.served += 1
    return plaintexts


def handle_checkpoint(service: Service, peer: str, request: CoordinatorCheckpoint) -> None:
    """Write the coordinator's checkpoint of A's step boundary and confirm it."""
    if service.ledger is None:
        raise ProtocolError(f"{peer} proposed a checkpoint before both parties registered the layer")
    cfg = service.cfg
    checkpoint.save(cfg.workdir, cfg.network.run_id, request.step, cfg.checkpoint.keep, service.ledger,
                    service.served, service.decryptions.entries)
    messages.send(service.endpoint, A, CheckpointDone(request.step))


def handle_done(service: Service, peer: str, request: RunDone) -> None:
    """The run is over; a trained model's key stays, linked to the model (coordinator/refresh.py serves it), and the
    model is put in service if A says so."""
    if request.model_id is not None:
        cfg, public = service.cfg, service.decryptor.key.public
        manifest = {"role": str(C), "run_id": cfg.network.run_id, "created": time.time(),
                    "key_fingerprint": public.fingerprint, "key_bits": public.bits, "key_file": str(cfg.key_file),
                    "started_from": service.start, "files": []}
        write_model(cfg.workdir, request.model_id, manifest, {}, current=request.promote)
        log.info("model %s stored%s: its key %s is kept for refreshes", request.model_id,
                 "" if request.promote else f", not put in service (model {service.start} stays)", public.fingerprint)
    service.clock.write(service.cfg.workdir / "timing.json")
    remove_all(service.cfg.workdir, service.cfg.network.run_id)
    log.info("run finished (announced by %s); %d decryption requests served", peer, service.served)
    service.done = True


def model_facts(directory: Path, manifest: dict) -> dict[str, str]:
    """`models list`'s columns for one of the coordinator's models: its key's fingerprint and size, and whether the
    key file it names is still there (a refresh of the model needs it; a prune leaves key files alone)."""
    key_file = Path(manifest.get("key_file", ""))
    fingerprint = str(manifest.get("key_fingerprint", "-")).removeprefix("sha256:")
    return {"key": fingerprint[:12], "bits": str(manifest.get("key_bits", "-")),
            "key file": "present" if key_file.is_file() else f"missing ({key_file})"}


HANDLERS: dict[type[Message], Callable[[Service, str, Message], None]] = {
    Registration: handle_register,
    DecryptRequest: handle_decrypt,
    RefreshCheck: handle_check,
    CoordinatorCheckpoint: handle_checkpoint,
    RunDone: handle_done,
}
_BY_TAG = {kind.TAG: kind for kind in HANDLERS}


def serve_one(service: Service) -> None:
    """Take the next request from either party and dispatch it on its type. Between requests the parties may work
    for long (PSI, evaluation, A alone's epoch at scale), so the wait lasts as long as both are up."""
    msg = service.endpoint.recv_any(PEERS[C], frozenset(_BY_TAG), timeout=WHILE_UP)
    service.clock.restart()
    kind = _BY_TAG[msg.tag]
    try:
        request = kind.from_message(msg.body, msg.peer)
    except ProtocolError as exc:
        if kind is not DecryptRequest:
            raise
        body = msg.body if isinstance(msg.body, dict) else {}
        step, label = (v if isinstance(v, str) else "" for v in (body.get("step"), body.get("label")))
        refuse_or_reply(service, msg.peer, msg.peer, step, label, 0, Refusal("malformed", str(exc)), list)
        return
    HANDLERS[kind](service, msg.peer, request)


def serve(cfg: CoordinatorConfig, resume: bool = False, warm: bool = False) -> None:
    """Serve the run; `resume` (or checkpoints of the run on disk): resume it from the newest checkpoint all hold;
    `warm` (`--from current`): under the key of the model in service (coordinator/keys.py)."""
    run_id = cfg.network.run_id
    resuming = bool(held(cfg.workdir, run_id))
    if resume and not resuming:
        raise ConfigError(f"--resume: the coordinator holds no checkpoint of run {run_id!r} in {cfg.workdir}")
    # reads the TLS key: a bad one stops C before any write
    endpoint = Endpoint(cfg.network, messages.inbox_tags(C), None if resuming else 0)
    run = run_key(cfg, warm)
    key = run.key
    decryptions = DecryptionLog(cfg.audit_log)
    pool = decryption_pool(cfg.compute)
    endpoint.start()
    observe.watch(C, run_id, endpoint)
    decryptor = Decryptor(key, pool)

    def until_done(service: Service) -> None:
        while not service.done:
            serve_one(service)

    def fresh() -> None:
        for party in PEERS[C]:
            messages.send(endpoint, party, PublicKeyAnnouncement(int(key.public.n), key.public.fingerprint))
        messages.send(endpoint, A, Starting(run.start))
        until_done(Service(cfg, endpoint, decryptor, decryptions, StepClock(endpoint), start=run.start))

    def resumed(agreed: Agreed) -> None:
        restored = checkpoint.load(cfg.workdir, run_id, agreed.step, key.public, agreed.generation)
        log.info("audit log entries after %d are of steps rolled back", restored.log_entries)
        until_done(Service(cfg, endpoint, decryptor, decryptions, StepClock(endpoint), ledger=restored.ledger,
                           served=restored.served, start=run.start))

    try:
        with observe.serving(cfg.observe):
            resumable(endpoint, cfg.checkpoint, lambda: Holding.of(cfg.workdir, run_id), fresh, resumed, resuming)
    except VfrecError as exc:
        endpoint.abort(f"coordinator stopped: {exc}")
        raise
    finally:
        endpoint.close()
        pool.close()
        decryptions.close()


def main(config_path: Path, resume: bool = False, warm: bool = False) -> None:
    cfg = load(config_path)
    setup_logging(C, cfg.workdir)
    serve(cfg, resume, warm)
