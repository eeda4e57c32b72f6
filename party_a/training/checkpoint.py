"""A's checkpoint: both models and their optimisers, each model's epoch choice so far (with the state, u and [W] by
columns it keeps), the torch RNG, [W] by columns, where training is (the sampler is reproducible from its seed and the
epoch, so the epoch and the batches done are its state), and the report so far; with the plan and key of all of it.

train.py turns its objects into torch state dicts (`torch`), numpy arrays (`arrays`) and JSON (`info`) and back;
this module writes and reads them, without pickle.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from protocol.crypto.packing import Packed
from protocol.crypto.paillier import PublicKey
from protocol.data.stored import load_state, state_bytes
from protocol.errors import StoreError
from protocol.messages.plan import LayerPlan
from protocol.roles import A
from protocol.runtime.checkpoint import checkpoint_json, plan_digest, read_checkpoint, write_checkpoint
from protocol.store.models import model_file
from protocol.wire.codec import decode, encode

STATE = "state.json"
CHOSEN_W = "chosen_w_cols.msgpack"


@dataclass(frozen=True)
class Saved:
    """A's checkpoint as written: the plan and key, [W] by columns, and train.py's own parts."""

    plan: LayerPlan
    public: PublicKey
    w_cols: Packed
    torch: dict[str, dict]
    arrays: dict[str, np.ndarray]
    info: dict
    chosen_w_cols: Packed | None = None  # [W] by columns of the federated model's best epoch so far


def _array(a: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, a, allow_pickle=False)
    return buffer.getvalue()


def save(workdir: Path, run_id: str, step: int, keep: int, saved: Saved) -> None:
    plan = saved.plan.to_message()
    info = {"plan": plan, "n": str(saved.public.n), "fingerprint": saved.public.fingerprint,
            "torch": sorted(saved.torch), "arrays": sorted(saved.arrays), "train": saved.info,
            "chosen_w_cols": saved.chosen_w_cols is not None}
    files = {STATE: json.dumps(info).encode(), "w_cols.msgpack": encode(saved.w_cols.to_wire().to_message()),
             **{f"{name}.pt": state_bytes(state) for name, state in saved.torch.items()},
             **{f"{name}.npy": _array(a) for name, a in saved.arrays.items()}}
    if saved.chosen_w_cols is not None:
        files[CHOSEN_W] = encode(saved.chosen_w_cols.to_wire().to_message())
    write_checkpoint(workdir, run_id, step, {"role": str(A), "plan": plan_digest(plan)}, files, keep)


def _packed(directory: Path, name: str, public: PublicKey) -> Packed:
    return Packed.from_message(decode(model_file(directory, name)), public, str(directory / name))


def load(workdir: Path, run_id: str, step: int, pinned: str | None) -> Saved:
    """A's checkpoint at `step`; its key must match the [coordinator] pin, if any."""
    directory, _ = read_checkpoint(workdir, run_id, step, str(A))
    info = checkpoint_json(directory, STATE)
    public = PublicKey.announced(int(info["n"]), info["fingerprint"], pinned)
    w_cols = _packed(directory, "w_cols.msgpack", public)
    chosen = _packed(directory, CHOSEN_W, public) if info.get("chosen_w_cols") else None
    arrays = {}
    for name in info["arrays"]:
        try:
            arrays[name] = np.load(io.BytesIO(model_file(directory, f"{name}.npy")), allow_pickle=False)
        except ValueError as exc:
            raise StoreError(f"{directory / name}.npy is corrupt: {exc}") from None
    return Saved(LayerPlan.from_message(info["plan"], str(directory / STATE)), public, w_cols,
                 {name: load_state(directory, f"{name}.pt") for name in info["torch"]}, arrays, info["train"], chosen)
