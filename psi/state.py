"""What a party keeps from its last PSI, so that the next one can be a delta (psi/delta.py).

    <workdir>/psi/state/secret.sealed      the ECDH secret, the session salt and when the secret was drawn, sealed
                                           under the party's [tls] passphrase (scrypt, AES-256-GCM)
    <workdir>/psi/state/own_values.npy     the doubly-blinded values of this party's IDs (the peer's work), sorted
    <workdir>/psi/state/own_digests.npy    a 16-byte hash of each of those IDs (psi/ids.py), in the same order
    <workdir>/psi/state/peer_values.npy    the doubly-blinded values of the peer's IDs (this party's work), sorted
    <workdir>/psi/state/shared_values.npy  by position of the shared list: the value of every user ever shared
    <workdir>/psi/state/active.npy         by position: still shared
    <workdir>/psi/state/meta.json          the state ID, sizes, and a SHA-256 of every file above and of
                                           psi/shared.parquet; written last

The directory is 0700 and every file 0600, each replaced atomically; meta.json goes
last, so a party stopped half-way holds files that do not match it and is told its
state is incomplete (a full PSI then writes a new one). Own IDs are kept as hashes:
16 bytes each whatever their length, and no ID text at rest beyond shared.parquet.

The state ID is a hash of the salt, both parties' sets of doubly-blinded values and
the shared list (values and active flags by position): both parties hold the same
values, so each computes the same ID from its own files, and a delta runs only when
the two IDs are equal. A party that lost its state, ran a full PSI the other did not
finish, or drew a fresh secret holds another ID.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from protocol.errors import ConfigError, StateError
from protocol.keys.keyfiles import Passphrase, seal, unseal
from protocol.store.models import atomic_write, private_dir
from psi.ecdh import MATCH_BYTES
from psi.ids import DIGEST
from psi.shared import shared_path, write_shared

FORMAT = "vfrec-psi-state-v1"
VALUE = f"S{MATCH_BYTES}"
SECRET = "secret.sealed"
META = "meta.json"
ARRAYS = {"own_digests": DIGEST, "own_values": VALUE, "peer_values": VALUE, "shared_values": VALUE, "active": "bool"}
FILES = (SECRET, *(f"{name}.npy" for name in ARRAYS))


@dataclass(frozen=True)
class PsiState:
    """A party's half of what both keep from the last PSI, as fixed-width numpy arrays."""

    secret: bytes = field(repr=False)
    salt: bytes
    created: float  # Unix time the secret was drawn
    own_digests: np.ndarray  # DIGEST, aligned with own_values
    own_values: np.ndarray  # VALUE, sorted
    peer_values: np.ndarray  # VALUE, sorted
    shared_values: np.ndarray  # VALUE, by position
    active: np.ndarray  # bool, by position

    def age_days(self, now: float | None = None) -> float:
        """Days since the secret was drawn."""
        return ((time.time() if now is None else now) - self.created) / 86400

    def state_id(self, role: str, peer: str) -> bytes:
        """The ID both parties compute alike from their own halves (module doc)."""
        first, second = (self.own_values, self.peer_values) if role < peer else (self.peer_values, self.own_values)
        h = hashlib.sha256(FORMAT.encode() + self.salt)
        for values in (first, second, self.shared_values):
            h.update(len(values).to_bytes(8, "little"))
            h.update(np.ascontiguousarray(values).tobytes())
        h.update(np.packbits(self.active).tobytes())
        return h.digest()


def state_dir(workdir: Path) -> Path:
    """Where a party's PSI state is."""
    return workdir / "psi" / "state"


def _npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array, allow_pickle=False)
    return out.getvalue()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_state(workdir: Path, state: PsiState, state_id: bytes, shared: pd.DataFrame, passphrase: Passphrase,
               role: str, peer: str) -> None:
    """Write the state (whose `state_id` both parties confirmed) and the shared list `shared`."""
    directory = state_dir(workdir)
    private_dir(directory)
    sealed = seal(json.dumps({"format": FORMAT, "secret": state.secret.hex(), "salt": state.salt.hex(),
                              "created": state.created}).encode(), passphrase)
    files = {SECRET: sealed, **{f"{name}.npy": _npy(getattr(state, name)) for name in ARRAYS}}
    for name, data in files.items():
        atomic_write(directory / name, data)
    write_shared(workdir, shared)
    hashes = {name: _sha(data) for name, data in files.items()}
    hashes[shared_path(workdir).name] = _sha(shared_path(workdir).read_bytes())
    meta = {"format": FORMAT, "role": role, "peer": peer, "state_id": state_id.hex(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(state.created)),
            "own_ids": len(state.own_digests), "peer_ids": len(state.peer_values),
            "shared_ever": len(state.shared_values), "shared_active": int(state.active.sum()), "files": hashes}
    atomic_write(directory / META, json.dumps(meta, indent=2).encode())


def load_state(workdir: Path, passphrase: Passphrase, role: str, peer: str) -> tuple[PsiState, bytes]:
    """The party's state and its ID; a StateError saying why when there is none it can use."""
    directory = state_dir(workdir)
    meta_path = directory / META
    if not meta_path.is_file():
        raise StateError(f"{role} holds no PSI state ({meta_path} is missing: a full PSI writes it)")
    try:
        meta = json.loads(meta_path.read_text())
        hashes, state_id = meta["files"], bytes.fromhex(meta["state_id"])
        if meta["format"] != FORMAT or (meta["role"], meta["peer"]) != (role, peer):
            raise ValueError(f"format {meta['format']!r} of {meta['role']} with {meta['peer']}")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StateError(f"{role}'s PSI state {meta_path} is unreadable ({exc})") from None
    blobs = {}
    for path in (*(directory / name for name in FILES), shared_path(workdir)):
        try:
            blobs[path.name] = path.read_bytes()
        except OSError as exc:
            raise StateError(f"{role}'s PSI state is incomplete: {path}: {exc.strerror}") from None
        if _sha(blobs[path.name]) != hashes.get(path.name):
            raise StateError(f"{role}'s PSI state is incomplete or altered: {path} does not match {meta_path} (a PSI "
                             f"stopped half-way, or the file was edited)")
    try:
        kept = json.loads(unseal(blobs[SECRET], passphrase, directory / SECRET))
    except ConfigError as exc:
        raise StateError(f"{role}'s PSI state cannot be opened: {exc}") from None
    arrays = {name: np.load(io.BytesIO(blobs[f"{name}.npy"]), allow_pickle=False) for name in ARRAYS}
    state = PsiState(bytes.fromhex(kept["secret"]), bytes.fromhex(kept["salt"]), float(kept["created"]), **arrays)
    if any(arrays[name].dtype != np.dtype(kind) for name, kind in ARRAYS.items()) or \
            len(state.own_digests) != len(state.own_values) or len(state.shared_values) != len(state.active):
        raise StateError(f"{role}'s PSI state in {directory} has arrays of the wrong type or length")
    return state, state_id
