"""A's defence of its labels: noise on δ before it is encrypted ([privacy] in A's config; off by default).

The only place noise enters: `BatchTurn.learn` (party_a/train.py) passes δ = ∂L/∂u
through `delta_noise` after A's model has taken its step on the clean gradient, and
before step 4 encrypts it. So [g] = δ̃·[W]ᵀ, which B decrypts, and [δ̃], from which B
updates [W], both carry the noise; A's own model does not. Each row, at the per-user
scale δ·batch_users that the layer sends, is set to norm `clip` (the job
`equal_norms` does per batch, done per row so that no row depends on another user),
blurred with N(0, (σ·clip)²) and clamped to ±delta_max, the clamp the fixed-point
encoding applies anyway (protocol/privacy.py).
"""

from __future__ import annotations

from protocol.privacy import RowNoise, RowPrivacy


def delta_noise(settings: RowPrivacy, batch_users: int, delta_max: float) -> RowNoise:
    """The Gaussian mechanism on the δ rows of one run."""
    return RowNoise(settings, bound=delta_max, scale=batch_users, normalise=True)
