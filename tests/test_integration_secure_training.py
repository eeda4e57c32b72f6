"""Secure training with three real processes: exact against a plaintext twin, and nothing in the clear on the wire.

One small recorded run (60 shared users in batches of 20: exactly 3 secure steps)
serves both checks. The test plays every role afterwards: it reads the coordinator's
private key to decrypt what B and A hold as [W], which no party can do.

The exactness bound. The twin below repeats the secure layer's integer arithmetic
(e_B, δ and W in fixed point, g and u computed exactly). The only thing it cannot
repeat is the refresh's stochastic rounding of W'/2^s, which depends on B's secret
mask M''; the twin rounds to nearest instead. W first moves at step 2 (u meets B's
item vectors at A, which start at zero), so after step 2 the two agree exactly
except W, which differs by at most one unit 2^-w_bits per element. Later steps
start from W's that differ by that much; with |e_B| ≤ 1 that moves u by at most
d·2^-w_bits per step, and the parameters by what that does to one Adam step. We
test: W within 2 units per step taken; tower and top parameters within 1e-3 but for
a few elements (Adam turns a rounding difference in a gradient near zero into a step
of up to ±lr = 0.005: `assert_states_agree`), and to float rounding after two steps.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import kstest

from party_a.training.privacy import delta_noise
from party_a.data.sampler import Sampler
from party_b import config as party_b_config
from party_b.privacy import embedding_noise
from party_b.store import read_users
from protocol.crypto import fixedpoint, packing
from protocol.data.stored import load_state
from protocol.layer.plan import LayerPlan
from protocol.net.codec import decode
from protocol.net.transport import read_recording
from protocol.roles import B
from protocol.runtime.store import current_model
from scenarios.centralised import DefendedLayer, load_joined, train
from scenarios.ecommerce_bank import BANK, SHOP
from scenarios.experiment import build_run, coordinator_key, decrypt_saved
from scenarios.launch import LocalRun, run_all
from scenarios.synth import write_ecommerce_bank

pytestmark = pytest.mark.integration
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


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> LocalRun:
    root = tmp_path_factory.mktemp("secure")
    run = small_run(root, shop_users=100, items=40, batch_users=20, record=True)
    out = run_all(run, timeout=600)
    assert all(o.returncode == 0 for o in out.values()), {r: o.output[-3000:] for r, o in out.items()}
    return run


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
    """The run's [W] and both parties' models after `steps` steps are the twin's, within the bound above."""
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


def test_secure_steps_match_the_plaintext_twin(recorded: LocalRun) -> None:
    assert_matches_twin(recorded, STEPS)  # 60 shared users in batches of 20


def test_noise_enters_only_where_the_defences_add_it(tmp_path: Path) -> None:
    """With both defences on and seeded, the secure run and the twin that adds the same noise to δ and e_B
    (and nowhere else) agree as closely as without noise; the twin without the noise does not."""
    run = small_run(tmp_path, shop_users=100, items=40, batch_users=20,
                    a_extra={"privacy": {"noise_multiplier": 0.5, "seed": 5}},
                    b_extra={"privacy": {"noise_multiplier": 0.5, "seed": 6}})
    out = run_all(run, timeout=600)
    assert all(o.returncode == 0 for o in out.values()), {r: o.output[-3000:] for r, o in out.items()}
    w_rows = decrypt_saved(run, "party_b", "w_rows")
    for defended, agrees in ((True, True), (False, False)):
        _, plan, layer, trained = twin(run, defended)
        assert (np.abs((w_rows - layer.w).astype(np.int64)).max() <= 2 * STEPS) == agrees
        state = load_state(run.workdir("party_b") / "model", "tower_b.pt")
        diff = max(float((state[p] - v).abs().max()) for p, v in trained.tower.state_dict().items())
        assert (diff <= 1e-3) == agrees, diff
    directory, manifest = current_model(run.workdir("party_b"), B)
    assert manifest["privacy"] == {"clip": 1.0, "noise_multiplier": 0.5, "dp_delta": 1e-5}, "a refresh would not noise"
    releases = read_users(directory)["releases"]
    epochs = len(json.loads((run.workdir("party_a") / "report.json").read_text())["epochs"])
    assert (releases == epochs).all(), "each epoch releases a user's e_B once: the evaluation sends it again"


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


def test_two_secure_steps_are_exact_but_for_rounding_w(tmp_path: Path) -> None:
    run = small_run(tmp_path, shop_users=34, items=30, batch_users=10)
    out = run_all(run, timeout=300)
    assert all(o.returncode == 0 for o in out.values()), {r: o.output[-3000:] for r, o in out.items()}
    assert_first_steps_exact(run)


def frames(run: LocalRun) -> list[dict]:
    return [f for path in sorted(run.root.glob("*/wire/*.wire")) for f in read_recording(str(path))]


def walk(obj: object):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from walk(v)
    else:
        yield obj


