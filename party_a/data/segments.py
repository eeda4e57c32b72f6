"""Activity segments: users grouped by how many training events A holds for them.

Cold users are served best by a different scorer than active ones (item-kNN or
popularity often beats EASE and A's model for users with one or two events), so
every scorer is reported per segment, and each segment chooses on validation among
`CANDIDATES` (`choose`): the federated model, unless another scorer's NDCG@k beats it
on the segment's users by a significant margin (paired over the users, one-sided at
5 %). A segment of a few hundred users cannot tell scorers within a point or two
apart, and a switch on noise costs on test what it seemed to gain.
`combined` scores each user with its segment's choice: what serving by segment
would give. A's service answers each segment with its choice (party_a/serving/recommender.py).
"""

from __future__ import annotations

import numpy as np

from party_a.models.evaluate import EvalSet, metrics
from party_a.models.selection import preferred

SEGMENTS = (("0-2", 0, 2), ("3-10", 3, 10), ("11+", 11, None))  # name, fewest and most training events
CANDIDATES = ("federated", "a_alone", "item_knn", "popularity")  # what a segment may choose, preferred on ties


def segment_of(events: int) -> str:
    """The segment of a user with `events` events at A."""
    return next(name for name, low, high in SEGMENTS if low <= events and (high is None or events <= high))


def segment_masks(activity: np.ndarray) -> dict[str, np.ndarray]:
    """A boolean mask of the evaluated users per segment, from each one's number of training events."""
    return {name: (activity >= low) & (activity <= (np.inf if high is None else high))
            for name, low, high in SEGMENTS}


def segment_labels(activity: np.ndarray) -> np.ndarray:
    """Each user's segment, as its index into SEGMENTS, from each one's number of training events."""
    labels = np.empty(activity.shape, dtype=np.int64)
    for index, mask in enumerate(segment_masks(activity).values()):
        labels[mask] = index
    return labels


def by_segment(scores: np.ndarray, ev: EvalSet, k: int) -> dict[str, dict]:
    """AUC, HR@k and NDCG@k per segment (a segment without users: None values)."""
    return {name: metrics(scores[mask], mask[mask], k)["overall"] if mask.any() else
            {"users": 0, "auc": None, "hr": None, "ndcg": None}
            for name, mask in segment_masks(ev.activity).items()}


def choose(ndcg: dict[str, np.ndarray], activity: np.ndarray) -> dict[str, str]:
    """Per segment, the first scorer of `ndcg` (scorer → each validation user's NDCG@k, in order of preference;
    `activity`: each user's training events), unless the scorer with the best mean on the segment (the earlier on
    a tie) beats it significantly (`significantly_better`)."""
    return {name: preferred({scorer: values[mask] for scorer, values in ndcg.items()})
            for name, mask in segment_masks(activity).items()}


def combined(scores: dict[str, np.ndarray], choice: dict[str, str], ev: EvalSet, k: int) -> dict:
    """Metrics of the lists `ev`, each user's row taken from the scores (scorer → scores of `ev`) of the scorer
    its segment chose."""
    served = np.empty(ev.items.shape)
    for name, mask in segment_masks(ev.activity).items():
        if mask.any():
            served[mask] = scores[choice[name]][mask]
    return metrics(served, ev.cold, k)
