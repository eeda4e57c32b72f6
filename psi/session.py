"""ECDH-PSI between two parties over an `Endpoint`; both run the same steps.

1. exchange_hello: each side sends a fresh nonce, its set size and chunk size; the
   session salt is derived from both nonces.
2. stream_own_blinded: each side hashes its IDs to the curve, blinds them with its
   secret and streams them to the peer in chunks, in a random order.
3. reblind_peer_stream: each side blinds the peer's chunks a second time and sends
   them back in the order received.
4. intersect: each side now holds the doubly-blinded values of its own IDs (from
   the peer) and of the peer's IDs (its own work). Shared IDs are the equal values;
   sorting them by value gives both sides the same canonical order.

Only set sizes and the intersection are revealed. Memory stays bounded by a window
of chunks in flight; the curve work runs on the role's worker pool.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from protocol.errors import ProtocolError
from protocol.net.transport import Endpoint
from protocol.runtime.workers import WorkerPool
from psi.ecdh import MATCH_BYTES, POINT_BYTES, new_secret, session_salt

log = logging.getLogger(__name__)

VERSION = 1
_BLIND = "psi.ecdh:blind_ids"
_REBLIND = "psi.ecdh:reblind"


@dataclass(frozen=True)
class PsiResult:
    """Where the shared IDs sit in this party's own list, in the order both parties agree on."""

    positions: np.ndarray  # indices into the party's ID list, canonical shared order
    own_size: int
    peer_size: int
    seconds: float
    bytes_sent: int
    bytes_received: int


@dataclass(frozen=True)
class _Session:
    endpoint: Endpoint
    peer: str
    pool: WorkerPool
    salt: bytes
    secret: bytes
    chunk: int
    peer_size: int
    peer_chunk: int
    progress: tqdm


def _chunks(n: int, size: int) -> list[range]:
    return [range(k, min(k + size, n)) for k in range(0, n, size)]


def _pipeline(pool: WorkerPool, tasks: Iterable[tuple], op: str, sink: Callable[[int, bytes], None],
              window: int) -> None:
    """Run `op` over `tasks` on the pool with at most `window` in flight; `sink` gets results in order."""
    in_flight: list[Future] = []
    done = 0
    for args in tasks:
        in_flight.append(pool.submit(op, *args))
        if len(in_flight) >= window:
            sink(done, in_flight.pop(0).result())
            done += 1
    for future in in_flight:
        sink(done, future.result())
        done += 1


def exchange_hello(endpoint: Endpoint, peer: str, size: int, chunk: int) -> tuple[bytes, int, int]:
    """Step 1: agree on the session salt; learn the peer's set size and chunk size."""
    nonce = os.urandom(32)
    endpoint.send(peer, "psi/hello", {"version": VERSION, "nonce": nonce, "size": size, "chunk": chunk})
    hello = endpoint.recv(peer, "psi/hello")
    if hello.get("version") != VERSION:
        raise ProtocolError(f"{peer} speaks PSI version {hello.get('version')}, this party {VERSION}")
    peer_nonce, peer_size, peer_chunk = hello["nonce"], int(hello["size"]), int(hello["chunk"])
    if len(peer_nonce) != 32 or peer_size < 0 or peer_chunk <= 0:
        raise ProtocolError(f"{peer} sent a malformed PSI hello")
    low, high = (nonce, peer_nonce) if endpoint.cfg.role < peer else (peer_nonce, nonce)
    return session_salt(endpoint.cfg.run_id, low, high), peer_size, peer_chunk


