"""Secrets at rest: private files (mode 0600), passphrases, and sealing bytes under a passphrase.

A sealed file is JSON: scrypt's parameters and salt, an AES-256-GCM nonce and the
ciphertext with its tag. scrypt (2^15, 8, 1: 32 MiB and about 0.1 s per try) makes a
guessed passphrase expensive; GCM makes a wrong passphrase or an edited file fail
loudly instead of yielding a wrong key.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from protocol.errors import ConfigError

_FORMAT = "vfrec-sealed-v1"
_SCRYPT = {"n": 2**15, "r": 8, "p": 1}
_MAX_SCRYPT_N = 2**20  # a file asking for more would make loading it a memory bomb


@dataclass(frozen=True)
class Passphrase:
    """A passphrase and where it came from (a file or an environment variable); its value is never shown."""

    value: bytes = field(repr=False)
    source: str


def new_passphrase() -> str:
    """A random passphrase for development files (256 bits)."""
    return secrets.token_urlsafe(32)


def write_private(path: Path, data: bytes, exclusive: bool = False) -> None:
    """Write `data` to a file only its owner can read; with `exclusive`, never over an existing file."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def read_private(path: Path, what: str) -> bytes:
    """The bytes of a secret file, refused when group or others may read it."""
    try:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise ConfigError(f"{what} {path} is readable by others (mode {mode:o}); chmod 600 it")
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc.strerror}") from None


def read_passphrase_file(path: Path) -> Passphrase:
    """A passphrase file's first line (mode 0600 required)."""
    lines = read_private(path, "passphrase file").decode("utf-8", "replace").splitlines()
    value = lines[0].strip() if lines else ""
    if not value:
        raise ConfigError(f"passphrase file {path} is empty")
    return Passphrase(value.encode(), str(path))


def _kek(passphrase: Passphrase, salt: bytes, params: dict) -> bytes:
    return Scrypt(salt=salt, length=32, **params).derive(passphrase.value)


def seal(data: bytes, passphrase: Passphrase) -> bytes:
    """`data` encrypted under a key derived from the passphrase, as the JSON described above."""
    salt, nonce = os.urandom(16), os.urandom(12)
    sealed = AESGCM(_kek(passphrase, salt, _SCRYPT)).encrypt(nonce, data, _FORMAT.encode())
    return json.dumps({"format": _FORMAT, "scrypt": {**_SCRYPT, "salt": salt.hex()}, "nonce": nonce.hex(),
                       "ciphertext": sealed.hex()}).encode()


def unseal(blob: bytes, passphrase: Passphrase, path: Path) -> bytes:
    """The data sealed in file `path`; a wrong passphrase or an edited file is a ConfigError naming both."""
    try:
        doc = json.loads(blob)
        if doc["format"] != _FORMAT:
            raise ValueError(f"format {doc['format']!r}, expected {_FORMAT!r}")
        params = {k: int(doc["scrypt"][k]) for k in ("n", "r", "p")}
        if not 2 <= params["n"] <= _MAX_SCRYPT_N or not 1 <= params["r"] <= 32 or not 1 <= params["p"] <= 16:
            raise ValueError(f"scrypt parameters {params} out of range")
        salt, nonce = bytes.fromhex(doc["scrypt"]["salt"]), bytes.fromhex(doc["nonce"])
        sealed = bytes.fromhex(doc["ciphertext"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path} is not a sealed key file ({exc})") from None
    try:
        return AESGCM(_kek(passphrase, salt, params)).decrypt(nonce, sealed, _FORMAT.encode())
    except (InvalidTag, ValueError):
        raise ConfigError(f"{path} cannot be opened with the passphrase from {passphrase.source} "
                          f"(wrong passphrase, or the file was altered)") from None
