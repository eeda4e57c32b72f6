"""A development CA and one certificate per role, so everything runs on one machine.

    python -m protocol.keys.certs --out certs/            # ca.pem + coordinator/party_a/party_b
    python -m protocol.keys.certs --out other/ --ca-name "Other CA" --roles party_b

Each certificate carries its role name as CN and as a DNS name, plus localhost and
127.0.0.1, so a peer can verify it both by name and on loopback. Private keys are
written encrypted under a passphrase with mode 0600: PKCS#8 with PBES2, the key
derived by scrypt (N = 2^14, r = 8, p = 1: 16 MiB and about 0.06 s per guess) and
AES-256-CBC, which is what `openssl pkcs8 -topk8 -scrypt` writes and OpenSSL reads.
(`cryptography`'s BestAvailableEncryption uses PBKDF2 with 2,048 iterations, cheap to
guess on a GPU, and offers no other choice for PKCS#8 PEM, so the structure is
written here.) A key encrypted more weakly (an organisation's own, made with
OpenSSL's defaults) still loads, with a warning saying how to re-encrypt it. The
command writes a fresh passphrase to `<out>/passphrase` (mode 0600) unless
`--passphrase-file` names an existing one. In production each organisation uses its
own CA instead (docs/operations.md, "Running each party on its own host").
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import ipaddress
import logging
import os
import textwrap
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from protocol.errors import ConfigError
from protocol.keys.keyfiles import Passphrase, new_passphrase, read_passphrase_file, read_private, write_private
from protocol.roles import Role

log = logging.getLogger(__name__)

ROLES = tuple(str(role) for role in Role)
_VALIDITY = dt.timedelta(days=365)
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1  # OpenSSL's `-scrypt` default, the most its 32 MiB limit reads
_PBES2 = "1.2.840.113549.1.5.13"
_SCRYPT = "1.3.6.1.4.1.11591.4.11"
_PBKDF2 = "1.2.840.113549.1.5.12"
_AES256_CBC = "2.16.840.1.101.3.4.1.42"
_PEM = "ENCRYPTED PRIVATE KEY"


def _der(tag: int, body: bytes) -> bytes:
    """One DER element: tag, definite length, body."""
    size = len(body)
    length = bytes([size]) if size < 128 else bytes([0x80 | (size.bit_length() + 7) // 8]) + size.to_bytes(
        (size.bit_length() + 7) // 8, "big")
    return bytes([tag]) + length + body


def _seq(*parts: bytes) -> bytes:
    return _der(0x30, b"".join(parts))


def _int(value: int) -> bytes:
    return _der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def _oid(dotted: str) -> bytes:
    first, second, *rest = map(int, dotted.split("."))
    body = bytearray([40 * first + second])
    for arc in rest:
        groups = [arc & 0x7F]
        while arc := arc >> 7:
            groups.append(0x80 | (arc & 0x7F))
        body += bytes(reversed(groups))
    return _der(0x06, bytes(body))


def _encrypted_pkcs8(key: PrivateKeyTypes, passphrase: bytes) -> bytes:
    """PEM of EncryptedPrivateKeyInfo (RFC 5958): PBES2 (RFC 8018) with scrypt (RFC 7914) and AES-256-CBC."""
    plain = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
    salt, iv = os.urandom(16), os.urandom(16)
    secret = Scrypt(salt=salt, length=32, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P).derive(passphrase)
    padder = padding.PKCS7(128).padder()
    encryptor = Cipher(algorithms.AES(secret), modes.CBC(iv)).encryptor()
    sealed = encryptor.update(padder.update(plain) + padder.finalize()) + encryptor.finalize()
    kdf = _seq(_oid(_SCRYPT), _seq(_der(0x04, salt), _int(SCRYPT_N), _int(SCRYPT_R), _int(SCRYPT_P), _int(32)))
    algorithm = _seq(_oid(_PBES2), _seq(kdf, _seq(_oid(_AES256_CBC), _der(0x04, iv))))
    body = base64.b64encode(_seq(algorithm, _der(0x04, sealed))).decode()
    return f"-----BEGIN {_PEM}-----\n{textwrap.fill(body, 64)}\n-----END {_PEM}-----\n".encode()


def key_pem(key: PrivateKeyTypes, passphrase: Passphrase | None) -> bytes:
    """PKCS#8 PEM of `key`, encrypted under `passphrase` with scrypt (unencrypted only for handing to gRPC in
    memory)."""
    if passphrase is None:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
    return _encrypted_pkcs8(key, passphrase.value)


def _elements(data: bytes) -> list[tuple[int, bytes]]:
    """The (tag, body) of each DER element in `data`, in order."""
    out, at = [], 0
    while at < len(data):
        tag, size, at = data[at], data[at + 1], at + 2
        if size & 0x80:
            width = size & 0x7F
            size, at = int.from_bytes(data[at:at + width], "big"), at + width
        out.append((tag, data[at:at + size]))
        at += size
    return out


def key_kdf(pem: bytes) -> str:
    """How an encrypted PKCS#8 PEM key derives its encryption key: "scrypt N=… r=… p=…", "pbkdf2 … iterations",
    or what else it is ("not PBES2", "another KDF", "unreadable")."""
    try:
        der = base64.b64decode(b"".join(line for line in pem.splitlines() if line and not line.startswith(b"-----")))
        info = _elements(der)[0][1]  # EncryptedPrivateKeyInfo: algorithm, encrypted data
        scheme, params = (body for _, body in _elements(_elements(info)[0][1]))
        if scheme != _oid(_PBES2)[2:]:
            return "not PBES2"
        kdf_oid, kdf_params = (body for _, body in _elements(_elements(params)[0][1]))
        numbers = [int.from_bytes(body, "big") for tag, body in _elements(kdf_params) if tag == 0x02]
        if kdf_oid == _oid(_SCRYPT)[2:]:
            return f"scrypt N={numbers[0]} r={numbers[1]} p={numbers[2]}"
        if kdf_oid == _oid(_PBKDF2)[2:]:
            return f"pbkdf2 {numbers[0]} iterations"
        return "another KDF"
    except (ValueError, IndexError):
        return "unreadable"


def strong_kdf(kdf: str) -> bool:
    """Whether `key_kdf`'s answer is at least as costly to guess as the keys this module writes (or PBKDF2 with
    OWASP's 600,000 iterations)."""
    words = kdf.split()
    if words[0] == "scrypt":
        n, r = (int(w.split("=")[1]) for w in words[1:3])
        return n * r >= SCRYPT_N * SCRYPT_R
    return words[0] == "pbkdf2" and int(words[1]) >= 600_000


def load_private_key(path: Path, passphrase: Passphrase) -> PrivateKeyTypes:
    """The encrypted PEM key at `path` (mode 0600 required), decrypted in memory; a warning when its encryption is
    cheap to guess."""
    data = read_private(path, "TLS private key")
    try:
        key = serialization.load_pem_private_key(data, passphrase.value)
    except TypeError:  # cryptography's way of saying the key is not encrypted
        raise ConfigError(f"TLS private key {path} is not encrypted; write it encrypted under the passphrase "
                          f"from {passphrase.source}") from None
    except ValueError:
        raise ConfigError(f"TLS private key {path} cannot be decrypted with the passphrase from "
                          f"{passphrase.source} (wrong passphrase, or not a PEM private key)") from None
    kdf = key_kdf(data)
    if not strong_kdf(kdf):
        log.warning("TLS private key %s is encrypted with %s, cheap to guess if the file is stolen; re-encrypt it: "
                    "openssl pkcs8 -topk8 -scrypt -in %s -out %s.new", path, kdf, path, path)
    return key


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
