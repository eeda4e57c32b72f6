"""Party A's config: its endpoint, user table, and how it takes part in PSI."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from protocol import config
from protocol.config import PartyBasics
from psi.align import PsiSettings, UserIds, read_users_and_psi

ROLE = "party_a"
PEER = "party_b"


@dataclass(frozen=True)
class PartyAConfig:
    basics: PartyBasics
    users: UserIds
    psi: PsiSettings


def load(path: Path) -> PartyAConfig:
    root = config.load(path)
    basics = config.read_party_basics(root, ROLE, PEER)
    users, psi = read_users_and_psi(root)
    root.finish()
    return PartyAConfig(basics, users, psi)
