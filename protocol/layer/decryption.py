"""The coordinator's decryption service as the parties see it.

A party sends ciphertexts under "coordinator/decrypt/<step>/<label>"; the coordinator
answers that party alone under "coordinator/decrypted/<step>/<label>". Each protocol
step names the one role that may ask for it, so the plaintext of a step can only
ever reach the role DESIGN.md gives it to. Everything a party sends here is masked.
"""

from __future__ import annotations

import gmpy2
import numpy as np

from protocol.crypto import packing
from protocol.net.codec import BigInts
from protocol.errors import ProtocolError
from protocol.crypto.paillier import Encryptor, PublicKey
from protocol.net.transport import Endpoint
from protocol.runtime.workers import WorkerPool

COORDINATOR = "coordinator"
REQUEST_PREFIX = "coordinator/decrypt/"
REPLY_PREFIX = "coordinator/decrypted/"
DONE_TAG = "control/done"

# step -> the only role whose decryption requests for that step are served
POLICY = {
    "forward": "party_a",  # step 3: u + R for A
    "backward": "party_b",  # step 5: g + R' for B
    "refresh": "party_a",  # step 7: W' + M for A
}


def request_decryption(endpoint: Endpoint, step: str, label: str, ciphertexts: list) -> list[gmpy2.mpz]:
    """Ask the coordinator to decrypt masked `ciphertexts`; returns plaintexts in [0, n)."""
    if step not in POLICY:
        raise ProtocolError(f"unknown decryption step {step!r}")
    endpoint.send(COORDINATOR, f"{REQUEST_PREFIX}{step}/{label}", {"ciphertexts": BigInts(list(ciphertexts))})
    reply = endpoint.recv(COORDINATOR, f"{REPLY_PREFIX}{step}/{label}")
    if "error" in reply:
        raise ProtocolError(f"coordinator refused to decrypt {step}/{label}: {reply['error']}")
    plaintexts = reply["plaintexts"]
    if len(plaintexts) != len(ciphertexts):
        raise ProtocolError(f"coordinator returned {len(plaintexts)} plaintexts for {len(ciphertexts)} ciphertexts")
    return plaintexts


PUBLIC_KEY_TAG = "coordinator/public_key"


def receive_public_key(endpoint: Endpoint, pinned: str | None) -> PublicKey:
    """The coordinator's public key, checked against the config's pin when there is one."""
    return PublicKey.from_message(endpoint.recv(COORDINATOR, PUBLIC_KEY_TAG), pinned)


def decrypt_masked(endpoint: Endpoint, step: str, label: str, value: packing.Packed, enc: Encryptor,
                   pool: WorkerPool | None = None) -> np.ndarray:
    """The integer matrix behind `value`, learnt without the coordinator seeing it: mask, ask, unmask."""
    masked, r = packing.mask(value, enc, pool)
    return packing.unmask(request_decryption(endpoint, step, label, masked.flat()), masked, r)
