"""A TCP proxy for fault injection: forwards raw bytes (TLS passes through untouched) between a local port and a
target, and can slow every chunk down, drop its connections, or cut all traffic for a while.

A partition holds traffic instead of losing it, as a network that drops packets does while TCP retransmits them:
nothing is read from either side and new connections wait unanswered, so the peers see calls time out, never a
refused or reset connection; when it heals, the held bytes flow on.

`route_through_proxy` puts one between a role and a peer of a local run (scenarios/launch.py); the fault tests and
bench/soak.py use it.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
import tomllib

from scenarios.launch import LocalRun, to_toml

UPSTREAM_WAIT = 30.0  # seconds a new connection waits for its target to come up


class Proxy:
    """Listens on 127.0.0.1 at `port` (`address`) and forwards each connection to `target` ("host:port")."""

    def __init__(self, target: str):
        host, port = target.rsplit(":", 1)
        self._target = (host, int(port))
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))  # listens once the target is up (_accept)
        self.port: int = self._listener.getsockname()[1]
        self._delay = 0.0
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self.connections = 0  # accepted so far, to tell that traffic went through
        threading.Thread(target=self._accept, name=f"proxy:{self.port}", daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def delay(self, seconds: float) -> None:
        """Hold every chunk `seconds` before forwarding it (0: no delay)."""
        self._delay = seconds

    def drop(self) -> None:
        """Reset every current connection; new ones are forwarded as before."""
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for s in sockets:
            _reset(s)

    def partition(self, seconds: float) -> None:
        """Hold all traffic, on current and new connections, for `seconds`, then let it flow again."""
        self._flowing.clear()
        timer = threading.Timer(seconds, self._flowing.set)
        timer.daemon = True
        timer.start()

    def heal(self) -> None:
        """End a partition now."""
        self._flowing.set()

    def close(self) -> None:
        self._closed.set()
        self._flowing.set()
        self._listener.close()
        self.drop()

    def __enter__(self) -> "Proxy":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        """Until the target first answers, a client's connection is refused, as the target's own port would
        refuse it (a connection accepted here and then closed looks to gRPC like a failed TLS handshake); from
        then on every connection is accepted and forwarded."""
        probe = self._upstream()
        if probe is None:
            return
        probe.close()
        self._listener.listen()
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        self._track(client)
        self._flowing.wait()
        upstream = self._upstream()
        if upstream is None:
            _reset(client)
            return
        self._track(upstream)
        pumps = [threading.Thread(target=self._pump, args=pair, daemon=True)
                 for pair in ((client, upstream), (upstream, client))]
        for pump in pumps:
            pump.start()
        for pump in pumps:
            pump.join()
        with self._lock:
            self._sockets -= {client, upstream}
        client.close()
        upstream.close()

    def _upstream(self) -> socket.socket | None:
        """A connection to the target, retried while it is not up yet: the client, already accepted here, sees a
        slow connection (as when the target's host is slow to answer), not a reset, which gRPC would take for a
        failed TLS handshake."""
        deadline = time.monotonic() + UPSTREAM_WAIT
        while not self._closed.is_set():
            try:
                upstream = socket.create_connection(self._target, timeout=5)
                upstream.settimeout(None)
                return upstream
            except OSError:
                if time.monotonic() > deadline:
                    return None
                time.sleep(0.1)
        return None

    def _track(self, s: socket.socket) -> None:
        with self._lock:
            self._sockets.add(s)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                self._flowing.wait()
                if self._delay:
                    time.sleep(self._delay)
                if self._closed.is_set():
                    break
                sink.sendall(chunk)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            _reset(sink)
            _reset(source)


def route_through_proxy(run: LocalRun, role: str, peer: str) -> Proxy:
    """A proxy to `peer` at the address `role`'s config gives for it."""
    config = tomllib.loads(run.configs[role].read_text())
    proxy = Proxy(config["peers"][peer]["address"])
    config["peers"][peer]["address"] = proxy.address
    run.configs[role].write_text(to_toml(config) + "\n")
    return proxy


def _reset(s: socket.socket) -> None:
    """Break a connection as a crash or a middlebox would (shutdown first: it wakes a thread blocked reading it)."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.shutdown(socket.SHUT_RDWR)
        s.close()
    except OSError:
        pass
