"""Training batches: sets of users, each with a fixed number of positive and negative items.

Every shared user appears exactly once per epoch, in a uniformly random order, with
`positives` items drawn from its training positives and `negatives` drawn from items
it never chose, so the batch composition B sees says nothing about labels. A user
without training positives gets all its rows as negatives (same shape).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from party_a.data import ActiveData


@dataclass(frozen=True)
class Batch:
    users: np.ndarray  # shared-user indices, what B is told
    rows_user: np.ndarray  # for each row, position of its user within `users`
    items: np.ndarray
    labels: np.ndarray  # float32 0/1


class Sampler:
    def __init__(self, data: ActiveData, batch_users: int, positives: int, negatives: int, seed: int):
        self.data = data
        self.batch_users = batch_users
        self.positives = positives
        self.negatives = negatives
        self.seed = seed

    def epoch(self, epoch: int) -> list[Batch]:
        """The batches of one epoch, reproducible from (seed, epoch)."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(self.data.n_users)
        return [self._batch(order[k : k + self.batch_users], rng) for k in range(0, len(order), self.batch_users)]

    def _batch(self, users: np.ndarray, rng: np.random.Generator) -> Batch:
        per_user = self.positives + self.negatives
        items = np.empty((len(users), per_user), dtype=np.int64)
        labels = np.zeros((len(users), per_user), dtype=np.float32)
        for pos, s in enumerate(users):
            train = self.data.train[s]
            if train.size:
                items[pos, : self.positives] = rng.choice(train, size=self.positives)
                labels[pos, : self.positives] = 1.0
                items[pos, self.positives :] = self._negatives(s, self.negatives, rng)
            else:
                items[pos] = self._negatives(s, per_user, rng)
        rows_user = np.repeat(np.arange(len(users)), per_user)
        return Batch(users, rows_user, items.ravel(), labels.ravel())

    def _negatives(self, user: int, count: int, rng: np.random.Generator) -> np.ndarray:
        seen = self.data.seen[user]
        out = rng.integers(0, self.data.n_items, size=count)
        if len(seen) >= self.data.n_items:
            return out
        for i in range(count):
            while int(out[i]) in seen:
                out[i] = rng.integers(0, self.data.n_items)
        return out
