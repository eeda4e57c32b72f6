"""Delta PSI: the change since the state both parties kept (psi/state.py), at a cost in proportion to the change.

Both roles run the same steps, with the secret and salt of the full run the state
came from:

1. diff_ids (local): this party's current IDs against its kept ones: added, removed.
2. exchange_delta_hello: the sizes of both changes and the chunk size. The peer is
   held to them, and to the [psi] bound on its whole set as after the change
   (`PsiSettings.peer_limit` of this party's new size), as in a full run.
3. removed values, both ways (`send_removed`, `receive_removed`): the doubly-blinded
   values of the removed IDs, so each side drops them from its kept peer set; each
   must be one the receiver keeps.
4. the added IDs only, through the full session's steps 2-3 (psi/session.py
   `swap_blinded`): blinded with the kept secret, blinded again by the peer.
5. apply_delta (local): the new own and peer sets; leavers (active shared users
   removed on either side) turn inactive; joiners (own added IDs in the peer's new
   set, own kept IDs among the peer's added) are appended in the order of their
   doubly-blinded values, which both sides hold alike.

Each side learns which of its added IDs are shared (as a full rerun would tell it),
which shared users left, and the sizes of both changes; nothing about the peer's
unshared IDs, whose values it cannot link to any ID without the peer's secret.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from protocol import messages
from protocol.compute.workers import WorkerPool
from protocol.errors import ProtocolError
from protocol.messages.psi import PsiDeltaHello, PsiRemoved
from protocol.net.transport import Endpoint
from protocol.runtime.progress import progress_bar
from psi.ecdh import MATCH_BYTES
from psi.ids import id_digests, take_ids
from psi.session import (MAX_CHUNK, ExchangeCpu, PsiSettings, Session, both_ways, chunks, swap_blinded,
                         value_order)
from psi.state import VALUE, PsiState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Diff:
    """This party's IDs against those it kept."""

    added: np.ndarray  # rows of the current ID list that the state does not hold, ascending
    removed: np.ndarray  # indices into the state's own arrays of IDs no longer in the list
    digests: np.ndarray  # the current IDs' digests, sorted
    rows: np.ndarray  # the row of each of those

    def rows_of(self, digests: np.ndarray) -> np.ndarray:
        """The rows of current IDs given by their digests."""
        return self.rows[np.searchsorted(self.digests, digests)]


@dataclass(frozen=True)
class Change:
    """The state after a delta, and what changed in the shared list."""

    state: PsiState
    joined: np.ndarray  # own digests of the users who joined, in the order of their new positions
    left: np.ndarray  # positions of the users who left


@dataclass(frozen=True)
class DeltaResult:
    """A delta's outcome, this party's diff, the sizes of the peer's change, its time and its bytes."""

    change: Change
    diff: Diff
    peer_added: int
    peer_removed: int
    seconds: float
    bytes_sent: int
    bytes_received: int
    exchange_cpu: ExchangeCpu = field(default_factory=ExchangeCpu)


def _member(sorted_values: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """For each query, whether it is in `sorted_values`."""
    if not sorted_values.size:
        return np.zeros(len(queries), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_values, queries), sorted_values.size - 1)
    return sorted_values[at] == queries


def _repeats(sorted_values: np.ndarray) -> int:
    return int(np.count_nonzero(sorted_values[1:] == sorted_values[:-1]))


def _merged(sorted_values: np.ndarray, more: np.ndarray) -> np.ndarray:
    """Two sorted arrays as one, in O(n) rather than a sort."""
    return np.insert(sorted_values, np.searchsorted(sorted_values, more), more)


def diff_ids(state: PsiState, digests: np.ndarray) -> Diff:
    """Step 1: which current IDs (by digest, in row order) are new, and which kept ones are gone."""
    rows = value_order(digests)
    ordered = digests[rows]
    kept = value_order(state.own_digests)
    kept_digests = state.own_digests[kept]
    found = _member(kept_digests, ordered)
    present = np.zeros(len(kept), dtype=bool)
    present[kept[np.searchsorted(kept_digests, ordered[found])]] = True
    return Diff(np.sort(rows[~found]), np.flatnonzero(~present), ordered, rows)


def exchange_delta_hello(endpoint: Endpoint, peer: str, diff: Diff, state: PsiState, own_size: int,
                         settings: PsiSettings) -> tuple[int, int, int]:
    """Step 2: announce our change; learn the peer's (held to the state and to the [psi] bound) and its chunk size."""
    messages.send(endpoint, peer, PsiDeltaHello(len(diff.added), len(diff.removed), settings.chunk_size))
    hello = messages.receive(endpoint, peer, PsiDeltaHello)
    kept = len(state.peer_values)
    if not 0 <= hello.removed <= kept:
        raise ProtocolError(f"{peer} announced {hello.removed} removed IDs (field 'removed'); the state both parties "
                            f"kept holds {kept} of its IDs")
    limit = settings.peer_limit(own_size)
    if not 0 <= hello.added <= limit - (kept - hello.removed):
        raise ProtocolError(f"{peer} announced {hello.added} added IDs (field 'added'), which would make its set "
                            f"{kept - hello.removed + hello.added} IDs; this party accepts 0 to {limit} "
                            f"({settings.limit_rule(own_size)})")
    if not 1 <= hello.chunk <= MAX_CHUNK:
        raise ProtocolError(f"{peer} sent PsiDeltaHello with field 'chunk' = {hello.chunk}, expected 1 to "
                            f"{MAX_CHUNK}")
    return hello.added, hello.removed, hello.chunk


