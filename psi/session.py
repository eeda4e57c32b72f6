"""ECDH-PSI between two parties over an `Endpoint`; both run the same steps.

1. exchange_hello: each side sends a fresh nonce, its set size and chunk size; the
   session salt is derived from both nonces.
2. stream_own_blinded: each side hashes its IDs to the curve, blinds them with its
   secret and streams them to the peer in chunks, in a random order.
3. reblind_peer_stream: each side blinds the peer's chunks a second time and sends
   them back in the order received.
4. intersect: each side now holds the doubly-blinded values of its own IDs (from
   the peer) and of the peer's IDs (its own work). Shared IDs are the equal values.
   The caller puts them in the canonical order (psi/align.py: by each ID's digest,
   the same at both sides and on every run over the same IDs).

The result carries what a later delta PSI needs (psi/state.py): the secret, the salt
and both sets of doubly-blinded values.

Only set sizes and the intersection are revealed. Memory stays bounded by a window
of chunks in flight; the curve work runs on the role's worker pool. The peer is held
to what it announced: chunks of exactly its chunk size (the last may be shorter) and
never more points than its announced size, so it can neither exhaust memory nor probe
more IDs than it announced. What it may announce is bounded by this party's own set:
PSI tells the peer which of its IDs this party holds, so a peer announcing every phone
number of a country would learn this party's customer list. A peer may announce at
most `max_peer_ratio` times this party's own size ([psi] max_peer_ratio, 10 unless
set; never less than MIN_PEER_LIMIT), and never more than [psi] max_peer_ids.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np
import pyarrow.compute as pc
from tqdm import tqdm

from protocol import messages
from protocol.compute.workers import WorkerPool
from protocol.errors import ProtocolError
from protocol.messages.psi import PsiBlinded, PsiDoubled, PsiHello
from protocol.net.transport import Endpoint
from protocol.runtime.progress import progress_bar
from protocol.settings.config import Table
from psi.ecdh import MATCH_BYTES, POINT_BYTES, new_secret, session_salt
from psi.ids import as_arrow, pack

log = logging.getLogger(__name__)

MAX_CHUNK = 1 << 20  # IDs per chunk a peer may announce: a chunk is at most 32 MiB of points
MIN_PEER_LIMIT = 1000  # a peer may always announce this many IDs, however small this party's set (demos, tests)
VERSION = 3
_BLIND = "psi.ecdh:blind_packed"
_REBLIND = "psi.ecdh:reblind"
_MATCH = f"S{MATCH_BYTES}"  # numpy compares these as byte strings: sorting is memcmp order, equality exact


@dataclass(frozen=True)
class PsiSettings:
    """[psi] in a party's config: the peer may announce at most `max_peer_ratio` times this party's own set size
    (at least MIN_PEER_LIMIT) and never more than `max_peer_ids`; a delta PSI keeps using a secret at most
    `key_max_age_days` old (psi/mode.py)."""

    chunk_size: int = 8192
    show_progress: bool = True
    max_peer_ids: int = 100_000_000
    max_peer_ratio: float = 10.0
    key_max_age_days: float = 90.0

    @classmethod
    def from_config(cls, t: Table) -> "PsiSettings":
        settings = cls(chunk_size=t.take_positive("chunk_size", int, cls.chunk_size),
                       show_progress=t.take("progress", bool, cls.show_progress),
                       max_peer_ids=t.take_positive("max_peer_ids", int, cls.max_peer_ids),
                       max_peer_ratio=t.take_positive("max_peer_ratio", float, cls.max_peer_ratio),
                       key_max_age_days=t.take_positive("key_max_age_days", float, cls.key_max_age_days))
        if settings.chunk_size > MAX_CHUNK:
            raise t.error("chunk_size", f"must be at most {MAX_CHUNK}")
        t.finish()
        return settings

    def peer_limit(self, own_size: int) -> int:
        """The most IDs the peer may announce against this party's `own_size` IDs."""
        return min(self.max_peer_ids, max(MIN_PEER_LIMIT, math.ceil(self.max_peer_ratio * own_size)))

    def limit_rule(self, own_size: int) -> str:
        """How `peer_limit` came about, naming the config keys."""
        return (f"[psi] max_peer_ratio {self.max_peer_ratio:g} × its own {own_size} IDs, at least {MIN_PEER_LIMIT}, "
                f"at most [psi] max_peer_ids {self.max_peer_ids}")


@dataclass
class ExchangeCpu:
    """CPU seconds of this party's own threads while blinded points are exchanged, which overlap with the pool's work:
    the thread that runs the exchange (and receives) and the one that streams our blinded IDs."""

    caller: float = 0.0
    sender: float = 0.0


