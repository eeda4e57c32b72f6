"""The file formats of a stored model's parts, without pickle: torch states and Parquet tables.

A torch state (a model's or optimiser's state dict, an RNG state: dicts, lists,
tensors, numbers, strings) is written as a NumPy .npz: every tensor an array, the
structure around them JSON, read back with allow_pickle=False. torch.save would use
pickle underneath, even where torch.load with weights_only=True restricts it.

Each reader names the file when it is missing or corrupt (protocol/store/models.py
keeps the versions and manifests these files live in).
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from protocol.errors import StoreError
from protocol.store.models import model_file


SKELETON = "__structure__"


def state_bytes(state: dict[str, Any]) -> bytes:
    """A torch state as .npz bytes: each tensor an array, the rest a JSON structure that names them."""
    arrays: dict[str, np.ndarray] = {}

    def flat(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            arrays[f"t{len(arrays)}"] = x.detach().cpu().numpy()
            return {"tensor": f"t{len(arrays) - 1}"}
        if isinstance(x, dict):
            return {"dict": [[flat(k), flat(v)] for k, v in x.items()]}  # keys may be ints (optimiser states)
        if isinstance(x, (list, tuple)):
            return [flat(v) for v in x]
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        raise TypeError(f"a stored state holds only tensors, containers and plain values, not {type(x).__name__}")

    structure = json.dumps(flat(state)).encode()
    buffer = io.BytesIO()
    np.savez(buffer, **arrays, **{SKELETON: np.frombuffer(structure, dtype=np.uint8)})
    return buffer.getvalue()


def load_state(directory: Path, name: str) -> dict[str, Any]:
    """A stored torch state (`state_bytes`), read without pickle."""
    try:
        with np.load(io.BytesIO(model_file(directory, name)), allow_pickle=False) as stored:
            arrays = {key: stored[key] for key in stored.files}
        structure = json.loads(arrays.pop(SKELETON).tobytes())

        def build(x: Any) -> Any:
            if isinstance(x, list):
                return [build(v) for v in x]
            if isinstance(x, dict) and "tensor" in x:
                return torch.from_numpy(np.array(arrays[x["tensor"]]))
            if isinstance(x, dict):
                return {build(k): build(v) for k, v in x["dict"]}
            return x

        return build(structure)
    except (ValueError, KeyError, TypeError, OSError, zipfile.BadZipFile) as exc:
        raise StoreError(f"{directory / name} is corrupt: {exc}") from None


def frame_bytes(frame: pd.DataFrame) -> bytes:
    """A table as Parquet bytes."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def read_frame(directory: Path, name: str, columns: list[str]) -> pd.DataFrame:
    """A stored Parquet table, which must have exactly `columns`."""
    path = directory / name
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise StoreError(f"{path} is unreadable: {exc}") from None
    if list(frame.columns) != columns:
        raise StoreError(f"{path} has columns {list(frame.columns)}, expected {columns}")
    return frame
