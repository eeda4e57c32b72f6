"""A peer's role is bound to that peer's own CA (and pin), not to any CA some peer uses.

With one CA per organisation, B's CA can issue a certificate named `coordinator`. The
server's handshake trusts every peer's CA, so only the role-to-CA binding in the
transport keeps such a certificate from being accepted as the coordinator. With one
CA file holding every organisation's CA (a bundle), only pins tell the roles apart:
they are required, and checked on both ends of a connection (a client sees a pinned
peer's certificate before it sends anything).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from protocol import messages
from protocol.errors import ConfigError, PeerError, PeerLost
from protocol.keys.certs import fingerprint, make_ca, make_role_cert
from protocol.keys.keyfiles import Passphrase
from protocol.messages.coordinator import DecryptRequest, PublicKeyAnnouncement
from protocol.messages.psi import PsiHello
from protocol.net.transport import Endpoint
from protocol.roles import PEERS
from protocol.settings import config
from protocol.settings.config import NetworkConfig, PeerConfig
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
    (root / "bundle.pem").write_bytes(b"".join((root / org / "ca.pem").read_bytes() for org in "abc"))
    return root


def network(pki: Path, role: str, org: str, ports: dict[str, int], pins: dict[str, str] | None = None,
            bundle: bool = False) -> NetworkConfig:
    """`role`'s endpoint with the certificate `org`'s CA issued it; peers recognised by their own orgs' CAs (or all by
    `pki/bundle.pem`, every organisation's CA in one file)."""
    orgs = {"party_a": "a", "party_b": "b", "coordinator": "c"}
    peers = {p: PeerConfig(p, f"127.0.0.1:{ports[p]}", p, pki / "bundle.pem" if bundle else pki / orgs[p] / "ca.pem",
                           (pins or {}).get(p))
             for p in map(str, PEERS[role])}
    return NetworkConfig(role, "trust", f"127.0.0.1:{ports[role]}", pki / org / f"{role}.pem",
                         pki / org / f"{role}.key", SECRET, pki / org / "ca.pem", peers, receive_timeout=10,
                         peer_timeout=5, connect_timeout=5, max_message_bytes=2**20, record_dir=None)


def endpoint(pki: Path, role: str, org: str, ports: dict[str, int], pins: dict[str, str] | None = None,
             bundle: bool = False) -> Endpoint:
    return Endpoint(network(pki, role, org, ports, pins, bundle), messages.inbox_tags(role))


def real_pins(pki: Path) -> dict[str, str]:
    return {role: fingerprint((pki / org / f"{role}.pem").read_bytes())
            for role, org in (("party_a", "a"), ("party_b", "b"), ("coordinator", "c"))}


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


def write_a_config(pki: Path, tmp_path: Path, pins: dict[str, str], ca: Path | None = None) -> Path:
    """A's config: peers under their own orgs' CAs, or all under `[tls] ca` = `ca`; `pins` for party_b only."""
    own = {"party_b": {"ca": str(pki / "b" / "ca.pem")}, "coordinator": {"ca": str(pki / "c" / "ca.pem")}}
    data = {"run_id": "trust", "network": {"listen": "127.0.0.1:1"},
            "tls": {"cert": str(pki / "a" / "party_a.pem"), "key": str(pki / "a" / "party_a.key"),
                    "ca": str(ca or pki / "a" / "ca.pem"), "passphrase_env": "VFREC_TEST_PASSPHRASE"},
            "peers": {"party_b": {"address": "127.0.0.1:2", **({} if ca else own["party_b"]), **pins},
                      "coordinator": {"address": "127.0.0.1:3", **({} if ca else own["coordinator"])}}}
    path = tmp_path / "a.toml"
    path.write_text(to_toml(data) + "\n")
    return path


def test_peers_under_different_cas_must_be_pinned(pki: Path, tmp_path: Path) -> None:
    def write(pins: dict[str, str]) -> Path:
        return write_a_config(pki, tmp_path, pins)

    pin = {"fingerprint": fingerprint((pki / "b" / "party_b.pem").read_bytes())}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VFREC_TEST_PASSPHRASE", "x")
        for pins, missing in (({}, "party_b"), (pin, "coordinator")):
            path = write(pins)
            expected = rf"^{re.escape(str(path))}: \[peers\.{missing}\] fingerprint: required, because the " \
                       r"peers' CAs differ"
            with pytest.raises(ConfigError, match=expected):
                config.read_network(config.load(path), "party_a")


