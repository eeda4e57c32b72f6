"""What an operations team sees of a running role: Prometheus metrics and `/healthz` on `[observe] listen`, and the
context (run, generation, epoch, step) that JSON log lines carry.

One registry per process: a role is one process, and its metrics are updated where the work happens (a secure
step, a checkpoint, a decryption served or refused) by the small functions below, which cost a counter increment
whether or not anything scrapes them. Peer liveness is read from the endpoint's heartbeat at each scrape.
docs/operations.md lists every metric and what to watch.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, disable_created_metrics,
                               generate_latest)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

disable_created_metrics()  # a `_created` series beside each counter says only when the process started
REGISTRY = CollectorRegistry()

ROLE_INFO = Gauge("vfrec_role_info", "1, labelled with this process's role and run ID", ("role", "run_id"),
                  registry=REGISTRY)
SECURE_STEPS = Counter("vfrec_secure_steps", "Secure training steps done (rate(): steps per second)",
                       registry=REGISTRY)
SECURE_USERS = Counter("vfrec_secure_users", "Users through secure training steps (rate(): users per second)",
                       registry=REGISTRY)
EPOCH = Gauge("vfrec_epoch", "The training epoch in progress", registry=REGISTRY)
VALIDATION = Gauge("vfrec_validation", "The last epoch's validation metrics (party A)", ("metric",),
                   registry=REGISTRY)
PROGRESS_DONE = Gauge("vfrec_progress_done", "Units done of the task in progress (as its progress line says)",
                      ("task",), registry=REGISTRY)
PROGRESS_TOTAL = Gauge("vfrec_progress_total", "Units of the task in progress in all (absent when open-ended)",
                       ("task",), registry=REGISTRY)
DECRYPTIONS_SERVED = Counter("vfrec_decryptions_served", "Decryption requests the coordinator served, by step",
                             ("step",), registry=REGISTRY)
DECRYPTIONS_REFUSED = Counter("vfrec_decryptions_refused",
                              "Decryption requests the coordinator refused, by reason (any is a peer asking for "
                              "something the protocol does not give it)", ("reason",), registry=REGISTRY)
RELEASES = Counter("vfrec_releases", "Rows this party released through its noise defence ([privacy]): e_B at B, "
                   "δ at A", registry=REGISTRY)

context: dict[str, object] = {}  # role, run_id, epoch, step: what log lines and /healthz say of where the run is


class Liveness(Protocol):
    """What the observer reads of an endpoint (protocol/net/transport.py's `Endpoint`)."""

    generation: int | None

    def peer_liveness(self) -> Mapping[str, tuple[bool, float | None]]: ...


@dataclass
class _Watched:
    endpoint: Liveness | None = None
    checkpoint_at: float | None = None
    epsilon: Callable[[], float | None] | None = None


_watched = _Watched()


class _LiveCollector(Collector):
    """What is read at scrape time: peers' liveness, the generation, the checkpoint's age."""

    def collect(self) -> Iterator[Metric]:
        endpoint = _watched.endpoint
        if endpoint is not None:
            up = GaugeMetricFamily("vfrec_peer_up", "1 when the peer answered the last heartbeat (every 0.5 s)",
                                   labels=("peer",))
            seen = GaugeMetricFamily("vfrec_peer_last_answer_seconds", "Seconds since the peer last answered",
                                     labels=("peer",))
            for peer, (alive, age) in endpoint.peer_liveness().items():
                up.add_metric((peer,), 1.0 if alive else 0.0)
                if age is not None:
                    seen.add_metric((peer,), age)
            yield up
            yield seen
            if endpoint.generation is not None:
                yield GaugeMetricFamily("vfrec_generation", "The resume generation the run is in",
                                        value=endpoint.generation)
        if _watched.checkpoint_at is not None:
            yield GaugeMetricFamily("vfrec_checkpoint_age_seconds", "Seconds since this role last wrote a checkpoint",
                                    value=time.time() - _watched.checkpoint_at)
        if _watched.epsilon is not None:
            yield GaugeMetricFamily("vfrec_epsilon_spent", "ε this party's noise defence ([privacy]) has spent so "
                                    "far: its most released user's", value=_watched.epsilon() or 0.0)

    def describe(self) -> Iterator[Metric]:
        names = (("vfrec_peer_up", ("peer",)), ("vfrec_peer_last_answer_seconds", ("peer",)),
                 ("vfrec_generation", ()), ("vfrec_checkpoint_age_seconds", ()), ("vfrec_epsilon_spent", ()))
        return iter([GaugeMetricFamily(name, "", labels=labels) for name, labels in names])


REGISTRY.register(_LiveCollector())


def log_context() -> dict[str, object]:
    """What a JSON log line says of where the run is: run ID, generation, epoch and step, where known."""
    fields = {k: context[k] for k in ("run_id",) if k in context}
    endpoint = _watched.endpoint
    if endpoint is not None and endpoint.generation is not None:
        fields["generation"] = endpoint.generation
    return fields | {k: context[k] for k in ("epoch", "step") if k in context}


def watch(role: str, run_id: str, endpoint: Liveness | None = None) -> None:
    """Name the process's role and run, and the endpoint whose peers and generation the metrics report."""
    context.update(role=role, run_id=run_id)
    ROLE_INFO.clear()
    ROLE_INFO.labels(role, run_id).set(1)
    if endpoint is not None:
        _watched.endpoint = endpoint


def at(epoch: int | None = None, step: int | None = None) -> None:
    """Where the run is: its epoch (shown as `vfrec_epoch`) and step, for log lines."""
    if epoch is not None:
        context["epoch"] = epoch
        EPOCH.set(epoch)
    if step is not None:
        context["step"] = step


def secure_step(users: int) -> None:
    SECURE_STEPS.inc()
    SECURE_USERS.inc(users)


def validated(metrics: Mapping[str, float | None]) -> None:
    for name, value in metrics.items():
        if value is not None:
            VALIDATION.labels(name).set(value)


def checkpoint_written() -> None:
    _watched.checkpoint_at = time.time()


def decryption(step: str, refused: str | None = None) -> None:
    """A decryption request served (for `step`), or refused for `refused` (a short reason code)."""
    if refused is None:
        DECRYPTIONS_SERVED.labels(step).inc()
    else:
        DECRYPTIONS_REFUSED.labels(refused).inc()


def released(rows: int) -> None:
    RELEASES.inc(rows)


def spending(epsilon: Callable[[], float | None]) -> None:
    """Report `epsilon()` as the ε spent, computed at each scrape (an accountant's call is too slow per release);
    without a defence nothing is reported, since ε is then unbounded."""
    _watched.epsilon = epsilon


def progress(task: str, done: float, total: float | None) -> None:
    PROGRESS_DONE.labels(task).set(done)
    if total is not None:
        PROGRESS_TOTAL.labels(task).set(total)


def health() -> dict:
    """`/healthz`'s answer: the process is up; its role, run, generation and which peers answer."""
    body: dict = {"status": "ok", **{k: context[k] for k in ("role", "run_id") if k in context}}
    endpoint = _watched.endpoint
    if endpoint is not None:
        body["generation"] = endpoint.generation
        body["peers"] = {peer: alive for peer, (alive, _) in endpoint.peer_liveness().items()}
    return body


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._answer(200, CONTENT_TYPE_LATEST, generate_latest(REGISTRY))
        elif path == "/healthz":
            self._answer(200, "application/json", json.dumps(health()).encode())
        else:
            self._answer(404, "text/plain; charset=utf-8", b"not found: /metrics and /healthz are served here\n")

    def _answer(self, status: int, kind: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server's name)
        pass  # a scrape every few seconds would drown the role's log


class Server:
    """`/metrics` and `/healthz` on a local address, in a daemon thread, until `close`."""

    def __init__(self, host: str, port: int):
        self._http = ThreadingHTTPServer((host, port), _Handler)
        self._http.daemon_threads = True
        self.address = self._http.server_address[:2]
        self._thread = threading.Thread(target=self._http.serve_forever, name="observe", daemon=True)

    def __enter__(self) -> "Server":
        self._thread.start()
        log.info("metrics and health on http://%s:%d/metrics and /healthz", *self.address)
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()


def serving(listen: tuple[str, int] | None) -> AbstractContextManager:
    """The server for `[observe] listen`, or nothing when it is not set; a context manager either way."""
    return nullcontext() if listen is None else Server(*listen)
