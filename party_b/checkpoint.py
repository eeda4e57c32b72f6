"""B's checkpoint: tower B and its optimiser, [W] by rows, the torch RNG, the number of steps it took, the state it
keeps for the model to store (A's Keep), the releases per user of its noise on e_B when the defence is on (a floor
for the release ledger's counts, protocol/store/releases.py: the ledger, not the checkpoint, holds the released
rows and the generator, so that no restore rewinds them), and the plan and key all of it belongs to."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from protocol.crypto.packing import Packed
from protocol.crypto.paillier import PublicKey
from protocol.data.stored import load_state, state_bytes
from protocol.messages.plan import LayerPlan
from protocol.roles import B
from protocol.runtime.checkpoint import checkpoint_json, plan_digest, read_checkpoint, write_checkpoint
from protocol.store.models import model_file
from protocol.wire.codec import decode, encode

STATE = "state.json"
NOISE = "noise.json"


@dataclass(frozen=True)
class Kept:
    """B's state at the end of an epoch A chose (so far)."""

    epoch: int
    tower: dict[str, torch.Tensor]
    w_rows: Packed


@dataclass(frozen=True)
class State:
    """Everything B needs to go on from a step boundary."""

    plan: LayerPlan
    public: PublicKey
    tower: dict[str, torch.Tensor]
    optimizer: dict
    rng: torch.Tensor
    w_rows: Packed
    steps: int
    kept: Kept | None
    noise: dict | None = None  # the noise on e_B: releases per user (JSON), never more than the ledger holds


def _matrix(w: Packed) -> bytes:
    return encode(w.to_wire().to_message())


def save(workdir: Path, run_id: str, step: int, keep: int, state: State) -> None:
    plan = state.plan.to_message()
    info = {"plan": plan, "n": str(state.public.n), "fingerprint": state.public.fingerprint, "steps": state.steps,
            "kept_epoch": None if state.kept is None else state.kept.epoch}
    files = {STATE: json.dumps(info).encode(), "tower.pt": state_bytes(state.tower),
             "optimizer.pt": state_bytes(state.optimizer), "rng.pt": state_bytes({"torch": state.rng}),
             "w_rows.msgpack": _matrix(state.w_rows)}
    if state.noise is not None:
        files[NOISE] = json.dumps(state.noise).encode()
    if state.kept is not None:
        files |= {"kept_tower.pt": state_bytes(state.kept.tower), "kept_w_rows.msgpack": _matrix(state.kept.w_rows)}
    write_checkpoint(workdir, run_id, step, {"role": str(B), "plan": plan_digest(plan)}, files, keep)


def load(workdir: Path, run_id: str, step: int, pinned: str | None) -> State:
    """B's checkpoint at `step`; its key must match the [coordinator] pin, if any."""
    directory, _ = read_checkpoint(workdir, run_id, step, str(B))
    info = checkpoint_json(directory, STATE)
    public = PublicKey.announced(int(info["n"]), info["fingerprint"], pinned)

    def matrix(name: str) -> Packed:
        return Packed.from_message(decode(model_file(directory, name)), public, str(directory / name))

    kept = None
    if info["kept_epoch"] is not None:
        kept = Kept(info["kept_epoch"], load_state(directory, "kept_tower.pt"), matrix("kept_w_rows.msgpack"))
    return State(LayerPlan.from_message(info["plan"], str(directory / STATE)), public,
                 load_state(directory, "tower.pt"), load_state(directory, "optimizer.pt"),
                 load_state(directory, "rng.pt")["torch"], matrix("w_rows.msgpack"), info["steps"], kept,
                 checkpoint_json(directory, NOISE) if (directory / NOISE).exists() else None)
