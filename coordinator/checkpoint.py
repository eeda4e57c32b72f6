"""The coordinator's checkpoint: what it keeps to serve each step's decryptions once (the ledger and the plan and
number of shared users both parties registered), the number of requests served and the decryption log's position.

Its key is not in it: the run's sealed key file stays where it is (coordinator/config.py), and a restarted
coordinator loads it again. Entries of the decryption log after the position belong to steps rolled back; they stay.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from coordinator.ledger import Ledger
from protocol.crypto.paillier import PublicKey
from protocol.errors import StoreError
from protocol.messages.plan import LayerPlan
from protocol.roles import C
from protocol.runtime.checkpoint import checkpoint_json, plan_digest, read_checkpoint, write_checkpoint

STATE = "coordinator.json"


@dataclass(frozen=True)
class Restored:
    ledger: Ledger
    served: int
    log_entries: int


def save(workdir: Path, run_id: str, step: int, keep: int, ledger: Ledger, served: int, log_entries: int) -> None:
    plan = ledger.plan.to_message()
    state = {"plan": plan, "shared_users": ledger.shared_users, "last_train": list(ledger.last[True]),
             "last_eval": list(ledger.last[False]), "served": served, "audit_entries": log_entries,
             "key_fingerprint": ledger.public.fingerprint}
    write_checkpoint(workdir, run_id, step, {"role": str(C), "plan": plan_digest(plan)},
                     {STATE: json.dumps(state).encode()}, keep)


def load(workdir: Path, run_id: str, step: int, public: PublicKey, generation: int) -> Restored:
    """The ledger of the checkpoint at `step`, in `generation`; the key must be the one it was made under."""
    directory, _ = read_checkpoint(workdir, run_id, step, str(C))
    state = checkpoint_json(directory, STATE)
    if state["key_fingerprint"] != public.fingerprint:
        raise StoreError(f"{directory} was made under key {state['key_fingerprint']}, but the run's key is "
                         f"{public.fingerprint}")
    plan = LayerPlan.from_message(state["plan"], str(directory / STATE))
    # No step is open at a resume: the step after the checkpoint is redone under a fresh label. (A proposes the
    # checkpoint when its part of a step is done, so B's check of that step may reach C after it.)
    ledger = Ledger(plan, state["shared_users"], public, None,
                    {True: tuple(state["last_train"]), False: tuple(state["last_eval"])}, generation)
    return Restored(ledger, state["served"], state["audit_entries"])
