"""A's training driver. A decides every step; B and the coordinator follow.

Per epoch: the federated model trains batch by batch through the secure layer
(protocol/layer/steps.py TRAINING_STEP), A-alone trains on the same batches with
u = 0, then B's contribution u is computed for every shared user (FORWARD_ONLY, so
B learns nothing about who is evaluated) and both models are scored on the same
held-out lists. The report (JSON) holds all of it per epoch, plus item popularity
as a floor.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from party_a.config import Training
from party_a.data import ActiveData
from party_a.evaluate import EvalSet, eval_set, metrics, model_scores, popularity_scores
from party_a.model import ActiveModel, active_step
from party_a.sampler import Batch, Sampler
from protocol import messages
from protocol.crypto import fixedpoint
from protocol.crypto.packing import Packed
from protocol.crypto.paillier import Encryptor, PublicKey
from protocol.layer import steps
from protocol.layer.decryption import Step, eval_label, register_layer, train_label
from protocol.layer.steps import FORWARD_ONLY, INIT, TRAINING_STEP, Side, Turn
from protocol.messages import Forward, Init, TrainStep
from protocol.net.codec import encode
from protocol.net.transport import Endpoint
from protocol.roles import B
from protocol.runtime.timing import StepClock
from protocol.runtime.workers import WorkerPool

log = logging.getLogger(__name__)


def tensors(batch: Batch) -> tuple[torch.Tensor, ...]:
    return (torch.from_numpy(batch.users), torch.from_numpy(batch.items), torch.from_numpy(batch.labels),
            torch.from_numpy(batch.rows_user))


@dataclass
class BatchTurn:
    """A's model for one secure step: learns from u on the batch and returns δ = ∂L/∂u."""

    model: ActiveModel
    optimizer: torch.optim.Optimizer
    batch: Batch
    loss: float = float("nan")

    def learn(self, u: np.ndarray) -> np.ndarray:
        users, items, labels, rows_user = tensors(self.batch)
        self.loss, delta = active_step(self.model, self.optimizer, users, items, labels, rows_user,
                                       torch.from_numpy(u).float())
        return delta.numpy()


def start_layer(endpoint: Endpoint, public: PublicKey, pool: WorkerPool, cfg: Training, shared_users: int) -> Side:
    """Send B the plan (for the coordinator's key A received), register it with the coordinator, and build
    [W0] from both parties' secret shares; returns A's side of the layer."""
    plan = dataclasses.replace(cfg.plan(), key_fingerprint=public.fingerprint)
    side = Side(endpoint, public, Encryptor(public, cfg.secure.encryption), pool, plan)
    log.info("%s", plan.describe(public))
    messages.send(endpoint, B, Init(plan))
    register_layer(endpoint, plan, shared_users)
    steps.run(INIT, side, Turn("init", np.empty(0, np.int64)))
    return side


def secure_step(side: Side, label: str, batch: Batch, model: ActiveModel, optimizer: torch.optim.Optimizer,
                clock: StepClock) -> float:
    """One training step of the federated model: B is told the users, then both run TRAINING_STEP."""
    messages.send(side.endpoint, B, TrainStep(label, batch.users))
    clock.lap("train: command to B")
    turn = BatchTurn(model, optimizer, batch)
    steps.run(TRAINING_STEP, side, Turn(label, batch.users, turn), clock)
    return turn.loss


def forward_all(side: Side, epoch: int, n_users: int, clock: StepClock) -> np.ndarray:
    """u for every shared user (steps 1-3), in batches; used for evaluation after `epoch`."""
    plan = side.plan
    out = np.zeros((n_users, plan.h), dtype=np.float32)
    for k, start in enumerate(range(0, n_users, plan.batch_users)):
        users = np.arange(start, min(start + plan.batch_users, n_users))
        label = eval_label(epoch, k)
        messages.send(side.endpoint, B, Forward(label, users))
        turn = steps.run(FORWARD_ONLY, side, Turn(label, users, decrypt_as=Step.EVALUATE), clock)
        out[users] = fixedpoint.decode(turn.u, plan.e_bits + plan.w_bits)
    return out


def train_alone_epoch(model: ActiveModel, optimizer: torch.optim.Optimizer, batches: list[Batch], h: int) -> float:
    losses = []
    for batch in batches:
        users, items, labels, rows_user = tensors(batch)
        loss, _ = active_step(model, optimizer, users, items, labels, rows_user, torch.zeros(len(batch.users), h))
        losses.append(loss)
    return float(np.mean(losses))


def _line(name: str, m: dict, k: int) -> str:
    o, c = m["overall"], m["cold"]
    cold = f"cold AUC {c['auc']:.4f}" if c["users"] else "no cold users"
    return f"{name}: AUC {o['auc']:.4f} HR@{k} {o['hr']:.4f} NDCG@{k} {o['ndcg']:.4f}, {cold}"


