"""The leakage audit: attacks find planted signals and nothing in noise; the accountant is the library's; the
defences are off by default and, when on, touch only δ (A) or e_B (B)."""

from __future__ import annotations

import math

import dp_accounting
import numpy as np
import pytest
import torch
from dp_accounting.rdp import RdpAccountant

from audit.attacks import Columns, Labels, auxiliary, column_attacks, label_attacks
from party_a.training.privacy import delta_noise
from party_b.privacy import embedding_noise
from protocol.layer.received import Received, load_received
from protocol.privacy import RowNoise, RowPrivacy, epsilon, noise_for_epsilon

USERS, EPOCHS, D = 600, 4, 8


def planted_g(label: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """g per user and epoch: random directions, pushed towards one direction (per epoch) for positives."""
    g = rng.standard_normal((USERS, EPOCHS, D))
    direction = rng.standard_normal((EPOCHS, D))
    return g + strength * label[:, None, None] * direction[None]


@pytest.mark.parametrize("strength, low, high", [(1.5, 0.75, 1.0), (0.0, 0.42, 0.58)])
def test_label_attacks_find_a_planted_direction_and_nothing_in_noise(strength: float, low: float,
                                                                     high: float) -> None:
    rng = np.random.default_rng(0)
    label = rng.random(USERS) < 0.4
    own = rng.standard_normal((USERS, 5))  # B's own columns know nothing of the label
    aux = auxiliary(USERS, 0.05, 0)
    result = label_attacks(planted_g(label, strength, rng), own, Labels(["planted"], label[:, None]), aux)["planted"]
    for attack in ("cosine", "2-means", "completion"):
        assert low <= result[attack] <= high, (attack, result)
    assert 0.42 <= result["own columns"] <= 0.58, result


def test_the_norm_attack_finds_a_planted_norm() -> None:
    rng = np.random.default_rng(1)
    label = rng.random(USERS) < 0.5
    g = rng.standard_normal((USERS, EPOCHS, D)) * np.where(label, 1.5, 1.0)[:, None, None]
    result = label_attacks(g, rng.standard_normal((USERS, 3)), Labels(["l"], label[:, None]),
                           auxiliary(USERS, 0.01, 0))["l"]
    assert result["norm"] > 0.9
    flat = label_attacks(rng.standard_normal((USERS, EPOCHS, D)), rng.standard_normal((USERS, 3)),
                         Labels(["l"], label[:, None]), auxiliary(USERS, 0.01, 0))["l"]
    assert 0.42 <= flat["norm"] <= 0.58


@pytest.mark.parametrize("leak", [True, False])
def test_column_attacks_recover_columns_that_u_carries(leak: bool) -> None:
    rng = np.random.default_rng(2)
    numeric = rng.standard_normal((USERS, 2))
    codes = rng.integers(0, 3, size=(USERS, 1))
    u = rng.standard_normal((USERS, 16))
    if leak:
        u[:, :2] += 2 * numeric
        u[:, 2:5] += 2 * np.eye(3)[codes[:, 0]]
    own = rng.standard_normal((USERS, 4))
    result = column_attacks(u, own, Columns(["x", "y"], numeric, ["c"], codes), auxiliary(USERS, 0.05, 0))
    for name in ("x", "y"):
        assert (result[name]["attack"] > 0.45) if leak else (result[name]["attack"] < 0.1), result[name]
        assert result[name]["own data"] < 0.1
    assert (result["c"]["attack"] > result["c"]["majority"] + 0.2) if leak else \
        (result["c"]["attack"] < result["c"]["majority"] + 0.08), result["c"]


def test_epsilon_is_the_librarys() -> None:
    sigma, q, steps, dp_delta = 1.3, 32 / 1200, 450, 1e-5
    accountant = RdpAccountant()
    accountant.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma / 2)), steps)
    assert epsilon(sigma, steps, dp_delta, sampling_rate=q) == pytest.approx(accountant.get_epsilon(dp_delta))
    direct = RdpAccountant()
    direct.compose(dp_accounting.GaussianDpEvent(sigma / 2), 12)
    assert epsilon(sigma, 12, dp_delta) == pytest.approx(direct.get_epsilon(dp_delta))
    assert epsilon(0.0, 12, dp_delta) == math.inf and epsilon(sigma, 0, dp_delta) == 0.0
    found = noise_for_epsilon(2.0, 12, dp_delta)
    assert epsilon(found, 12, dp_delta) <= 2.0 < epsilon(found * 0.99, 12, dp_delta)