@dataclass(frozen=True)
class PsiResult:
    """Where the shared IDs sit in this party's own list, in the order both parties agree on, and what a delta needs
    later: the session's salt and secret, the doubly-blinded values of the party's own IDs (in its list's order) and
    those of the peer's (sorted)."""

    positions: np.ndarray  # indices into the party's ID list of the shared IDs, by doubly-blinded value
    own_size: int
    peer_size: int
    seconds: float
    bytes_sent: int
    bytes_received: int
    salt: bytes
    secret: bytes = field(repr=False)
    own_values: np.ndarray = field(repr=False)
    peer_values: np.ndarray = field(repr=False)
    exchange_cpu: ExchangeCpu = field(default_factory=ExchangeCpu)


@dataclass(frozen=True)
class Session:
    """One exchange of blinded points: this party's salt, secret and chunk size, the peer's announced size and chunk
    size (a full session's whole sets, a delta's added IDs)."""

    endpoint: Endpoint
    peer: str
    pool: WorkerPool
    salt: bytes
    secret: bytes = field(repr=False)
    chunk: int
    peer_size: int
    peer_chunk: int
    progress: tqdm
    cpu: ExchangeCpu = field(default_factory=ExchangeCpu)


def chunks(n: int, size: int) -> list[range]:
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


def exchange_hello(endpoint: Endpoint, peer: str, size: int, chunk: int, settings: PsiSettings
                   ) -> tuple[bytes, int, int]:
    """Step 1: agree on the session salt; learn the peer's set size (within `settings.peer_limit(size)`) and chunk
    size."""
    nonce = os.urandom(32)
    messages.send(endpoint, peer, PsiHello(VERSION, nonce, size, chunk))
    hello = messages.receive(endpoint, peer, PsiHello)
    if hello.version != VERSION:
        raise ProtocolError(f"{peer} speaks PSI version {hello.version}, this party {VERSION}")
    if len(hello.nonce) != 32:
        raise ProtocolError(f"{peer} sent PsiHello with field 'nonce' of {len(hello.nonce)} bytes, expected 32")
    limit = settings.peer_limit(size)
    if not 0 <= hello.size <= limit:
        raise ProtocolError(f"{peer} announced {hello.size} IDs (field 'size'); this party accepts 0 to {limit} "
                            f"({settings.limit_rule(size)})")
    if not 1 <= hello.chunk <= MAX_CHUNK:
        raise ProtocolError(f"{peer} sent PsiHello with field 'chunk' = {hello.chunk}, expected 1 to {MAX_CHUNK}")
    low, high = (nonce, hello.nonce) if endpoint.cfg.role < peer else (hello.nonce, nonce)
    return session_salt(endpoint.cfg.run_id, low, high), hello.size, hello.chunk


