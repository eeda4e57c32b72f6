"""Attacks on what each party received, each next to its no-federation baseline.

B against A's labels, from g (per user and training step) and B's own columns:
- norm: ‖g‖ averaged over the run (Li et al. 2022, norm scoring);
- cosine: per epoch, the cosine of g with a reference direction (mean unit g of the
  auxiliary positives minus that of the negatives), averaged over epochs (direction scoring);
- 2-means: distance to one centre minus distance to the other of 2-means on the unit g's
  of every epoch, concatenated;
- completion: a ridge head on B's own columns and the unit g's, fitted on the auxiliary users.
Norm and 2-means need no label; their orientation is read off the auxiliary users.
Baseline: the same ridge head on B's own columns and the g's shuffled across users (`shuffled`).

A against B's columns, from u (every evaluation and training step) and A's own data
(its user columns, share of purchases per item category, number of purchases):
- ridge of each numeric column on [own data, u summary] (R²);
- a ridge one-hot classifier of each categorical column (accuracy; majority class of the
  auxiliary users as reference).
Baseline: the same on A's own data and the u summaries shuffled across users.

Every score is measured on the users outside the auxiliary set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audit.learners import auc, r2, ridge_predict, standardise, two_means

LABEL_ATTACKS = ("norm", "cosine", "2-means", "completion")


@dataclass(frozen=True)
class Labels:
    """Binary labels of A about each shared user (the truth B's attacks are scored against)."""

    names: list[str]
    values: np.ndarray  # bool (users, labels)


@dataclass(frozen=True)
class Columns:
    """B's columns of each shared user (the truth A's attacks are scored against), as B's encoding has them."""

    numeric_names: list[str]
    numeric: np.ndarray  # (users, numeric columns)
    categorical_names: list[str]
    categorical: np.ndarray  # int codes (users, categorical columns)


def per_epoch(rows: np.ndarray, index: np.ndarray, n_users: int) -> np.ndarray:
    """Recorded rows as (users, epochs, width): each user's row of each epoch (the last if several; zeros if
    none). `index` columns: epoch, step, user."""
    epochs = np.unique(index[:, 0])
    out = np.zeros((n_users, epochs.size, rows.shape[1]))
    out[index[:, 2], np.searchsorted(epochs, index[:, 0])] = rows
    return out


def unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.where(norms > 0, x / np.where(norms > 0, norms, 1.0), 0.0)


def auxiliary(n_users: int, fraction: float, seed: int) -> np.ndarray:
    """The users whose secrets the attacker knows: a random `fraction` (at least 4)."""
    size = max(4, int(round(fraction * n_users)))
    return np.sort(np.random.default_rng(seed).choice(n_users, size=size, replace=False))


def shuffled(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """The rows of `x` shuffled across users: the same columns with the same distribution, none tied to its
    user. A baseline learner gets them beside the attacker's own data, so that attack and baseline fit as
    many columns and their difference is what the tie to the user carries, not what extra columns do to the
    learner's choice of regularisation."""
    return x[np.random.default_rng(seed).permutation(len(x))]


def _rest(n_users: int, aux: np.ndarray) -> np.ndarray:
    return np.setdiff1d(np.arange(n_users), aux)


def _orient(scores: np.ndarray, aux: np.ndarray, y_aux: np.ndarray) -> np.ndarray:
    """Flip unsupervised scores when the auxiliary positives score lower than the negatives."""
    if y_aux.all() or not y_aux.any():
        return scores
    return -scores if scores[aux][y_aux].mean() < scores[aux][~y_aux].mean() else scores


def _cosine(g_unit: np.ndarray, aux: np.ndarray, y_aux: np.ndarray) -> np.ndarray:
    if y_aux.all() or not y_aux.any():
        return np.zeros(len(g_unit))
    reference = unit(g_unit[aux][y_aux].mean(0) - g_unit[aux][~y_aux].mean(0))  # (epochs, d)
    return (g_unit * reference[None]).sum(-1).mean(1)


def label_scores(g: np.ndarray, own: np.ndarray, label: np.ndarray, aux: np.ndarray) -> dict[str, np.ndarray]:
    """Every attack's score per user for one binary label, and the baseline's ("own columns").
    `g`: (users, epochs, d) as per_epoch gives; `own`: B's own feature matrix."""
    y_aux = label[aux]
    g_unit = unit(g)
    flat = g_unit.reshape(len(g), -1)
    centres = two_means(flat)
    own_std = standardise(own)
    with_g, baseline = (np.hstack([own_std, standardise(x)]) for x in (flat, shuffled(flat)))
    return {
        "norm": _orient(np.linalg.norm(g, axis=-1).mean(1), aux, y_aux),
        "cosine": _cosine(g_unit, aux, y_aux),
        "2-means": _orient(((flat - centres[1]) ** 2).sum(1) - ((flat - centres[0]) ** 2).sum(1), aux, y_aux),
        "completion": ridge_predict(with_g[aux], y_aux, with_g)[:, 0],
        "own columns": ridge_predict(baseline[aux], y_aux, baseline)[:, 0],
    }


def label_attacks(g: np.ndarray, own: np.ndarray, labels: Labels, aux: np.ndarray) -> dict[str, dict[str, float]]:
    """AUC of every attack and of the baseline, per label, on the users outside `aux`."""
    rest = _rest(len(g), aux)
    out = {}
    for j, name in enumerate(labels.names):
        y = labels.values[:, j]
        out[name] = {attack: auc(s[rest], y[rest]) for attack, s in label_scores(g, own, y, aux).items()}
    return out


def u_features(u_eval: np.ndarray, u_train: np.ndarray | None) -> np.ndarray:
    """What A keeps of each user's u: the mean of every u it received (noise averages out over releases)
    and the last evaluation's u."""
    every = u_eval if u_train is None else np.concatenate([u_eval, u_train], axis=1)
    return np.hstack([every.mean(1), u_eval[:, -1]])


def column_attacks(u: np.ndarray, own: np.ndarray, columns: Columns, aux: np.ndarray) -> dict[str, dict[str, float]]:
    """Per B column: R² (numeric) or accuracy (categorical) of the attack on [own, u], of u alone, and of
    the baseline on A's own data (beside u shuffled across users); categorical ones also the majority
    class's accuracy."""
    rest = _rest(len(u), aux)
    own_std = standardise(own)
    sources = {"attack": np.hstack([own_std, standardise(u)]), "u only": standardise(u),
               "own data": np.hstack([own_std, standardise(shuffled(u))])}
    out: dict[str, dict[str, float]] = {}
    for j, name in enumerate(columns.numeric_names):
        y = columns.numeric[:, j]
        out[name] = {k: r2(ridge_predict(x[aux], y[aux], x[rest])[:, 0], y[rest]) for k, x in sources.items()}
    for j, name in enumerate(columns.categorical_names):
        codes = columns.categorical[:, j]
        onehot = np.eye(codes.max() + 1)[codes]
        out[name] = {k: float((ridge_predict(x[aux], onehot[aux], x[rest]).argmax(1) == codes[rest]).mean())
                     for k, x in sources.items()}
        out[name]["majority"] = float((codes[rest] == np.bincount(codes[aux]).argmax()).mean())
    return out
