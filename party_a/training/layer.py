"""A's side of the secure layer: its plan sent and registered, [W0] received, one training step and the
evaluation forward, with A's model learning from u between steps 3 and 4 (docs/design.md, "The secure
interactive layer").
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np
import torch

from party_a.config import Training
from party_a.models.model import ActiveModel, active_step
from party_a.data.sampler import Batch
from protocol import messages
from protocol import observe
from protocol.compute.workers import WorkerPool
from protocol.crypto import fixedpoint
from protocol.crypto.packing import Packed
from protocol.crypto.paillier import Encryptor, PublicKey
from protocol.layer import steps
from protocol.layer.decryption import Step, eval_label, register_layer
from protocol.layer.defence import Defence
from protocol.layer.steps import FORWARD_ONLY, INIT, TRAINING_STEP, Side, ATurn
from protocol.layer.timing import StepClock
from protocol.messages.commands import Forward, Init, TrainStep
from protocol.net.transport import Endpoint
from protocol.privacy import release_key
from protocol.roles import B

log = logging.getLogger(__name__)


@dataclass
class BatchTurn:
    """A's model for one secure step: learns from u on the batch and returns δ = ∂L/∂u (through the
    defence, when it is on)."""

    model: ActiveModel
    optimizer: torch.optim.Optimizer
    batch: Batch
    defence: Defence = Defence()
    epoch: int = 0
    step: int = 0
    loss: float = float("nan")
    key: str | None = None  # the step's release key: a redone step re-sends the δ rows released for it

    def learn(self, u: np.ndarray) -> np.ndarray:
        if self.defence.received is not None:
            self.defence.received.add("u_train", self.epoch, self.step, self.batch.users, u)
        self.loss, delta = active_step(self.model, self.optimizer, self.batch, torch.from_numpy(u).float())
        if self.defence.noise is not None:
            return self.defence.noise(self.batch.users, delta.numpy(), self.key)
        return delta.numpy()


def start_layer(endpoint: Endpoint, public: PublicKey, pool: WorkerPool, cfg: Training, shared_users: int,
                w: Packed | None = None) -> Side:
    """Send B the plan (for the coordinator's key A received), register it with the coordinator, and receive [W0]
    by columns from it; or, for a warm start, take the stored model's [W] by columns `w` (B takes its rows).
    Returns A's side of the layer."""
    plan = dataclasses.replace(cfg.plan(), key_fingerprint=public.fingerprint)
    side = Side(endpoint, public, Encryptor(public, cfg.secure.encryption), pool, plan, w)
    log.info("%s", plan.describe(public))
    messages.send(endpoint, B, Init(plan))
    register_layer(endpoint, plan, shared_users, init=w is None)
    if w is None:
        steps.walk(INIT, side, ATurn("init", np.empty(0, np.int64)))
    return side


def secure_step(side: Side, label: str, batch: Batch, model: ActiveModel, optimizer: torch.optim.Optimizer,
                clock: StepClock, defence: Defence = Defence(), epoch: int = 0, step: int = 0) -> float:
    """One training step of the federated model: B is told the users, then both run TRAINING_STEP."""
    messages.send(side.endpoint, B, TrainStep(label, batch.users))
    clock.lap("train: command to B")
    observe.at(epoch, step)
    turn = BatchTurn(model, optimizer, batch, defence, epoch, step, key=release_key(label))
    steps.walk(TRAINING_STEP, side, ATurn(label, batch.users, turn), clock)
    observe.secure_step(len(batch.users))
    return turn.loss


def forward_all(side: Side, epoch: int, n_users: int, clock: StepClock, generation: int = 0) -> np.ndarray:
    """u for every shared user (steps 1-3), in batches; used for evaluation after `epoch`."""
    plan = side.plan
    out = np.zeros((n_users, plan.h), dtype=np.float32)
    for k, start in enumerate(range(0, n_users, plan.batch_users)):
        users = np.arange(start, min(start + plan.batch_users, n_users))
        label = eval_label(epoch, k, generation)
        messages.send(side.endpoint, B, Forward(label, users))
        turn = steps.walk(FORWARD_ONLY, side, ATurn(label, users, decrypt_as=Step.EVALUATE), clock)
        out[users] = fixedpoint.decode(turn.u, plan.e_bits + plan.w_bits)
    return out
