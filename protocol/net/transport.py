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
while, so it is given that long), or at once, after `_REFUSED_GRACE`, one that was up and
now refuses connections (nothing listens on its port any more: its process is gone).

The inbox is bounded. Each role names, per sender, the tags it accepts
(protocol/messages/__init__.py `inbox_tags`); any other tag is refused at the door, by the
envelope alone (`codec.split_map`): the body is decoded only once the run, the tag,
the generation and the sequence number are accepted. A message `_AHEAD` or more
sequence numbers ahead of the next expected one, one that would take a sender's
undelivered bytes past `_INBOX_LIMIT` times the message size limit, or one whose
decode budget would take what the sender's kept messages decoded into, plus the
budgets of its messages being decoded, past `_INBOX_LIMIT` times the budget of a
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

import itertools
import logging
import os
import socket
import ssl
import threading
import time
from collections import defaultdict
from collections.abc import Mapping
from concurrent import futures
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # grpc's C core logs every failed handshake at INFO

import grpc  # noqa: E402
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from protocol.errors import ConfigError, PeerError, PeerLost, ProtocolError
from protocol.keys.certs import ca_certificates, cert_fingerprint, key_pem, load_private_key
from protocol.settings.config import NetworkConfig
from protocol.wire import codec

log = logging.getLogger(__name__)

_DELIVER = "/vfrec.Mailbox/Deliver"
_PING = "/vfrec.Mailbox/Ping"
_HEARTBEAT = 0.5
_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED)
_AHEAD = 4096  # how far ahead of the next expected sequence number a message may be
_INBOX_LIMIT = 4  # undelivered bytes per sender, in units of [network] max_message_mb
_TLS_HINTS = ("handshake", "certificate", "ssl_error", "tsi_")
# A refused connection is certain: the peer's host answered that nothing listens on its port. ("failed to connect"
# alone is not: gRPC says it of connections that time out, as in a partition, which must wait for peer_timeout.)
_REFUSED_HINT = "connection refused"
_REFUSED_GRACE = 3 * _HEARTBEAT  # how long a peer that was up may refuse connections before it counts as gone
ABORT_TAG = "control/abort"
RESUME_PREFIX = "resume/"  # tags of the resume handshake: unsequenced, taken in any generation
_MOVED_ON = "resumed in a newer generation"
_PROBE_TIMEOUT = 2.0  # seconds for the TLS handshake that shows a pinned peer's certificate


@dataclass(frozen=True)
class Message:
    peer: str
    tag: str
    body: Any


class _Unreachable(Exception):
    """A pinned peer's certificate could not be seen yet (nothing listens, or the handshake broke off): retried."""


def _names(cert: x509.Certificate) -> set[str]:
    """The names a certificate carries: its CNs and DNS SANs."""
    names = {str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)}
    try:
        names |= set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                     .get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        pass
    return names


def _valid_now(cert: x509.Certificate) -> bool:
    now = datetime.now(timezone.utc)
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """True when `ca` is a CA certificate, valid now, whose key signed `cert`."""
    try:
        is_ca = ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        cert.verify_directly_issued_by(ca)
    except (x509.ExtensionNotFound, ValueError, TypeError, InvalidSignature):
        return False
    return is_ca and _valid_now(ca)


