"""The three roles and who talks to whom: the one place role names are written."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    COORDINATOR = "coordinator"
    PARTY_A = "party_a"
    PARTY_B = "party_b"


A, B, C = Role.PARTY_A, Role.PARTY_B, Role.COORDINATOR

PEERS: dict[Role, tuple[Role, Role]] = {
    A: (B, C),
    B: (A, C),
    C: (A, B),
}


def other_party(role: str) -> Role:
    """A for B and B for A."""
    return B if role == A else A
