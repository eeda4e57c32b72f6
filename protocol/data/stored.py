"""The file formats of a stored model's parts, without pickle: torch state dicts and Parquet tables.

Each reader names the file when it is missing or corrupt (protocol/runtime/store.py
keeps the versions and manifests these files live in).
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import torch

from protocol.errors import StoreError
from protocol.runtime.store import model_file


def state_bytes(state: dict[str, torch.Tensor]) -> bytes:
    """A torch state dict as bytes (tensors only: it loads with weights_only=True)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def load_state(directory: Path, name: str) -> dict[str, torch.Tensor]:
    """A stored state dict, loaded with weights_only=True."""
    try:
        return torch.load(io.BytesIO(model_file(directory, name)), weights_only=True)
    except (RuntimeError, EOFError, ValueError) as exc:
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
