"""A's training driver. A decides every step; B and the coordinator follow.

Before training A fits its single-party baselines (popularity, item-kNN, EASE with
λ chosen on validation) on its own events and scores them on the validation and
test lists. Per epoch: the federated model trains batch by batch through the
secure layer (protocol/layer/steps.py TRAINING_STEP), A alone trains on the same
batches with u = 0, then B's contribution u is computed for every shared user
(FORWARD_ONLY, so B learns nothing about who is evaluated) and both models are
scored on the validation lists. Each model's epoch is chosen by early stopping on
validation NDCG@k (party_a/selection.py); the test lists are scored for an epoch
only while it is that model's best so far, so only the chosen epoch's test metrics
are ever reported. The report (JSON) holds all of it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from party_a.config import Training
from party_a.data import ActiveData
from party_a.baselines import Baseline, chosen_ease_lambda, fit_baselines
from party_a.evaluate import SPLITS, EvalSet, eval_set, metrics, model_scores
from party_a.model import ActiveModel, active_step
from party_a.sampler import Batch, Sampler
from party_a.selection import EarlyStopping
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


@dataclass
class BatchTurn:
    """A's model for one secure step: learns from u on the batch and returns δ = ∂L/∂u."""

    model: ActiveModel
    optimizer: torch.optim.Optimizer
    batch: Batch
    loss: float = float("nan")

    def learn(self, u: np.ndarray) -> np.ndarray:
        self.loss, delta = active_step(self.model, self.optimizer, self.batch, torch.from_numpy(u).float())
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
        loss, _ = active_step(model, optimizer, batch, torch.zeros(len(batch.users), h))
        losses.append(loss)
    return float(np.mean(losses))


def _line(name: str, m: dict, k: int) -> str:
    o, c = m["overall"], m["cold"]
    cold = f"cold AUC {c['auc']:.4f}" if c["users"] else "no cold users"
    return f"{name}: AUC {o['auc']:.4f} HR@{k} {o['hr']:.4f} NDCG@{k} {o['ndcg']:.4f}, {cold}"


def new_report(data: ActiveData, lists: dict[str, EvalSet], baselines: list[Baseline], cfg: Training,
               side: Side) -> dict:
    """The report's header: sizes, plan, evaluation settings and A's single-party baselines."""
    k = cfg.eval.k
    valid, test = lists["valid"], lists["test"]
    return {
        "shared_users": data.n_users, "items": data.n_items, "evaluated_users": int(test.users.size),
        "cold_users": int(test.cold.sum()), "validation_users": int(valid.users.size),
        "plan": side.plan.to_message(), "key_bits": side.public.bits,
        "eval": {"k": k, "negatives": cfg.eval.negatives, "cold_max_train": cfg.eval.cold_max_train},
        "baselines": {b.name: {"setting": b.setting, "chosen": b.chosen,
                               "valid": metrics(b.scores(valid), valid.cold, k),
                               "test": metrics(b.scores(test), test.cold, k)} for b in baselines},
        "epochs": [],
    }


@dataclass
class Models:
    """The two models A trains side by side on the same batches: federated (with u) and A alone (u = 0),
    each with its own epoch choice."""

    federated: ActiveModel
    alone: ActiveModel
    opt_federated: torch.optim.Optimizer
    opt_alone: torch.optim.Optimizer
    chosen: dict[str, "Selected"]

    @classmethod
    def build(cls, data: ActiveData, cfg: Training, ease_lambda: float, test: EvalSet) -> "Models":
        federated, alone = ActiveModel(data, cfg.model, ease_lambda), ActiveModel(data, cfg.model, ease_lambda)
        t = cfg.train
        chosen = {name: Selected(t.patience, cfg.eval.k, test) for name in ("federated", "a_alone")}
        return cls(federated, alone,
                   torch.optim.Adam(federated.parameters(), lr=t.lr, weight_decay=t.weight_decay),
                   torch.optim.Adam(alone.parameters(), lr=t.lr, weight_decay=t.weight_decay), chosen)


