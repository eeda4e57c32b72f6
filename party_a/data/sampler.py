"""Training batches: sets of users, each with its recent history and the positions to predict.

Every shared user appears exactly once per epoch, in a uniformly random order, so
what B sees (one u row per user) says nothing about activity or labels. For each
user A keeps its `history` most recent training items (right-aligned, padded with
-1) and draws up to `targets` of their positions to predict, each from the items
before it (its earlier items too, which the item-item part reads): many events per
user per step cost nothing more on the secure layer, whose cost is per user.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from party_a.data.tables import ActiveData

PAD = -1


@dataclass(frozen=True)
class Batch:
    users: np.ndarray  # shared-user indices, what B is told
    history: np.ndarray  # (users, L): each user's most recent training items, oldest first, right-aligned, PAD
    targets: np.ndarray  # (users, P): positions in `history` of the items to predict, PAD where unused
    earlier: np.ndarray  # (users, E): each user's training items before `history`, right-aligned, PAD


def pad_histories(histories: list[np.ndarray], length: int | None = None) -> np.ndarray:
    """The last `length` items of each history (None: all of the longest), right-aligned (the most recent item
    in the last column)."""
    if length is None:
        length = max([len(items) for items in histories] + [1])
    out = np.full((len(histories), length), PAD, dtype=np.int64)
    for row, items in enumerate(histories):
        recent = items[-length:]
        if recent.size:
            out[row, length - recent.size:] = recent
    return out


class Sampler:
    def __init__(self, data: ActiveData, batch_users: int, history: int, targets: int, seed: int):
        self.data = data
        self.batch_users = batch_users
        self.history = history
        self.targets = targets
        self.seed = seed

    @property
    def batches_per_epoch(self) -> int:
        return -(-self.data.n_users // self.batch_users)

    def epoch(self, epoch: int) -> Iterator[Batch]:
        """The batches of one epoch, reproducible from (seed, epoch); each reads its users' histories when it is
        drawn, so an epoch never holds more than one batch."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(self.data.n_users)
        for k in range(0, len(order), self.batch_users):
            yield self._batch(order[k : k + self.batch_users], rng)

    def _batch(self, users: np.ndarray, rng: np.random.Generator) -> Batch:
        histories = [self.data.train[s] for s in users]
        history = pad_histories(histories, self.history)
        targets = np.full((len(users), self.targets), PAD, dtype=np.int64)
        for row in range(len(users)):
            filled = np.flatnonzero(history[row] != PAD)
            chosen = rng.choice(filled, size=min(self.targets, filled.size), replace=False)
            targets[row, : chosen.size] = chosen
        return Batch(users, history, targets, pad_histories([items[:-self.history] for items in histories]))
