"""Evaluation at A: each held-out item ranked against sampled negatives.

Two evaluation sets are built the same way: "valid" (the second-last item, which
chooses epochs and tuned settings) and "test" (the last item, scored for the chosen
epoch only). For every user with a held-out item of that split, the item and
`negatives` (default 99) items the user never chose are scored, given the user's
history before it (`ActiveData.history`); metrics are averaged over users:
- AUC: the share of negatives scored below the held-out item (ties count half);
- HR@k: whether the held-out item ranks in the top k;
- NDCG@k: 1 / log2(rank + 1) when it does.
The negatives are drawn once per run from a fixed seed (one stream per split), so
every model and epoch is scored on the same lists. Cold users are those with at most
`cold_max_train` training positives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from party_a.config import Training
from party_a.data.tables import ActiveData


SPLITS = ("valid", "test")


@dataclass(frozen=True)
class EvalSet:
    split: str  # "valid" or "test"
    users: np.ndarray  # shared-user indices with a held-out item of this split
    items: np.ndarray  # (users, 1 + negatives): held-out item first
    histories: Sequence[np.ndarray]  # per evaluated user: what A knows before the held-out item, oldest first
    cold: np.ndarray  # bool per evaluated user
    activity: np.ndarray  # per evaluated user: its number of training events at A (party_a/data/segments.py)


class SplitHistories(Sequence[np.ndarray]):
    """`ActiveData.history` of each evaluated user, read when indexed."""

    def __init__(self, data: ActiveData, users: np.ndarray, split: str):
        self.data, self.users, self.split = data, users, split

    def __len__(self) -> int:
        return len(self.users)

    def __getitem__(self, i: int) -> np.ndarray:  # type: ignore[override] - single users only
        return self.data.history(int(self.users[i]), self.split)


def eval_set(data: ActiveData, split: str, negatives: int, cold_max_train: int, seed: int) -> EvalSet:
    """The lists of one split; the two splits draw their negatives from separate seeded streams."""
    held_out = {"valid": data.valid_item, "test": data.test_item}[split]
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    users = np.flatnonzero(held_out >= 0)
    items = np.empty((len(users), 1 + negatives), dtype=np.int64)
    for row, s in enumerate(users):
        candidates = np.setdiff1d(np.arange(data.n_items), np.fromiter(data.seen[s], dtype=np.int64))
        items[row, 0] = held_out[s]
        items[row, 1:] = rng.choice(candidates, size=negatives, replace=candidates.size < negatives)
    activity = np.array([data.train[s].size for s in users], dtype=np.int64)
    return EvalSet(split, users, items, SplitHistories(data, users, split), activity <= cold_max_train, activity)



def evaluation_lists(data: ActiveData, training: Training) -> dict[str, EvalSet]:
    """The validation and test lists as the run's `[eval]` settings draw them."""
    e = training.eval
    return {split: eval_set(data, split, e.negatives, e.cold_max_train, e.seed) for split in SPLITS}

def per_user(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each list's AUC, hit at k and NDCG@k, from scores with the held-out item in column 0 (ties count half)."""
    pos, neg = scores[:, :1], scores[:, 1:]
    above = (neg > pos).sum(1) + 0.5 * (neg == pos).sum(1)
    rank = 1 + above
    hit = rank <= k
    return 1 - above / neg.shape[1], hit, np.where(hit, 1 / np.log2(rank + 1), 0.0)


def metrics(scores: np.ndarray, cold: np.ndarray, k: int) -> dict:
    """AUC, HR@k, NDCG@k overall and for cold users, from scores with the held-out item in column 0."""
    auc, hit, ndcg = per_user(scores, k)

    def summary(mask: np.ndarray) -> dict:
        if not mask.any():
            return {"users": 0, "auc": None, "hr": None, "ndcg": None}
        return {"users": int(mask.sum()), "auc": float(auc[mask].mean()), "hr": float(hit[mask].mean()),
                "ndcg": float(ndcg[mask].mean())}

    return {"overall": summary(np.ones(len(scores), dtype=bool)), "cold": summary(cold)}