def send_removed(endpoint: Endpoint, peer: str, values: np.ndarray, chunk: int) -> None:
    """Step 3, ours: the doubly-blinded values of our removed IDs, sorted (their order tells nothing), in chunks."""
    values = np.sort(values)
    for c in chunks(len(values), chunk):
        messages.send(endpoint, peer, PsiRemoved(values[c.start : c.stop].tobytes()))


def receive_removed(endpoint: Endpoint, peer: str, count: int, chunk: int) -> np.ndarray:
    """Step 3, the peer's: `count` values in chunks of its announced size."""
    out = np.empty(count, dtype=VALUE)
    for c in chunks(count, chunk):
        values = messages.receive(endpoint, peer, PsiRemoved).values
        if len(values) != len(c) * MATCH_BYTES:
            raise ProtocolError(f"{peer} sent PsiRemoved with field 'values' of {len(values)} bytes; its "
                                f"PsiDeltaHello announced {len(c)} values of {MATCH_BYTES} bytes in this chunk")
        out[c.start : c.stop] = np.frombuffer(values, dtype=VALUE)
    return out


def apply_delta(state: PsiState, removed: np.ndarray, added_digests: np.ndarray, added_values: np.ndarray,
                peer_removed: np.ndarray, peer_added: np.ndarray, peer: str) -> Change:
    """Step 5: the state after both changes. `removed` indexes the state's own arrays; the added IDs come with their
    digests and doubly-blinded values; the peer's removed and added values are as received (added ones blinded
    again by us). A peer removing values the state does not hold, or adding ones it holds, is refused."""
    dropped = np.unique(peer_removed)
    gone = _member(dropped, state.peer_values)
    if dropped.size != peer_removed.size or np.count_nonzero(gone) != dropped.size:
        raise ProtocolError(f"{peer} removed {peer_removed.size - np.count_nonzero(gone)} IDs that are not in the "
                            f"state both parties kept (or the same ID twice)")
    peer_values = _merged(state.peer_values[~gone], np.sort(peer_added))
    if _repeats(peer_values):
        raise ProtocolError(f"{peer} added {_repeats(peer_values)} IDs that it held already (or the same ID twice)")
    keep = np.ones(len(state.own_values), dtype=bool)
    keep[removed] = False
    kept_values, kept_digests = state.own_values[keep], state.own_digests[keep]
    by_value = value_order(added_values)
    at = np.searchsorted(kept_values, added_values[by_value])
    own_values = np.insert(kept_values, at, added_values[by_value])
    own_digests = np.insert(kept_digests, at, added_digests[by_value])
    if _repeats(own_values):
        raise ProtocolError(f"{peer} returned the doubly-blinded value of another ID of this party for "
                            f"{_repeats(own_values)} added IDs")
    left_values = np.unique(np.concatenate([state.own_values[removed], dropped]))
    left = np.flatnonzero(state.active & _member(left_values, state.shared_values))
    joined_values = np.unique(np.concatenate([added_values[_member(peer_values, added_values)],
                                              peer_added[_member(own_values, peer_added)]]))
    joined = own_digests[np.searchsorted(own_values, joined_values)]
    active = state.active.copy()
    active[left] = False
    new = PsiState(state.secret, state.salt, state.created, own_digests, own_values, peer_values,
                   np.concatenate([state.shared_values, joined_values]),
                   np.concatenate([active, np.ones(len(joined_values), dtype=bool)]))
    return Change(new, joined, left)


def run_delta(endpoint: Endpoint, peer: str, ids: Sequence[str], state: PsiState, pool: WorkerPool,
              settings: PsiSettings) -> DeltaResult:
    """Both roles call this with their current normalised IDs and the state both kept (their IDs equal)."""
    start = time.perf_counter()
    sent0, received0 = endpoint.bytes_sent[peer], endpoint.bytes_received[peer]
    digests = id_digests(ids, pool)
    diff = diff_ids(state, digests)
    peer_added, peer_removed, peer_chunk = exchange_delta_hello(endpoint, peer, diff, state, len(ids), settings)
    log.info("delta PSI with %s: %d added and %d removed here, %d added and %d removed there", peer,
             len(diff.added), len(diff.removed), peer_added, peer_removed)
    added = take_ids(ids, diff.added)
    order = np.random.default_rng(int.from_bytes(os.urandom(8), "little")).permutation(len(added))
    with progress_bar(total=2 * len(added) + peer_added, task="psi", desc="PSI delta", unit="id",
                      enabled=settings.show_progress, mininterval=0.5, leave=False) as progress:
        s = Session(endpoint, peer, pool, state.salt, state.secret, settings.chunk_size, peer_added, peer_chunk,
                    progress)
        removed_values = state.own_values[diff.removed]
        dropped = both_ways(lambda: send_removed(endpoint, peer, removed_values, settings.chunk_size),
                            lambda: receive_removed(endpoint, peer, peer_removed, peer_chunk))
        own, peer_added_values = swap_blinded(s, added, order)
    added_values = np.empty_like(own)
    added_values[order] = own
    change = apply_delta(state, diff.removed, digests[diff.added], added_values, dropped, peer_added_values, peer)
    return DeltaResult(change, diff, peer_added, peer_removed, time.perf_counter() - start,
                       endpoint.bytes_sent[peer] - sent0, endpoint.bytes_received[peer] - received0,
                       s.cpu)
