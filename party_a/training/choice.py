"""A's two models and the federated model's epoch choice, with the state A's checkpoint keeps of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from party_a.training import checkpoint as a_checkpoint
from party_a.config import Training
from party_a.data.tables import ActiveData
from party_a.models.evaluate import EvalSet, metrics
from party_a.models.model import ActiveModel, federated_start, model_scores
from party_a.models.selection import EarlyStopping
from party_a.training.privacy import defence
from protocol.crypto.packing import Packed
from protocol.layer.defence import Defence


@dataclass
class Models:
    """A's two models: A alone at its chosen epoch (trained before the federated run, fixed from then on) and
    the federated model, which starts as A alone and learns only P, how much of B's u enters (party_a/models/model.py),
    with its epoch choice."""

    federated: ActiveModel
    alone: ActiveModel
    optimizer: torch.optim.Optimizer
    selected: "Selected"
    defence: Defence = Defence()

    @classmethod
    def build(cls, data: ActiveData, cfg: Training, ease_lambda: float, prior_weight: float, test: EvalSet,
              alone: ActiveModel | None = None, workdir: Path | None = None, run_id: str = "",
              federated: ActiveModel | None = None) -> "Models":
        """The federated model as a copy of `federated` (a warm start's) or else of `alone` (a fresh model with A
        alone's `prior_weight` to restore into, if None); the noise on δ keeps its ledger in `workdir` (if given)
        for run `run_id`."""
        if alone is None:
            alone = ActiveModel(data, cfg.model, ease_lambda, prior_weight)
        federated = federated_start(alone if federated is None else federated)
        t = cfg.train
        return cls(federated, alone, torch.optim.Adam(federated.partner_parameters(), lr=t.lr,
                                                      weight_decay=t.weight_decay),
                   Selected(t.patience, cfg.eval.k, test, first=0), defence(cfg, workdir, run_id))

    def state(self) -> tuple[dict[str, dict], dict[str, np.ndarray]]:
        """For A's checkpoint: both models, the optimiser, the torch RNG and the epoch choice's kept state (torch),
        and the u it keeps (numpy)."""
        torch_states = {"federated": self.federated.state_dict(), "alone": self.alone.state_dict(),
                        "optimizer": self.optimizer.state_dict(), "rng": {"torch": torch.get_rng_state()}}
        if self.selected.state is not None:
            torch_states["chosen_federated"] = self.selected.state
        arrays = {} if self.selected.u is None else {"u_federated": self.selected.u}
        start = self.selected.stopper.start
        return torch_states, arrays if start is None else {**arrays, "valid_start": start}

    def choice(self) -> dict:
        """For A's checkpoint: the epoch choice's validation history and which epochs may be chosen (its best
        epoch follows) and test metrics (JSON)."""
        c = self.selected
        return {"history": c.stopper.history, "eligible": c.stopper.eligible, "test": c.test}

    def restore(self, saved: a_checkpoint.Saved) -> None:
        """The models, optimiser, RNG and epoch choice as A's checkpoint holds them; the noise on δ keeps its
        ledger's releases, rows and generator, only raising a count the checkpoint holds higher."""
        t, c = saved.torch, self.selected
        c.w = saved.chosen_w_cols
        self.federated.load_state_dict(t["federated"])
        self.alone.load_state_dict(t["alone"])
        self.optimizer.load_state_dict(t["optimizer"])
        torch.set_rng_state(t["rng"]["torch"])
        if self.defence.noise is not None and saved.info.get("noise") is not None:
            self.defence.noise.restore(saved.info["noise"])
        choice = saved.info["chosen"]
        c.stopper.history, c.stopper.eligible, c.test = choice["history"], choice["eligible"], choice["test"]
        c.stopper.start = saved.arrays.get("valid_start")
        c.state, c.u = t.get("chosen_federated"), saved.arrays.get("u_federated")


class Selected:
    """One model's epoch choice: early stopping on validation; while an epoch is the best so far its test
    metrics are scored and its state (and the u it was validated with, and [W] by columns) is kept, to be saved
    and served."""

    def __init__(self, patience: int, k: int, test: EvalSet, first: int = 1):
        self.stopper = EarlyStopping(patience, metric=f"validation NDCG@{k}", first=first)
        self.k, self.test_set, self.test = k, test, None
        self.state: dict[str, torch.Tensor] | None = None
        self.u: np.ndarray | None = None
        self.w: Packed | None = None

    def update(self, ndcg: np.ndarray, model: ActiveModel, u: np.ndarray, w: Packed) -> bool:
        """Record an epoch's per-user validation NDCG@k; True (and the test lists scored, the state kept) if it is
        the best epoch so far."""
        if not self.stopper.update(ndcg):
            return False
        self.test = metrics(model_scores(model, self.test_set, u), self.test_set.cold, self.k)
        self.state = {name: t.detach().clone() for name, t in model.state_dict().items()}
        self.u, self.w = u, w
        return True

    def summary(self) -> dict:
        choice = self.stopper.choice()
        return {"epoch": choice.epoch, "reason": choice.reason, "test": self.test}
