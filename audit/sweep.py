"""The privacy–utility sweep on the plaintext twin (scenarios/centralised.py), one training per ε target.

The twin computes what the secure run computes (u, g, W's updates, the same batches,
seeds and epoch choice) in the clear and, through `DefendedLayer`, adds each party's
noise where the secure run adds it and records what each party would receive. It
takes seconds where a secure run takes minutes; a real run's records are attacked
with `python -m audit --run <dir>`, which uses the same attacks.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from audit.parties import Parties, load_parties
from audit.report import UNDEFENDED, Outcome, attack_run
from party_a.training.alone import train_alone
from party_a.models.baselines import chosen_ease_lambda, fit_baselines
from party_a.models.evaluate import eval_set, evaluation_lists
from party_a.training.privacy import delta_noise
from party_a.data.sampler import Sampler
from party_b.privacy import embedding_noise
from protocol.layer.received import Received
from protocol.privacy import RowPrivacy, noise_for_epsilon
from scenarios import bank_offers, ecommerce_bank
from scenarios.centralised import DefendedLayer, PlainLayer, train
from scenarios.plain_quality import plain_align

STORIES = {"ecommerce_bank": ecommerce_bank, "bank_offers": bank_offers}
TARGETS = (8.0, 4.0, 2.0, 1.0)
DP_DELTA = 1e-5


def prepare_story(story: str, root: Path, users: int, epochs: int, seed: int) -> Parties:
    """A story's tables and configs in `root`, aligned in plaintext (the intersection PSI would find)."""
    run = STORIES[story].prepare(root, users, epochs, seed, progress=False)
    plain_align(run)
    return load_parties(run.configs["party_a"], run.configs["party_b"])


DEFENDERS = ("both", "a", "b")


def noise_multipliers(target: float | None, epochs: int, defend: str = "both") -> tuple[float, float]:
    """(A's, B's) noise multipliers that spend at most `target` over a full run: a user's δ row and its e_B
    row are each released once per epoch. `defend`: which party's defence is on ("a", "b" or "both")."""
    if target is None:
        return 0.0, 0.0
    sigma = noise_for_epsilon(target, epochs, DP_DELTA)
    return (sigma if defend in ("a", "both") else 0.0), (sigma if defend in ("b", "both") else 0.0)


def run_setting(parties: Parties, target: float | None, seed: int, lam: float, defend: str = "both") -> Outcome:
    """Train the twin with both defences at `target` (None: off), then attack what each party received.
    `lam`: EASE's λ chosen on validation; `defend`: whose defence is on."""
    j = parties.joined
    t, plan = j.training, j.training.plan()
    sigma_a, sigma_b = noise_multipliers(target, t.train.epochs, defend)
    noise_a = delta_noise(RowPrivacy(noise_multiplier=sigma_a, dp_delta=DP_DELTA, seed=seed), plan.batch_users,
                          plan.delta_max) if sigma_a else None
    noise_b = embedding_noise(RowPrivacy(noise_multiplier=sigma_b, dp_delta=DP_DELTA, seed=seed + 1)) \
        if sigma_b else None
    received_a, received_b = Received(), Received()
    sampler = Sampler(j.data, t.train.batch_users, t.model.history, t.train.targets, t.train.seed)
    w0 = np.random.default_rng(seed).normal(0, 1 / math.sqrt(plan.d), (plan.d, plan.h))
    layer = DefendedLayer(PlainLayer(w0, plan.lr_w), sampler, noise_a, noise_b, received_a, received_b)
    trained = train(j.data, j.b_features, t, j.tower, layer, ease_lambda=lam)
    name = UNDEFENDED if target is None else f"ε={target:g}"
    outcome = Outcome(name, noise_a.spent()["epsilon"] if noise_a else None,
                      noise_b.spent()["epsilon"] if noise_b else None, trained.test)
    outcome.attacks = attack_run(parties, received_a.arrays("u_eval"), received_a.arrays("u_train"),
                                 received_b.arrays("g"), seed)
    return outcome


def ease_lambda(parties: Parties) -> float:
    """EASE's λ chosen on validation, as the secure run chooses it."""
    j = parties.joined
    e = j.training.eval
    valid = eval_set(j.data, "valid", e.negatives, e.cold_max_train, e.seed)
    return chosen_ease_lambda(fit_baselines(j.data, valid, e.k))


def a_alone(parties: Parties, lam: float) -> dict:
    """A alone's test metrics (u = 0), as the secure run trains it."""
    j = parties.joined
    lists = evaluation_lists(j.data, j.training)
    valid, test = lists["valid"], lists["test"]
    return train_alone(j.data, j.training, valid, test, lam).test


def sweep(parties: Parties, lam: float, targets: tuple[float, ...] = TARGETS, seed: int = 0,
          defend: str = "both") -> list[Outcome]:
    """No defence, then the defences of `defend` at each ε target."""
    return [run_setting(parties, target, seed, lam, defend) for target in (None, *targets)]
