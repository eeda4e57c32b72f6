"""A's model store: the chosen epochs of both models, the item index and the u store.

    federated.pt   the federated model's state at its chosen epoch (a torch state as .npz, protocol/data/stored.py)
    alone.pt       A alone's state at its chosen epoch, for A's users outside the intersection
    items.parquet  item IDs in the models' order
    u.parquet      the u store: per shared user, A's user ID and B's contribution u (h columns) and when
                   it was written; replaced whole (atomically) by each refresh
    item_knn.pt    item-kNN's item-item weights, when an activity segment is served by item-kNN (the
                   manifest's "segments": each segment's choice on validation)
    w_cols.msgpack [W] by columns of the federated model's chosen epoch, under the coordinator's key of the run:
                   where a warm start begins (party_a/training/warm.py)

The u store starts as the u of the federated model's chosen epoch, which A computed
for every shared user to validate that epoch.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from party_a.config import ModelSettings
from protocol.crypto.packing import Packed
from protocol.data.stored import frame_bytes, read_frame, state_bytes
from protocol.data.tables import Encoding
from protocol.errors import StoreError
from protocol.roles import A
from protocol.runtime.registry import epsilon_text, figure, table_rows
from protocol.store.models import atomic_write, write_model
from protocol.wire.codec import encode

U_STORE = "u.parquet"
W_COLS = "w_cols.msgpack"
ITEM_KNN = "item_knn.pt"


def u_frame(user_ids: list[str], u: np.ndarray, written: np.ndarray | None = None) -> pd.DataFrame:
    """The u store's table; `written` per user (seconds since the epoch), now when None."""
    frame = pd.DataFrame(u.astype(np.float32), columns=[f"u{j}" for j in range(u.shape[1])])
    frame.insert(0, "user_id", user_ids)
    frame["written"] = np.full(len(user_ids), time.time()) if written is None else written
    return frame


def save_active_model(workdir: Path, model_id: str, manifest: dict, states: dict[str, dict], items: list[str],
                      shared_ids: list[str], u: np.ndarray, item_knn: np.ndarray | None = None,
                      w_cols: Packed | None = None, current: bool = True) -> Path:
    """Write A's model version `model_id` and (`current`) make it the one in service; `item_knn`: its weights,
    when a segment is served by it; `w_cols`: [W] by columns (training stores it; a warm start needs it)."""
    files = {"federated.pt": state_bytes(states["federated"]), "alone.pt": state_bytes(states["a_alone"]),
             "items.parquet": frame_bytes(pd.DataFrame({"item_id": items})),
             U_STORE: frame_bytes(u_frame(shared_ids, u))}
    if w_cols is not None:
        files[W_COLS] = encode(w_cols.to_wire().to_message())
    if item_knn is not None:
        files[ITEM_KNN] = state_bytes({"weights": torch.from_numpy(item_knn.astype(np.float32))})
    return write_model(workdir, model_id, {**manifest, "role": str(A), "files": list(files)}, files, current)


def read_u_store(directory: Path, h: int) -> pd.DataFrame:
    """The u store, checked: one row per shared user, h finite columns."""
    wanted = ["user_id", *(f"u{j}" for j in range(h)), "written"]
    frame = read_frame(directory, U_STORE, wanted)
    if frame["user_id"].duplicated().any() or not np.isfinite(frame[wanted[1:-1]].to_numpy()).all():
        raise StoreError(f"{directory / U_STORE} repeats a user or holds a value that is not finite")
    return frame


def write_u_store(directory: Path, frame: pd.DataFrame) -> None:
    """Replace the u store whole; a reader sees the old one or the new one."""
    atomic_write(directory / U_STORE, frame_bytes(frame))


def stored_encodings(manifest: dict) -> dict[str, Encoding] | None:
    """How the model's user ("users") and item ("items") columns were encoded at training, so A's tables are
    encoded as the model learnt them; None for a model stored before A kept its encodings."""
    stored = manifest.get("encodings")
    return None if stored is None else {name: Encoding.from_json(data) for name, data in stored.items()}


def model_settings(manifest: dict) -> ModelSettings:
    """The model settings the stored model was built with."""
    stored = dict(manifest["model_settings"])
    stored["tower_hidden"] = tuple(stored["tower_hidden"])
    return dataclasses.replace(ModelSettings(), **stored)


def model_facts(directory: Path, manifest: dict) -> dict[str, str]:
    """`models list`'s columns for one of A's models: shared users (the u store's rows, users who joined since
    included), items, the federated model's chosen epoch, the served model's validation and test HR and NDCG at k
    (each segment by its choice; "-" for a model stored before manifests kept them) and ε of the noise on δ."""
    metrics = manifest.get("metrics", {})
    k = metrics.get("k", "k")
    facts = {"shared users": table_rows(directory / U_STORE), "items": str(manifest.get("items", "-")),
             "epoch": str(manifest.get("epochs", {}).get("federated", "-"))}
    for split in ("valid", "test"):
        overall = metrics.get(split, {}).get("overall", {})
        facts[f"{split} HR@{k}"] = figure(overall.get("hr"))
        facts[f"{split} NDCG@{k}"] = figure(overall.get("ndcg"))
    facts["ε"] = epsilon_text(manifest.get("privacy"))
    return facts
