"""Party B's config: its endpoint, its user table, and its own tower's settings.

Everything the two parties must agree on (widths, fixed-point scales, batch size,
the step size of W) comes from A with the plan; B's tower and optimiser are B's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from protocol import config
from protocol.config import PartyBasics
from psi.align import PsiSettings, UserIds, read_users_and_psi

ROLE = "party_b"
PEER = "party_a"


@dataclass(frozen=True)
class TowerSettings:
    hidden: tuple[int, ...] = (64,)
    feature_dim: int = 8
    lr: float = 0.005  # Adam
    seed: int = 2
    encryption: str = "djn"


@dataclass(frozen=True)
class PartyBConfig:
    basics: PartyBasics
    users: UserIds
    psi: PsiSettings
    tower: TowerSettings


def load(path: Path) -> PartyBConfig:
    root = config.load(path)
    basics = config.read_party_basics(root, ROLE, PEER)
    users, psi = read_users_and_psi(root)
    m = root.sub("model")
    d = TowerSettings()
    secure = root.sub("secure")
    tower = TowerSettings(hidden=tuple(int(v) for v in m.take("hidden", list, list(d.hidden))),
                          feature_dim=m.take_positive("feature_dim", int, d.feature_dim),
                          lr=m.take_positive("lr", float, d.lr), seed=m.take("seed", int, d.seed),
                          encryption=secure.take_choice("encryption", ("djn", "full"), d.encryption))
    m.finish()
    secure.finish()
    root.finish()
    return PartyBConfig(basics, users, psi, tower)
