"""A small story-1 run and its plaintext twin: the secure layer's integer arithmetic repeated in the clear, and the
checks that a run's [W] and models are the twin's (the exactness bound: tests/integration/test_secure_training.py's
docstring)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from party_a.training.privacy import delta_noise
from party_a.data.sampler import Sampler
from party_b import config as party_b_config
from party_b.privacy import embedding_noise
from protocol.crypto import fixedpoint
from protocol.data.stored import load_state
from protocol.messages.plan import LayerPlan
from scenarios.centralised import DefendedLayer, load_joined, train
from scenarios.ecommerce_bank import BANK, SHOP
from scenarios.experiment import build_run, coordinator_key, decrypt_saved
from scenarios.launch import LocalRun
from scenarios.synth import write_ecommerce_bank

STEPS = 3


class FixedPointLayer:
    """The secure layer's arithmetic in the clear: what [u], [g] and the refreshed [W] hold."""

    def __init__(self, w0: np.ndarray, plan: LayerPlan):
        self.w, self.plan = w0, plan
        self.u_seen: list[np.ndarray] = []
        self.e_seen: list[np.ndarray] = []
        self.delta_seen: list[np.ndarray] = []

    def forward(self, e_b: np.ndarray) -> np.ndarray:
        e_q = fixedpoint.encode(e_b, self.plan.e_bits)
        u = e_q.dot(self.w)
        self.e_seen.append(e_q)
        self.u_seen.append(u)
        return fixedpoint.decode(u, self.plan.e_bits + self.plan.w_bits)

    def backward(self, e_b: np.ndarray, delta: np.ndarray) -> np.ndarray:
        p = self.plan
        e_q = fixedpoint.encode(e_b, p.e_bits)
        d_q = fixedpoint.encode(delta * np.float32(p.batch_users), p.delta_bits, bound=p.delta_max)
        self.delta_seen.append(d_q)
        g = fixedpoint.decode(d_q.dot(self.w.T), p.delta_bits + p.w_bits) / p.batch_users
        w_new = self.w * 2**p.shift - p.lr_int * e_q.T.dot(d_q)
        self.w = (w_new + 2 ** (p.shift - 1)) >> p.shift
        return g


def small_run(root: Path, shop_users: int, items: int, batch_users: int, record: bool = False, epochs: int = 1,
              **extra: dict) -> LocalRun:
    """Story 1 at a tiny size, the held-out item ranked against 20 others; `extra`: a_extra, b_extra and compute
    config sections."""
    tables = write_ecommerce_bank(root / "party_a" / "data", root / "party_b" / "data", shop_users, items, seed=5)
    shop = {**SHOP, "eval": {"negatives": 20}}
    return build_run(root, tables, shop, BANK, "exactness", epochs=epochs, progress=False, batch_users=batch_users,
                     record=record, **extra)


def twin(run: LocalRun, defended: bool = False, steps: int = STEPS) -> tuple:
    """The plaintext twin of a run's first `steps` steps; `defended`: with the parties' [privacy] noise, drawn
    from the same seeds."""
    key = coordinator_key(run)
    joined = load_joined(run.configs["party_a"], run.configs["party_b"])
    plan = joined.training.plan()
    w0 = decrypt_saved(run, "party_b", "w_rows_init")
    layer = outer = FixedPointLayer(w0, plan)
    if defended:
        t, b = joined.training, party_b_config.load(run.configs["party_b"])
        sampler = Sampler(joined.data, t.train.batch_users, t.model.history, t.train.targets, t.train.seed)
        outer = DefendedLayer(layer, sampler, delta_noise(t.privacy, plan.batch_users, plan.delta_max),
                              embedding_noise(b.privacy))
    trained = train(joined.data, joined.b_features, joined.training, joined.tower, outer, max_steps=steps,
                    evaluate=False)
    return key, plan, layer, trained


def assert_matches_twin(run: LocalRun, steps: int) -> None:
    """The run's [W] and both parties' models after `steps` steps are the twin's, within the exactness bound."""
    key, plan, layer, trained = twin(run, steps=steps)
    assert len(layer.delta_seen) == steps
    model_dir_a, model_dir_b = run.workdir("party_a") / "model", run.workdir("party_b") / "model"
    w_rows = decrypt_saved(run, "party_b", "w_rows")
    w_cols = decrypt_saved(run, "party_a", "w_cols")
    assert (w_cols.T == w_rows).all(), "A's [W] by columns and B's [W] by rows hold different W"
    units = np.abs((w_rows - layer.w).astype(np.int64))
    assert units.max() <= 2 * steps, f"W differs by {units.max()} units of 2^-{plan.w_bits}"
    for name, saved, ours in (("A", model_dir_a / "active.pt", trained.model), ("B", model_dir_b / "tower_b.pt",
                                                                             trained.tower)):
        assert_states_agree(name, load_state(saved.parent, saved.name), ours.state_dict())


def assert_states_agree(name: str, state: dict, ours: dict) -> None:
    """A saved model is the twin's up to fixed-point rounding. Adam turns a rounding difference in a gradient
    near zero into a step of up to ±lr (0.005): in a tensor whose gradients are all near zero (B's item-vector
    network while q_j is near its zero start) several elements may differ by that much, so the count is over
    the whole model: at most 1% of its elements off by more than 1e-3, none by more than 2e-2. A step applied
    twice or lost is one optimiser step over every tensor: it moves most elements of the model by about lr."""
    diffs = {param: (state[param] - value).abs().flatten() for param, value in ours.items()}
    every = torch.cat(list(diffs.values()))
    far = int((every > 1e-3).sum())
    worst = max(diffs, key=lambda param: float(diffs[param].max()))
    assert far <= every.numel() // 100 and float(diffs[worst].max()) <= 2e-2, \
        f"{name}: {far} of its {every.numel()} parameters differ by more than 1e-3 (most: " \
        f"{diffs[worst].max():.2g}, in {worst})"


def assert_first_steps_exact(run: LocalRun) -> None:
    """After a run of two steps, W is the twin's but for rounding and both parties' models equal to float
    rounding. Two, because W first moves at step 2: u meets B's item vectors at A, which start at zero, so step
    1's δ is zero and step 2's u is the same W0's on both sides. (Step 2 is Adam's first step with a gradient
    that is not zero; its float sums may run in another order in another process, 1e-8 apart, where a step
    lost or doubled moves a parameter by about lr = 0.005.)"""
    key, plan, layer, trained = twin(run)
    assert len(layer.delta_seen) == 2  # 20 shared users in two batches
    w_rows = decrypt_saved(run, "party_b", "w_rows")
    w0 = decrypt_saved(run, "party_b", "w_rows_init")
    assert (w_rows != w0).any(), "W did not move: the comparison below would prove nothing"
    assert np.abs((w_rows - layer.w).astype(np.int64)).max() <= 1
    for saved, ours in ((run.workdir("party_a") / "model" / "active.pt", trained.model),
                        (run.workdir("party_b") / "model" / "tower_b.pt", trained.tower)):
        state = load_state(saved.parent, saved.name)
        for param, value in ours.state_dict().items():
            diff = float((state[param] - value).abs().max())
            assert diff <= 1e-6, f"{param} differs by {diff} after two steps"
