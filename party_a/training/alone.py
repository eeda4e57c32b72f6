"""A alone: A's model trained with u = 0, in plaintext, before the federated model.

A can do this by itself, so it does it first: its popularity prior's weight is chosen
on validation (`chosen_prior_weight`), the model as it starts is offered as epoch 0,
and early stopping on validation NDCG@k chooses the epoch. The chosen model is what A
serves to its users outside the intersection and where the federated model starts
(party_a/models/model.py), so the federated run never starts behind it. Epochs draw their
batches from the same sampler as the federated ones; the test lists are scored for the
chosen epoch only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from party_a.config import Training
from party_a.data.tables import ActiveData
from party_a.models.evaluate import EvalSet, metrics, per_user
from party_a.models.model import ActiveModel, active_step, chosen_prior_weight, model_scores
from party_a.data.sampler import Sampler
from party_a.data.segments import segment_labels
from party_a.models.selection import EarlyStopping
from protocol.runtime.progress import progress_bar


@dataclass
class Alone:
    """A alone at its chosen epoch, and how it got there."""

    model: ActiveModel
    prior_weight: float
    tried: dict[float, float]  # validation NDCG@k of each prior weight's start
    epochs: list[dict]  # per epoch from 0 (the start): mean loss (None at 0) and validation metrics
    stopper: EarlyStopping
    valid: dict  # validation metrics of the chosen epoch
    valid_ndcg: np.ndarray  # each validation user's NDCG@k at the chosen epoch
    test: dict  # test metrics of the chosen epoch

    def summary(self) -> dict:
        """For the report: the prior, every epoch and the choice with its test metrics."""
        choice = self.stopper.choice()
        return {"prior_weight": self.prior_weight, "valid_ndcg_by_prior_weight": self.tried, "epochs": self.epochs,
                "epoch": choice.epoch, "reason": choice.reason, "valid": self.valid, "test": self.test}


def train_alone(data: ActiveData, cfg: Training, valid: EvalSet, test: EvalSet, ease_lambda: float,
                progress: bool = False, start: tuple[ActiveModel, float] | None = None) -> Alone:
    """Train A alone to its epoch chosen on validation; `ease_lambda` is EASE's, chosen on validation. With `start`
    (a warm start: the stored A alone carried over to this run's data, and its prior's weight), train on from it
    for at most [train] warm_epochs, offering it as epoch 0."""
    t, k, h = cfg.train, cfg.eval.k, cfg.model.h
    if start is None:
        prior_weight, tried = chosen_prior_weight(data, cfg.model, ease_lambda, valid, k)
        model, most = ActiveModel(data, cfg.model, ease_lambda, prior_weight), t.epochs
    else:
        (model, prior_weight), tried, most = start, {}, t.warm_epochs
    optimizer = torch.optim.Adam(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    sampler = Sampler(data, t.batch_users, cfg.model.history, t.targets, t.seed)
    stopper = EarlyStopping(t.patience, metric=f"validation NDCG@{k}", first=0)
    zeros, groups = np.zeros((data.n_users, h), dtype=np.float32), segment_labels(valid.activity)
    epochs: list[dict] = []
    best: tuple[dict, dict, np.ndarray] | None = None
    for epoch in progress_bar(range(most + 1), task="a_alone", desc="A alone", unit="epoch", enabled=progress,
                              leave=False):
        loss = None
        if epoch:
            losses = [active_step(model, optimizer, batch, torch.zeros(len(batch.users), h))[0]
                      for batch in sampler.epoch(epoch)]
            loss = float(np.mean(losses))
        scores = model_scores(model, valid, zeros)
        validated, ndcg = metrics(scores, valid.cold, k), per_user(scores, k)[2]
        epochs.append({"epoch": epoch, "loss": loss, "valid": validated})
        if stopper.update(ndcg, groups):
            best = ({name: v.detach().clone() for name, v in model.state_dict().items()}, validated, ndcg)
        if stopper.should_stop():
            break
    assert best is not None
    model.load_state_dict(best[0])
    chosen_test = metrics(model_scores(model, test, zeros), test.cold, k)
    return Alone(model, prior_weight, tried, epochs, stopper, best[1], best[2], chosen_test)
