"""Popularity, item-kNN and EASE against numbers worked out by hand on a tiny matrix.

X has 4 users and 3 items: {0, 1}, {0, 1, 2}, {1, 2}, {0}. So the item counts are
(3, 3, 2) and XᵀX = [[3, 2, 1], [2, 3, 2], [1, 2, 2]].

Cosine: cos(0,1) = 2/3, cos(0,2) = 1/√6, cos(1,2) = 2/√6.

EASE with λ = 1: G = XᵀX + I = [[4, 2, 1], [2, 4, 2], [1, 2, 3]], det G = 24, and
P = G⁻¹ = [[8, -4, 0], [-4, 11, -6], [0, -6, 12]] / 24 (cofactors). B[i, j] =
-P[i, j] / P[j, j] off the diagonal: B = [[0, 4/11, 0], [1/2, 0, 1/2], [0, 6/11, 0]].
"""

from __future__ import annotations

import numpy as np

from party_a.models.baselines import ease, gram, item_item_scores, item_knn, popularity
from party_a.models.evaluate import EvalSet

ROWS = [np.array([0, 1]), np.array([0, 1, 2]), np.array([1, 2]), np.array([0])]


def lists(histories: list[list[int]]) -> EvalSet:
    """Every item listed for every user, so a score row is the user's whole score vector."""
    n = len(histories)
    return EvalSet("test", np.arange(n), np.tile(np.arange(3), (n, 1)),
                   [np.array(h, dtype=np.int64) for h in histories], np.zeros(n, dtype=bool),
                   np.array([len(h) for h in histories]))


def test_gram_and_popularity() -> None:
    assert np.array_equal(gram(ROWS, 3), [[3, 2, 1], [2, 3, 2], [1, 2, 2]])
    assert np.array_equal(popularity(ROWS, 3), [3, 3, 2])


def test_ease_matches_the_hand_computed_weights() -> None:
    b = ease(gram(ROWS, 3), 1.0)
    assert np.allclose(b, [[0, 4 / 11, 0], [0.5, 0, 0.5], [0, 6 / 11, 0]])
    scores = item_item_scores(b, lists([[0], [0, 2], [1]]))
    assert np.allclose(scores, [[0, 4 / 11, 0], [0, 10 / 11, 0], [0.5, 0, 0.5]])


def test_item_knn_sums_cosines_over_the_history() -> None:
    scores = item_item_scores(item_knn(gram(ROWS, 3), None), lists([[0, 2], [1]]))
    r6 = np.sqrt(6)
    assert np.allclose(scores, [[1 / r6, 2 / 3 + 2 / r6, 1 / r6], [2 / 3, 0, 2 / r6]])


def test_item_knn_keeps_only_the_nearest_neighbours() -> None:
    # each item's single nearest neighbour: 0 -> 1 (2/3), 1 -> 2 (2/√6), 2 -> 1 (2/√6)
    scores = item_item_scores(item_knn(gram(ROWS, 3), 1), lists([[0], [1], [2]]))
    r6 = np.sqrt(6)
    assert np.allclose(scores, [[0, 2 / 3, 0], [0, 0, 2 / r6], [0, 2 / r6, 0]])
