"""A peer's role is bound to that peer's own CA (and pin), not to any CA some peer uses.

With one CA per organisation, B's CA can issue a certificate named `coordinator`. The
server's handshake trusts every peer's CA, so only the role-to-CA binding in the
transport keeps such a certificate from being accepted as the coordinator.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from protocol import messages
from protocol.crypto.keyfiles import Passphrase
from protocol.errors import ConfigError, PeerError
from protocol.messages import PsiHello, PublicKeyAnnouncement
from protocol.net.certs import fingerprint, make_ca, make_role_cert
from protocol.net.transport import Endpoint
from protocol.roles import PEERS
from protocol.runtime import config
from protocol.runtime.config import NetworkConfig, PeerConfig
from scenarios.launch import free_ports, to_toml

SECRET = Passphrase(b"test passphrase", "the test")
HELLO = PublicKeyAnnouncement.TAG  # a tag the coordinator may send party_a


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One CA per organisation: a/ issues party_a, b/ issues party_b and (as an attacker) coordinator, c/ the
    real coordinator."""
    root = tmp_path_factory.mktemp("pki")
    for org, roles in (("a", ("party_a",)), ("b", ("party_b", "coordinator")), ("c", ("coordinator",))):
        ca_cert, ca_key = make_ca(root / org, SECRET, f"CA of {org}")
        for role in roles:
            make_role_cert(root / org, role, ca_cert, ca_key, SECRET)
    return root


def network(pki: Path, role: str, org: str, ports: dict[str, int], pins: dict[str, str] | None = None
            ) -> NetworkConfig:
    """`role`'s endpoint with the certificate `org`'s CA issued it; peers recognised by their own orgs' CAs."""
    orgs = {"party_a": "a", "party_b": "b", "coordinator": "c"}
    peers = {p: PeerConfig(p, f"127.0.0.1:{ports[p]}", p, pki / orgs[p] / "ca.pem", (pins or {}).get(p))
             for p in map(str, PEERS[role])}
    return NetworkConfig(role, "trust", f"127.0.0.1:{ports[role]}", pki / org / f"{role}.pem",
                         pki / org / f"{role}.key", SECRET, pki / org / "ca.pem", peers, receive_timeout=10,
                         peer_timeout=5, connect_timeout=5, max_message_bytes=2**20, record_dir=None)


def endpoint(pki: Path, role: str, org: str, ports: dict[str, int], pins: dict[str, str] | None = None) -> Endpoint:
    return Endpoint(network(pki, role, org, ports, pins), messages.inbox_tags(role))


def test_a_coordinator_certificate_from_bs_ca_is_refused(pki: Path) -> None:
    ports = dict(zip(("party_a", "party_b", "coordinator"), free_ports(3)))
    with endpoint(pki, "party_a", "a", ports) as a:
        with endpoint(pki, "coordinator", "c", ports) as real:
            real.send("party_a", HELLO, "from the real coordinator")
            assert a.recv("coordinator", HELLO, timeout=5) == "from the real coordinator"
        with endpoint(pki, "coordinator", "b", ports) as forged:
            with pytest.raises(PeerError, match="certificate for 'coordinator' is not issued by coordinator's CA"):
                forged.send("party_a", HELLO, "from B posing as the coordinator")


def test_a_fingerprint_mismatch_is_refused(pki: Path) -> None:
    ports = dict(zip(("party_a", "party_b", "coordinator"), free_ports(3)))
    wrong = fingerprint((pki / "c" / "coordinator.pem").read_bytes())
    with endpoint(pki, "party_a", "a", ports, pins={"party_b": wrong}):
        with endpoint(pki, "party_b", "b", ports) as b:
            with pytest.raises(PeerError, match="certificate for 'party_b' does not match the pinned fingerprint"):
                b.send("party_a", PsiHello.TAG, "from B, but not the certificate A pinned")


def test_peers_under_different_cas_must_be_pinned(pki: Path, tmp_path: Path) -> None:
    def write(pins: dict[str, str]) -> Path:
        data = {"run_id": "trust", "network": {"listen": "127.0.0.1:1"},
                "tls": {"cert": str(pki / "a" / "party_a.pem"), "key": str(pki / "a" / "party_a.key"),
                        "ca": str(pki / "a" / "ca.pem"), "passphrase_env": "VFREC_TEST_PASSPHRASE"},
                "peers": {"party_b": {"address": "127.0.0.1:2", "ca": str(pki / "b" / "ca.pem"), **pins},
                          "coordinator": {"address": "127.0.0.1:3", "ca": str(pki / "c" / "ca.pem")}}}
        path = tmp_path / "a.toml"
        path.write_text(to_toml(data) + "\n")
        return path

    pin = {"fingerprint": fingerprint((pki / "b" / "party_b.pem").read_bytes())}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VFREC_TEST_PASSPHRASE", "x")
        for pins, missing in (({}, "party_b"), (pin, "coordinator")):
            path = write(pins)
            expected = rf"^{re.escape(str(path))}: \[peers\.{missing}\] fingerprint: required, because the " \
                       r"peers' CAs differ"
            with pytest.raises(ConfigError, match=expected):
                config.read_network(config.load(path), "party_a")