def stream_own_blinded(s: Session, ids: Sequence[str], order: np.ndarray) -> None:
    """Step 2: blind our IDs in the shuffled `order` and stream them to the peer."""
    cpu_started = time.thread_time()

    def send(index: int, points: bytes) -> None:
        messages.send(s.endpoint, s.peer, PsiBlinded(points))
        s.progress.update(len(points) // POINT_BYTES)

    values = as_arrow(ids)
    tasks = ((*pack(pc.take(values, order[c.start : c.stop])), s.salt, s.secret) for c in chunks(len(ids), s.chunk))
    _pipeline(s.pool, tasks, _BLIND, send, window=2 * max(1, s.pool.size))
    s.cpu.sender += time.thread_time() - cpu_started


def reblind_peer_stream(s: Session) -> np.ndarray:
    """Step 3: blind the peer's chunks again and send them back; keep them for matching."""
    received = np.empty(s.peer_size, dtype=_MATCH)
    filled = 0

    def incoming() -> Iterable[tuple]:
        for expected in chunks(s.peer_size, s.peer_chunk):
            points = messages.receive(s.endpoint, s.peer, PsiBlinded).points
            if len(points) != len(expected) * POINT_BYTES:
                raise ProtocolError(f"{s.peer} sent PsiBlinded with field 'points' of {len(points)} bytes; its "
                                    f"hello announced {len(expected)} points of {POINT_BYTES} bytes in this chunk")
            yield (points, s.secret)

    def send_back(index: int, values: bytes) -> None:
        nonlocal filled
        messages.send(s.endpoint, s.peer, PsiDoubled(values))
        count = len(values) // MATCH_BYTES
        received[filled : filled + count] = np.frombuffer(values, dtype=_MATCH)
        filled += count
        s.progress.update(count)

    _pipeline(s.pool, incoming(), _REBLIND, send_back, window=2 * max(1, s.pool.size))
    return received


def receive_doubled(s: Session, own_size: int) -> np.ndarray:
    """The doubly-blinded values of our IDs, as the peer returns them: in the order we streamed them."""
    own = np.empty(own_size, dtype=_MATCH)
    filled = 0
    for expected in chunks(own_size, s.chunk):
        values = messages.receive(s.endpoint, s.peer, PsiDoubled).values
        if len(values) != len(expected) * MATCH_BYTES:
            raise ProtocolError(f"{s.peer} sent PsiDoubled with field 'values' of {len(values)} bytes for a chunk "
                                f"of {len(expected)} IDs ({MATCH_BYTES} bytes each)")
        own[filled : filled + len(expected)] = np.frombuffer(values, dtype=_MATCH)
        filled += len(expected)
    return own


def swap_blinded(s: Session, ids: Sequence[str], order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Steps 2 and 3 both ways at once: stream our IDs blinded (in `order`) while blinding the peer's again. Returns
    the doubly-blinded values of our IDs (in `order`) and of the peer's (in the order received)."""
    cpu_started = time.thread_time()
    peer_double = both_ways(lambda: stream_own_blinded(s, ids, order), lambda: reblind_peer_stream(s))
    s.progress.update(len(ids))
    own = receive_doubled(s, len(ids))
    s.cpu.caller += time.thread_time() - cpu_started
    return own, peer_double


def both_ways(send: Callable[[], None], receive: Callable[[], np.ndarray]) -> np.ndarray:
    """Run `send` in a thread while `receive` runs here (neither side waits for the other to finish sending)."""
    failure: list[BaseException] = []

    def sending() -> None:
        try:
            send()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            failure.append(exc)

    sender = threading.Thread(target=sending, name="psi-send", daemon=True)
    sender.start()
    received = receive()
    sender.join()
    if failure:
        raise failure[0]
    return received


def _prefixes(values: np.ndarray) -> np.ndarray:
    """The first 8 bytes of each 16-byte value as an integer (their order is the values' byte order)."""
    return values.view(">u8")[::2].astype(np.uint64)


def _ties(ranked: np.ndarray) -> bool:
    return bool(ranked.size) and bool((ranked[1:] == ranked[:-1]).any())


def value_order(values: np.ndarray) -> np.ndarray:
    """The stable sort order of 16-byte values by value (memcmp order), sorting their first 8 bytes as integers; only
    when two of those are equal (odds 2^-64 per pair of distinct values) all 16 bytes as strings."""
    first = _prefixes(values)
    order = np.argsort(first)
    return np.argsort(values, kind="stable") if _ties(first[order]) else order


def intersect(own: np.ndarray, peer_double: np.ndarray) -> np.ndarray:
    """Step 4: match doubly-blinded values; return the indices into `own` of the shared ones, by value (the same
    order on both sides). Vectorised over fixed-width values, 16 bytes per own and per peer ID;
    the peer's are sorted in place. Ours are looked up in order among the peer's by their first 8 bytes (by all 16
    if two of the peer's share those), then compared whole."""
    if not peer_double.size:
        return np.empty(0, dtype=np.int64)
    theirs = peer_double
    theirs[:] = theirs[value_order(theirs)]
    by_value = value_order(own)
    ranked = own[by_value]
    keys = _prefixes(theirs)
    at = np.searchsorted(theirs, ranked) if _ties(keys) else np.searchsorted(keys, _prefixes(ranked))
    return by_value[theirs[np.minimum(at, theirs.size - 1)] == ranked]


def run_psi(endpoint: Endpoint, peer: str, ids: Sequence[str], pool: WorkerPool, settings: PsiSettings) -> PsiResult:
    """Both roles call this with their normalised, duplicate-free IDs (a list, or an `IdStore` on disk)."""
    start = time.perf_counter()
    sent0, received0 = endpoint.bytes_sent[peer], endpoint.bytes_received[peer]
    salt, peer_size, peer_chunk = exchange_hello(endpoint, peer, len(ids), settings.chunk_size, settings)
    log.info("PSI with %s: %d own IDs, %d peer IDs", peer, len(ids), peer_size)
    order = np.random.default_rng(int.from_bytes(os.urandom(8), "little")).permutation(len(ids))
    with progress_bar(total=2 * len(ids) + peer_size, task="psi", desc="PSI", unit="id", enabled=settings.show_progress,
                      mininterval=0.5, leave=False) as progress:
        s = Session(endpoint, peer, pool, salt, new_secret(), settings.chunk_size, peer_size, peer_chunk, progress)
        own, peer_double = swap_blinded(s, ids, order)
        positions = order[intersect(own, peer_double)].astype(np.int64)
    own_values = np.empty_like(own)
    own_values[order] = own
    return PsiResult(positions, len(ids), peer_size, time.perf_counter() - start,
                     endpoint.bytes_sent[peer] - sent0, endpoint.bytes_received[peer] - received0, salt, s.secret,
                     own_values, peer_double, s.cpu)
