"""Wire recording ([network] record_dir): every envelope an endpoint sends or files, in `<role>.wire`."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import BinaryIO

from protocol.wire import codec


class Recorder:
    """Appends length-prefixed frames (dir, peer, data) to a role's recording, when it keeps one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._file: BinaryIO | None = None

    def open(self, record_dir: Path | None, role: str) -> None:
        """Start recording into `record_dir` (None: record nothing)."""
        if record_dir is not None:
            record_dir.mkdir(parents=True, exist_ok=True)
            self._file = open(record_dir / f"{role}.wire", "ab")

    def write(self, direction: str, peer: str, data: bytes) -> None:
        """Record one envelope sent ("out") to or filed ("in") from `peer`."""
        if self._file is None:
            return
        frame = codec.encode({"dir": direction, "peer": peer, "data": data})
        with self._lock:
            self._file.write(len(frame).to_bytes(4, "big") + frame)
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def read_recording(path: str) -> list[dict]:
    """Frames written by an endpoint with [network] record_dir set: dir, peer, data (raw envelope)."""
    frames = []
    with open(path, "rb") as f:
        while header := f.read(4):
            frames.append(codec.decode(f.read(int.from_bytes(header, "big"))))
    return frames
