"""A development CA and one certificate per role, so everything runs on one machine.

    python -m protocol.net.certs --out certs/            # ca.pem + coordinator/party_a/party_b
    python -m protocol.net.certs --out other/ --ca-name "Other CA" --roles party_b

Each certificate carries its role name as CN and as a DNS name, plus localhost and
127.0.0.1, so a peer can verify it both by name and on loopback. Private keys are
written with mode 0600. In production each organisation uses its own CA instead
(see the README).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from protocol.roles import Role

ROLES = tuple(str(role) for role in Role)
_VALIDITY = dt.timedelta(days=365)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_ca(out: Path, name: str = "vfrec development CA") -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Create `out/ca.pem` and `out/ca.key`."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_private(out / "ca.key", _key_pem(key))
    return cert, key


def make_role_cert(out: Path, role: str, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey,
                   hosts: tuple[str, ...] = ()) -> Path:
    """Create `out/<role>.pem` and `out/<role>.key`, signed by the CA, valid as TLS client and server."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    names: list[x509.GeneralName] = [x509.DNSName(role), x509.DNSName("localhost"),
                                     x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, role)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    path = out / f"{role}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_private(out / f"{role}.key", _key_pem(key))
    return path


def fingerprint(cert_pem: bytes) -> str:
    """The pin a peer's config may carry: sha256 over the DER certificate."""
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def make_dev_pki(out: Path, roles: tuple[str, ...] = ROLES, ca_name: str = "vfrec development CA",
                 hosts: tuple[str, ...] = ()) -> dict[str, str]:
    """A fresh CA and a certificate per role; returns each role's certificate fingerprint."""
    ca_cert, ca_key = make_ca(out, ca_name)
    return {role: fingerprint(make_role_cert(out, role, ca_cert, ca_key, hosts).read_bytes()) for role in roles}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="directory to write ca.pem, <role>.pem and keys to")
    parser.add_argument("--roles", nargs="+", default=list(ROLES), help="roles to issue certificates for")
    parser.add_argument("--ca-name", default="vfrec development CA", help="common name of the CA")
    parser.add_argument("--host", action="append", default=[], help="extra DNS name or IP for every certificate")
    args = parser.parse_args()
    pins = make_dev_pki(args.out, tuple(args.roles), args.ca_name, tuple(args.host))
    print(f"wrote {args.out / 'ca.pem'} and certificates for {', '.join(pins)}")
    for role, pin in pins.items():
        print(f"  {role:12s} {pin}")


if __name__ == "__main__":
    main()