class _PeerState:
    """What the heartbeat knows about one peer."""

    def __init__(self) -> None:
        self.last_ok: float | None = None
        self.up = False  # whether it answered the last call (a heartbeat every _HEARTBEAT)
        self.last_error = "no answer yet"
        self.tls_failures = 0
        self.refused_since: float | None = None  # first of an unbroken run of refused connections, once it was up
        self.impostor: str | None = None  # why the certificate at its address is not its pinned one

    def answered(self) -> None:
        self.last_ok, self.refused_since, self.up = time.monotonic(), None, True

    def failed(self, detail: str) -> None:
        """Note a failed call; a refused connection to a peer that was up starts (or continues) its grace."""
        self.last_error, self.up = detail, False
        if self.last_ok is None or _REFUSED_HINT not in detail.lower():
            self.refused_since = None
        elif self.refused_since is None:
            self.refused_since = time.monotonic()

    def gone(self) -> bool:
        """True when the peer was up and has refused every connection for `_REFUSED_GRACE` since."""
        return self.refused_since is not None and time.monotonic() - self.refused_since > _REFUSED_GRACE


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
        self._probes = {role: self._probe_context(role) for role, peer in cfg.peers.items() if peer.fingerprint}
        self._opening = {role: threading.Lock() for role in cfg.peers}
        self._tags = tags
        self._inbox_bytes: dict[str, int] = defaultdict(int)  # per sender: bytes of the messages kept
        self._inbox_decoded: dict[str, int] = defaultdict(int)  # ... and what they decoded into (estimated)
        self._reserved_bytes: dict[str, int] = defaultdict(int)  # ... of messages being decoded
        self._reserved_decoded: dict[str, int] = defaultdict(int)  # ... and their decode budgets
        self._decoded_limit = _INBOX_LIMIT * codec.budget(cfg.max_message_bytes)
        self._cond = threading.Condition()
        self._pending: dict[tuple[str, str], dict[int, tuple[int, Any, int, int]]] = defaultdict(dict)
        self._next_in: dict[tuple[str, str], int] = defaultdict(int)
        self._next_out: dict[tuple[str, str], int] = defaultdict(int)
        self._arrivals = itertools.count()
        self._peers = {role: _PeerState() for role in cfg.peers}
        self._aborted: dict[str, str] = {}
        self.generation = generation
        self.last_generation = generation or 0  # the newest generation this process was in
        self._resume: dict[tuple[str, str], Any] = {}  # the latest handshake message per (peer, tag)
        self._consumed: set[str] = set()  # nonces of handshake messages already taken
        self._interrupt: str | None = None
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._record_lock = threading.Lock()
        self._record_file = None
        self.bytes_sent: dict[str, int] = defaultdict(int)
        self.bytes_received: dict[str, int] = defaultdict(int)
        self.waited = 0.0  # seconds spent blocked in receives, for timing reports
        self._server: grpc.Server | None = None
        self._channels: dict[str, grpc.Channel] = {}
        self._deliver: dict[str, Any] = {}
        self._ping: dict[str, Any] = {}
        self._limits = [("grpc.max_receive_message_length", cfg.max_message_bytes + 4096),
                        ("grpc.max_send_message_length", cfg.max_message_bytes + 4096)]
        self._heartbeat: threading.Thread | None = None

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
        if cfg.record_dir is not None:
            cfg.record_dir.mkdir(parents=True, exist_ok=True)
            self._record_file = open(cfg.record_dir / f"{cfg.role}.wire", "ab")
        self._heartbeat = threading.Thread(target=self._beat, name="heartbeat", daemon=True)
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
        if self._record_file is not None:
            self._record_file.close()

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
        with self._cond:
            seq = 0 if tag.startswith(RESUME_PREFIX) else self._next_out[(peer, tag)]
            self._next_out[(peer, tag)] = seq + 1
            generation = self.generation
        data = codec.encode({"run": self.cfg.run_id, "tag": tag, "seq": seq, "gen": generation, "body": body})
        if len(data) > self.cfg.max_message_bytes:
            raise ProtocolError(f"message {tag!r} to {peer} is {len(data) / 2**20:.1f} MiB, over the "
                                f"{self.cfg.max_message_bytes / 2**20:.0f} MiB limit ([network] max_message_mb)")
        self._record("out", peer, data)
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
            except _Unreachable as exc:  # a pinned peer not seen yet: as a peer not up yet
                state.failed(str(exc))
                if state.gone() or time.monotonic() - start > (self.cfg.peer_timeout if state.last_ok is not None
                                                               else self.cfg.connect_timeout):
                    raise PeerLost(self._silence(peer, what)) from None
            except grpc.RpcError as exc:
                detail = exc.details() or exc.code().name
                if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                    raise ProtocolError(f"{self._who(peer)} refused {what}: {detail}") from None
                if _MOVED_ON in detail:
                    raise PeerLost(f"{self._who(peer)} refused {what}: {detail}") from None
                if exc.code() not in _RETRYABLE:
                    raise PeerError(f"{self._who(peer)} refused {what}: {detail}") from None
                state.failed(detail)
                # once the peer was up, a handshake cut short means it went away (retried, as silence), not a bad
                # certificate: a middlebox in front of a dead peer accepts the connection and closes it
                if _is_tls_failure(detail) and state.last_ok is None:
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
        Raises `_Unreachable` while the peer cannot be reached."""
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
        host, _, port = peer.address.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=_PROBE_TIMEOUT) as sock, \
                    self._probes[role].wrap_socket(sock) as tls:
                der = tls.getpeercert(binary_form=True)
        except ssl.SSLCertVerificationError as exc:
            refusal = f"is not issued by a CA in {peer.ca}: {exc.verify_message}"
        except OSError as exc:  # refused, timed out, or a handshake broken off
            raise _Unreachable(f"TLS handshake to read its certificate: {exc}") from None
        else:
            cert = x509.load_der_x509_certificate(der)
            refusal = (f"does not carry the name {peer.name!r}" if peer.name not in _names(cert)
                       else self._refusal(role, cert))
            if refusal is None:
                issuer = next(ca for ca in self._peer_cas[role] if _issued_by(cert, ca))
                return issuer.public_bytes(serialization.Encoding.PEM)
        message = (f"{self._who(role)} presented a certificate for {peer.name!r} that {refusal}; nothing was sent "
                   f"to it")
        self._peers[role].impostor = message
        with self._cond:
            self._cond.notify_all()
        raise PeerError(message)

    def _probe_context(self, role: str) -> ssl.SSLContext:
        """TLS client settings for reading a pinned peer's certificate: its CA file, this role's own certificate."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False  # the name is checked as the server side checks it: CN or DNS SAN
        ctx.load_verify_locations(cadata=self.cfg.peers[role].ca.read_text())
        try:
            ctx.load_cert_chain(self.cfg.cert, self.cfg.key, password=self.cfg.key_passphrase.value)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load [tls] cert {self.cfg.cert} and key {self.cfg.key}: {exc}") from None
        ctx.set_alpn_protocols(["h2"])
        return ctx

    def _finish(self, call: Any, peer: str, what: str) -> bytes:
        """The answer of an RPC in flight to `peer`, given up as soon as the heartbeat says the peer is gone: a call
        stuck in a partition would otherwise hold its sender for the call's whole timeout."""
        while True:
            try:
                return call.result(timeout=_HEARTBEAT)
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
        return self._wait(lambda: self._take((peer, tag)), () if idle else (peer,), what,
                          float("inf") if idle else timeout)

    def recv_any(self, peers: tuple[str, ...], tags: frozenset[str], timeout: float | None = None) -> Message:
        """The earliest-arrived message from any of `peers` under one of `tags`."""
        for p in peers:
            self._check_peer(p)

        def take() -> Any:
            ready = [(queue[self._next_in[key]][0], key) for key, queue in self._pending.items()
                     if key[0] in peers and key[1] in tags and self._next_in[key] in queue]
            if not ready:
                return _NOTHING
            _, key = min(ready)
            return Message(key[0], key[1], self._take(key))

        return self._wait(take, peers, f"a message from {' or '.join(peers)}", timeout)

    def _take(self, key: tuple[str, str]) -> Any:
        queue = self._pending.get(key)
        seq = self._next_in[key]
        if not queue or seq not in queue:
            return _NOTHING
        _, body, size, cost = queue.pop(seq)
        self._inbox_bytes[key[0]] -= size
        self._inbox_decoded[key[0]] -= cost
        self._next_in[key] = seq + 1
        return body

    def _wait(self, take: Any, peers: tuple[str, ...], what: str, timeout: float | None) -> Any:
        limit = self.cfg.receive_timeout if timeout is None else timeout
        started = time.perf_counter()
        deadline = time.monotonic() + limit
        with self._cond:
            while True:
                item = take()
                if item is not _NOTHING:
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
                self._cond.wait(min(remaining, _HEARTBEAT))

    def _raise_if_gone(self, peer: str, doing: str) -> None:
        """Stop `doing` (e.g. "waiting for ...") when `peer` stopped the run, failed TLS twice, or is gone or silent,
        or when a peer is resuming."""
        self._check_interrupt()
        if peer in self._aborted:
            raise PeerError(f"{peer} stopped the run while this role was {doing}: {self._aborted[peer]}")
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
        if self._interrupt is not None:
            raise PeerLost(self._interrupt)

    # ---- generations and the resume handshake -------------------------------------

    def suspend(self) -> None:
        """Leave the current generation for the resume handshake: sequenced messages wait (their senders retry), and
        handshake messages that came before are forgotten."""
        with self._cond:
            self.generation, self._interrupt = None, None
            self._consumed |= {_nonce(body) for body in self._resume.values()}
            self._resume.clear()

    def enter(self, generation: int) -> None:
        """Start `generation`: every stream begins again at sequence number 0, nothing of an older one is kept."""
        with self._cond:
            self.generation, self.last_generation, self._interrupt = generation, generation, None
            self._pending.clear()
            self._next_in.clear()
            self._next_out.clear()
            self._inbox_bytes.clear()
            self._inbox_decoded.clear()
            self._cond.notify_all()

    def take_resume(self, peer: str, tag: str, timeout: float) -> Any:
        """The latest handshake message from `peer` under `tag` not taken yet, waiting up to `timeout` (None: none
        came). Never raises for a silent or gone peer: the handshake waits for restarted peers."""
        self._check_peer(peer)
        deadline = time.monotonic() + timeout
        with self._cond:
            while (peer, tag) not in self._resume:
                if peer in self._aborted:
                    raise PeerError(f"{peer} stopped the run: {self._aborted[peer]}")
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stop.is_set():
                    return None
                self._cond.wait(min(remaining, _HEARTBEAT))
            body = self._resume.pop((peer, tag))
            self._consumed.add(_nonce(body))
            return body

    def _silence(self, peer: str, what: str) -> str:
        state = self._peers[peer]
        if state.gone():
            return (f"{self._who(peer)} was up but has refused connections for {_REFUSED_GRACE:.1f}s, so its "
                    f"process has stopped, while {what}: {state.last_error}")
        if state.last_ok is None:
            return (f"{self._who(peer)} never answered within {self.cfg.connect_timeout:.0f}s "
                    f"([network] connect_timeout) while {what}: {state.last_error}")
        return (f"{self._who(peer)} stopped answering for {self.cfg.peer_timeout:.0f}s "
                f"([network] peer_timeout) while {what}: {state.last_error}")

    # ---- server side ------------------------------------------------------------

    def _caller(self, context: grpc.ServicerContext) -> str:
        """The role of the peer whose certificate the TLS handshake verified."""
        auth = context.auth_context()
        names = {v.decode() for v in auth.get("x509_common_name", []) + auth.get("x509_subject_alternative_name", [])}
        pem = (auth.get("x509_pem_cert") or [b""])[0]
        for role, peer in self.cfg.peers.items():
            if peer.name in names:
                try:
                    refusal = self._refusal(role, x509.load_pem_x509_certificate(pem))
                except ValueError:
                    refusal = "could not be read"
                if refusal:
                    context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                  f"{self.cfg.role}: certificate for {peer.name!r} {refusal}")
                return role
        context.abort(grpc.StatusCode.PERMISSION_DENIED,
                      f"{self.cfg.role}: certificate {sorted(names)} is not one of its configured peers")
        raise AssertionError("unreachable")

    def _refusal(self, role: str, cert: x509.Certificate) -> str | None:
        """Why the certificate presented under `role`'s name is not that peer's, or None when it is (both ends of a
        connection ask: the server of its caller, the client of a pinned peer before sending it anything)."""
        peer = self.cfg.peers[role]
        if not any(_issued_by(cert, ca) for ca in self._peer_cas[role]):
            return f"is not issued by {role}'s CA ({peer.ca})"
        if not _valid_now(cert):
            return "is outside its validity period"
        if peer.fingerprint and cert_fingerprint(cert) != peer.fingerprint:
            return "does not match the pinned fingerprint"
        return None

    def _on_ping(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self._caller(context)
        return codec.encode({"role": self.cfg.role, "run": self.cfg.run_id})

    def _on_deliver(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        """File one message: its envelope is read and checked (run, tag routed from this sender, generation,
        sequence, the sender's inbox budget) before its body is decoded, within its decode budget."""
        peer = self._caller(context)
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
        self._record("in", peer, request)
        key, size, limit = (peer, tag), len(request), codec.budget(len(request))
        sequenced = tag != ABORT_TAG and not tag.startswith(RESUME_PREFIX)
        generation = head.get("gen")
        with self._cond:
            self._peers[peer].answered()
            if sequenced:
                self._check_generation(generation, tag, context)
                if seq < self._next_in[key] or seq in self._pending[key]:
                    return b""  # a retry of a message already taken or kept
                if seq >= self._next_in[key] + _AHEAD or \
                        self._inbox_bytes[peer] + self._reserved_bytes[peer] + size > \
                        _INBOX_LIMIT * self.cfg.max_message_bytes:
                    context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                  f"{self.cfg.role}: inbox for {peer} is full (message {tag!r} number {seq}, "
                                  f"next expected {self._next_in[key]}); retry later")
            if self._inbox_decoded[peer] + self._reserved_decoded[peer] + limit > self._decoded_limit:
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                              f"{self.cfg.role}: decode budget for {peer} is spent (message {tag!r}: its messages "
                              f"kept and being decoded may take {self._decoded_limit} bytes); retry later")
            self._reserved_bytes[peer] += size
            self._reserved_decoded[peer] += limit
        try:
            body, cost = codec.decode_bounded(body_data, limit)
        except codec.CodecError as exc:
            body, cost = exc, 0
        finally:
            with self._cond:  # released before the filing below, which charges what the body really took
                self._reserved_bytes[peer] -= size
                self._reserved_decoded[peer] -= limit
        if isinstance(body, codec.CodecError):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"{self.cfg.role}: {peer} sent message {tag!r} that cannot be decoded: {body}")
        with self._cond:
            if tag == ABORT_TAG:
                self._aborted[peer] = str(body)[:2000]
                self._cond.notify_all()
                return b""
            if tag.startswith(RESUME_PREFIX):
                refusal = _nonce_refusal(body)
                if refusal:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{self.cfg.role}: {peer} sent {tag!r} {refusal}")
                self._resume[key] = body
                if self.generation is not None and _nonce(body) not in self._consumed:
                    self._interrupt = f"{peer} is resuming from a checkpoint"
                self._cond.notify_all()
                return b""
            self._check_generation(generation, tag, context)  # it may have moved on while the body was decoded
            if seq < self._next_in[key] or seq in self._pending[key]:
                return b""
            self._pending[key][seq] = (next(self._arrivals), body, size, cost)
            self._inbox_bytes[peer] += size
            self._inbox_decoded[peer] += cost
            self.bytes_received[peer] += size
            self._cond.notify_all()
        return b""

    def _check_generation(self, generation: Any, tag: str, context: grpc.ServicerContext) -> None:
        """Refuse a sequenced message of a generation this role is not in: a newer one as not yet due (retried), an
        older one for good (its sender must resume too)."""
        if not isinstance(generation, int) or self.generation is None or generation > self.generation:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"{self.cfg.role}: not in generation {generation} yet; "
                                                       f"retry later")
        if generation < self.generation:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"{self.cfg.role} {_MOVED_ON} ({self.generation}) than message {tag!r} "
                          f"({generation}): resume too")

    # ---- heartbeat, records, helpers -------------------------------------------------

    def _beat(self) -> None:
        hello = b""
        while not self._stop.wait(_HEARTBEAT):
            for role in self.cfg.peers:
                state = self._peers[role]
                try:
                    self._stub(role, _PING)(hello, timeout=2.0)
                    state.answered()
                    state.tls_failures = 0
                except _Unreachable as exc:
                    state.failed(str(exc))
                except PeerError:  # its certificate is not the pinned one: state.impostor says so to every wait
                    state.up = False
                except grpc.RpcError as exc:
                    state.failed(exc.details() or exc.code().name)
                    # a handshake that fails once the peer was up is a connection cut short (a middlebox in front of a
                    # peer that died): that peer is silent, not misconfigured
                    failed = _is_tls_failure(state.last_error) and state.last_ok is None
                    state.tls_failures = state.tls_failures + 1 if failed else 0
                except ValueError:  # channel closed during shutdown
                    return
            with self._cond:
                self._cond.notify_all()

    def _record(self, direction: str, peer: str, data: bytes) -> None:
        if self._record_file is None:
            return
        frame = codec.encode({"dir": direction, "peer": peer, "data": data})
        with self._record_lock:
            self._record_file.write(len(frame).to_bytes(4, "big") + frame)
            self._record_file.flush()

    def _check_peer(self, peer: str) -> None:
        if peer not in self.cfg.peers:
            raise ProtocolError(f"{self.cfg.role} has no peer {peer!r} (configured: {', '.join(self.cfg.peers)})")

    def _who(self, peer: str) -> str:
        return f"{peer} at {self.cfg.peers[peer].address}"


_NOTHING = object()


_NONCE_MAX = 64  # characters of a handshake nonce (resume.py sends 16 hex digits)


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


def _is_tls_failure(detail: str) -> bool:
    low = detail.lower()
    return any(h in low for h in _TLS_HINTS)


def read_recording(path: str) -> list[dict]:
    """Frames written by an endpoint with [network] record_dir set: dir, peer, data (raw envelope)."""
    frames = []
    with open(path, "rb") as f:
        while header := f.read(4):
            frames.append(codec.decode(f.read(int.from_bytes(header, "big"))))
    return frames