def test_noise_is_off_by_default() -> None:
    assert not RowPrivacy().on


def test_delta_noise_bounds_then_blurs_each_row_and_counts_releases() -> None:
    rng = np.random.default_rng(3)
    delta = rng.standard_normal((32, 16)) / 32
    users = np.arange(32)
    quiet = delta_noise(RowPrivacy(clip=0.5, noise_multiplier=1e-9, seed=1), 32, 2.0)
    rows = quiet(users, delta) * 32
    assert np.allclose(np.linalg.norm(rows, axis=1), 0.5)
    assert np.allclose(rows / 0.5, delta / np.linalg.norm(delta, axis=1, keepdims=True), atol=1e-6)
    wide = delta_noise(RowPrivacy(clip=0.5, noise_multiplier=4.0, seed=1), 32, 100.0)
    assert 1.8 < (wide(users, delta) * 32).std() < 2.2  # σ·clip = 2
    noisy = delta_noise(RowPrivacy(clip=0.5, noise_multiplier=4.0, seed=1), 32, 2.0)
    out = noisy(users, delta) * 32
    assert np.abs(out).max() == 2.0  # clamped to ±delta_max, as the fixed-point encoding would
    noisy(users[:5], delta[:5])
    assert noisy.spent()["releases_per_user"] == 2
    again = delta_noise(RowPrivacy(clip=0.5, noise_multiplier=4.0, seed=1), 32, 2.0)
    assert np.array_equal(again(users, delta) * 32, out)


def test_embedding_noise_clips_and_stays_within_tanh_bounds() -> None:
    e = np.tanh(np.random.default_rng(4).standard_normal((10, 8)))
    out = embedding_noise(RowPrivacy(clip=1.0, noise_multiplier=1e-9, seed=0))(np.arange(10), e)
    assert np.allclose(out, e * np.minimum(1, 1 / np.linalg.norm(e, axis=1, keepdims=True)))
    loud = embedding_noise(RowPrivacy(noise_multiplier=5.0, seed=0))(np.arange(10), e)
    assert np.abs(loud).max() <= 1.0


def test_a_released_row_sent_again_is_the_same_row_and_spends_nothing() -> None:
    e = np.tanh(np.random.default_rng(5).standard_normal((6, 4)))
    noise = embedding_noise(RowPrivacy(noise_multiplier=2.0, seed=0))
    released = noise(np.arange(4), e[:4])
    assert noise.again(np.array([4, 0])) is None  # user 4 was never released: a fresh release is needed
    assert np.array_equal(noise.again(np.array([2, 0])), released[[2, 0]])
    assert noise.spent()["releases_per_user"] == 1
    assert delta_noise(RowPrivacy(noise_multiplier=2.0, seed=0), 32, 2.0).again(np.array([0])) is None  # A keeps none


def test_received_round_trips_through_npy(tmp_path) -> None:
    received = Received()
    received.add("g", 1, 0, np.array([3, 1]), np.ones((2, 4)))
    received.add("g", 1, 1, np.array([0]), np.zeros((1, 4)))
    received.write(tmp_path, {"epsilon": None})
    rows, index = load_received(tmp_path, "g")
    assert rows.shape == (3, 4) and index.tolist() == [[1, 0, 3], [1, 0, 1], [1, 1, 0]]
    assert (tmp_path / "audit" / "privacy.json").exists()


