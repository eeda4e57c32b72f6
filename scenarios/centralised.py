"""The centralised baseline: the federated model's architecture on the joined plaintext tables.

Same model for A, same tower B, the interactive layer with W in the clear, the same
batches, seeds and optimisers (Adam for the towers, SGD for W) as the secure run,
the same evaluation lists and the same epoch choice (early stopping on validation).
Only an experiment can run this, since it needs both parties' tables in one place.
The interactive layer is pluggable, so a test can put the secure layer's integer
arithmetic in its place. A alone is trained first, as the secure run's A does
(party_a/training/alone.py), and the federated model starts from it.
`DefendedLayer` wraps a layer with the parties' defences ([privacy]) and records
what each would receive ([audit] record), as a secure run does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from party_a import config as party_a_config
from party_a.config import Training
from party_a.data.tables import ActiveData, align, load_tables
from party_a.training.alone import Alone, train_alone
from party_a.models.baselines import chosen_ease_lambda, fit_baselines
from party_a.models.evaluate import EvalSet, evaluation_lists, metrics, per_user
from party_a.models.model import ActiveModel, active_step, federated_start, model_scores
from party_a.data.sampler import Batch, Sampler
from party_a.models.selection import Choice, EarlyStopping
from party_b import config as party_b_config
from party_b.config import TowerSettings
from party_b.tower import TowerB, passive_step
from protocol.data.tables import Features, encode_features
from protocol.layer.received import Received
from protocol.privacy import RowNoise
from psi.align import read_aligned_rows


class Layer(Protocol):
    def forward(self, e_b: np.ndarray) -> np.ndarray: ...

    def backward(self, e_b: np.ndarray, delta: np.ndarray) -> np.ndarray: ...


@dataclass
class PlainLayer:
    """u = e_B·W; backward returns g = δ·Wᵀ and takes an SGD step on W."""

    w: np.ndarray
    lr_w: float

    def forward(self, e_b: np.ndarray) -> np.ndarray:
        return e_b @ self.w

    def backward(self, e_b: np.ndarray, delta: np.ndarray) -> np.ndarray:
        g = delta @ self.w.T
        self.w = self.w - self.lr_w * (e_b.T @ delta)
        return g


class DefendedLayer:
    """Another layer with the secure run's defences and records, in the clear.

    e_B goes through B's noise before the inner layer sees it (evaluation sends each user's row released
    at its training step again, as B does), and the inner layer's W learns from that noisy e_B (step 6 uses
    the row step 1 encoded); δ goes through A's noise after A's model took its step. Noise is drawn in the
    secure run's order, so the same seeds give the same noise. The users of each call are the sampler's
    batches replayed (evaluation: every shared user at once), so `received_a` gets u per training step
    ("u_train") and evaluation ("u_eval"), `received_b` g ("g")."""

    def __init__(self, inner: Layer, sampler: Sampler, delta_noise: RowNoise | None = None,
                 e_noise: RowNoise | None = None, received_a: Received | None = None,
                 received_b: Received | None = None):
        if sampler.data.n_users <= sampler.batch_users:
            raise ValueError("DefendedLayer tells evaluation from training by size: it needs more shared users "
                             f"({sampler.data.n_users}) than a batch ({sampler.batch_users})")
        self.inner, self.sampler, self.delta_noise, self.e_noise = inner, sampler, delta_noise, e_noise
        self.received_a, self.received_b = received_a, received_b
        self.epoch, self.batches, self.done, self.steps = 0, [], 0, 0
        self.e_seen: np.ndarray | None = None

    def _batch(self) -> Batch:
        if self.done == len(self.batches):
            self.epoch, self.done = self.epoch + 1, 0
            self.batches = list(self.sampler.epoch(self.epoch))
        return self.batches[self.done]

    def forward(self, e_b: np.ndarray) -> np.ndarray:
        evaluation = e_b.shape[0] == self.sampler.data.n_users
        users = np.arange(e_b.shape[0]) if evaluation else self._batch().users
        released = self.e_noise.again(users) if self.e_noise is not None and evaluation else None
        self.e_seen = e_b if self.e_noise is None else released if released is not None else self.e_noise(users, e_b)
        u = self.inner.forward(self.e_seen)
        if self.received_a is not None:
            self.received_a.add("u_eval" if evaluation else "u_train", self.epoch, 0 if evaluation else self.steps,
                                users, u)
        if evaluation:
            self.done = len(self.batches)
        return u

    def backward(self, e_b: np.ndarray, delta: np.ndarray) -> np.ndarray:
        users = self._batch().users
        if self.delta_noise is not None:
            delta = self.delta_noise(users, delta)
        g = self.inner.backward(self.e_seen, delta)
        if self.received_b is not None:
            self.received_b.add("g", self.epoch, self.steps, users, g)
        self.done, self.steps = self.done + 1, self.steps + 1
        return g


@dataclass
class Trained:
    model: ActiveModel
    tower: TowerB
    layer: Layer
    alone: Alone  # A alone at its chosen epoch: the federated model's start
    report: list[dict]  # per epoch: loss and validation metrics
    choice: Choice | None = None  # the epoch chosen on validation
    test: dict | None = None  # test metrics of the chosen epoch


def train(data: ActiveData, b_features: Features, training: Training, tower: TowerSettings, layer: Layer,
          max_steps: int | None = None, evaluate: bool = True, ease_lambda: float | None = None) -> Trained:
    """Train like the secure run, batch for batch: A alone first, then the federated model from it, its start
    offered as epoch 0, choosing the epoch on validation (early stopping).

    `max_steps` stops the federated model early (for exactness checks); `ease_lambda` is EASE's λ, chosen on
    validation here as in the secure run when not given."""
    torch.set_num_threads(1)
    t, e = training.train, training.eval
    lists = evaluation_lists(data, training)
    valid, test = lists["valid"], lists["test"]
    if ease_lambda is None:
        ease_lambda = chosen_ease_lambda(fit_baselines(data, valid, e.k))
    alone = train_alone(data, training, valid, test, ease_lambda)
    model = federated_start(alone.model)
    optimizer = torch.optim.Adam(model.partner_parameters(), lr=t.lr, weight_decay=t.weight_decay)
    with torch.random.fork_rng():  # B's tower is drawn in B's process: A's generator goes on untouched
        torch.manual_seed(tower.seed)
        tower_b = TowerB(b_features, training.model.d, list(tower.hidden), tower.feature_dim)
    optimizer_b = torch.optim.Adam(tower_b.parameters(), lr=tower.lr)
    sampler = Sampler(data, t.batch_users, training.model.history, t.targets, t.seed)
    stopper = EarlyStopping(t.patience, metric=f"validation NDCG@{e.k}", first=0)
    trained, steps = Trained(model, tower_b, layer, alone, []), 0
    if evaluate:
        stopper.update(alone.valid_ndcg)
        trained.test = alone.test
    for epoch in range(1, t.epochs + 1):
        losses = []
        for batch in sampler.epoch(epoch):
            if max_steps is not None and steps >= max_steps:
                return trained
            users = torch.from_numpy(batch.users)
            e_b = tower_b(users)
            u = layer.forward(e_b.detach().numpy().astype(np.float64))
            loss, delta = active_step(model, optimizer, batch, torch.from_numpy(u).float())
            g = layer.backward(e_b.detach().numpy().astype(np.float64), delta.numpy().astype(np.float64))
            passive_step(optimizer_b, e_b, torch.from_numpy(g).float())
            losses.append(loss)
            steps += 1
        if not evaluate:
            continue
        trained.report.append({"epoch": epoch, "loss": float(np.mean(losses)),
                               "valid": validate(trained, stopper, valid, test, data, e.k)})
        if stopper.should_stop():
            break
    trained.choice = stopper.choice() if stopper.history else None
    return trained


def validate(trained: Trained, stopper: EarlyStopping, valid: EvalSet, test: EvalSet, data: ActiveData,
             k: int) -> dict:
    """The model's validation metrics, offered to the epoch choice; test metrics while it is the best so far."""
    with torch.no_grad():
        u_all = trained.layer.forward(trained.tower(torch.arange(data.n_users)).numpy().astype(np.float64))
    scores = model_scores(trained.model, valid, u_all)
    if stopper.update(per_user(scores, k)[2]):
        trained.test = metrics(model_scores(trained.model, test, u_all), test.cold, k)
    return metrics(scores, valid.cold, k)


@dataclass(frozen=True)
class Joined:
    """Both parties' sides of the shared users, in the PSI order, read from their configs and work dirs."""

    data: ActiveData
    b_features: Features
    training: Training
    tower: TowerSettings


def load_joined(config_a: Path, config_b: Path) -> Joined:
    cfg_a, cfg_b = party_a_config.load(config_a), party_b_config.load(config_b)
    if cfg_a.training is None:
        raise ValueError(f"{config_a} has no [interactions]: nothing was trained")
    frame_a, ids_a = cfg_a.users.load()
    frame_b, _ = cfg_b.users.load()
    t = cfg_a.training
    tables = load_tables(frame_a, ids_a, cfg_a.users.table, cfg_a.users.normalizer, t.interactions, t.items)
    data = align(tables, read_aligned_rows(cfg_a.basics.workdir))
    b_features = encode_features(frame_b, cfg_b.users.table).take(read_aligned_rows(cfg_b.basics.workdir))
    return Joined(data, b_features, t, cfg_b.tower)
