"""Choosing the epoch on validation: early stopping with patience.

After each epoch the validation metric is offered; the best epoch so far is kept
(a later epoch must beat it by more than `min_delta`), and training stops once
`patience` epochs in a row have not improved on it. With `first = 0` the model as
it starts is offered too, as epoch 0, so training is kept only where it beats the
start; patience then counts from training's own best epoch, not the start's, so a
model still improving while below the start (a residual that starts at zero takes a
few epochs to pass it) is not stopped for that. A trained epoch takes over from the
start only when it beats it by a significant margin over the validation users
(`significantly_better`): the start is the simpler model (EASE for A alone, A alone
for the federated model), and a mean a point higher on a few hundred users is often
noise that costs on test what it seemed to gain (on MovieLens A alone's trained
epochs validated up to .008 NDCG above EASE and tested .005 below; with the privacy
defences on, the federated model left A alone for noise and tested .009 HR@3 below
it on story 2's cold users). Given each validation user's activity segment (A alone
against EASE, which no segment falls back to), the trained epoch must also lose to
the start on no segment's mean: a gain on the whole that costs the cold users is not
taken (on story 2 A alone left EASE on a significant gain overall and tested .023 and
.028 HR@3 below it on cold users). The price is a real gain left unused now and
then (story 2, one seed in three: +.022 NDCG on 600 validation users). The test
lists are scored for the chosen epoch only; `Choice.reason` says why it was chosen,
for the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SIGNIFICANT = 1.645  # standard errors: a one-sided test at 5 %


def significantly_better(values: np.ndarray, baseline: np.ndarray, groups: np.ndarray | None = None) -> bool:
    """Whether per-user `values` beat `baseline` (the same users) by more than `SIGNIFICANT` standard errors of
    the paired differences; with `groups` (each user's group, an activity segment), also no group's mean below
    the baseline's: a gain on the whole that costs the cold users is not taken for them."""
    gain = values - baseline
    if not (gain.size > 1 and gain.mean() > SIGNIFICANT * gain.std(ddof=1) / np.sqrt(gain.size)):
        return False
    return groups is None or all(gain[groups == group].mean() >= 0 for group in np.unique(groups))


def preferred(values: dict, groups: np.ndarray | None = None) -> object:
    """The first key of `values` (key → per-user values, the same users, in order of preference), unless the
    key with the best mean (the earlier on a tie) beats it significantly (`significantly_better`, with
    `groups`)."""
    order = list(values)
    best = max(order, key=lambda key: (values[key].mean() if values[key].size else 0.0, -order.index(key)))
    return best if significantly_better(values[best], values[order[0]], groups) else order[0]


@dataclass(frozen=True)
class Choice:
    epoch: int
    value: float
    reason: str


@dataclass
class EarlyStopping:
    patience: int
    min_delta: float = 0.0
    metric: str = "validation NDCG@10"
    first: int = 1  # the number of the first epoch offered: 0 when the starting model is offered
    history: list[float] = field(default_factory=list)  # each epoch's mean over the validation users
    eligible: list[bool] = field(default_factory=list)  # whether each epoch may be chosen
    start: np.ndarray | None = None  # the start's per-user values, when it is offered

    def update(self, values: np.ndarray, groups: np.ndarray | None = None) -> bool:
        """Record the next epoch's per-user validation values; True when it is the best so far (save its state).
        With the start offered, a trained epoch may be chosen only if it beats the start significantly, and with
        `groups` (each validation user's activity segment) loses to it on no group's mean."""
        if self.first == 0 and not self.history:
            self.start = values
        self.history.append(float(values.mean()))
        self.eligible.append(self.start is None or len(self.history) == 1
                             or significantly_better(values, self.start, groups))
        return self.best == len(self.history) - 1

    @property
    def best(self) -> int | None:
        """The index into history of the best epoch so far, of those that may be chosen."""
        return leader([v if ok else -np.inf for v, ok in zip(self.history, self.eligible)], self.min_delta)

    @property
    def best_epoch(self) -> int | None:
        return None if self.best is None else self.first + self.best

    @property
    def stale(self) -> int:
        """Epochs of training since training's best one (the start, epoch 0, is not an epoch of training)."""
        trained = self.history[1:] if self.first == 0 else self.history
        best = leader(trained, self.min_delta)
        return 0 if best is None else len(trained) - 1 - best

    def should_stop(self) -> bool:
        return self.stale >= self.patience

    def choice(self) -> Choice:
        if self.best is None:
            raise ValueError("no epoch was offered")
        best, epoch, last = self.history[self.best], self.best_epoch, self.first + len(self.history) - 1
        why = (f"stopped after {self.stale} epochs without improvement (patience {self.patience})"
               if self.should_stop() else f"last epoch reached, {self.stale} epochs after the best")
        start = " (the starting model: no epoch of training beat it significantly)" if epoch == 0 else ""
        return Choice(epoch, best, f"best {self.metric} {best:.4f} at epoch {epoch}{start} of {last}; {why}")


def leader(values: list[float], min_delta: float) -> int | None:
    """The index of the best value, a later one counting only when it beats the best before it by more than
    `min_delta`; None for no values."""
    best = None
    for i, value in enumerate(values):
        if best is None or value > values[best] + min_delta:
            best = i
    return best