def new_report(data: ActiveData, ev: EvalSet, cfg: Training, side: Side) -> dict:
    """The report's header: sizes, plan, evaluation settings and the popularity floor."""
    return {
        "shared_users": data.n_users, "items": data.n_items, "evaluated_users": int(ev.users.size),
        "cold_users": int(ev.cold.sum()), "plan": side.plan.to_message(), "key_bits": side.public.bits,
        "eval": {"k": cfg.eval.k, "negatives": cfg.eval.negatives, "cold_max_train": cfg.eval.cold_max_train},
        "popularity": metrics(popularity_scores(data, ev), ev.cold, cfg.eval.k), "epochs": [],
    }


@dataclass
class Models:
    """The two models A trains side by side on the same batches: federated (with u) and A alone (u = 0)."""

    federated: ActiveModel
    alone: ActiveModel
    opt_federated: torch.optim.Optimizer
    opt_alone: torch.optim.Optimizer

    @classmethod
    def build(cls, data: ActiveData, cfg: Training) -> "Models":
        federated, alone = ActiveModel(data, cfg.model), ActiveModel(data, cfg.model)
        t = cfg.train
        return cls(federated, alone,
                   torch.optim.Adam(federated.parameters(), lr=t.lr, weight_decay=t.weight_decay),
                   torch.optim.Adam(alone.parameters(), lr=t.lr, weight_decay=t.weight_decay))


def train_federated_epoch(side: Side, models: Models, batches: list[Batch], epoch: int, cfg: Training,
                          clock: StepClock) -> float:
    """One epoch of the federated model through the secure layer; its mean loss."""
    losses = []
    bar = tqdm(batches, desc=f"epoch {epoch}/{cfg.train.epochs}", unit="batch", disable=not cfg.train.progress,
               leave=False)
    for b, batch in enumerate(bar):
        losses.append(secure_step(side, train_label(epoch, b), batch, models.federated, models.opt_federated,
                                  clock))
        bar.set_postfix(loss=f"{np.mean(losses):.4f}")
    return float(np.mean(losses))


def evaluate_epoch(side: Side, models: Models, data: ActiveData, ev: EvalSet, epoch: int, k: int,
                   clock: StepClock) -> dict:
    """Both models scored on the same held-out lists; u comes from B for every shared user."""
    u_all = forward_all(side, epoch, data.n_users, clock)
    zeros = np.zeros_like(u_all)
    return {"federated": metrics(model_scores(models.federated, ev, u_all), ev.cold, k),
            "a_alone": metrics(model_scores(models.alone, ev, zeros), ev.cold, k)}


def run_training(endpoint: Endpoint, public: PublicKey, pool: WorkerPool, data: ActiveData, cfg: Training,
                 workdir: Path) -> dict:
    """Train the federated model and A alone epoch by epoch, evaluate both after each, save A's state."""
    torch.set_num_threads(1)
    side = start_layer(endpoint, public, pool, cfg, data.n_users)
    models = Models.build(data, cfg)
    sampler = Sampler(data, cfg.train.batch_users, cfg.train.positives, cfg.train.negatives, cfg.train.seed)
    ev = eval_set(data, cfg.eval.negatives, cfg.eval.cold_max_train, cfg.eval.seed)
    report = new_report(data, ev, cfg, side)
    log.info("training on %d shared users, %d items; evaluating %d users (%d cold)", data.n_users, data.n_items,
             ev.users.size, ev.cold.sum())
    clock = StepClock(endpoint)
    secure_seconds = 0.0
    for epoch in range(1, cfg.train.epochs + 1):
        started = time.perf_counter()
        batches = sampler.epoch(epoch)
        clock.restart()
        loss = {"federated": train_federated_epoch(side, models, batches, epoch, cfg, clock)}
        secure_seconds += time.perf_counter() - started
        clock.restart()
        loss["a_alone"] = train_alone_epoch(models.alone, models.opt_alone, batches, side.plan.h)
        clock.lap("A alone: one epoch in plaintext")
        entry = {"epoch": epoch, "loss": loss, **evaluate_epoch(side, models, data, ev, epoch, cfg.eval.k, clock)}
        entry["seconds"] = round(time.perf_counter() - started, 2)
        report["epochs"].append(entry)
        log.info("epoch %d/%d (%.0fs): %s | %s", epoch, cfg.train.epochs, entry["seconds"],
                 _line("federated", entry["federated"], cfg.eval.k), _line("A alone", entry["a_alone"], cfg.eval.k))
    user_steps = data.n_users * cfg.train.epochs
    report["timing"] = {"secure_training_seconds": round(secure_seconds, 2), "user_steps": user_steps,
                        "user_steps_per_second": round(user_steps / secure_seconds, 2) if secure_seconds else None,
                        "phases": clock.summary()}
    save_model(workdir, models.federated, side.w)
    return report


def save_model(workdir: Path, model: ActiveModel, w_cols: Packed) -> None:
    """A's trained state: its model (torch state dict, load with weights_only=True) and its [W] by columns."""
    out = workdir / "model"
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "active.pt")
    (out / "w_cols.msgpack").write_bytes(encode(w_cols.to_wire().to_message()))
