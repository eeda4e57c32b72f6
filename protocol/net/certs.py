"""A development CA and one certificate per role, so everything runs on one machine.

    python -m protocol.net.certs --out certs/            # ca.pem + coordinator/party_a/party_b
    python -m protocol.net.certs --out other/ --ca-name "Other CA" --roles party_b

Each certificate carries its role name as CN and as a DNS name, plus localhost and
127.0.0.1, so a peer can verify it both by name and on loopback. Private keys are
written encrypted under a passphrase (PKCS#8, the best encryption `cryptography`
offers) with mode 0600; the command writes a fresh passphrase to `<out>/passphrase`
(mode 0600) unless `--passphrase-file` names an existing one. In production each
organisation uses its own CA instead (see the README).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from protocol.crypto.keyfiles import Passphrase, new_passphrase, read_passphrase_file, read_private, write_private
from protocol.errors import ConfigError
from protocol.roles import Role

ROLES = tuple(str(role) for role in Role)
_VALIDITY = dt.timedelta(days=365)


def key_pem(key: PrivateKeyTypes, passphrase: Passphrase | None) -> bytes:
    """PKCS#8 PEM of `key`, encrypted under `passphrase` (unencrypted only for handing to gRPC in memory)."""
    encryption = (serialization.NoEncryption() if passphrase is None
                  else serialization.BestAvailableEncryption(passphrase.value))
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def load_private_key(path: Path, passphrase: Passphrase) -> PrivateKeyTypes:
    """The encrypted PEM key at `path` (mode 0600 required), decrypted in memory."""
    data = read_private(path, "TLS private key")
    try:
        return serialization.load_pem_private_key(data, passphrase.value)
    except TypeError:  # cryptography's way of saying the key is not encrypted
        raise ConfigError(f"TLS private key {path} is not encrypted; write it encrypted under the passphrase "
                          f"from {passphrase.source}") from None
    except ValueError:
        raise ConfigError(f"TLS private key {path} cannot be decrypted with the passphrase from "
                          f"{passphrase.source} (wrong passphrase, or not a PEM private key)") from None


def new_ca(name: str = "vfrec development CA") -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed CA certificate and its key, in memory only."""
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
    return cert, key


def make_ca(out: Path, passphrase: Passphrase, name: str = "vfrec development CA"
            ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Create `out/ca.pem` and `out/ca.key` (encrypted under `passphrase`), for issuing more certificates later."""
    cert, key = new_ca(name)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    write_private(out / "ca.key", key_pem(key, passphrase))
    return cert, key


def make_role_cert(out: Path, role: str, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey,
                   passphrase: Passphrase, hosts: tuple[str, ...] = ()) -> Path:
    """Create `out/<role>.pem` and `out/<role>.key` (encrypted under `passphrase`), signed by the CA, valid as
    TLS client and server."""
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
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{role}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    write_private(out / f"{role}.key", key_pem(key, passphrase))
    return path


def cert_fingerprint(cert: x509.Certificate) -> str:
    """The pin a peer's config may carry: sha256 over the DER certificate."""
    return "sha256:" + hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def ca_certificates(path: Path) -> list[x509.Certificate]:
    """The certificates of a CA bundle file (one or more PEM certificates)."""
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"CA file {path} is not a readable PEM certificate bundle: {exc}") from None


def fingerprint(cert_pem: bytes) -> str:
    """`cert_fingerprint` of a PEM certificate."""
    return cert_fingerprint(x509.load_pem_x509_certificate(cert_pem))


def make_dev_pki(out: Path, passphrase: Passphrase, roles: tuple[str, ...] = ROLES,
                 ca_name: str = "vfrec development CA", hosts: tuple[str, ...] = ()) -> dict[str, str]:
    """A fresh CA and a certificate per role, keys encrypted under `passphrase`; returns each role's fingerprint."""
    ca_cert, ca_key = make_ca(out, passphrase, ca_name)
    return {role: fingerprint(make_role_cert(out, role, ca_cert, ca_key, passphrase, hosts).read_bytes())
            for role in roles}


def passphrase_for(path: Path) -> Passphrase:
    """The passphrase in `path`, or a fresh one written there (mode 0600) when the file does not exist yet."""
    if not path.exists():
        write_private(path, (new_passphrase() + "\n").encode(), exclusive=True)
    return read_passphrase_file(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="directory to write ca.pem, <role>.pem and keys to")
    parser.add_argument("--roles", nargs="+", default=list(ROLES), help="roles to issue certificates for")
    parser.add_argument("--ca-name", default="vfrec development CA", help="common name of the CA")
    parser.add_argument("--host", action="append", default=[], help="extra DNS name or IP for every certificate")
    parser.add_argument("--passphrase-file", type=Path, default=None,
                        help="passphrase for the private keys (default <out>/passphrase, created if missing)")
    args = parser.parse_args()
    passphrase_file = args.passphrase_file or args.out / "passphrase"
    try:
        passphrase = passphrase_for(passphrase_file)
    except ConfigError as exc:
        parser.exit(2, f"{exc}\n")
    pins = make_dev_pki(args.out, passphrase, tuple(args.roles), args.ca_name, tuple(args.host))
    print(f"wrote {args.out / 'ca.pem'} and certificates for {', '.join(pins)}; keys encrypted under the "
          f"passphrase in {passphrase_file}")
    for role, pin in pins.items():
        print(f"  {role:12s} {pin}")


if __name__ == "__main__":
    main()
