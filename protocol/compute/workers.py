"""A pool of workers for one role's big-integer and curve work.

A task names a function as "module:function" inside this project's shared packages,
or the role's own package when its pool allows it (`resolve`: A's pool runs
party_a/'s scoring for `recommend`); a worker imports it on first use and may keep
per-key caches (fixed-base tables, keys) between tasks. Requests and answers are frames of our own codec
(`request` and `handle`), so nothing is ever pickled between a role and its workers.

The pool is the same whatever carries the frames: here, child processes of the role
speaking over their stdin/stdout pipes (length-prefixed frames); in
`protocol/compute/ray_pool.py`, Ray actors in the role's own Ray cluster.
`WorkerPool(0)` runs every task inline in the calling process, which is what small
inputs and unit tests want.
"""

from __future__ import annotations

import importlib
import os
import queue
import signal
import subprocess
import sys
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

from protocol.errors import ProtocolError
from protocol.wire import codec

_ALLOWED_PACKAGES = ("protocol.", "psi.")
ROOT = Path(__file__).resolve().parents[2]


def resolve(op: str, packages: tuple[str, ...] = ()) -> Callable:
    """The function behind "module:function", restricted to this project's shared packages and `packages`
    (the role's own, when its pool allows it)."""
    module, _, name = op.partition(":")
    allowed = _ALLOWED_PACKAGES + tuple(f"{package}." for package in packages)
    if not module.startswith(allowed) or not name:
        places = [f"{package.rstrip('.')}/" for package in allowed]
        raise ProtocolError(f"worker task {op!r} is not a function of {', '.join(places[:-1])} or {places[-1]}")
    return getattr(importlib.import_module(module), name)


def checked_packages(packages: tuple[str, ...]) -> tuple[str, ...]:
    """`packages` if each is a top-level package's name (so that "" or "party_a.x" cannot widen `resolve`)."""
    for package in packages:
        if not package.isidentifier():
            raise ValueError(f"a worker pool's own package must be a top-level package's name, got {package!r}")
    return packages


def default_size() -> int:
    return os.cpu_count() or 1


def ready() -> bool:
    """A task that does nothing: a worker that answers it has started."""
    return True


def request(op: str, args: tuple) -> bytes:
    """The frame that asks a worker to run `op(*args)`."""
    return codec.encode({"op": op, "args": list(args)})


def handle(frame: bytes, packages: tuple[str, ...] = ()) -> bytes:
    """A worker's side: run the requested task (of the shared packages or `packages`), answer its result or its
    error."""
    try:
        asked = codec.decode(frame)
        answer = {"ok": resolve(asked["op"], packages)(*asked["args"])}
    except Exception as exc:  # noqa: BLE001 - reported to the pool, which raises it
        answer = {"error": f"{type(exc).__name__}: {exc}"}
    return codec.encode(answer)


class Worker(Protocol):
    """What carries frames to one worker and back."""

    name: str

    def exchange(self, frame: bytes) -> bytes | None:
        """Send one request frame, wait for its answer (None: the worker died)."""

    def stop(self) -> None: ...


def _write_frame(stream: Any, data: bytes) -> None:
    stream.write(len(data).to_bytes(8, "big") + data)
    stream.flush()


def _read_frame(stream: Any) -> bytes | None:
    header = stream.read(8)
    if len(header) < 8:
        return None
    size = int.from_bytes(header, "big")
    data = stream.read(size)
    if len(data) < size:
        return None
    return data


