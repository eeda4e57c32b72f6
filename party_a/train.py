"""A's training driver. A decides every step; B and the coordinator follow.

Per epoch: the federated model trains batch by batch through the secure layer
(steps 1-7), A-alone trains on the same batches with u = 0, then B's contribution
u is computed for every shared user (steps 1-3 only, so B learns nothing about who
is evaluated) and both models are scored on the same held-out lists. The report
(JSON) holds all of it per epoch, plus item popularity as a floor.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from party_a.config import Training
from party_a.data import ActiveData
from party_a.evaluate import EvalSet, eval_set, metrics, model_scores, popularity_scores
from party_a.model import ActiveModel, active_step
from party_a.sampler import Batch, Sampler
from protocol.crypto import fixedpoint
from protocol.net.codec import encode
from protocol.crypto.packing import Packed
from protocol.crypto.paillier import Encryptor, PublicKey
from protocol.layer.steps import (COMMANDS, Side, a_refresh_weights, a_send_gradients, a_unmask_contribution,
                                   init_a_share_weights)
from protocol.runtime.timing import StepClock
from protocol.net.transport import Endpoint
from protocol.runtime.workers import WorkerPool

log = logging.getLogger(__name__)
B = "party_b"


def tensors(batch: Batch) -> tuple[torch.Tensor, ...]:
    return (torch.from_numpy(batch.users), torch.from_numpy(batch.items), torch.from_numpy(batch.labels),
            torch.from_numpy(batch.rows_user))


def secure_step(side: Side, label: str, batch: Batch, model: ActiveModel, optimizer: torch.optim.Optimizer,
                w_cols: Packed, clock: StepClock) -> tuple[float, Packed]:
    """One training step of the federated model through DESIGN.md steps 1-7, A's side."""
    plan = side.plan
    side.endpoint.send(B, COMMANDS, {"op": "step", "label": label, "users": batch.users})
    clock.lap("command")
    u = fixedpoint.decode(a_unmask_contribution(side, label), plan.e_bits + plan.w_bits)
    clock.lap("steps 1-3: [u] from B, masked, decrypted by C")
    users, items, labels, rows_user = tensors(batch)
    loss, delta = active_step(model, optimizer, users, items, labels, rows_user, torch.from_numpy(u).float())
    delta_q = fixedpoint.encode(delta.numpy() * plan.batch_users, plan.delta_bits, bound=plan.delta_max)
    clock.lap("top model forward and backward")
    a_send_gradients(side, label, w_cols, delta_q.astype(np.int64))
    clock.lap("step 4: [g] and [delta] to B")
    w_cols = a_refresh_weights(side, label)
    clock.lap("step 7: refresh of [W] (waits on B's steps 5-6)")
    return loss, w_cols


def forward_all(side: Side, label: str, n_users: int) -> np.ndarray:
    """u for every shared user (steps 1-3), in batches; used for evaluation."""
    plan = side.plan
    out = np.zeros((n_users, plan.h), dtype=np.float32)
    for k, start in enumerate(range(0, n_users, plan.batch_users)):
        users = np.arange(start, min(start + plan.batch_users, n_users))
        tag = f"{label}/b{k}"
        side.endpoint.send(B, COMMANDS, {"op": "forward", "label": tag, "users": users})
        out[users] = fixedpoint.decode(a_unmask_contribution(side, tag), plan.e_bits + plan.w_bits)
    return out


def train_alone_epoch(model: ActiveModel, optimizer: torch.optim.Optimizer, batches: list[Batch], h: int) -> float:
    losses = []
    for batch in batches:
        users, items, labels, rows_user = tensors(batch)
        loss, _ = active_step(model, optimizer, users, items, labels, rows_user, torch.zeros(len(batch.users), h))
        losses.append(loss)
    return float(np.mean(losses))


def _line(name: str, m: dict) -> str:
    o, c = m["overall"], m["cold"]
    cold = f"cold AUC {c['auc']:.4f}" if c["users"] else "no cold users"
    return f"{name}: AUC {o['auc']:.4f} HR@10 {o['hr']:.4f} NDCG@10 {o['ndcg']:.4f}, {cold}"


