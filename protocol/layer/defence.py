"""A party's defence and record on the secure layer, both off by default.

The defence is the noise the rows a party sends pass through (A's δ, party_a/training/privacy.py; B's e_B,
party_b/privacy.py); the record keeps, per user, what the party receives (A's u, B's g) for the leakage audit
([audit] record). docs/security.md tells what each defends.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from protocol.layer.received import Received
from protocol.privacy import RowNoise, RowPrivacy, spent


@dataclass(frozen=True)
class Defence:
    """The noise on the rows this party sends (None: off) and the record of what it receives (None: off)."""

    noise: RowNoise | None = None
    received: Received | None = None

    def spent(self) -> dict:
        """The defence's settings and ε for the report (ε null: no defence, no bound)."""
        return self.noise.spent() if self.noise is not None else spent(RowPrivacy(), 0)

    def privacy(self) -> dict:
        """The defence's settings as a model's manifest keeps them for its refreshes (never the seed)."""
        s = self.noise.settings if self.noise is not None else RowPrivacy()
        return {"clip": s.clip, "noise_multiplier": s.noise_multiplier, "dp_delta": s.dp_delta}

    def releases(self, n_users: int) -> np.ndarray:
        """How many times each shared user's row went out through the noise (zeros without it)."""
        counts = np.zeros(n_users, dtype=np.int64)
        if self.noise is not None:
            for user, count in self.noise.releases.items():
                counts[user] = count
        return counts
