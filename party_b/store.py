"""B's model store: its tower and [W] at the federated model's chosen epoch, and the shared users.

    tower_b.pt       tower B's state (a torch state in .npz, protocol/data/stored.py: no pickle)
    w_rows.msgpack   [W] by rows, under the coordinator's key of the run
    users.parquet    B's ID of each shared user in the aligned order, a digest of the user's encoded row as of
                     the last time u was computed from it (training or the last refresh), and how many times
                     the user's e_B row has been released so far (for its ε; 0 without noise); replaced whole

The manifest keeps the encoding of B's columns fitted at training, so a refresh
encodes a changed row exactly as the tower learnt it, and the noise on e_B it was
trained with ("privacy"), so a refresh releases rows as training did.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from protocol.crypto.packing import Packed
from protocol.crypto.paillier import PublicKey
from protocol.data.stored import frame_bytes, read_frame, state_bytes
from protocol.data.tables import Features
from protocol.errors import ProtocolError, StoreError
from protocol.privacy import RowPrivacy, spent
from protocol.roles import B
from protocol.runtime.registry import epsilon_text, table_rows
from protocol.store.models import atomic_write, model_file, write_model
from protocol.wire.codec import decode, encode

FILES = ("tower_b.pt", "w_rows.msgpack", "users.parquet")
USERS = "users.parquet"


def row_digests(features: Features) -> list[str]:
    """Per row, a digest of its encoded values: equal digests, equal e_B."""
    return [hashlib.sha256(n.tobytes() + c.tobytes()).hexdigest()[:32]
            for n, c in zip(features.numeric, features.categorical)]


def users_bytes(user_ids: list[str], digests: list[str], releases: np.ndarray) -> bytes:
    return frame_bytes(pd.DataFrame({"user_id": user_ids, "digest": digests,
                                     "releases": np.asarray(releases, dtype=np.int64)}))


def save_passive_model(workdir: Path, model_id: str, manifest: dict, tower_state: dict, w_rows: Packed,
                       user_ids: list[str], features: Features, releases: np.ndarray, current: bool = True) -> Path:
    """Write B's model version `model_id` and (`current`) make it the one in service."""
    files = {"tower_b.pt": state_bytes(tower_state), "w_rows.msgpack": encode(w_rows.to_wire().to_message()),
             USERS: users_bytes(user_ids, row_digests(features), releases)}
    return write_model(workdir, model_id, {**manifest, "role": str(B), "files": list(FILES)}, files, current)


def load_w_rows(directory: Path, public: PublicKey) -> Packed:
    path = directory / "w_rows.msgpack"
    try:
        return Packed.from_message(decode(model_file(directory, "w_rows.msgpack")), public, str(path))
    except (ValueError, ProtocolError) as exc:
        raise StoreError(f"{path} is corrupt: {exc}") from None


def read_users(directory: Path) -> pd.DataFrame:
    frame = read_frame(directory, USERS, ["user_id", "digest", "releases"])
    if frame["user_id"].duplicated().any():
        raise StoreError(f"{directory / USERS} repeats a user")
    return frame


def write_users(directory: Path, user_ids: list[str], digests: list[str], releases: np.ndarray) -> None:
    atomic_write(directory / USERS, users_bytes(user_ids, digests, releases))


def model_facts(directory: Path, manifest: dict) -> dict[str, str]:
    """`models list`'s columns for one of B's models: shared users (users who joined since included), the chosen
    epoch, and ε its releases of e_B have spent so far, refreshes included (the most released user's)."""
    privacy = None
    if "privacy" in manifest:
        releases = pd.read_parquet(directory / USERS, columns=["releases"])["releases"]
        privacy = spent(RowPrivacy(**manifest["privacy"]), int(releases.max()) if len(releases) else 0)
    return {"shared users": table_rows(directory / USERS), "epoch": str(manifest.get("epoch", "-")),
            "ε": epsilon_text(privacy)}