def run_training(endpoint: Endpoint, public: PublicKey, pool: WorkerPool, data: ActiveData, cfg: Training,
                 workdir: Path) -> dict:
    torch.set_num_threads(1)
    plan = cfg.plan()
    side = Side(endpoint, public, Encryptor(public, cfg.secure.encryption), pool, plan)
    log.info("%s", plan.describe(public))
    endpoint.send(B, COMMANDS, {"op": "init", "plan": plan.to_message()})
    w_cols = init_a_share_weights(side, "init")

    t = cfg.train
    federated, alone = ActiveModel(data, cfg.model), ActiveModel(data, cfg.model)
    opt_fed = torch.optim.Adam(federated.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    opt_alone = torch.optim.Adam(alone.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    sampler = Sampler(data, t.batch_users, t.positives, t.negatives, t.seed)
    ev: EvalSet = eval_set(data, cfg.eval.negatives, cfg.eval.cold_max_train, cfg.eval.seed)
    report: dict = {
        "shared_users": data.n_users, "items": data.n_items, "evaluated_users": int(ev.users.size),
        "cold_users": int(ev.cold.sum()), "plan": plan.to_message(), "key_bits": public.bits,
        "eval": {"k": cfg.eval.k, "negatives": cfg.eval.negatives, "cold_max_train": cfg.eval.cold_max_train},
        "popularity": metrics(popularity_scores(data, ev), ev.cold, cfg.eval.k), "epochs": [],
    }
    log.info("training on %d shared users, %d items; evaluating %d users (%d cold)", data.n_users, data.n_items,
             ev.users.size, ev.cold.sum())
    zeros = np.zeros((data.n_users, plan.h), dtype=np.float32)
    clock = StepClock(endpoint)
    secure_seconds, user_steps = 0.0, 0
    for epoch in range(1, t.epochs + 1):
        started = time.perf_counter()
        batches = sampler.epoch(epoch)
        losses = []
        bar = tqdm(batches, desc=f"epoch {epoch}/{t.epochs}", unit="batch", disable=not t.progress, leave=False)
        clock.restart()
        for b, batch in enumerate(bar):
            loss, w_cols = secure_step(side, f"e{epoch}/b{b}", batch, federated, opt_fed, w_cols, clock)
            losses.append(loss)
            bar.set_postfix(loss=f"{np.mean(losses):.4f}")
        secure_seconds += time.perf_counter() - started
        user_steps += data.n_users
        clock.restart()
        alone_loss = train_alone_epoch(alone, opt_alone, batches, plan.h)
        clock.lap("A alone: one epoch in plaintext")
        u_all = forward_all(side, f"eval/e{epoch}", data.n_users)
        clock.lap("evaluation: u for every shared user (steps 1-3)")
        entry = {"epoch": epoch, "seconds": round(time.perf_counter() - started, 2),
                 "loss": {"federated": float(np.mean(losses)), "a_alone": alone_loss},
                 "federated": metrics(model_scores(federated, ev, u_all), ev.cold, cfg.eval.k),
                 "a_alone": metrics(model_scores(alone, ev, zeros), ev.cold, cfg.eval.k)}
        report["epochs"].append(entry)
        log.info("epoch %d/%d (%.0fs): %s | %s", epoch, t.epochs, entry["seconds"],
                 _line("federated", entry["federated"]), _line("A alone", entry["a_alone"]))
    report["timing"] = {"secure_training_seconds": round(secure_seconds, 2), "user_steps": user_steps,
                        "user_steps_per_second": round(user_steps / secure_seconds, 2) if secure_seconds else None,
                        "phases": clock.summary()}
    save_model(workdir, federated, w_cols)
    return report


def save_model(workdir: Path, model: ActiveModel, w_cols: Packed) -> None:
    """A's trained state: its model (torch state dict, load with weights_only=True) and its [W] by columns."""
    out = workdir / "model"
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "active.pt")
    (out / "w_cols.msgpack").write_bytes(encode(w_cols.to_message()))