def test_the_wire_holds_nothing_in_the_clear(recorded: LocalRun) -> None:
    key, plan, layer, _ = twin(recorded)
    n, n2 = key.public.n, key.public.n2
    recorded_frames = frames(recorded)
    assert len(recorded_frames) > 50
    wire = b"\n".join(f["data"] for f in recorded_frames)
    bodies = [decode(f["data"])["body"] for f in recorded_frames]

    # 1. no float array crosses at all, and integer arrays only name users of a batch
    for body in bodies:
        for leaf in walk(body):
            if isinstance(leaf, np.ndarray):
                assert leaf.dtype.kind in "iu" and leaf.ndim == 1 and leaf.max() < 60, leaf.dtype
            assert not isinstance(leaf, float) or leaf in plan.to_message().values(), leaf

    # 2. every ciphertext carries randomness: c = 1 + m·n (mod n^2) would be m in the clear
    ciphertexts = [int(c) for body in bodies if isinstance(body, dict)
                   for field in ("cts", "ciphertexts") if field in body for c in body[field]]
    ciphertexts += [int(c) for body in bodies if isinstance(body, dict)
                    for part in body.values() if isinstance(part, dict) and "cts" in part for c in part["cts"]]
    assert len(ciphertexts) > 100
    assert not [c for c in ciphertexts if (c - 1) % n == 0], "a ciphertext without randomness crossed the wire"
    assert all(0 < c < n2 for c in ciphertexts)

    # 3. no fixed-point encoding of e_B, u, δ or W, neither as integers nor packed, appears in any message
    rows, cols = plan.layouts(key.public)
    needles = []
    for matrix, layout in [(layer.e_seen[0], None), (layer.u_seen[0], rows), (layer.delta_seen[0], rows),
                           (layer.w, rows)]:
        for row in matrix[:10]:
            ints = [int(v) for v in row]
            if not any(ints):
                continue
            needles.append(np.array(ints, dtype=np.int64).tobytes())
            if layout is not None and len(ints) == layout.length:
                packed = packing.pack(np.array([ints], dtype=object), layout)[0][0] % n
                needles.append(int(packed).to_bytes((int(packed).bit_length() + 7) // 8, "big"))
    # 4. nor B's columns as numbers or text, nor a batch's labels
    bank = load_joined(recorded.configs["party_a"], recorded.configs["party_b"]).b_features
    for row in bank.numeric[:10]:
        needles += [row.tobytes(), row.astype(np.float64).tobytes()]
    assert needles and [hashlib.sha256(x).hexdigest() for x in needles if x in wire] == []

    # 5. what the coordinator decrypts for steps 3 and 5 is uniform over the mask range, and never a true u
    def decrypted(step: str, layout: packing.Layout) -> np.ndarray:
        steps = {"forward": ("forward", "evaluate"), "backward": ("backward",)}[step]
        replies = [b for f, b in zip(recorded_frames, bodies) if f["dir"] == "in" and f["peer"] == "coordinator"
                   and decode(f["data"])["tag"] == "coordinator/decrypted" and b["step"] in steps]
        slots = [v for r in replies for p in r["plaintexts"] for v in packing.unpack([p], layout, 1, n).ravel()]
        return np.array([int(v) for v in slots], dtype=object)

    for step, layout, bound in (("forward", rows, plan.u_bound), ("backward", cols, plan.g_bound)):
        values = decrypted(step, layout)
        assert values.size > 500
        uniform = (values / 2 ** (bound.bit_length() + packing.SIGMA)).astype(float)
        # a mask one bit short puts every value below 1/2 (p < 1e-100 here); 1e-6 keeps honest runs from failing
        assert kstest(uniform, "uniform").pvalue > 1e-6, f"{step}: decrypted values are not uniform over the mask"
        # the mask is exactly σ bits above the plan's bound: the largest of hundreds of draws has that length
        assert max(int(v) for v in values).bit_length() == bound.bit_length() + packing.SIGMA, step
    true_u = {int(v) for v in np.asarray(layer.u_seen[0]).ravel()} - {0}
    assert not true_u & set(decrypted("forward", rows))


def test_no_party_sends_a_ciphertext_it_received(recorded: LocalRun) -> None:
    """Every ciphertext a party passes on is fresh, so the receiver cannot link it to one it made or saw."""
    for role in ("party_a", "party_b"):
        seen: dict[str, set[int]] = {"in": set(), "out": set()}
        for frame in read_recording(str(recorded.root / role / "wire" / f"{role}.wire")):
            envelope = decode(frame["data"])
            if frame["peer"] == "coordinator" or not isinstance(envelope["body"], dict):
                continue
            seen[frame["dir"]] |= {int(c) for part in envelope["body"].values() if isinstance(part, dict)
                                   and "cts" in part for c in part["cts"]}
        assert len(seen["in"]) > 20 and len(seen["out"]) > 20, role
        assert not seen["in"] & seen["out"], f"{role} sent ciphertexts it had received"