# ---- the hooks: noise off changes nothing; noise on perturbs only δ (A) or e_B (B) ----------------------------


class _Batch:
    def __init__(self, users: np.ndarray):
        self.users = users


def _a_turn(monkeypatch: pytest.MonkeyPatch, noise: RowNoise | None):
    from party_a.training import layer as party_a_train
    from protocol.layer.defence import Defence

    delta = torch.from_numpy(np.random.default_rng(5).standard_normal((4, 16)).astype(np.float32))
    monkeypatch.setattr(party_a_train, "active_step", lambda model, opt, batch, u: (0.5, delta.clone()))
    received = Received()
    turn = party_a_train.BatchTurn(None, None, _Batch(np.arange(4)), Defence(noise, received), 1, 0)
    return turn, delta.numpy(), received


def test_a_hook_is_the_identity_when_off_and_adds_noise_only_to_delta(monkeypatch: pytest.MonkeyPatch) -> None:
    u = np.random.default_rng(6).standard_normal((4, 16)).astype(np.float32)
    turn, delta, received = _a_turn(monkeypatch, None)
    out = turn.learn(u)
    assert out.dtype == delta.dtype and np.array_equal(out, delta)  # bitwise
    assert np.array_equal(received.arrays("u_train")[0], u)
    noise = delta_noise(RowPrivacy(noise_multiplier=1.0, seed=2), 32, 2.0)
    turn, delta, _ = _a_turn(monkeypatch, noise)
    expected = delta_noise(RowPrivacy(noise_multiplier=1.0, seed=2), 32, 2.0)(np.arange(4), delta)
    assert np.array_equal(turn.learn(u), expected) and not np.allclose(expected, delta)


def test_b_hook_noises_e_b_only_and_tower_learns_from_the_clean_output() -> None:
    from party_b.follow import TowerTurn
    from protocol.layer.defence import Defence

    def tower() -> torch.nn.Module:
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Embedding(10, 8), torch.nn.Tanh())

    users, g = np.arange(4), np.random.default_rng(7).standard_normal((4, 8))
    states = []
    for noise in (None, embedding_noise(RowPrivacy(noise_multiplier=2.0, seed=3))):
        t = tower()
        turn = TowerTurn(t, torch.optim.SGD(t.parameters(), lr=0.1), Defence(noise, Received()), "train/e1/b0")
        e = turn.embed(users)
        clean = turn.e_b.detach().numpy()
        assert np.array_equal(e, clean) if noise is None else not np.allclose(e, clean)
        turn.learn(g)
        states.append(t.state_dict())
        assert np.array_equal(turn.defence.received.arrays("g")[1][:, 0], np.ones(4))  # epoch from the label
    for name in states[0]:
        assert torch.equal(states[0][name], states[1][name]), name


def test_the_privacy_utility_plot_labels_only_the_settings_on_its_epsilon_axis(tmp_path, monkeypatch) -> None:
    # ∞ sits at twice the largest ε spent (2.98 here), where a log axis would also label its minor tick 3×10⁰
    import matplotlib.pyplot as plt

    from audit import report

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    monkeypatch.setattr(report, "worst_leak", lambda attacks, direction="": 0.01)
    quality = {"overall": {"hr": 0.6}, "cold": {"hr": 0.5}}
    runs = [[report.Outcome(setting, eps, eps, quality, {f: {} for f in report.FRACTIONS})
             for setting, eps in (("none", None), ("ε=2", 1.49), ("ε=1", 1.0))]]
    report.plot_curve(runs, [quality], 10, tmp_path / "curve.png")
    figures[0].canvas.draw()
    for ax in figures[0].axes:
        assert [t.get_text() for t in ax.get_xticklabels()] == ["∞", "1.49", "1"]
        assert not [t.get_text() for t in ax.get_xticklabels(minor=True) if t.get_text() and t.get_visible()]
    assert (tmp_path / "curve.png").stat().st_size > 10_000