class Selected:
    """One model's epoch choice: early stopping on validation, test scored while an epoch is the best so far."""

    def __init__(self, patience: int, k: int, test: EvalSet):
        self.stopper = EarlyStopping(patience, metric=f"validation NDCG@{k}")
        self.k, self.test_set, self.test = k, test, None

    def update(self, valid: dict, score_test: Callable[[], np.ndarray]) -> None:
        """Record an epoch's validation metrics; score the test lists if it is the best epoch so far."""
        if self.stopper.update(valid["overall"]["ndcg"]):
            self.test = metrics(score_test(), self.test_set.cold, self.k)

    def summary(self) -> dict:
        choice = self.stopper.choice()
        return {"epoch": choice.epoch, "reason": choice.reason, "test": self.test}


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


def evaluate_epoch(side: Side, models: Models, data: ActiveData, lists: dict[str, EvalSet], entry: dict, k: int,
                   clock: StepClock) -> None:
    """Score both models on the validation lists (u from B for every shared user) into `entry`, and offer the
    scores to each model's epoch choice; A alone only while it is still training."""
    valid = lists["valid"]
    u_all = forward_all(side, entry["epoch"], data.n_users, clock)
    zeros = np.zeros_like(u_all)
    entry["federated"] = metrics(model_scores(models.federated, valid, u_all), valid.cold, k)
    models.chosen["federated"].update(entry["federated"],
                                      lambda: model_scores(models.federated, lists["test"], u_all))
    if "a_alone" in entry["loss"]:
        entry["a_alone"] = metrics(model_scores(models.alone, valid, zeros), valid.cold, k)
        models.chosen["a_alone"].update(entry["a_alone"], lambda: model_scores(models.alone, lists["test"], zeros))


def run_training(endpoint: Endpoint, public: PublicKey, pool: WorkerPool, data: ActiveData, cfg: Training,
                 workdir: Path) -> dict:
    """Train the federated model and A alone epoch by epoch, choose each one's epoch on validation, report the
    chosen epochs' test metrics next to A's baselines, save A's state."""
    torch.set_num_threads(1)
    side = start_layer(endpoint, public, pool, cfg, data.n_users)
    e = cfg.eval
    lists = {split: eval_set(data, split, e.negatives, e.cold_max_train, e.seed) for split in SPLITS}
    baselines = fit_baselines(data, lists["valid"], e.k)
    models = Models.build(data, cfg, chosen_ease_lambda(baselines), lists["test"])
    sampler = Sampler(data, cfg.train.batch_users, cfg.model.history, cfg.train.targets, cfg.train.seed)
    report = new_report(data, lists, baselines, cfg, side)
    for b in baselines:
        log.info("%s (%s): %s", b.name, b.setting, _line("test", report["baselines"][b.name]["test"], e.k))
    log.info("training on %d shared users, %d items; validating on %d users, testing %d users (%d cold)",
             data.n_users, data.n_items, lists["valid"].users.size, lists["test"].users.size,
             lists["test"].cold.sum())
    clock = StepClock(endpoint)
    secure_seconds, user_steps = 0.0, 0
    for epoch in range(1, cfg.train.epochs + 1):
        started = time.perf_counter()
        batches = sampler.epoch(epoch)
        clock.restart()
        entry: dict = {"epoch": epoch, "loss": {"federated": train_federated_epoch(side, models, batches, epoch,
                                                                                   cfg, clock)}}
        secure_seconds += time.perf_counter() - started
        user_steps += data.n_users
        clock.restart()
        if not models.chosen["a_alone"].stopper.should_stop():
            entry["loss"]["a_alone"] = train_alone_epoch(models.alone, models.opt_alone, batches, side.plan.h)
            clock.lap("A alone: one epoch in plaintext")
        evaluate_epoch(side, models, data, lists, entry, e.k, clock)
        entry["seconds"] = round(time.perf_counter() - started, 2)
        report["epochs"].append(entry)
        alone = _line("A alone", entry["a_alone"], e.k) if "a_alone" in entry else "A alone stopped"
        log.info("epoch %d/%d (%.0fs), validation: %s | %s", epoch, cfg.train.epochs, entry["seconds"],
                 _line("federated", entry["federated"], e.k), alone)
        if models.chosen["federated"].stopper.should_stop():
            break
    report["chosen"] = {name: c.summary() for name, c in models.chosen.items()}
    for name, c in report["chosen"].items():
        log.info("%s: %s; %s", name, c["reason"], _line("test", c["test"], e.k))
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