def test_a_ca_bundle_requires_every_peer_pinned(pki: Path, tmp_path: Path) -> None:
    """`[tls] ca` holding all three organisations' CAs: the same file for every peer, yet any of its CAs could issue
    any role's certificate, so pins are required (the files' bytes being equal once let it through unpinned)."""
    pin = {"fingerprint": real_pins(pki)["party_b"]}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VFREC_TEST_PASSPHRASE", "x")
        for pins, missing in (({}, "party_b"), (pin, "coordinator")):
            path = write_a_config(pki, tmp_path, pins, ca=pki / "bundle.pem")
            expected = rf"^{re.escape(str(path))}: \[peers\.{missing}\] fingerprint: required, because the CA " \
                       rf"file of \[peers\.party_b\] \({re.escape(str(pki / 'bundle.pem'))}\) holds 3 certificates"
            with pytest.raises(ConfigError, match=expected):
                config.read_network(config.load(path), "party_a")
    ports = dict(zip(("party_a", "party_b", "coordinator"), free_ports(3)))
    with pytest.raises(ConfigError, match=r"\[peers\.party_b\] fingerprint: required, because its CA file .* holds 3"):
        endpoint(pki, "party_a", "a", ports, bundle=True)  # a config built in code gets the same rule


def test_with_a_ca_bundle_a_wrong_cas_certificate_is_refused_by_the_server(pki: Path) -> None:
    """B's CA is in A's bundle and issued a certificate named coordinator: A's server refuses it by the pin."""
    ports = dict(zip(("party_a", "party_b", "coordinator"), free_ports(3)))
    with endpoint(pki, "party_a", "a", ports, pins=real_pins(pki), bundle=True) as a:
        with endpoint(pki, "coordinator", "b", ports) as forged:
            with pytest.raises(PeerError, match="certificate for 'coordinator' does not match the pinned fingerprint"):
                forged.send("party_a", HELLO, "from B posing as the coordinator")
        with endpoint(pki, "coordinator", "c", ports) as real:
            real.send("party_a", HELLO, "from the real coordinator")
            assert a.recv("coordinator", HELLO, timeout=5) == "from the real coordinator"


def test_with_a_ca_bundle_a_client_sends_nothing_to_a_wrong_cas_certificate(pki: Path) -> None:
    """B, holding a coordinator certificate from its own CA (in A's bundle), listens at the coordinator's address.
    A checks the certificate there against its pin before sending: the request never reaches B. The real
    coordinator's is accepted, and A's channel then trusts only the CA that issued it."""
    ports = dict(zip(("party_a", "party_b", "coordinator"), free_ports(3)))
    request = DecryptRequest("forward", "t/0/1", [5, 6])
    with endpoint(pki, "coordinator", "b", ports) as forged:
        with endpoint(pki, "party_a", "a", ports, pins=real_pins(pki), bundle=True) as a:
            with pytest.raises(PeerError, match=r"^coordinator at 127\.0\.0\.1:\d+ presented a certificate for "
                                                r"'coordinator' that does not match the pinned fingerprint; "
                                                r"nothing was sent to it$"):
                messages.send(a, "coordinator", request)
            with pytest.raises(PeerError, match="does not match the pinned fingerprint"):
                a.recv("coordinator", HELLO, timeout=5)  # every wait on that peer stops with the same reason
        assert not any(forged._inbox.pending.values()), "the request reached B"
    cfg = dataclasses.replace(network(pki, "party_a", "a", ports, real_pins(pki), bundle=True), peer_timeout=1.5)
    with Endpoint(cfg, messages.inbox_tags("party_a")) as a:
        with endpoint(pki, "coordinator", "c", ports) as real:
            messages.send(a, "coordinator", request)
            assert messages.receive(real, "party_a", DecryptRequest, timeout=5) == request
        with endpoint(pki, "coordinator", "b", ports) as forged:  # B takes over the address once A trusts C
            with pytest.raises(PeerLost, match="coordinator at .* stopped answering"):
                messages.send(a, "coordinator", request)  # its channel's handshakes accept only C's CA
            assert not any(forged._inbox.pending.values())
