"""Which PSI runs, full or delta: both parties say what they ask for and what they hold, and choose alike.

Each side sends `PsiOpen`: full or delta, whether it may fall back to a full run, the
ID of the state it kept (psi/state.py; empty when it has none it can use) and why it
cannot run a delta (no state, an unreadable one, or a secret older than [psi]
key_max_age_days). A delta runs when both ask for one, neither is blocked and both
hold the same state ID. Otherwise it is a full run when every side that asked for a
delta may fall back (`--full-if-needed`), and with the reasons logged; else both
stop with a StateError (exit 2) naming them. A full run draws a fresh secret: that is
how a key is rotated, and it costs what any full run costs (every ID of both sides
blinded twice again).
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol import messages
from protocol.errors import ProtocolError, StateError
from protocol.messages.psi import PsiDone, PsiOpen
from protocol.net.transport import Endpoint
from psi.session import VERSION, PsiSettings
from psi.state import PsiState

FULL, DELTA = "full", "delta"


@dataclass(frozen=True)
class Wish:
    """What a party asks for: a full or a delta run, and whether a delta that cannot run becomes a full run."""

    want: str = FULL
    fallback: bool = False


def key_too_old(state: PsiState, settings: PsiSettings, role: str, now: float | None = None) -> str:
    """Why `state`'s secret may not be used again (empty when it may)."""
    age = state.age_days(now)
    if age <= settings.key_max_age_days:
        return ""
    return (f"{role}'s PSI secret is {age:.1f} days old, past its [psi] key_max_age_days = "
            f"{settings.key_max_age_days:g} (a full PSI rotates it)")


def choose(own: PsiOpen, theirs: PsiOpen, role: str, peer: str) -> tuple[str, list[str]]:
    """The mode both parties arrive at from the two `PsiOpen`s (the same whichever side computes it), and why it is
    not a delta when one was asked for; a StateError when a delta was asked for without a fallback and cannot run."""
    reasons = []
    for who, said in ((role, own), (peer, theirs)):
        if said.want == FULL:
            reasons.append(f"{who} asked for a full PSI")
        elif said.blocked:
            reasons.append(said.blocked)
    if not reasons and own.state != theirs.state:
        reasons.append(f"the PSI states of {' and '.join(sorted((role, peer)))} differ (a PSI ran to its end at one of "
                       f"them only, or one lost or replaced its state)")
    if not reasons:
        return DELTA, []
    asked = [said for said in (own, theirs) if said.want == DELTA]
    if all(said.fallback for said in asked):
        return FULL, reasons if asked else []
    raise StateError(f"no delta PSI with {peer}: {'; '.join(reasons)}. A full PSI is needed: run `psi` without "
                     f"--delta at both parties (or `psi --delta --full-if-needed`)")


def agree(endpoint: Endpoint, peer: str, wish: Wish, state_id: bytes, blocked: str) -> tuple[str, list[str]]:
    """Exchange `PsiOpen`s and `choose`."""
    own = PsiOpen(VERSION, wish.want, wish.fallback, state_id, blocked)
    messages.send(endpoint, peer, own)
    theirs = messages.receive(endpoint, peer, PsiOpen)
    if theirs.version != VERSION:
        raise ProtocolError(f"{peer} speaks PSI version {theirs.version}, this party {VERSION}")
    return choose(own, theirs, endpoint.cfg.role, peer)


def confirm(endpoint: Endpoint, peer: str, state_id: bytes) -> None:
    """The last step of every PSI: both sides must have arrived at the same state (nothing is written otherwise)."""
    messages.send(endpoint, peer, PsiDone(state_id))
    theirs = messages.receive(endpoint, peer, PsiDone).state
    if theirs != state_id:
        raise ProtocolError(f"{peer} arrived at another PSI state than this party; nothing was written (run a full "
                            f"PSI)")
