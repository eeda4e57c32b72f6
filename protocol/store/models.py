"""A role's model store: one directory per trained model, written atomically, read without pickle.

    <workdir>/models/<model_id>/manifest.json   what the model is: ID, run, role, chosen epoch, key fingerprint
    <workdir>/models/<model_id>/...              the role's files (torch state dicts, msgpack, Parquet)
    <workdir>/models/CURRENT                     the model ID in service
    <workdir>/models/HISTORY                     one line per change of CURRENT: "time model_id action"
    <workdir>/models/LOCK                        held while CURRENT and HISTORY change

All three roles store the same model ID (A draws it at the end of training and
announces it), and every later use checks it: a store of another model stops with a
message naming both IDs. A version directory appears whole or not at all (written
under a temporary name, fsynced, renamed); so does every file replaced later.

A model ID becomes a directory name, and B and the coordinator take theirs from A's
message: it must be a safe name (protocol/names.py), checked when the message is
parsed and again here. A store holds B's tower, [W], user IDs and u: its files are
written mode 0600 and its directories 0700, whatever the umask.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from protocol.errors import StoreError
from protocol.names import as_name, check_name

MANIFEST = "manifest.json"
CURRENT = "CURRENT"
HISTORY = "HISTORY"
LOCK = "LOCK"


def new_model_id(run_id: str) -> str:
    """A fresh model ID: the run, the UTC time and a random suffix."""
    return f"{as_name(run_id)[:160]}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(3)}"


def private_dir(directory: Path) -> None:
    """Create `directory` (and its parents) if missing, and make it its owner's alone (0700)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)


def write_private_file(path: Path, data: bytes) -> None:
    """Write a new file only its owner can read (0600), fsynced; an existing file at `path` is refused."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` with `data` (mode 0600) so a reader sees the old file or the new one, never a part."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    write_private_file(tmp, data)
    os.replace(tmp, path)
    sync_dir(path.parent)


def sync_dir(directory: Path) -> None:
    """Make a directory's entries (a file created or renamed in it) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_files(directory: Path, files: dict[str, bytes]) -> None:
    """Create `directory` (0700) holding `files` (0600), each fsynced, and the directory too (rename it into place
    after)."""
    directory.mkdir(mode=0o700)
    os.chmod(directory, 0o700)
    for name, data in files.items():
        write_private_file(directory / name, data)
    sync_dir(directory)


def write_model(workdir: Path, model_id: str, manifest: dict, files: dict[str, bytes], current: bool = True) -> Path:
    """Write a model version whole, then (`current`) make it the one in service; returns its directory."""
    root = workdir / "models"
    try:
        check_name(model_id, "model_id")
    except ValueError as exc:
        raise StoreError(f"{root}: refused to store a model: {exc}") from None
    private_dir(root)
    final = root / model_id
    if final.exists():
        raise StoreError(f"{final} already exists: model IDs are never reused")
    tmp = root / f".{model_id}.tmp"
    write_files(tmp, {**files, MANIFEST: json.dumps({**manifest, "model_id": model_id}, indent=2).encode()})
    os.replace(tmp, final)
    if current:
        with models_lock(root):
            make_current(root, model_id, "trained")
    return final


@contextmanager
def models_lock(root: Path) -> Iterator[None]:
    """Hold `root`'s lock file while CURRENT and HISTORY change, so that two commands (a promote, a training run's
    end) never interleave; not reentrant."""
    fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def make_current(root: Path, model_id: str, action: str) -> None:
    """Put model `model_id` in service (CURRENT replaced atomically) and record it in HISTORY; the caller holds
    `models_lock`."""
    atomic_write(root / CURRENT, model_id.encode())
    record(root, model_id, action)


def record(root: Path, model_id: str, action: str) -> None:
    """Append "time model_id action" to HISTORY, fsynced; the caller holds `models_lock`."""
    line = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {model_id} {action}\n"
    fd = os.open(root / HISTORY, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def current_model(workdir: Path, role: str, expected: str | None = None) -> tuple[Path, dict]:
    """The directory and manifest of the model in service at `role`; with `expected`, it must be that model."""
    pointer = workdir / "models" / CURRENT
    try:
        model_id = pointer.read_text().strip()
    except FileNotFoundError:
        raise StoreError(f"{pointer} is missing: {role} has no trained model in {workdir} (train first)") from None
    try:
        check_name(model_id, "model_id")
    except ValueError as exc:
        raise StoreError(f"{pointer} is corrupt: {exc}") from None
    directory = pointer.parent / model_id
    manifest = read_manifest(directory, role)
    if expected is not None and manifest["model_id"] != expected:
        raise StoreError(f"{role} serves model {manifest['model_id']!r} ({directory}) but its peer serves "
                         f"{expected!r}: the roles must use the same trained model")
    return directory, manifest


def read_json(path: Path, missing: str) -> dict:
    """A JSON file of a store; a StoreError naming it when it is corrupt, or missing (`missing` says what that
    means)."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise StoreError(f"{path} is missing: {missing}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StoreError(f"{path} is corrupt: {exc}") from None


def read_manifest(directory: Path, role: str) -> dict:
    """The manifest of the model in `directory`, checked to be `role`'s and whole."""
    path = directory / MANIFEST
    manifest = read_json(path, "not a model store")
    if not isinstance(manifest, dict) or manifest.get("role") != role or manifest.get("model_id") != directory.name:
        raise StoreError(f"{path} is not {role}'s manifest of model {directory.name!r}")
    for name in manifest.get("files", []):
        if not (directory / name).is_file():
            raise StoreError(f"{directory / name} is missing from model {directory.name!r}")
    return manifest


def model_file(directory: Path, name: str) -> bytes:
    """One file of a stored model."""
    try:
        return (directory / name).read_bytes()
    except OSError as exc:
        raise StoreError(f"cannot read {directory / name}: {exc.strerror}") from None


def refresh_run_id(model_id: str) -> str:
    """The run ID of a refresh session of model `model_id` (each session is a fresh set of streams)."""
    return f"{model_id}/refresh"
