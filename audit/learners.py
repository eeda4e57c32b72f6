"""The small learners the attacks use, in numpy: ridge with leave-one-out α, 2-means, AUC, R², accuracy.

Every attacker sees all users' unlabelled values (what it received, its own columns)
and the labels of a small auxiliary set only; features are standardised with the
statistics of all users, which needs no label.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

ALPHAS = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)


def standardise(x: np.ndarray) -> np.ndarray:
    """Columns centred and scaled to unit variance over all users (constant columns set to 0)."""
    x = np.asarray(x, dtype=np.float64)
    std = x.std(0)
    return np.where(std > 0, (x - x.mean(0)) / np.where(std > 0, std, 1.0), 0.0)


def _ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x mean, y mean, dual weights) of ridge on centred rows, in the dual form (fewer rows than features)."""
    mx, my = x.mean(0), y.mean(0)
    xc = x - mx
    return mx, my, xc.T @ np.linalg.solve(xc @ xc.T + alpha * np.eye(len(x)), y - my)


def ridge_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    """Ridge regression of y (n, m) on x, α chosen among ALPHAS by leave-one-out error on the training rows
    (each row refitted without it: the closed form misleads where features outnumber rows); predictions for
    `x_test`."""
    y_train = np.asarray(y_train, dtype=np.float64).reshape(len(x_train), -1)
    n = len(x_train)
    best, chosen = np.inf, ALPHAS[-1]
    for alpha in ALPHAS:
        err = 0.0
        for i in range(n):
            keep = np.arange(n) != i
            mx, my, w = _ridge(x_train[keep], y_train[keep], alpha)
            err += float((((x_train[i] - mx) @ w + my - y_train[i]) ** 2).sum())
        if err < best:
            best, chosen = err, alpha
    mx, my, w = _ridge(x_train, y_train, chosen)
    return (x_test - mx) @ w + my


def two_means(x: np.ndarray, seed: int = 0, restarts: int = 5, iterations: int = 50) -> np.ndarray:
    """The two centres of 2-means (k-means++ start, best of `restarts` by inertia)."""
    rng = np.random.default_rng(seed)
    best, centres = np.inf, x[:2]
    for _ in range(restarts):
        first = x[rng.integers(len(x))]
        d = ((x - first) ** 2).sum(1)
        c = np.stack([first, x[rng.choice(len(x), p=d / d.sum()) if d.sum() > 0 else rng.integers(len(x))]])
        for _ in range(iterations):
            assign = ((x[:, None, :] - c[None]) ** 2).sum(2).argmin(1)
            new = np.stack([x[assign == j].mean(0) if (assign == j).any() else c[j] for j in range(2)])
            if np.allclose(new, c):
                break
            c = new
        inertia = ((x[:, None, :] - c[None]) ** 2).sum(2).min(1).sum()
        if inertia < best:
            best, centres = inertia, c
    return centres


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of `scores` for binary `labels` (ties count half); nan if one class is absent."""
    labels = np.asarray(labels, dtype=bool)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def r2(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Coefficient of determination of `predicted` against `truth` (1 perfect, 0 the truth's mean, < 0 worse)."""
    residual = ((truth - predicted) ** 2).sum()
    total = ((truth - truth.mean()) ** 2).sum()
    return float(1 - residual / total) if total > 0 else float("nan")
