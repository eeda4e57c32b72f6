"""An endpoint's inbox: sequenced, bounded streams per (sender, tag), and generations for resume.

What is refused and when (the sequence window, the byte and decode budgets per sender,
generations, the resume handshake's unsequenced tags) is in protocol/net/transport.py's
docstring and docs/design.md, "Checkpoints and resume". Methods whose docstring says so are
called with `cond` held; the others take it.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import grpc

from protocol.errors import PeerError
from protocol.net.liveness import HEARTBEAT
from protocol.wire import codec

AHEAD = 4096  # how far ahead of the next expected sequence number a message may be
INBOX_LIMIT = 4  # undelivered bytes per sender, in units of [network] max_message_mb
ABORT_TAG = "control/abort"
RESUME_PREFIX = "resume/"  # tags of the resume handshake: unsequenced, taken in any generation
MOVED_ON = "resumed in a newer generation"
NOTHING = object()  # what a take returns while no message is due
_NONCE_MAX = 64  # characters of a handshake nonce (resume.py sends 16 hex digits)


@dataclass(frozen=True)
class Arrival:
    """A message taken from the inbox, with the peer and the tag it came under."""

    peer: str
    tag: str
    body: Any


class Inbox:
    """The messages filed and not yet taken, what they cost their senders, and the generation this role is in."""

    def __init__(self, role: str, max_message_bytes: int, generation: int | None) -> None:
        self.role = role
        self.max_message_bytes = max_message_bytes
        self.cond = threading.Condition()
        self.bytes: dict[str, int] = defaultdict(int)  # per sender: bytes of the messages kept
        self.decoded: dict[str, int] = defaultdict(int)  # ... and what they decoded into (estimated)
        self.reserved_bytes: dict[str, int] = defaultdict(int)  # ... of messages being decoded
        self.reserved_decoded: dict[str, int] = defaultdict(int)  # ... and their decode budgets
        self.decoded_limit = INBOX_LIMIT * codec.budget(max_message_bytes)
        self.pending: dict[tuple[str, str], dict[int, tuple[int, Any, int, int]]] = defaultdict(dict)
        self.next_in: dict[tuple[str, str], int] = defaultdict(int)
        self.next_out: dict[tuple[str, str], int] = defaultdict(int)
        self.arrivals = itertools.count()
        self.received: dict[str, int] = defaultdict(int)  # per sender: bytes of the sequenced messages filed
        self.aborted: dict[str, str] = {}
        self.generation = generation
        self.last_generation = generation or 0  # the newest generation this process was in
        self.resume: dict[tuple[str, str], Any] = {}  # the latest handshake message per (peer, tag)
        self.consumed: set[str] = set()  # nonces of handshake messages already taken
        self.interrupt: str | None = None

    def next_send(self, peer: str, tag: str) -> tuple[int, int | None]:
        """The sequence number and generation of the next message to `peer` under `tag`."""
        with self.cond:
            seq = 0 if tag.startswith(RESUME_PREFIX) else self.next_out[(peer, tag)]
            self.next_out[(peer, tag)] = seq + 1
            return seq, self.generation

    def reserve(self, peer: str, tag: str, seq: int, generation: Any, size: int, limit: int,
                context: grpc.ServicerContext) -> bool:
        """With `cond` held: admit a message of `size` bytes and decode budget `limit` for decoding, or abort the call
        (full, or not of this generation); False for a retry of a sequenced message already taken or kept."""
        key = (peer, tag)
        if tag != ABORT_TAG and not tag.startswith(RESUME_PREFIX):
            self.check_generation(generation, tag, context)
            if seq < self.next_in[key] or seq in self.pending[key]:
                return False
            if seq >= self.next_in[key] + AHEAD or \
                    self.bytes[peer] + self.reserved_bytes[peer] + size > INBOX_LIMIT * self.max_message_bytes:
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                              f"{self.role}: inbox for {peer} is full (message {tag!r} number {seq}, "
                              f"next expected {self.next_in[key]}); retry later")
        if self.decoded[peer] + self.reserved_decoded[peer] + limit > self.decoded_limit:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"{self.role}: decode budget for {peer} is spent (message {tag!r}: its messages "
                          f"kept and being decoded may take {self.decoded_limit} bytes); retry later")
        self.reserved_bytes[peer] += size
        self.reserved_decoded[peer] += limit
        return True

    def release(self, peer: str, size: int, limit: int) -> None:
        """Give back what `reserve` set aside, once the body is decoded (or could not be)."""
        with self.cond:
            self.reserved_bytes[peer] -= size
            self.reserved_decoded[peer] -= limit

    def file(self, peer: str, tag: str, seq: int, generation: Any, body: Any, size: int, cost: int,
             context: grpc.ServicerContext) -> None:
        """Keep a decoded message: an abort, the latest handshake message under its tag, or a sequenced message."""
        key = (peer, tag)
        with self.cond:
            if tag == ABORT_TAG:
                self.aborted[peer] = str(body)[:2000]
                self.cond.notify_all()
                return
            if tag.startswith(RESUME_PREFIX):
                refusal = _nonce_refusal(body)
                if refusal:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{self.role}: {peer} sent {tag!r} {refusal}")
                self.resume[key] = body
                if self.generation is not None and _nonce(body) not in self.consumed:
                    self.interrupt = f"{peer} is resuming from a checkpoint"
                self.cond.notify_all()
                return
            self.check_generation(generation, tag, context)  # it may have moved on while the body was decoded
            if seq < self.next_in[key] or seq in self.pending[key]:
                return
            self.pending[key][seq] = (next(self.arrivals), body, size, cost)
            self.bytes[peer] += size
            self.decoded[peer] += cost
            self.received[peer] += size
            self.cond.notify_all()

    def check_generation(self, generation: Any, tag: str, context: grpc.ServicerContext) -> None:
        """Refuse a sequenced message of a generation this role is not in: a newer one as not yet due (retried), an
        older one for good (its sender must resume too)."""
        if not isinstance(generation, int) or self.generation is None or generation > self.generation:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"{self.role}: not in generation {generation} yet; "
                                                       f"retry later")
        if generation < self.generation:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"{self.role} {MOVED_ON} ({self.generation}) than message {tag!r} "
                          f"({generation}): resume too")

    def take(self, key: tuple[str, str]) -> Any:
        """With `cond` held: the next message of stream `key` in sequence order, or NOTHING."""
        queue = self.pending.get(key)
        seq = self.next_in[key]
        if not queue or seq not in queue:
            return NOTHING
        _, body, size, cost = queue.pop(seq)
        self.bytes[key[0]] -= size
        self.decoded[key[0]] -= cost
        self.next_in[key] = seq + 1
        return body

    def take_earliest(self, peers: tuple[str, ...], tags: frozenset[str]) -> Any:
        """With `cond` held: the earliest-arrived message due from any of `peers` under one of `tags`, or NOTHING."""
        ready = [(queue[self.next_in[key]][0], key) for key, queue in self.pending.items()
                 if key[0] in peers and key[1] in tags and self.next_in[key] in queue]
        if not ready:
            return NOTHING
        _, key = min(ready)
        return Arrival(key[0], key[1], self.take(key))

    def suspend(self) -> None:
        """Leave the current generation for the resume handshake: sequenced messages wait (their senders retry), and
        handshake messages that came before are forgotten."""
        with self.cond:
            self.generation, self.interrupt = None, None
            self.consumed |= {_nonce(body) for body in self.resume.values()}
            self.resume.clear()

    def enter(self, generation: int) -> None:
        """Start `generation`: every stream begins again at sequence number 0, nothing of an older one is kept."""
        with self.cond:
            self.generation, self.last_generation, self.interrupt = generation, generation, None
            self.pending.clear()
            self.next_in.clear()
            self.next_out.clear()
            self.bytes.clear()
            self.decoded.clear()
            self.cond.notify_all()

    def take_resume(self, peer: str, tag: str, timeout: float, stop: threading.Event) -> Any:
        """The latest handshake message from `peer` under `tag` not taken yet, waiting up to `timeout` (None: none
        came, or `stop` is set)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while (peer, tag) not in self.resume:
                if peer in self.aborted:
                    raise PeerError(f"{peer} stopped the run: {self.aborted[peer]}")
                remaining = deadline - time.monotonic()
                if remaining <= 0 or stop.is_set():
                    return None
                self.cond.wait(min(remaining, HEARTBEAT))
            body = self.resume.pop((peer, tag))
            self.consumed.add(_nonce(body))
            return body


def _nonce_refusal(body: Any) -> str | None:
    """Why a handshake message's body has no usable nonce (a string of 1 to `_NONCE_MAX` characters), or None."""
    if not isinstance(body, dict):
        return f"as {type(body).__name__}, expected a map of fields"
    nonce = body.get("nonce")
    if not isinstance(nonce, str) or not 1 <= len(nonce) <= _NONCE_MAX:
        shown = f"a string of {len(nonce)} characters" if isinstance(nonce, str) else type(nonce).__name__
        return f"with field 'nonce' as {shown}, expected a string of 1 to {_NONCE_MAX} characters"
    return None


def _nonce(body: dict) -> str:
    """The nonce of a handshake message the inbox took (checked by `_nonce_refusal`)."""
    return body["nonce"]
