"""The coordinator's decryption service as both sides see it: which role may ask for which step.

A party sends a `DecryptRequest` (step, label, masked ciphertexts); the coordinator
answers that party alone with a `DecryptReply`. Each step names the one role that
may ask for it (`POLICY`), so the plaintext of a step can only ever reach the role
docs/design.md gives it to. Everything a party sends here is masked.
"""

from __future__ import annotations

from enum import StrEnum

import gmpy2
import numpy as np

from protocol import messages
from protocol.crypto import packing
from protocol.crypto.paillier import Encryptor, PublicKey
from protocol.errors import ProtocolError
from protocol.messages import DecryptReply, DecryptRequest, PublicKeyAnnouncement
from protocol.net.transport import Endpoint
from protocol.roles import A, B, C, Role
from protocol.runtime.workers import WorkerPool


class Step(StrEnum):
    """The protocol steps that end in a decryption."""

    FORWARD = "forward"  # steps 2-3 of a training step: u + R for A
    EVALUATE = "evaluate"  # steps 2-3 outside training (evaluation): u + R for A
    BACKWARD = "backward"  # step 5: g + R' for B
    REFRESH = "refresh"  # step 7: W' + M for A


POLICY: dict[Step, Role] = {Step.FORWARD: A, Step.EVALUATE: A, Step.BACKWARD: B, Step.REFRESH: A}


def request_decryption(endpoint: Endpoint, step: Step, label: str, ciphertexts: list) -> list[gmpy2.mpz]:
    """Ask the coordinator to decrypt masked `ciphertexts`; returns plaintexts in [0, n)."""
    messages.send(endpoint, C, DecryptRequest(str(step), label, list(ciphertexts)))
    reply = messages.receive(endpoint, C, DecryptReply)
    if reply.error is not None:
        raise ProtocolError(f"coordinator refused to decrypt {step}/{label}: {reply.error}")
    if (reply.step, reply.label) != (step, label):
        raise ProtocolError(f"coordinator answered {reply.step}/{reply.label} to a request for {step}/{label}")
    if reply.plaintexts is None or len(reply.plaintexts) != len(ciphertexts):
        count = 0 if reply.plaintexts is None else len(reply.plaintexts)
        raise ProtocolError(f"coordinator returned {count} plaintexts for {len(ciphertexts)} ciphertexts")
    return reply.plaintexts


def receive_public_key(endpoint: Endpoint, pinned: str | None) -> PublicKey:
    """The coordinator's public key, checked against the config's pin when there is one."""
    announced = messages.receive(endpoint, C, PublicKeyAnnouncement)
    return PublicKey.announced(announced.n, announced.fingerprint, pinned)


def decrypt_masked(endpoint: Endpoint, step: Step, label: str, value: packing.Packed, enc: Encryptor,
                   pool: WorkerPool | None = None) -> np.ndarray:
    """The integer matrix behind `value`, learnt without the coordinator seeing it: mask, ask, unmask."""
    masked, r = packing.mask(value, enc, pool)
    return packing.unmask(request_decryption(endpoint, step, label, masked.flat()), masked, r)
