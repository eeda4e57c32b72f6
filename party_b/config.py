"""Party B's config: its endpoint, its user table and how it takes part in PSI and training."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from protocol import config
from protocol.config import PartyBasics
from psi.align import PsiSettings, UserIds, read_users_and_psi

ROLE = "party_b"
PEER = "party_a"


@dataclass(frozen=True)
class PartyBConfig:
    basics: PartyBasics
    users: UserIds
    psi: PsiSettings


def load(path: Path) -> PartyBConfig:
    root = config.load(path)
    basics = config.read_party_basics(root, ROLE, PEER)
    users, psi = read_users_and_psi(root)
    root.finish()
    return PartyBConfig(basics, users, psi)
