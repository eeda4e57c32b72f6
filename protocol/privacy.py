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
from collections import Counter
from dataclasses import dataclass

import numpy as np

from protocol.runtime.config import Table

REPLACE_SENSITIVITY = 2.0  # replacing a user's data moves its bounded row by at most 2·clip


@dataclass(frozen=True)
class RowPrivacy:
    """[privacy] in a party's config: the rows it releases per user clipped to norm `clip` and blurred with
    noise multiplier σ; off at σ = 0, the default."""

    clip: float = 1.0
    noise_multiplier: float = 0.0
    dp_delta: float = 1e-5
    seed: int | None = None  # None: noise from the OS; a seed only for experiments that replay a run

    @property
    def on(self) -> bool:
        return self.noise_multiplier > 0


def read_privacy(root: Table, what: str) -> RowPrivacy:
    """[privacy]: the party's noise on `what` it releases, off unless noise_multiplier > 0."""
    t = root.sub("privacy")
    d = RowPrivacy()
    settings = RowPrivacy(clip=t.take_positive("clip", float, d.clip),
                          noise_multiplier=t.take("noise_multiplier", float, d.noise_multiplier),
                          dp_delta=t.take_positive("dp_delta", float, d.dp_delta), seed=t.take("seed", int, None))
    t.finish()
    if settings.noise_multiplier < 0:
        raise t.error("noise_multiplier", f"must be 0 (no noise on {what}) or more")
    if settings.dp_delta >= 1:
        raise t.error("dp_delta", f"must be below 1, got {settings.dp_delta}")
    return settings


class RowNoise:
    """A party's released rows through the Gaussian mechanism, counting each user's releases for its ε.

    `scale` takes a row to the scale at which it is clipped (and back after); `normalise` sets every row to
    norm `clip` instead of at most `clip`; `bound` is the clamp the fixed-point encoding applies anyway;
    `keep_last` keeps each user's last released row, so that it can be sent `again` at no further cost."""

    def __init__(self, settings: RowPrivacy, bound: float, scale: float = 1.0, normalise: bool = False,
                 keep_last: bool = False):
        self.settings, self.bound, self.scale, self.normalise = settings, bound, scale, normalise
        self.rng = noise_rng(settings.seed)
        self.releases: Counter[int] = Counter()
        self.last: dict[int, np.ndarray] | None = {} if keep_last else None

    def __call__(self, users: np.ndarray, rows: np.ndarray) -> np.ndarray:
        s = self.settings
        self.releases.update(int(u) for u in users)
        noisy = gaussian_rows(np.asarray(rows, dtype=np.float64) * self.scale, s.clip, s.noise_multiplier,
                              self.bound, self.rng, self.normalise) / self.scale
        if self.last is not None:
            self.last.update(zip((int(u) for u in users), noisy))
        return noisy

    def again(self, users: np.ndarray) -> np.ndarray | None:
        """The rows last released for `users`, None unless every one of them has been released: sending a
        released row again is post-processing, and spends nothing."""
        if self.last is None or any(int(u) not in self.last for u in users):
            return None
        return np.stack([self.last[int(u)] for u in users])

    def spent(self) -> dict:
        """The defence's settings, the most releases of any one user, and the ε they spend."""
        return spent(self.settings, max(self.releases.values(), default=0))

    def state(self) -> dict:
        """What a checkpoint keeps (JSON), so that a resumed run neither forgets a release (its ε would be understated)
        nor replays its noise: the releases per user, the rows kept to send again, the generator's state."""
        users = sorted(self.last or {})
        return {"releases": [[u, c] for u, c in self.releases.items()],
                "last": {"users": users, "rows": [self.last[u].tolist() for u in users]},
                "rng": self.rng.bit_generator.state}

    def restore(self, state: dict) -> None:
        """Take back what `state` kept."""
        self.releases = Counter({int(u): int(c) for u, c in state["releases"]})
        if self.last is not None:
            self.last = {int(u): np.asarray(row) for u, row in zip(state["last"]["users"], state["last"]["rows"])}
        self.rng.bit_generator.state = state["rng"]


def spent(settings: RowPrivacy, releases: int) -> dict:
    """The defence's settings, a user's releases and the ε they spend (ε null without a defence)."""
    s = settings
    return {"clip": s.clip, "noise_multiplier": s.noise_multiplier, "dp_delta": s.dp_delta,
            "releases_per_user": releases, "epsilon": epsilon(s.noise_multiplier, releases, s.dp_delta) if s.on
            else None}


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