def stream_own_blinded(s: _Session, ids: list[str], order: np.ndarray) -> None:
    """Step 2: blind our IDs in the shuffled `order` and stream them to the peer."""
    chunks = _chunks(len(ids), s.chunk)

    def send(index: int, points: bytes) -> None:
        s.endpoint.send(s.peer, "psi/blinded", points)
        s.progress.update(len(points) // POINT_BYTES)

    tasks = (([ids[j] for j in order[c.start : c.stop]], s.salt, s.secret) for c in chunks)
    _pipeline(s.pool, tasks, _BLIND, send, window=2 * max(1, s.pool.size))


def reblind_peer_stream(s: _Session) -> list[bytes]:
    """Step 3: blind the peer's chunks again and send them back; keep them for matching."""
    received: list[bytes] = []

    def incoming() -> Iterable[tuple]:
        for _ in _chunks(s.peer_size, s.peer_chunk):
            points = s.endpoint.recv(s.peer, "psi/blinded")
            if not isinstance(points, bytes):
                raise ProtocolError(f"{s.peer} sent a malformed PSI chunk")
            yield (points, s.secret)

    def send_back(index: int, values: bytes) -> None:
        s.endpoint.send(s.peer, "psi/double", values)
        received.append(values)
        s.progress.update(len(values) // MATCH_BYTES)

    _pipeline(s.pool, incoming(), _REBLIND, send_back, window=2 * max(1, s.pool.size))
    return received


def intersect(s: _Session, own_size: int, order: np.ndarray, peer_double: list[bytes]) -> np.ndarray:
    """Step 4: match doubly-blinded values; return our positions in the canonical shared order."""
    own_double = []
    for _ in _chunks(own_size, s.chunk):
        values = s.endpoint.recv(s.peer, "psi/double")
        if not isinstance(values, bytes) or len(values) % MATCH_BYTES:
            raise ProtocolError(f"{s.peer} sent a malformed doubly-blinded chunk")
        own_double.append(values)
    own = b"".join(own_double)
    if len(own) != own_size * MATCH_BYTES:
        raise ProtocolError(f"{s.peer} returned {len(own) // MATCH_BYTES} values for our {own_size} IDs")
    theirs = b"".join(peer_double)
    peer_set = {theirs[k : k + MATCH_BYTES] for k in range(0, len(theirs), MATCH_BYTES)}
    shared = [(own[k * MATCH_BYTES : (k + 1) * MATCH_BYTES], int(order[k])) for k in range(own_size)
              if own[k * MATCH_BYTES : (k + 1) * MATCH_BYTES] in peer_set]
    shared.sort()
    return np.array([position for _, position in shared], dtype=np.int64)


def run_psi(endpoint: Endpoint, peer: str, ids: list[str], pool: WorkerPool, chunk: int = 8192,
            show_progress: bool = True) -> PsiResult:
    """Both roles call this with their normalised, duplicate-free IDs."""
    start = time.perf_counter()
    sent0, received0 = endpoint.bytes_sent[peer], endpoint.bytes_received[peer]
    salt, peer_size, peer_chunk = exchange_hello(endpoint, peer, len(ids), chunk)
    log.info("PSI with %s: %d own IDs, %d peer IDs", peer, len(ids), peer_size)
    order = np.random.default_rng(int.from_bytes(os.urandom(8), "little")).permutation(len(ids))
    with tqdm(total=2 * len(ids) + peer_size, desc="PSI", unit="id", disable=not show_progress,
              mininterval=0.5, leave=False) as progress:
        s = _Session(endpoint, peer, pool, salt, new_secret(), chunk, peer_size, peer_chunk, progress)
        failure: list[BaseException] = []

        def own_stream() -> None:
            try:
                stream_own_blinded(s, ids, order)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
                failure.append(exc)

        sender = threading.Thread(target=own_stream, name="psi-own", daemon=True)
        sender.start()
        peer_double = reblind_peer_stream(s)
        sender.join()
        if failure:
            raise failure[0]
        progress.update(len(ids))
        positions = intersect(s, len(ids), order, peer_double)
    return PsiResult(positions, len(ids), peer_size, time.perf_counter() - start,
                     endpoint.bytes_sent[peer] - sent0, endpoint.bytes_received[peer] - received0)
