"""The Gaussian mechanism on per-user rows, and its accountant (README, "What each party learns").

A party that switches its defence on ([privacy] in its config) releases, per user
and step, one row through `gaussian_rows`: the row bounded to norm `clip`, plus
independent N(0, (σ·clip)²) noise per coordinate, then clamped to the fixed-point
range (post-processing). Replacing one user's data moves that user's bounded row
by at most 2·clip, so each release is a Gaussian mechanism with noise multiplier
σ/2 with respect to that sensitivity, and a user's releases compose over the run.

No amplification by subsampling: the other party is told which users each step is
about, so every release is known to concern its user. `epsilon` takes a sampling
rate only so that its figure can be compared with the library's for one.

What the ε covers: the released rows of a user, each a function of that user's own
data and of the releasing party's model. A user's data also shapes that model (A's
model trains on clean gradients, tower B on its clean columns), and so the rows of
other users released later; that path is not covered (it would take DP-SGD on the
models themselves).
"""

from __future__ import annotations

import secrets

import numpy as np

REPLACE_SENSITIVITY = 2.0  # replacing a user's data moves its bounded row by at most 2·clip


def noise_rng(seed: int | None) -> np.random.Generator:
    """The generator of a party's noise: seeded for reproducible experiments, else from the OS."""
    return np.random.default_rng(secrets.randbits(128) if seed is None else seed)


def gaussian_rows(rows: np.ndarray, clip: float, noise_multiplier: float, bound: float, rng: np.random.Generator,
                  normalise: bool = False) -> np.ndarray:
    """Each row scaled to norm `clip` (`normalise`) or to at most `clip`, plus N(0, (noise_multiplier·clip)²)
    per coordinate, clamped to ±`bound`. A zero row to be normalised gets a random direction."""
    rows = np.asarray(rows, dtype=np.float64)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    if normalise:
        zero = (norms == 0)[:, 0]
        rows = rows.copy()
        rows[zero] = rng.standard_normal((int(zero.sum()), rows.shape[1]))
        scale = clip / np.linalg.norm(rows, axis=1, keepdims=True)
    else:
        scale = np.minimum(1.0, clip / np.maximum(norms, 1e-300))
    noisy = rows * scale + rng.standard_normal(rows.shape) * (noise_multiplier * clip)
    return np.clip(noisy, -bound, bound)


def _event(noise_multiplier: float, releases: int, sampling_rate: float):
    import dp_accounting

    one = dp_accounting.GaussianDpEvent(noise_multiplier / REPLACE_SENSITIVITY)
    if sampling_rate < 1.0:
        one = dp_accounting.PoissonSampledDpEvent(sampling_rate, one)
    return dp_accounting.SelfComposedDpEvent(one, releases)


def epsilon(noise_multiplier: float, releases: int, dp_delta: float, sampling_rate: float = 1.0) -> float:
    """ε of `releases` Gaussian releases of one user's row (RDP accountant of Google's dp-accounting);
    inf without noise, 0 without releases."""
    if releases == 0:
        return 0.0
    if noise_multiplier <= 0:
        return float("inf")
    from dp_accounting.rdp import RdpAccountant

    accountant = RdpAccountant()
    accountant.compose(_event(noise_multiplier, releases, sampling_rate))
    return float(accountant.get_epsilon(dp_delta))


def noise_for_epsilon(target: float, releases: int, dp_delta: float) -> float:
    """The smallest noise multiplier (to 0.1 %) whose `releases` releases spend at most `target`."""
    low, high = 1e-2, 1.0
    while epsilon(high, releases, dp_delta) > target:
        low, high = high, high * 2
    while high - low > 1e-3 * high:
        mid = (low + high) / 2
        low, high = (mid, high) if epsilon(mid, releases, dp_delta) > target else (low, mid)
    return high
