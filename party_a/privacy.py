"""A's defence of its labels: noise on δ before it is encrypted ([privacy] in A's config; off by default).

The only place noise enters: `BatchTurn.learn` (party_a/train.py) passes δ = ∂L/∂u
through `DeltaNoise` after A's model has taken its step on the clean gradient, and
before step 4 encrypts it. So [g] = δ̃·[W]ᵀ, which B decrypts, and [δ̃], from which B
updates [W], both carry the noise; A's own model does not. Each row, at the per-user
scale δ·batch_users that the layer sends, is set to norm `delta_clip` (the job
`equal_norms` does per batch, done per row so that no row depends on another user),
blurred with N(0, (σ·delta_clip)²) and clamped to ±delta_max, the clamp the
fixed-point encoding applies anyway (protocol/privacy.py).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from protocol.privacy import epsilon, gaussian_rows, noise_rng


@dataclass(frozen=True)
class DeltaPrivacy:
    """[privacy] in A's config: the defence is on when `delta_noise_multiplier` > 0."""

    delta_clip: float = 1.0
    delta_noise_multiplier: float = 0.0
    dp_delta: float = 1e-5
    seed: int | None = None  # None: noise from the OS; a seed only for experiments that replay a run

    @property
    def on(self) -> bool:
        return self.delta_noise_multiplier > 0


class DeltaNoise:
    """δ rows of one run through the Gaussian mechanism, counting each user's releases for its ε."""

    def __init__(self, settings: DeltaPrivacy, batch_users: int, delta_max: float):
        self.settings, self.batch_users, self.delta_max = settings, batch_users, delta_max
        self.rng = noise_rng(settings.seed)
        self.releases: Counter[int] = Counter()

    def __call__(self, users: np.ndarray, delta: np.ndarray) -> np.ndarray:
        s = self.settings
        self.releases.update(int(u) for u in users)
        rows = gaussian_rows(np.asarray(delta, dtype=np.float64) * self.batch_users, s.delta_clip,
                             s.delta_noise_multiplier, self.delta_max, self.rng, normalise=True)
        return rows / self.batch_users

    def spent(self) -> dict:
        """The defence's settings, the most releases of any one user, and the ε they spend."""
        s, most = self.settings, max(self.releases.values(), default=0)
        return {"delta_clip": s.delta_clip, "delta_noise_multiplier": s.delta_noise_multiplier,
                "dp_delta": s.dp_delta, "releases_per_user": most,
                "epsilon": epsilon(s.delta_noise_multiplier, most, s.dp_delta)}