class ProcessWorker:
    """A child process of the role, speaking frames over its pipes; it also runs tasks of `packages`."""

    def __init__(self, packages: tuple[str, ...] = ()) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        self.proc = subprocess.Popen([sys.executable, "-m", "protocol.compute.workers", *checked_packages(packages)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=str(ROOT))
        self.name = f"worker process {self.proc.pid}"

    def exchange(self, frame: bytes) -> bytes | None:
        _write_frame(self.proc.stdin, frame)
        return _read_frame(self.proc.stdout)

    def stop(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class _Server:
    """One thread per worker: takes tasks from the pool's queue and runs them there, one at a time."""

    def __init__(self, index: int, worker: Worker, tasks: "queue.Queue[tuple[str, tuple, Future] | None]"):
        self.worker = worker
        self.tasks = tasks
        self.lock = threading.Lock()  # one request at a time on this worker
        self.thread = threading.Thread(target=self._serve, name=f"worker-{index}", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while (item := self.tasks.get()) is not None:
            op, args, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(self.call(op, args))
            except BaseException as exc:  # noqa: BLE001 - the future carries it to the caller
                future.set_exception(exc)

    def call(self, op: str, args: tuple) -> Any:
        """Run one task on this worker and wait for its answer."""
        with self.lock:
            frame = self.worker.exchange(request(op, args))
        if frame is None:
            raise ProtocolError(f"{self.worker.name} died during {op}")
        answer = codec.decode(frame)
        if "error" in answer:
            raise ProtocolError(f"worker task {op} failed: {answer['error']}")
        return answer["ok"]


class WorkerPool:
    """`size` worker processes sharing one task queue (inline execution when size is 0).

    Tasks are functions of protocol/ and psi/, and of `packages` (the role's own package, e.g. ("party_a",)).
    `workers`, if given, replace the child processes (then `size` is their number; they must allow the same
    `packages`). At most `max_in_flight`
    tasks (default two per worker) are submitted and unfinished at once: `submit` waits beyond that, so a
    caller streaming chunks through the pool holds a bounded number of them. `on_close` runs after the
    workers stopped."""

    def __init__(self, size: int | None = None, max_in_flight: int | None = None,
                 workers: list[Worker] | None = None, on_close: Callable[[], None] | None = None,
                 packages: tuple[str, ...] = ()):
        self.packages = checked_packages(packages)
        if workers is None:
            workers = [ProcessWorker(packages) for _ in range(default_size() if size is None else size)]
        self.size = len(workers)
        self.local = all(isinstance(w, ProcessWorker) for w in workers)  # every worker a child process (or inline)
        self.max_in_flight = max_in_flight or 2 * max(1, self.size)
        self._slots = threading.BoundedSemaphore(self.max_in_flight)
        self._on_close = on_close
        self._tasks: queue.Queue = queue.Queue()
        self._servers = [_Server(i, worker, self._tasks) for i, worker in enumerate(workers)]

    def submit(self, op: str, *args: Any) -> Future:
        future: Future = Future()
        if self.size == 0:
            try:
                future.set_result(codec.decode(codec.encode(resolve(op, self.packages)(*args))))
            except BaseException as exc:  # noqa: BLE001
                future.set_exception(exc)
            return future
        self._slots.acquire()
        future.add_done_callback(lambda _: self._slots.release())
        self._tasks.put((op, args, future))
        return future

    def broadcast(self, op: str, *args: Any) -> None:
        """Run `op` once on every worker (inline when size is 0), e.g. to install state later tasks only name."""
        if self.size == 0:
            resolve(op, self.packages)(*args)
        for server in self._servers:
            server.call(op, args)

    def map(self, op: str, arg_tuples: Iterable[tuple]) -> list:
        """Run `op` on every argument tuple in parallel; results in input order."""
        futures = [self.submit(op, *args) for args in arg_tuples]
        return [f.result() for f in futures]

    def close(self) -> None:
        for _ in self._servers:
            self._tasks.put(None)
        for server in self._servers:
            server.thread.join(timeout=5)
            server.worker.stop()
        if self._on_close is not None:
            self._on_close()

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent role decides when to stop
    packages = checked_packages(tuple(sys.argv[1:]))  # the role's own packages its pool allows
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the frame stream
    while (frame := _read_frame(stdin)) is not None:
        _write_frame(stdout, handle(frame, packages))


if __name__ == "__main__":
    _main()
