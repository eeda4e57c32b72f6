"""gRPC over mutual TLS: tag-addressed messages between named roles.

Every process runs one `Endpoint`: a gRPC server that files incoming messages into
an inbox, and one channel per peer. A message is (run id, tag, sequence number,
payload). The sender's role is never read from the message: it is the peer whose
certificate the TLS handshake verified, carries that peer's name, is directly issued
by (and valid under) that peer's own CA, and matches its pin when one is configured.
The server's handshake trusts every peer's CA, so the binding of a role to its CA
is checked here, per call, not left to the handshake. A client checks a pinned
peer's certificate before its channel opens (`_stub`), and the channel then trusts
only the CA that issued it. Delivery is idempotent on
(sender, tag, sequence), so a retry after a broken connection never applies a step
twice. Every receive has a deadline (a service waiting for its next request may make
it `WHILE_UP`: as long as the peer is up), and a heartbeat notices a peer that died long
before that deadline: one silent for `peer_timeout` (a partition looks the same for a
while, so it is given that long), or at once, after `REFUSED_GRACE` (protocol/net/liveness.py), one that was up and
now refuses connections (nothing listens on its port any more: its process is gone).

The inbox is bounded. Each role names, per sender, the tags it accepts
(protocol/messages/__init__.py `inbox_tags`); any other tag is refused at the door, by the
envelope alone (`codec.split_map`): the body is decoded only once the run, the tag,
the generation and the sequence number are accepted. A message `AHEAD` or more
sequence numbers ahead of the next expected one, one that would take a sender's
undelivered bytes past `INBOX_LIMIT` times the message size limit, or one whose
decode budget would take what the sender's kept messages decoded into, plus the
budgets of its messages being decoded, past `INBOX_LIMIT` times the budget of a
largest message, is refused with RESOURCE_EXHAUSTED and not kept. An honest sender
treats that as back-pressure and retries within its peer timeout; a flood costs the
receiver nothing. A body that would decode into more than its own budget
(`codec.decode_bounded`: 4 bytes per byte received + 64 KiB, estimated) is refused
as undecodable.

Generations (docs/design.md, "Checkpoints and resume"). Every sequenced message carries
the sender's generation, and sequence numbers count within one: a role that resumes from
a checkpoint enters a new generation with fresh streams (`enter`), so a restarted peer's
streams start from 0 again and a message of an older generation is refused (its sender
learns that it must resume too: `PeerLost`). While a role is between generations
(`suspend`) it refuses sequenced messages as not yet due (the sender retries) and takes
only the resume handshake, whose tags (`RESUME_PREFIX`) are not sequenced: the latest
message per sender and tag is kept. A handshake message with a nonce this role has not
seen, arriving while it is in a generation, interrupts whatever it waits for: a peer
is resuming.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Mapping
from concurrent import futures
from typing import Any

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # grpc's C core logs every failed handshake at INFO

import grpc  # noqa: E402

from protocol.errors import ConfigError, PeerError, PeerLost, ProtocolError
from protocol.keys.certs import ca_certificates, key_pem, load_private_key
from protocol.net import identity, liveness
from protocol.net.identity import Unreachable
from protocol.net.inbox import ABORT_TAG, MOVED_ON, NOTHING, Arrival, Inbox
from protocol.net.liveness import HEARTBEAT, PeerState, is_tls_failure
from protocol.net.recording import Recorder
from protocol.settings.config import NetworkConfig
from protocol.wire import codec

log = logging.getLogger(__name__)

_DELIVER = "/vfrec.Mailbox/Deliver"
_PING = "/vfrec.Mailbox/Ping"
_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED)


class Endpoint:
    """This process's server, inbox and channels to its peers."""

    def __init__(self, cfg: NetworkConfig, tags: Mapping[str, frozenset[str]], generation: int | None = 0):
        """`tags`: for each peer, the tags this endpoint accepts from it (protocol.messages.inbox_tags);
        `generation`: None for a role that starts by resuming. Reads the TLS identity and CAs at once, so a bad key
        stops a role before it writes or opens anything."""
        self.cfg = cfg
        self._own_cert = cfg.cert.read_bytes()
        self._own_key = key_pem(load_private_key(cfg.key, cfg.key_passphrase), None)  # in memory only, for gRPC
        self._peer_cas = {role: ca_certificates(peer.ca) for role, peer in cfg.peers.items()}
        for role, peer in cfg.peers.items():
            if len(self._peer_cas[role]) > 1 and not peer.fingerprint:
                raise ConfigError(f"[peers.{role}] fingerprint: required, because its CA file {peer.ca} holds "
                                  f"{len(self._peer_cas[role])} certificates and any of them could issue a "
                                  f"certificate named {peer.name!r}")
        # a pinned peer's channel opens only once the certificate it presents matched its pin (`_stub`)
        self._probes = {role: identity.probe_context(cfg, role) for role, peer in cfg.peers.items()
                        if peer.fingerprint}
        self._opening = {role: threading.Lock() for role in cfg.peers}
        self._tags = tags
        self._inbox = Inbox(cfg.role, cfg.max_message_bytes, generation)
        self._cond = self._inbox.cond
        self._peers = {role: PeerState() for role in cfg.peers}
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._recorder = Recorder()
        self.bytes_sent: dict[str, int] = defaultdict(int)
        self.waited = 0.0  # seconds spent blocked in receives, for timing reports
        self._server: grpc.Server | None = None
        self._channels: dict[str, grpc.Channel] = {}
        self._deliver: dict[str, Any] = {}
        self._ping: dict[str, Any] = {}
        self._limits = [("grpc.max_receive_message_length", cfg.max_message_bytes + 4096),
                        ("grpc.max_send_message_length", cfg.max_message_bytes + 4096)]
        self._heartbeat: threading.Thread | None = None

    @property
    def generation(self) -> int | None:
        """The generation this role is in (None: between generations, in the resume handshake)."""
        return self._inbox.generation

    @property
    def last_generation(self) -> int:
        """The newest generation this process was in."""
        return self._inbox.last_generation

    @property
    def bytes_received(self) -> dict[str, int]:
        """Per peer: bytes of the sequenced messages filed."""
        return self._inbox.received

    # ---- life cycle -------------------------------------------------------------

    def start(self) -> "Endpoint":
        cfg, own_cert, own_key = self.cfg, self._own_cert, self._own_key
        trusted = b"\n".join(sorted({p.ca.read_bytes() for p in cfg.peers.values()} | {cfg.ca.read_bytes()}))
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                                   options=self._limits + [("grpc.so_reuseport", 0)])
        handlers = {
            "Deliver": grpc.unary_unary_rpc_method_handler(self._on_deliver),
            "Ping": grpc.unary_unary_rpc_method_handler(self._on_ping),
        }
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("vfrec.Mailbox", handlers),))
        creds = grpc.ssl_server_credentials([(own_key, own_cert)], root_certificates=trusted, require_client_auth=True)
        try:
            port = self._server.add_secure_port(cfg.listen, creds)
        except RuntimeError as exc:
            raise ConfigError(f"cannot listen on {cfg.listen} ([network] listen): {exc}") from None
        if port == 0:
            raise ConfigError(f"cannot listen on {cfg.listen} ([network] listen): address in use or invalid")
        self._server.start()
        for role, peer in cfg.peers.items():
            if role not in self._probes:
                self._open_channel(role, peer.ca.read_bytes())
        self._recorder.open(cfg.record_dir, cfg.role)
        self._heartbeat = threading.Thread(target=liveness.beat, name="heartbeat", daemon=True,
                                           args=(self._peers, self._ping_peer, self._stop, self._wake))
        self._heartbeat.start()
        log.info("%s listening on %s", cfg.role, cfg.listen)
        return self

    def close(self) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=2)
        for channel in self._channels.values():
            channel.close()
        if self._server is not None:
            self._server.stop(grace=0.1).wait()
        self._recorder.close()

    def peer_liveness(self) -> dict[str, tuple[bool, float | None]]:
        """For each peer: whether it answered the last heartbeat, and seconds since it last answered (None: never)."""
        now = time.monotonic()
        return {peer: (state.up, None if state.last_ok is None else now - state.last_ok)
                for peer, state in self._peers.items()}

    def __enter__(self) -> "Endpoint":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- sending ----------------------------------------------------------------

    def send(self, peer: str, tag: str, body: Any) -> None:
        """Deliver `body` to `peer` under `tag`; retries until the peer is reachable or gone."""
        self._check_peer(peer)
        seq, generation = self._inbox.next_send(peer, tag)
        data = codec.encode({"run": self.cfg.run_id, "tag": tag, "seq": seq, "gen": generation, "body": body})
        if len(data) > self.cfg.max_message_bytes:
            raise ProtocolError(f"message {tag!r} to {peer} is {len(data) / 2**20:.1f} MiB, over the "
                                f"{self.cfg.max_message_bytes / 2**20:.0f} MiB limit ([network] max_message_mb)")
        self._recorder.write("out", peer, data)
        self._call(peer, _DELIVER, data, f"sending {tag!r}")
        self.bytes_sent[peer] += len(data)

    def abort(self, reason: str) -> None:
        """Tell every reachable peer that this role stops, so they stop at once (best effort; not a pinned peer whose
        certificate was never seen)."""
        for peer in self.cfg.peers:
            data = codec.encode({"run": self.cfg.run_id, "tag": ABORT_TAG, "seq": 0, "body": reason})
            stub = self._deliver.get(peer)
            try:
                if stub is not None:
                    stub(data, timeout=2.0)
            except (grpc.RpcError, ValueError):
                pass

    def _call(self, peer: str, method: str, data: bytes, what: str) -> bytes:
        state = self._peers[peer]
        start = time.monotonic()
        delay = 0.05
        while True:
            try:
                stub = self._stub(peer, method)
                answer = self._finish(stub.future(data, timeout=max(30.0, self.cfg.peer_timeout)), peer, what)
                state.answered()
                return answer
            except Unreachable as exc:  # a pinned peer not seen yet: as a peer not up yet
                state.failed(str(exc))
                if state.gone() or time.monotonic() - start > (self.cfg.peer_timeout if state.last_ok is not None
                                                               else self.cfg.connect_timeout):
                    raise PeerLost(self._silence(peer, what)) from None
            except grpc.RpcError as exc:
                detail = exc.details() or exc.code().name
                if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                    raise ProtocolError(f"{self._who(peer)} refused {what}: {detail}") from None
                if MOVED_ON in detail:
                    raise PeerLost(f"{self._who(peer)} refused {what}: {detail}") from None
                if exc.code() not in _RETRYABLE:
                    raise PeerError(f"{self._who(peer)} refused {what}: {detail}") from None
                state.failed(detail)
                # once the peer was up, a handshake cut short means it went away (retried, as silence), not a bad
                # certificate: a middlebox in front of a dead peer accepts the connection and closes it
                if is_tls_failure(detail) and state.last_ok is None:
                    raise PeerError(f"TLS handshake with {self._who(peer)} failed while {what}: {detail}") from None
                if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:  # alive but full: back-pressure
                    if time.monotonic() - start > self.cfg.receive_timeout:
                        raise PeerError(f"{self._who(peer)} kept its inbox full for "
                                        f"{self.cfg.receive_timeout:.0f}s ([network] receive_timeout) while "
                                        f"{what}") from None
                elif state.gone() or time.monotonic() - start > (self.cfg.peer_timeout if state.last_ok is not None
                                                                 else self.cfg.connect_timeout):
                    raise PeerLost(self._silence(peer, what)) from None
            self._check_interrupt()
            if self._stop.wait(delay):
                raise PeerError(f"endpoint closed while {what}") from None
            delay = min(delay * 2, 0.25)

    # ---- channels, and a pinned peer's certificate seen before anything is sent ----------

    def _open_channel(self, role: str, roots: bytes) -> None:
        """The channel to `role`, whose handshakes accept only a certificate named as that peer and issued by one of
        `roots`."""
        peer = self.cfg.peers[role]
        creds = grpc.ssl_channel_credentials(roots, self._own_key, self._own_cert)
        options = self._limits + [("grpc.ssl_target_name_override", peer.name),
                                  ("grpc.initial_reconnect_backoff_ms", 100),
                                  ("grpc.max_reconnect_backoff_ms", 500),
                                  ("grpc.min_reconnect_backoff_ms", 100)]
        channel = grpc.secure_channel(peer.address, creds, options=options)
        self._channels[role] = channel
        self._deliver[role] = channel.unary_unary(_DELIVER)
        self._ping[role] = channel.unary_unary(_PING)

    def _stub(self, role: str, method: str) -> Any:
        """The stub of `method` on `role`'s channel. A pinned peer's channel is opened on first use, once the
        certificate it presents in a TLS handshake carries its name, is directly issued by one of its CAs and matches
        its pin (else PeerError: nothing was sent to it), and then trusts only the CA that issued that certificate.
        gRPC Python cannot show a client the server's certificate (grpc/grpc#32635), hence this handshake of its own.
        Raises `Unreachable` while the peer cannot be reached."""
        with self._opening[role]:
            if role not in self._channels:
                refused = self._peers[role].impostor
                if refused:
                    raise PeerError(refused)
                self._open_channel(role, self._verified_issuer(role))
        return (self._deliver if method == _DELIVER else self._ping)[role]

    def _verified_issuer(self, role: str) -> bytes:
        """The PEM of the CA that issued the certificate `role`'s address presents, once that certificate is the
        pinned one (see `_stub`)."""
        peer = self.cfg.peers[role]
        issuer, refusal = identity.pinned_issuer(role, peer, self._probes[role], self._peer_cas[role])
        if issuer is not None:
            return issuer
        message = (f"{self._who(role)} presented a certificate for {peer.name!r} that {refusal}; nothing was sent "
                   f"to it")
        self._peers[role].impostor = message
        with self._cond:
            self._cond.notify_all()
        raise PeerError(message)

    def _finish(self, call: Any, peer: str, what: str) -> bytes:
        """The answer of an RPC in flight to `peer`, given up as soon as the heartbeat says the peer is gone: a call
        stuck in a partition would otherwise hold its sender for the call's whole timeout."""
        while True:
            try:
                return call.result(timeout=HEARTBEAT)
            except grpc.FutureTimeoutError:
                try:
                    self._raise_if_gone(peer, what)
                except PeerError:
                    call.cancel()
                    raise

    # ---- receiving --------------------------------------------------------------

    def recv(self, peer: str, tag: str, timeout: float | None = None, idle: bool = False) -> Any:
        """The next message from `peer` under `tag`, in sequence order. `idle`: a service waiting for its next
        client, for as long as it takes and whether or not the client is up yet, until the endpoint closes."""
        self._check_peer(peer)
        what = f"message {tag!r} from {peer}"
        return self._wait(lambda: self._inbox.take((peer, tag)), () if idle else (peer,), what,
                          float("inf") if idle else timeout)

    def recv_any(self, peers: tuple[str, ...], tags: frozenset[str], timeout: float | None = None) -> Arrival:
        """The earliest-arrived message from any of `peers` under one of `tags`."""
        for p in peers:
            self._check_peer(p)
        return self._wait(lambda: self._inbox.take_earliest(peers, tags), peers, f"a message from {' or '.join(peers)}",
                          timeout)

    def _wait(self, take: Any, peers: tuple[str, ...], what: str, timeout: float | None) -> Any:
        limit = self.cfg.receive_timeout if timeout is None else timeout
        started = time.perf_counter()
        deadline = time.monotonic() + limit
        with self._cond:
            while True:
                item = take()
                if item is not NOTHING:
                    self.waited += time.perf_counter() - started
                    return item
                self._check_interrupt()
                for peer in peers:
                    self._raise_if_gone(peer, f"waiting for {what}")
                if self._stop.is_set():
                    raise PeerError(f"endpoint closed while waiting for {what}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise PeerError(f"no {what} within {limit:.0f}s ([network] receive_timeout)")
                self._cond.wait(min(remaining, HEARTBEAT))

    def _raise_if_gone(self, peer: str, doing: str) -> None:
        """Stop `doing` (e.g. "waiting for ...") when `peer` stopped the run, failed TLS twice, or is gone or silent,
        or when a peer is resuming."""
        self._check_interrupt()
        if peer in self._inbox.aborted:
            raise PeerError(f"{peer} stopped the run while this role was {doing}: {self._inbox.aborted[peer]}")
        state = self._peers[peer]
        now = time.monotonic()
        if state.impostor:
            raise PeerError(f"{state.impostor} (while {doing})")
        if state.tls_failures >= 2:
            raise PeerError(f"TLS handshake with {self._who(peer)} failed while {doing}: {state.last_error}")
        if state.gone() or state.last_ok is None and now - self._started > self.cfg.connect_timeout or \
                state.last_ok is not None and now - state.last_ok > self.cfg.peer_timeout:
            raise PeerLost(self._silence(peer, doing))

    def _check_interrupt(self) -> None:
        if self._inbox.interrupt is not None:
            raise PeerLost(self._inbox.interrupt)

    # ---- generations and the resume handshake (protocol/net/inbox.py) ------------------

    def suspend(self) -> None:
        """Leave the current generation for the resume handshake: sequenced messages wait (their senders retry), and
        handshake messages that came before are forgotten."""
        self._inbox.suspend()

    def enter(self, generation: int) -> None:
        """Start `generation`: every stream begins again at sequence number 0, nothing of an older one is kept."""
        self._inbox.enter(generation)

    def take_resume(self, peer: str, tag: str, timeout: float) -> Any:
        """The latest handshake message from `peer` under `tag` not taken yet, waiting up to `timeout` (None: none
        came). Never raises for a silent or gone peer: the handshake waits for restarted peers."""
        self._check_peer(peer)
        return self._inbox.take_resume(peer, tag, timeout, self._stop)

    def _silence(self, peer: str, what: str) -> str:
        return liveness.silence(self._who(peer), self._peers[peer], self.cfg.connect_timeout, self.cfg.peer_timeout,
                                what)

    # ---- server side ------------------------------------------------------------

    def _on_ping(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        identity.caller(self.cfg, self._peer_cas, context)
        return codec.encode({"role": self.cfg.role, "run": self.cfg.run_id})

    def _on_deliver(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        """File one message: its envelope is read and checked (run, tag routed from this sender, generation,
        sequence, the sender's inbox budget) before its body is decoded, within its decode budget."""
        peer = identity.caller(self.cfg, self._peer_cas, context)
        try:
            head, body_data = codec.split_map(request, "body")
            run, tag, seq = head["run"], head["tag"], head["seq"]
            if not (isinstance(tag, str) and isinstance(seq, int) and seq >= 0):
                raise ValueError("bad tag or sequence number")
        except (codec.CodecError, KeyError, ValueError) as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{self.cfg.role}: malformed message from {peer}: {exc}")
        if run != self.cfg.run_id:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"{self.cfg.role}: message for run {run!r}, but this process runs {self.cfg.run_id!r}")
        if tag != ABORT_TAG and tag not in self._tags.get(peer, ()):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"{self.cfg.role}: {peer} may not send it messages tagged {tag[:80]!r}")
        self._recorder.write("in", peer, request)
        size, limit = len(request), codec.budget(len(request))
        generation = head.get("gen")
        with self._cond:
            self._peers[peer].answered()
            if not self._inbox.reserve(peer, tag, seq, generation, size, limit, context):
                return b""  # a retry of a message already taken or kept
        try:
            body, cost = codec.decode_bounded(body_data, limit)
        except codec.CodecError as exc:
            body, cost = exc, 0
        finally:
            self._inbox.release(peer, size, limit)  # before the filing below, which charges what the body really took
        if isinstance(body, codec.CodecError):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"{self.cfg.role}: {peer} sent message {tag!r} that cannot be decoded: {body}")
        self._inbox.file(peer, tag, seq, generation, body, size, cost, context)
        return b""

    # ---- helpers ------------------------------------------------------------------

    def _ping_peer(self, role: str) -> None:
        self._stub(role, _PING)(b"", timeout=2.0)

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _check_peer(self, peer: str) -> None:
        if peer not in self.cfg.peers:
            raise ProtocolError(f"{self.cfg.role} has no peer {peer!r} (configured: {', '.join(self.cfg.peers)})")

    def _who(self, peer: str) -> str:
        return f"{peer} at {self.cfg.peers[peer].address}"
