"""Joint plaintext anchors: what B's columns could give at best, with both tables in one place.

Only an experiment can fit these (they need B's columns next to A's events), so they
measure the room the federated model has, not something either party could run:
- joint EASE: EASE over A's binary events with B's encoded columns appended as more
  columns of X (one-hot categories, scaled numbers; zeros for A's users outside the
  intersection), scoring items only; λ chosen on validation;
- user-kNN on B: a user's score of item j is how many of its `neighbours` nearest
  shared users by B's columns (cosine) chose j in training; the count chosen on
  validation.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from party_a.models.baselines import LAMBDAS, TrainingRows, ease_weights
from party_a.data.tables import ActiveData
from party_a.models.evaluate import EvalSet, metrics
from protocol.data.tables import Features

NEIGHBOURS = (10, 30, 100, 300)


def one_hot(features: Features) -> np.ndarray:
    """B's columns as a dense matrix: scaled numbers, then one column per category."""
    parts = [features.numeric.astype(np.float64)]
    for column, cardinality in enumerate(features.cardinalities):
        parts.append(np.eye(cardinality)[features.categorical[:, column]])
    return np.hstack(parts)


def events(data: ActiveData) -> np.ndarray:
    """X: A's training events of every row of A's fit, shared users first (as party_a.models.baselines.TrainingRows)."""
    rows = TrainingRows(data)
    x = np.zeros((len(rows), data.n_items))
    for r, items in enumerate(rows):
        x[r, items] = 1.0
    return x


def joint_gram(x: np.ndarray, b: np.ndarray) -> np.ndarray:
    """JᵀJ of J = X with B's columns appended (zero rows for A's users outside the intersection, which come
    after the shared ones)."""
    side = np.zeros((x.shape[0], b.shape[1]))
    side[:b.shape[0]] = b
    joint = np.hstack([x, side])
    return joint.T @ joint


def joint_ease(gram: np.ndarray, b: np.ndarray, n: int, lam: float) -> Callable[[EvalSet], np.ndarray]:
    """Scores of the joint EASE at λ from `joint_gram` (n items, then B's columns)."""
    weights = ease_weights(np.linalg.inv(gram + lam * np.eye(gram.shape[0])))

    def scores(ev: EvalSet) -> np.ndarray:
        rows = np.stack([np.concatenate([np.bincount(h, minlength=n)[:n] > 0, b[u]])
                         for h, u in zip(ev.histories, ev.users)]).astype(np.float64)
        return np.take_along_axis(rows @ weights[:, :n], ev.items, axis=1)

    return scores


def user_knn(x: np.ndarray, b: np.ndarray, neighbours: int) -> Callable[[EvalSet], np.ndarray]:
    """Scores of user-kNN on B's columns over the shared users' training events `x`."""
    unit = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)

    def scores(ev: EvalSet) -> np.ndarray:
        sim = unit[ev.users] @ unit.T
        sim[np.arange(len(ev.users)), ev.users] = -np.inf  # not oneself
        near = np.argpartition(-sim, min(neighbours, sim.shape[1] - 1) - 1, axis=1)[:, :neighbours]
        counts = x[near].sum(1)
        return np.take_along_axis(counts, ev.items, axis=1)

    return scores


def _best(name: str, build: Callable[[object], Callable[[EvalSet], np.ndarray]], grid: tuple,
          valid: EvalSet, test: EvalSet, k: int) -> dict:
    tried = {}
    for value in grid:
        score = build(value)
        tried[value] = (metrics(score(valid), valid.cold, k)["overall"]["ndcg"], score)
    value = max(tried, key=lambda v: tried[v][0])
    return {"setting": f"{name}={value}", "valid_ndcg": {str(v): round(t[0], 4) for v, t in tried.items()},
            "test": metrics(tried[value][1](test), test.cold, k)}


def fit_anchors(data: ActiveData, b_features: Features, valid: EvalSet, test: EvalSet, k: int) -> dict[str, dict]:
    """Both anchors, each tuned on validation, with their test metrics."""
    b, x = one_hot(b_features), events(data)
    gram, n = joint_gram(x, b), data.n_items
    return {"joint_ease": _best("lambda", lambda lam: joint_ease(gram, b, n, lam), LAMBDAS, valid, test, k),
            "user_knn_b": _best("neighbours", lambda m: user_knn(x[:data.n_users], b, m), NEIGHBOURS, valid, test,
                                k)}

