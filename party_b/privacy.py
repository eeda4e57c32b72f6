"""B's defence of its columns: noise on e_B before [u] is computed ([privacy] in B's config; off by default).

The only place noise enters: `TowerTurn.embed` (party_b/follow.py) returns e_B
passed through `embedding_noise`, and step 1 encodes that row: [u] = ẽ_B·[W] for A,
and step 6 updates [W] from the same ẽ_B, so W holds nothing of the clean e_B.
Tower B back-propagates g through its clean output. Each row is clipped to norm
`clip`, blurred with N(0, (σ·clip)²) and clamped to ±1, the bound tanh gives and
the slots rely on (protocol/privacy.py). A training step releases a user's row; the
evaluation forward of the same epoch sends that released row again (post-processing,
no further ε) rather than a fresh one, so a user costs one release per epoch. In
training each release is in B's ledger (`<workdir>/releases/<run_id>/e_b.jsonl`)
before it is sent, and a step redone after a resume re-sends the rows released for
it. A refresh session releases fresh rows, and they count: a model's store keeps, per
shared user, the releases so far, counted before the session sends anything, and a
refresh uses the noise the model was trained with.
"""

from __future__ import annotations

from pathlib import Path

from protocol.privacy import RowNoise, RowPrivacy
from protocol.store.releases import open_ledger


def embedding_noise(settings: RowPrivacy, workdir: Path | None = None, run_id: str = "") -> RowNoise:
    """The Gaussian mechanism on the e_B rows B releases; with a `workdir`, on the run's ledger there."""
    return RowNoise(settings, bound=1.0, ledger=open_ledger(workdir, run_id, "e_b"))
