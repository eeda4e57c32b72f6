"""An in-memory network for unit tests: the Endpoint interface, messages through the real codec."""

from __future__ import annotations

import queue
import threading
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from protocol.wire import codec


class MemoryNetwork:
    def __init__(self, run_id: str = "test"):
        self.run_id = run_id
        self._queues: dict[tuple[str, str, str], queue.Queue] = defaultdict(queue.Queue)
        self._lock = threading.Lock()
        self.log: list[tuple[str, str, str, bytes]] = []  # (sender, receiver, tag, encoded body)

    def queue(self, receiver: str, sender: str, tag: str) -> queue.Queue:
        with self._lock:
            return self._queues[(receiver, sender, tag)]

    def endpoint(self, role: str) -> "MemoryEndpoint":
        return MemoryEndpoint(self, role)


class MemoryEndpoint:
    def __init__(self, net: MemoryNetwork, role: str):
        self.net = net
        self.cfg = SimpleNamespace(role=role, run_id=net.run_id)
        self.bytes_sent: dict[str, int] = defaultdict(int)
        self.bytes_received: dict[str, int] = defaultdict(int)

    def send(self, peer: str, tag: str, body: Any) -> None:
        data = codec.encode(body)
        self.net.log.append((self.cfg.role, peer, tag, data))
        self.bytes_sent[peer] += len(data)
        self.net.queue(peer, self.cfg.role, tag).put(data)

    def recv(self, peer: str, tag: str, timeout: float | None = 60, idle: bool = False) -> Any:
        data = self.net.queue(self.cfg.role, peer, tag).get(timeout=timeout)
        self.bytes_received[peer] += len(data)
        return codec.decode(data)


def run_roles(*targets: tuple) -> list[Any]:
    """Run (function, *args) targets in threads, one per role; re-raise the first failure."""
    results: list[Any] = [None] * len(targets)
    errors: list[BaseException] = []

    def go(i: int, fn: Any, args: tuple) -> None:
        try:
            results[i] = fn(*args)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(i, t[0], t[1:]), daemon=True) for i, t in enumerate(targets)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    if errors:
        raise errors[0]
    return results
