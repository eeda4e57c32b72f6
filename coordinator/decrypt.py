"""Batched CRT decryption, spread over the coordinator's own worker processes.

Processes rather than threads: gmpy2 releases the GIL only inside powmod, so two
threads decrypt 1.3-1.5x faster than one, two processes 1.9x. The private key goes to
each worker once, over its pipe, never further; each decryption task then names the
key only by its public fingerprint.

The workers are always child processes on the coordinator's host, never Ray actors:
Ray moves objects between nodes over its own channel, which is neither encrypted
nor authenticated unless the cluster is set up with Ray's TLS, so p and q would
cross the network in the clear to every node. With `[compute] backend = "ray"` the
coordinator says so and decrypts on local processes (`decryption_pool`); a
`Decryptor` refuses any other pool.
"""

from __future__ import annotations

import logging

import numpy as np

from protocol.compute.pool import open_pool
from protocol.compute.workers import WorkerPool
from protocol.crypto.paillier import PrivateKey
from protocol.errors import ConfigError
from protocol.settings.config import Compute
from protocol.wire.codec import BigInts

log = logging.getLogger(__name__)

_INSTALL = "protocol.crypto.paillier:install_decryption_key"
_TASK = "protocol.crypto.paillier:decrypt_task"


def decryption_pool(compute: Compute) -> WorkerPool:
    """The coordinator's pool: local worker processes, whatever [compute] backend says (see the module doc)."""
    if compute.backend == "ray":
        log.warning("[compute] backend = \"ray\" is not used by the coordinator: its workers hold the private key, "
                    "which Ray would carry to the cluster's nodes over its unauthenticated channel; decrypting on "
                    "local worker processes instead")
        compute = Compute("local", compute.workers, "", compute.max_in_flight)
    return open_pool(compute)


class Decryptor:
    """The coordinator's decryptions, with the private key installed once on each of the pool's workers."""

    def __init__(self, key: PrivateKey, pool: WorkerPool):
        if not pool.local:
            raise ConfigError("the coordinator's private key goes only to its own worker processes, not to remote "
                              "workers (Ray actors): use decryption_pool")
        self.key = key
        self.pool = pool
        pool.broadcast(_INSTALL, key.to_json())

    def validate(self, ciphertexts: list) -> None:
        """Refuse malformed ciphertexts, naming the first one."""
        for i, c in enumerate(ciphertexts):
            self.key.public.check_ciphertext(c, f"ciphertext {i}")

    def decrypt(self, ciphertexts: list) -> list:
        if self.pool.size == 0 or len(ciphertexts) < 2 * self.pool.size:
            return [self.key.raw_decrypt(c) for c in ciphertexts]
        parts = np.array_split(np.arange(len(ciphertexts)), self.pool.size)
        fingerprint = self.key.public.fingerprint
        futures = [self.pool.submit(_TASK, fingerprint, BigInts([ciphertexts[i] for i in idx])) for idx in parts]
        return [m for f in futures for m in f.result()]
