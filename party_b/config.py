"""Party B's config: its endpoint, its user table, and its own tower's settings.

Everything the two parties must agree on (widths, fixed-point scales, batch size,
the step size of W) comes from A with the plan; B's tower and optimiser are B's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from party_b.privacy import EmbeddingPrivacy
from protocol.crypto.paillier import ENCRYPTION_MODES
from protocol.roles import B
from protocol.runtime import config
from protocol.runtime.checkpoint import CheckpointSettings, read_settings
from protocol.runtime.config import PartyBasics, Table, read_record
from psi.align import UserIds, read_users_and_psi
from psi.session import PsiSettings


@dataclass(frozen=True)
class TowerSettings:
    hidden: tuple[int, ...] = (64,)
    feature_dim: int = 8
    lr: float = 0.005  # Adam
    seed: int = 2


@dataclass(frozen=True)
class PartyBConfig:
    basics: PartyBasics
    users: UserIds
    psi: PsiSettings
    tower: TowerSettings
    encryption: str  # how B draws encryption randomness: one of ENCRYPTION_MODES
    privacy: EmbeddingPrivacy = EmbeddingPrivacy()
    record: bool = False  # [audit] record: keep the g B receives, per user, under <workdir>/audit/
    checkpoint: CheckpointSettings = CheckpointSettings()


def load(path: Path) -> PartyBConfig:
    root = config.load(path)
    basics = config.read_party_basics(root, B)
    users, psi = read_users_and_psi(root)
    tower = root.sub("model").take_settings(TowerSettings, ("feature_dim", "lr"))
    secure = root.sub("secure")
    encryption = secure.take_choice("encryption", ENCRYPTION_MODES, ENCRYPTION_MODES[0])
    secure.finish()
    privacy, record, checkpoint = read_privacy(root), read_record(root), read_settings(root)
    root.finish()
    return PartyBConfig(basics, users, psi, tower, encryption, privacy, record, checkpoint)


def read_privacy(root: Table) -> EmbeddingPrivacy:
    """[privacy]: B's noise on e_B (party_b/privacy.py), off unless e_noise_multiplier > 0."""
    t = root.sub("privacy")
    d = EmbeddingPrivacy()
    settings = EmbeddingPrivacy(e_clip=t.take_positive("e_clip", float, d.e_clip),
                                e_noise_multiplier=t.take("e_noise_multiplier", float, d.e_noise_multiplier),
                                dp_delta=t.take_positive("dp_delta", float, d.dp_delta), seed=t.take("seed", int, None))
    t.finish()
    if settings.e_noise_multiplier < 0:
        raise t.error("e_noise_multiplier", "must be 0 (off) or more")
    if settings.dp_delta >= 1:
        raise t.error("dp_delta", f"must be below 1, got {settings.dp_delta}")
    return settings
