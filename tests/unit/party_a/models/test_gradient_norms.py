"""What the norm of g tells B: nothing about how active a user is at A.

B decrypts g = δ·Wᵀ for every user of every step. A user's δ is a mean over its
training targets, so left alone its norm falls as the user's history grows (rank
correlation about -0.3 with the user's event count over story 1's first epoch, where
the first steps' δ is near zero because B's item vectors start at zero) and is zero
for a user with no training items. A rescales each step's δ rows to one norm
(`party_a.models.model.equal_norms`), so only g's direction varies. Measured here on story
1 in plaintext (the secure layer computes the same g up to fixed-point rounding):
|Spearman ρ| between ‖g‖ and the user's number of training events stays at most
0.1, and the negative control, with the rescaling switched off, finds the leak (|ρ| > 0.2).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from party_a.models import model as party_a_model
from party_a.data.sampler import Sampler
from scenarios import ecommerce_bank
from scenarios.centralised import PlainLayer, load_joined, train
from scenarios.plain_quality import plain_align


class RecordingLayer(PlainLayer):
    """W in the clear, keeping ‖g‖ of every user of every step, in the order the steps ran."""

    norms: list

    def backward(self, e_b: np.ndarray, delta: np.ndarray) -> np.ndarray:
        g = super().backward(e_b, delta)
        self.norms.append(np.linalg.norm(g, axis=1))
        return g


def correlation(tmp_path: Path) -> float:
    """Spearman ρ between ‖g‖ and the user's training events over the first epoch of story 1."""
    run = ecommerce_bank.prepare(tmp_path, 2000, 1, 0, progress=False)
    plain_align(run)
    joined = load_joined(run.configs["party_a"], run.configs["party_b"])
    plan, t = joined.training.plan(), joined.training.train
    layer = RecordingLayer(np.random.default_rng(0).normal(0, 1 / math.sqrt(plan.d), (plan.d, plan.h)), plan.lr_w)
    layer.norms = []
    train(joined.data, joined.b_features, joined.training, joined.tower, layer, evaluate=False)
    batches = Sampler(joined.data, t.batch_users, joined.training.model.history, t.targets, t.seed).epoch(1)
    users = np.concatenate([b.users for b in batches])
    events = np.array([joined.data.train[s].size for s in users])
    return float(spearmanr(np.concatenate(layer.norms), events).statistic)


def test_the_norm_of_g_says_nothing_about_activity(tmp_path: Path) -> None:
    assert abs(correlation(tmp_path)) <= 0.1


def test_the_same_check_catches_unequal_norms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(party_a_model, "equal_norms", lambda delta: delta)
    assert abs(correlation(tmp_path)) > 0.2
