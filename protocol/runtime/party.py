"""The frame of a party's run: endpoint up, coordinator's key in, work, and a clean stop.

On any error the party tells its peers it stops (so they stop at once with its
reason instead of waiting for a timeout) and closes its endpoint.
"""

from __future__ import annotations

from collections.abc import Callable

from protocol import messages
from protocol.crypto.paillier import PublicKey
from protocol.layer.decryption import receive_public_key
from protocol.net.transport import Endpoint
from protocol.runtime.compute import open_pool
from protocol.runtime.config import PartyBasics
from protocol.runtime.workers import WorkerPool


def run_party(basics: PartyBasics, body: Callable[[Endpoint, PublicKey, WorkerPool], None]) -> None:
    endpoint = Endpoint(basics.network, messages.inbox_tags(basics.network.role)).start()
    try:
        public = receive_public_key(endpoint, basics.public_key_pin)
        with open_pool(basics.compute) as pool:
            body(endpoint, public, pool)
    except BaseException as exc:
        endpoint.abort(f"{basics.network.role} stopped: {exc or type(exc).__name__}")
        raise
    finally:
        endpoint.close()
