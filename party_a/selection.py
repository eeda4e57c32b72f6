"""Choosing the epoch on validation: early stopping with patience.

After each epoch the validation metric is offered; the best epoch so far is kept
(a later epoch must beat it by more than `min_delta`), and training stops once
`patience` epochs in a row have not improved on it. The test lists are scored for
the chosen epoch only; `Choice.reason` says why it was chosen, for the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
    history: list[float] = field(default_factory=list)
    best_epoch: int = 0  # 1-based; 0 before the first epoch

    def update(self, value: float) -> bool:
        """Record the next epoch's validation value; True when it is the best so far (save its state)."""
        self.history.append(value)
        if self.best_epoch == 0 or value > self.history[self.best_epoch - 1] + self.min_delta:
            self.best_epoch = len(self.history)
            return True
        return False

    @property
    def stale(self) -> int:
        """Epochs since the best one."""
        return len(self.history) - self.best_epoch

    def should_stop(self) -> bool:
        return self.stale >= self.patience

    def choice(self) -> Choice:
        best = self.history[self.best_epoch - 1]
        why = (f"stopped after {self.stale} epochs without improvement (patience {self.patience})"
               if self.should_stop() else f"last epoch reached, {self.stale} epochs after the best")
        return Choice(self.best_epoch, best, f"best {self.metric} {best:.4f} at epoch {self.best_epoch} of "
                                             f"{len(self.history)}; {why}")
