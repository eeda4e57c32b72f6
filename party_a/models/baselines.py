"""What A could run alone in an afternoon: popularity, item-kNN and EASE on its own events.

All three learn from the binary user-item matrix X of A's training events: the
shared users' training items (their validation and test items held out) and every
positive of A's users outside the intersection, who are never evaluated. Using
those too is legitimate for A alone and makes the baselines the strongest simple
thing A could run. A user is scored from the history `EvalSet.histories` gives it,
the same history our model sees:
- popularity: the item's count in X;
- item-kNN: Σ over the user's items i of cos(i, j), the cosine of the columns of X,
  each item keeping only its `neighbours` most similar items (all when None);
- EASE (Steck 2019): Σ_i B[i, j] with B = I - P·diag(1/diag(P)),
  P = (XᵀX + λI)⁻¹, so diag(B) = 0.
The kNN neighbour count and EASE's λ are chosen on the validation lists (NDCG@k).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from party_a.data.tables import ActiveData
from party_a.models.evaluate import EvalSet, metrics

LAMBDAS = (10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0)
NEIGHBOURS = (10, 50, None)


class TrainingRows(Sequence[np.ndarray]):
    """The rows of X: each shared user's training items, then each other user's items; read as they are used."""

    def __init__(self, data: ActiveData):
        self.parts = (data.train, data.others)

    def __len__(self) -> int:
        return sum(len(part) for part in self.parts)

    def __getitem__(self, i: int) -> np.ndarray:  # type: ignore[override] - single rows only
        first = self.parts[0]
        return first[i] if i < len(first) else self.parts[1][i - len(first)]

    def __iter__(self) -> Iterator[np.ndarray]:
        return itertools.chain(*self.parts)


def gram(rows: Iterable[np.ndarray], n_items: int) -> np.ndarray:
    """XᵀX for a binary X given as lists of distinct items per row."""
    g = np.zeros((n_items, n_items))
    for items in rows:
        g[np.ix_(items, items)] += 1.0
    return g


def popularity(rows: Iterable[np.ndarray], n_items: int, chunk: int = 1 << 16) -> np.ndarray:
    """Each item's count in X, `chunk` rows at a time."""
    counts, rows = np.zeros(n_items, dtype=np.int64), iter(rows)
    while part := list(itertools.islice(rows, chunk)):
        counts += np.bincount(np.concatenate(part), minlength=n_items)
    return counts.astype(np.float64)


def item_knn(g: np.ndarray, neighbours: int | None) -> np.ndarray:
    """Item-item cosine from XᵀX, zero diagonal; row i keeps only i's `neighbours` largest entries."""
    norm = np.sqrt(np.diag(g))
    norm[norm == 0] = 1.0
    s = g / norm[:, None] / norm[None, :]
    np.fill_diagonal(s, 0.0)
    if neighbours is not None and neighbours < s.shape[1]:
        cut = np.argpartition(-s, neighbours - 1, axis=1)[:, neighbours:]
        np.put_along_axis(s, cut, 0.0, axis=1)
    return s


def ease(g: np.ndarray, lam: float) -> np.ndarray:
    """EASE's item-item weights B (score of j = Σ_i x_i B[i, j]) from XᵀX and the L2 weight λ."""
    return ease_weights(np.linalg.inv(g + lam * np.eye(g.shape[0])))


def ease_weights(p: np.ndarray) -> np.ndarray:
    """B = I - P·diag(1/diag(P)) from P = (XᵀX + λI)⁻¹."""
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b


def item_item_scores(weights: np.ndarray, ev: EvalSet) -> np.ndarray:
    """Σ over each user's history items i of weights[i, j], for the listed items j."""
    return np.stack([weights[h].sum(0)[items] for h, items in zip(ev.histories, ev.items)])


@dataclass(frozen=True)
class Baseline:
    name: str
    setting: str  # the chosen value and why, for the report
    scores: Callable[[EvalSet], np.ndarray]
    chosen: float | None = None  # the grid value chosen on validation (kNN's neighbours, EASE's λ)
    table: np.ndarray | None = None  # what serves it: the training counts, or the item-item weights (n × n)


def _choose(name: str, key: str, grid: tuple, build: Callable[..., np.ndarray], valid: EvalSet, k: int) -> Baseline:
    """The grid value with the best validation NDCG@k (the first on ties)."""
    results = []
    for value in grid:
        weights = build(value)
        ndcg = metrics(item_item_scores(weights, valid), valid.cold, k)["overall"]["ndcg"]
        results.append((ndcg, value, weights))
    best = max(results, key=lambda r: r[0])
    tried = ", ".join(f"{v}: {n:.4f}" for n, v, _ in results)
    weights = best[2]
    return Baseline(name, f"{key}={best[1]} (validation NDCG@{k}: {tried})",
                    lambda ev: item_item_scores(weights, ev), best[1], weights)


def fit_baselines(data: ActiveData, valid: EvalSet, k: int) -> list[Baseline]:
    """Popularity, item-kNN and EASE from A's training events, tuned on the validation lists."""
    rows = TrainingRows(data)
    counts = popularity(rows, data.n_items)
    g = gram(rows, data.n_items)
    return [Baseline("popularity", "training counts", lambda ev: counts[ev.items], table=counts),
            _choose("item_knn", "neighbours", NEIGHBOURS, lambda n: item_knn(g, n), valid, k),
            _choose("ease", "lambda", LAMBDAS, lambda lam: ease(g, lam), valid, k)]


def chosen_ease_lambda(baselines: list[Baseline]) -> float:
    """The λ EASE chose on validation, which A's model reuses for its item-item scores."""
    return next(b.chosen for b in baselines if b.name == "ease")
