"""Party B's config: its endpoint, its user table, and its own tower's settings.

Everything the two parties must agree on (widths, fixed-point scales, batch size,
the step size of W) comes from A with the plan; B's tower and optimiser are B's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from protocol.crypto.paillier import ENCRYPTION_MODES
from protocol.privacy import RowPrivacy, read_privacy
from protocol.roles import B
from protocol.runtime.checkpoint import CheckpointSettings, read_settings
from protocol.settings import config
from protocol.settings.config import PartyBasics, read_record
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
    privacy: RowPrivacy = RowPrivacy()
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
    privacy, record, checkpoint = read_privacy(root, "e_B"), read_record(root), read_settings(root)
    root.finish()
    return PartyBConfig(basics, users, psi, tower, encryption, privacy, record, checkpoint)

