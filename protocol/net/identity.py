"""Which role a TLS peer is: names, issuers and pins of the certificates both ends of a connection present.

The sender's role is never read from a message: it is the peer whose certificate the TLS
handshake verified, carries that peer's name, is directly issued by (and valid under) that
peer's own CA, and matches its pin when one is configured (protocol/net/transport.py's
docstring; docs/security.md).
"""

from __future__ import annotations

import socket
import ssl
from datetime import datetime, timezone

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from protocol.errors import ConfigError
from protocol.keys.certs import cert_fingerprint
from protocol.settings.config import NetworkConfig, PeerConfig

_PROBE_TIMEOUT = 2.0  # seconds for the TLS handshake that shows a pinned peer's certificate


class Unreachable(Exception):
    """A pinned peer's certificate could not be seen yet (nothing listens, or the handshake broke off): retried."""


def names(cert: x509.Certificate) -> set[str]:
    """The names a certificate carries: its CNs and DNS SANs."""
    found = {str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)}
    try:
        found |= set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                     .get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        pass
    return found


def valid_now(cert: x509.Certificate) -> bool:
    """Whether now is within the certificate's validity period."""
    now = datetime.now(timezone.utc)
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """True when `ca` is a CA certificate, valid now, whose key signed `cert`."""
    try:
        is_ca = ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        cert.verify_directly_issued_by(ca)
    except (x509.ExtensionNotFound, ValueError, TypeError, InvalidSignature):
        return False
    return is_ca and valid_now(ca)


def refusal(role: str, peer: PeerConfig, cas: list[x509.Certificate], cert: x509.Certificate) -> str | None:
    """Why the certificate presented under `role`'s name is not that peer's, or None when it is (both ends of a
    connection ask: the server of its caller, the client of a pinned peer before sending it anything)."""
    if not any(issued_by(cert, ca) for ca in cas):
        return f"is not issued by {role}'s CA ({peer.ca})"
    if not valid_now(cert):
        return "is outside its validity period"
    if peer.fingerprint and cert_fingerprint(cert) != peer.fingerprint:
        return "does not match the pinned fingerprint"
    return None


def caller(cfg: NetworkConfig, peer_cas: dict[str, list[x509.Certificate]], context: grpc.ServicerContext) -> str:
    """The role of the peer whose certificate the TLS handshake verified; aborts the call when it is none."""
    auth = context.auth_context()
    found = {v.decode() for v in auth.get("x509_common_name", []) + auth.get("x509_subject_alternative_name", [])}
    pem = (auth.get("x509_pem_cert") or [b""])[0]
    for role, peer in cfg.peers.items():
        if peer.name in found:
            try:
                why = refusal(role, peer, peer_cas[role], x509.load_pem_x509_certificate(pem))
            except ValueError:
                why = "could not be read"
            if why:
                context.abort(grpc.StatusCode.PERMISSION_DENIED,
                              f"{cfg.role}: certificate for {peer.name!r} {why}")
            return role
    context.abort(grpc.StatusCode.PERMISSION_DENIED,
                  f"{cfg.role}: certificate {sorted(found)} is not one of its configured peers")
    raise AssertionError("unreachable")


def probe_context(cfg: NetworkConfig, role: str) -> ssl.SSLContext:
    """TLS client settings for reading a pinned peer's certificate: its CA file, this role's own certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # the name is checked as the server side checks it: CN or DNS SAN
    ctx.load_verify_locations(cadata=cfg.peers[role].ca.read_text())
    try:
        ctx.load_cert_chain(cfg.cert, cfg.key, password=cfg.key_passphrase.value)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load [tls] cert {cfg.cert} and key {cfg.key}: {exc}") from None
    ctx.set_alpn_protocols(["h2"])
    return ctx


def pinned_issuer(role: str, peer: PeerConfig, probe: ssl.SSLContext,
                  cas: list[x509.Certificate]) -> tuple[bytes | None, str | None]:
    """(the PEM of the CA that issued the certificate `role`'s address presents, None) once that certificate is the
    pinned one, else (None, why not). Raises `Unreachable` while the peer cannot be reached."""
    host, _, port = peer.address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=_PROBE_TIMEOUT) as sock, \
                probe.wrap_socket(sock) as tls:
            der = tls.getpeercert(binary_form=True)
    except ssl.SSLCertVerificationError as exc:
        return None, f"is not issued by a CA in {peer.ca}: {exc.verify_message}"
    except OSError as exc:  # refused, timed out, or a handshake broken off
        raise Unreachable(f"TLS handshake to read its certificate: {exc}") from None
    cert = x509.load_der_x509_certificate(der)
    why = f"does not carry the name {peer.name!r}" if peer.name not in names(cert) else refusal(role, peer, cas, cert)
    if why is not None:
        return None, why
    issuer = next(ca for ca in cas if issued_by(cert, ca))
    return issuer.public_bytes(serialization.Encoding.PEM), None
