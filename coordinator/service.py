"""The coordinator process: holds the Paillier key pair, decrypts masked values on request.

It sends its public key to both parties, then serves decryption requests until
party A announces the end of the run. A request is served only for the role the
protocol step names (protocol/decryption.py), the answer goes to that role alone,
and every request, served or refused, is appended to the audit log.
"""

from __future__ import annotations

import logging
from pathlib import Path

from coordinator.audit import AuditLog
from coordinator.config import ROLE, CoordinatorConfig, load
from coordinator.decrypt import Decryptor
from protocol.runtime.cli import setup_logging
from protocol.net.codec import BigInts
from protocol.layer.decryption import DONE_TAG, POLICY, PUBLIC_KEY_TAG, REPLY_PREFIX, REQUEST_PREFIX
from protocol.errors import ProtocolError, VfrecError
from protocol.crypto.paillier import load_or_create_private_key
from protocol.runtime.timing import StepClock
from protocol.net.transport import Endpoint, Message
from protocol.runtime.workers import WorkerPool

log = logging.getLogger(__name__)
PARTIES = ("party_a", "party_b")


def send_public_key(endpoint: Endpoint, message: dict) -> None:
    for party in PARTIES:
        endpoint.send(party, PUBLIC_KEY_TAG, message)


def handle_decrypt(endpoint: Endpoint, decryptor: Decryptor, audit: AuditLog, msg: Message) -> None:
    """Decrypt one batch for the party that asked, if the step is that party's to ask."""
    request = msg.tag[len(REQUEST_PREFIX):]
    step = request.split("/", 1)[0]
    ciphertexts = msg.body.get("ciphertexts") if isinstance(msg.body, dict) else None
    refused = None
    if not isinstance(ciphertexts, list):
        ciphertexts, refused = [], "request holds no ciphertext vector"
    elif POLICY.get(step) != msg.peer:
        refused = f"{msg.peer} may not ask for decryptions of step {step!r}"
    else:
        try:
            decryptor.validate(ciphertexts)
        except ProtocolError as exc:
            refused = str(exc)
    audit.record(msg.peer, endpoint.cfg.run_id, step, msg.tag, len(ciphertexts), refused)
    reply_tag = REPLY_PREFIX + request
    if refused:
        log.warning("refused %s from %s: %s", msg.tag, msg.peer, refused)
        endpoint.send(msg.peer, reply_tag, {"error": refused})
        return
    endpoint.send(msg.peer, reply_tag, {"plaintexts": BigInts(decryptor.decrypt(ciphertexts))})


def serve(cfg: CoordinatorConfig) -> None:
    key, created = load_or_create_private_key(cfg.key_file, cfg.key_bits, cfg.key_passphrase)
    log.info("%s %d-bit Paillier key %s (%s)", "created" if created else "loaded", key.public.bits,
             key.public.fingerprint, cfg.key_file)
    audit = AuditLog(cfg.audit_log)
    pool = WorkerPool(cfg.workers)
    decryptor = Decryptor(key, pool)
    endpoint = Endpoint(cfg.network).start()
    try:
        send_public_key(endpoint, key.public.to_message())
        served = 0
        clock = StepClock(endpoint)
        while True:
            msg = endpoint.recv_any(PARTIES, "")
            clock.restart()
            if msg.tag == DONE_TAG:
                clock.write(cfg.workdir / "timing.json")
                log.info("run finished (announced by %s); %d decryption requests served", msg.peer, served)
                return
            if msg.tag.startswith(REQUEST_PREFIX):
                handle_decrypt(endpoint, decryptor, audit, msg)
                step, _, label = msg.tag[len(REQUEST_PREFIX):].partition("/")
                clock.lap(f"decrypt {step}" + (" for evaluation" if label.startswith("eval/") else ""))
                served += 1
            else:
                log.warning("ignored unexpected message %r from %s", msg.tag, msg.peer)
    except VfrecError as exc:
        endpoint.abort(f"coordinator stopped: {exc}")
        raise
    finally:
        endpoint.close()
        pool.close()
        audit.close()


def main(config_path: Path) -> None:
    cfg = load(config_path)
    setup_logging(ROLE, cfg.workdir)
    serve(cfg)
