"""B's defence of its columns: noise on e_B before [u] is computed ([privacy] in B's config; off by default).

The only place noise enters: `TowerTurn.embed` (party_b/follow.py) returns e_B
passed through `EmbeddingNoise`, and step 1 encodes that row: [u] = ẽ_B·[W] for A,
and step 6 updates [W] from the same ẽ_B, so W holds nothing of the clean e_B.
Tower B back-propagates g through its clean output. Each row is clipped to norm
`e_clip`, blurred with N(0, (σ·e_clip)²) and clamped to ±1, the bound tanh gives and
the slots rely on (protocol/privacy.py). Training steps and evaluation forwards
both release rows, and both count.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from protocol.privacy import epsilon, gaussian_rows, noise_rng


@dataclass(frozen=True)
class EmbeddingPrivacy:
    """[privacy] in B's config: the defence is on when `e_noise_multiplier` > 0."""

    e_clip: float = 1.0
    e_noise_multiplier: float = 0.0
    dp_delta: float = 1e-5
    seed: int | None = None  # None: noise from the OS; a seed only for experiments that replay a run

    @property
    def on(self) -> bool:
        return self.e_noise_multiplier > 0


class EmbeddingNoise:
    """e_B rows of one run through the Gaussian mechanism, counting each user's releases for its ε."""

    def __init__(self, settings: EmbeddingPrivacy):
        self.settings = settings
        self.rng = noise_rng(settings.seed)
        self.releases: Counter[int] = Counter()

    def __call__(self, users: np.ndarray, e_b: np.ndarray) -> np.ndarray:
        s = self.settings
        self.releases.update(int(u) for u in users)
        return gaussian_rows(e_b, s.e_clip, s.e_noise_multiplier, 1.0, self.rng)

    def spent(self) -> dict:
        """The defence's settings, the most releases of any one user, and the ε they spend."""
        s, most = self.settings, max(self.releases.values(), default=0)
        return {"e_clip": s.e_clip, "e_noise_multiplier": s.e_noise_multiplier, "dp_delta": s.dp_delta,
                "releases_per_user": most, "epsilon": epsilon(s.e_noise_multiplier, most, s.dp_delta)}
