"""A pool of worker processes for one role's big-integer and curve work.

The workers are child processes of the role that started them and speak our own
codec over their stdin/stdout pipes (length-prefixed frames), so nothing is ever
pickled, not even between a role and its own workers. A task names a function as
"module:function" inside this project's packages; workers import it on first use
and may keep per-key caches (fixed-base tables, keys) between tasks.

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
from typing import Any, Callable, Iterable

from protocol.errors import ProtocolError
from protocol.net import codec

_ALLOWED_PACKAGES = ("protocol.", "psi.")
_ROOT = Path(__file__).resolve().parents[2]


def resolve(op: str) -> Callable:
    """The function behind "module:function", restricted to this project's shared packages."""
    module, _, name = op.partition(":")
    if not module.startswith(_ALLOWED_PACKAGES) or not name:
        raise ProtocolError(f"worker task {op!r} is not a function of protocol/ or psi/")
    return getattr(importlib.import_module(module), name)


def default_size() -> int:
    return os.cpu_count() or 1


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


class _Worker:
    def __init__(self, index: int, tasks: "queue.Queue[tuple[str, tuple, Future] | None]"):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(_ROOT), os.environ.get("PYTHONPATH", "")]))
        self.proc = subprocess.Popen([sys.executable, "-m", "protocol.runtime.workers"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env, cwd=str(_ROOT))
        self.tasks = tasks
        self.lock = threading.Lock()  # one request at a time on this worker's pipes
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
            _write_frame(self.proc.stdin, codec.encode({"op": op, "args": list(args)}))
            frame = _read_frame(self.proc.stdout)
        if frame is None:
            raise ProtocolError(f"worker process {self.proc.pid} died during {op}")
        answer = codec.decode(frame)
        if "error" in answer:
            raise ProtocolError(f"worker task {op} failed: {answer['error']}")
        return answer["ok"]

    def stop(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class WorkerPool:
    """`size` worker processes sharing one task queue (inline execution when size is 0)."""

    def __init__(self, size: int | None = None):
        self.size = default_size() if size is None else size
        self._tasks: queue.Queue = queue.Queue()
        self._workers = [_Worker(i, self._tasks) for i in range(self.size)]

    def submit(self, op: str, *args: Any) -> Future:
        future: Future = Future()
        if self.size == 0:
            try:
                future.set_result(codec.decode(codec.encode(resolve(op)(*args))))
            except BaseException as exc:  # noqa: BLE001
                future.set_exception(exc)
        else:
            self._tasks.put((op, args, future))
        return future

    def broadcast(self, op: str, *args: Any) -> None:
        """Run `op` once on every worker (inline when size is 0), e.g. to install state later tasks only name."""
        if self.size == 0:
            resolve(op)(*args)
        for worker in self._workers:
            worker.call(op, args)

    def map(self, op: str, arg_tuples: Iterable[tuple]) -> list:
        """Run `op` on every argument tuple in parallel; results in input order."""
        futures = [self.submit(op, *args) for args in arg_tuples]
        return [f.result() for f in futures]

    def close(self) -> None:
        for _ in self._workers:
            self._tasks.put(None)
        for worker in self._workers:
            worker.thread.join(timeout=5)
            worker.stop()

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent role decides when to stop
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the frame stream
    while (frame := _read_frame(stdin)) is not None:
        try:
            request = codec.decode(frame)
            answer = {"ok": resolve(request["op"])(*request["args"])}
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        _write_frame(stdout, codec.encode(answer))


if __name__ == "__main__":
    _main()
