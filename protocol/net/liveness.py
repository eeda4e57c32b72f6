"""What the heartbeat knows about each peer, and why a peer counts as gone.

A peer silent for `peer_timeout` is lost (a partition looks the same for a while); one that
was up and now refuses connections is gone after `REFUSED_GRACE`: nothing listens on its
port any more. See protocol/net/transport.py's docstring.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

import grpc

from protocol.errors import PeerError
from protocol.net.identity import Unreachable

HEARTBEAT = 0.5
_TLS_HINTS = ("handshake", "certificate", "ssl_error", "tsi_")
# A refused connection is certain: the peer's host answered that nothing listens on its port. ("failed to connect"
# alone is not: gRPC says it of connections that time out, as in a partition, which must wait for peer_timeout.)
_REFUSED_HINT = "connection refused"
REFUSED_GRACE = 3 * HEARTBEAT  # how long a peer that was up may refuse connections before it counts as gone


class PeerState:
    """What the heartbeat knows about one peer."""

    def __init__(self) -> None:
        self.last_ok: float | None = None
        self.up = False  # whether it answered the last call (a heartbeat every HEARTBEAT)
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
        """True when the peer was up and has refused every connection for `REFUSED_GRACE` since."""
        return self.refused_since is not None and time.monotonic() - self.refused_since > REFUSED_GRACE


def is_tls_failure(detail: str) -> bool:
    """Whether a call's error detail says its TLS handshake failed."""
    low = detail.lower()
    return any(h in low for h in _TLS_HINTS)


def beat(peers: Mapping[str, PeerState], ping: Callable[[str], object], stop: threading.Event,
         wake: Callable[[], None]) -> None:
    """Ping every peer each `HEARTBEAT` until `stop` is set, noting in its state how it answered; `wake` then wakes
    whoever waits on a peer."""
    while not stop.wait(HEARTBEAT):
        for role, state in peers.items():
            try:
                ping(role)
                state.answered()
                state.tls_failures = 0
            except Unreachable as exc:
                state.failed(str(exc))
            except PeerError:  # its certificate is not the pinned one: state.impostor says so to every wait
                state.up = False
            except grpc.RpcError as exc:
                state.failed(exc.details() or exc.code().name)
                # a handshake that fails once the peer was up is a connection cut short (a middlebox in front of a
                # peer that died): that peer is silent, not misconfigured
                failed = is_tls_failure(state.last_error) and state.last_ok is None
                state.tls_failures = state.tls_failures + 1 if failed else 0
            except ValueError:  # channel closed during shutdown
                return
        wake()


def silence(who: str, state: PeerState, connect_timeout: float, peer_timeout: float, what: str) -> str:
    """Why the peer `who` counts as lost while this role was doing `what`."""
    if state.gone():
        return (f"{who} was up but has refused connections for {REFUSED_GRACE:.1f}s, so its "
                f"process has stopped, while {what}: {state.last_error}")
    if state.last_ok is None:
        return (f"{who} never answered within {connect_timeout:.0f}s "
                f"([network] connect_timeout) while {what}: {state.last_error}")
    return (f"{who} stopped answering for {peer_timeout:.0f}s "
            f"([network] peer_timeout) while {what}: {state.last_error}")
