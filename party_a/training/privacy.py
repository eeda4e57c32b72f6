"""A's defence of its labels: noise on δ before it is encrypted ([privacy] in A's config; off by default).

The only place noise enters: `BatchTurn.learn` (party_a/training/layer.py) passes δ = ∂L/∂u
through `delta_noise` after A's model has taken its step on the clean gradient, and
before step 4 encrypts it. So [g] = δ̃·[W]ᵀ, which B decrypts, and [δ̃], from which B
updates [W], both carry the noise; A's own model does not. Each row, at the per-user
scale δ·batch_users that the layer sends, is set to norm `clip` (the job
`equal_norms` does per batch, done per row so that no row depends on another user),
blurred with N(0, (σ·clip)²) and clamped to ±delta_max, the clamp the fixed-point
encoding applies anyway (protocol/privacy.py). Each release is in A's ledger
(`<workdir>/releases/<run_id>/delta.jsonl`) before step 4 encrypts it, and a step
redone after a resume re-sends the rows released for it, whatever u B sends this time.
"""

from __future__ import annotations

from pathlib import Path

from party_a.config import Training
from protocol.layer.defence import Defence
from protocol.layer.received import Received
from protocol.privacy import RowNoise, RowPrivacy
from protocol.store.releases import open_ledger


def delta_noise(settings: RowPrivacy, batch_users: int, delta_max: float, workdir: Path | None = None,
                run_id: str = "") -> RowNoise:
    """The Gaussian mechanism on the δ rows of one run; with a `workdir`, on the run's ledger there."""
    return RowNoise(settings, bound=delta_max, scale=batch_users, normalise=True,
                    ledger=open_ledger(workdir, run_id, "delta"))


def defence(cfg: Training, workdir: Path | None = None, run_id: str = "") -> Defence:
    """A's defence (the noise on δ, on the run's ledger in `workdir`, if given) and record the config asks for."""
    p = cfg.plan()
    noise = delta_noise(cfg.privacy, p.batch_users, p.delta_max, workdir, run_id) if cfg.privacy.on else None
    return Defence(noise, Received() if cfg.record else None)
