"""Reading TOML configs with errors that name the file and the key.

Each role builds its own dataclasses from a `Table`; the sections every role shares
(network, TLS, peers) are read here.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol.errors import ConfigError
from protocol.keys.certs import ca_certificates, cert_fingerprint
from protocol.keys.keyfiles import Passphrase, read_passphrase_file
from protocol.roles import PEERS, Role

_MISSING = object()


class Table:
    """One TOML table of a config file; keys are taken once and leftovers are reported as typos."""

    def __init__(self, data: dict, file: Path, where: str = ""):
        self.data = dict(data)
        self.file = file
        self.where = where
        self._taken: set[str] = set()

    def _name(self, key: str) -> str:
        return f"[{self.where}] {key}" if self.where else key

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.file}: {self._name(key)}: {message}")

    def take(self, key: str, kind: type | tuple, default: Any = _MISSING) -> Any:
        self._taken.add(key)
        if key not in self.data:
            if default is _MISSING:
                raise ConfigError(f"{self.file}: missing key {self._name(key)}")
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise self.error(key, f"expected {names}, got {type(value).__name__} {value!r}")
        return value

    def take_list(self, key: str, default: Any = _MISSING) -> list[str]:
        value = self.take(key, list, default)
        if not all(isinstance(v, str) for v in value):
            raise self.error(key, "expected a list of strings")
        return list(value)

    def take_path(self, key: str, default: Any = _MISSING) -> Path | None:
        value = self.take(key, str, default)
        if value is None or value == "":
            return None
        path = Path(value)
        return path if path.is_absolute() else (self.file.parent / path)

    def take_file(self, key: str) -> Path:
        path = self.take_path(key)
        if not path.is_file():
            raise self.error(key, f"file {path} not found")
        return path

    def take_choice(self, key: str, choices: tuple, default: Any = _MISSING) -> Any:
        value = self.take(key, type(choices[0]), default)
        if value not in choices:
            raise self.error(key, f"must be one of {', '.join(map(repr, choices))}, got {value!r}")
        return value

    def take_positive(self, key: str, kind: type = int, default: Any = _MISSING) -> Any:
        value = self.take(key, kind, default)
        if value <= 0:
            raise self.error(key, f"must be positive, got {value}")
        return value

    def take_settings(self, cls: type, positive: tuple[str, ...] = ()) -> Any:
        """Fill dataclass `cls` from this table, every key optional with the dataclass default; then finish."""
        values = {}
        for name, f in cls.__dataclass_fields__.items():
            default = f.default
            if isinstance(default, tuple):
                values[name] = tuple(int(v) for v in self.take(name, list, list(default)))
            elif name in positive:
                values[name] = self.take_positive(name, type(default), default)
            else:
                values[name] = self.take(name, type(default), default)
        self.finish()
        return cls(**values)

    def sub(self, key: str, required: bool = False) -> "Table":
        where = f"{self.where}.{key}" if self.where else key
        value = self.take(key, dict, _MISSING if required else {})
        return Table(value, self.file, where)

    def subs(self, key: str) -> dict[str, "Table"]:
        """The named sub-tables of `key`, e.g. every [peers.NAME]."""
        parent = self.sub(key)
        parent.finish_dict()
        return {name: parent.sub(name, required=True) for name in list(parent.data)}

    def finish_dict(self) -> None:
        """Mark every key as taken (for tables whose keys are names, not settings)."""
        self._taken.update(self.data)

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self._taken)
        if unknown:
            raise ConfigError(f"{self.file}: unknown key {self._name(unknown[0])} (typo?)")


def read_passphrase(t: Table, name: str = "passphrase", required: bool = True) -> Passphrase | None:
    """Table `t`'s `<name>_file` (first line, mode 0600) or `<name>_env` (a variable's name): exactly one, or at
    most one when not `required` (None when neither is given)."""
    keys = (f"{name}_file", f"{name}_env")
    given = [k for k in keys if k in t.data]
    if len(given) > 1 or (required and not given):
        problem = "both given" if given else "missing"
        raise t.error(keys[0], f"{problem}: give {'exactly' if required else 'at most'} one of {keys[0]} and {keys[1]}")
    if not given:
        return None
    if given[0] == keys[0]:
        return read_passphrase_file(t.take_file(keys[0]))
    variable = t.take(keys[1], str)
    value = os.environ.get(variable, "")
    if not value:
        raise t.error(keys[1], f"environment variable {variable} is unset or empty")
    return Passphrase(value.encode(), f"environment variable {variable}")


def load(path: str | Path) -> Table:
    """Parse a TOML file; a missing or malformed file is a ConfigError naming it."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {file} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {file} cannot be read: {exc}") from None
    try:
        return Table(tomllib.loads(text), file.resolve())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {file} is not valid TOML: {exc}") from None


@dataclass(frozen=True)
class PeerConfig:
    """How to reach and recognise one peer."""

    role: str
    address: str
    name: str  # the name its certificate must carry (CN or DNS SAN)
    ca: Path  # the CA bundle that signs its certificate
    fingerprint: str | None  # optional pin: "sha256:<hex of the DER certificate>"


@dataclass(frozen=True)
class NetworkConfig:
    """Our own endpoint, TLS identity and peers, shared by every role."""

    role: str
    run_id: str
    listen: str
    cert: Path
    key: Path
    key_passphrase: Passphrase
    ca: Path
    peers: dict[str, PeerConfig]
    receive_timeout: float
    peer_timeout: float
    connect_timeout: float
    max_message_bytes: int
    record_dir: Path | None


def read_network(root: Table, role: Role) -> NetworkConfig:
    """Read [network], [tls] and [peers.*]; every peer of `role` must be configured."""
    role, peer_roles = str(role), tuple(str(p) for p in PEERS[role])
    run_id = root.take("run_id", str)
    net = root.sub("network", required=True)
    listen = net.take("listen", str)
    check_address(net, "listen", listen)
    receive_timeout = net.take_positive("receive_timeout", float, 600.0)
    peer_timeout = net.take_positive("peer_timeout", float, 20.0)
    connect_timeout = net.take_positive("connect_timeout", float, 60.0)
    max_message_bytes = int(net.take_positive("max_message_mb", float, 64.0) * 2**20)
    record_dir = net.take_path("record_dir", None)
    net.finish()

    tls = root.sub("tls", required=True)
    cert, key, ca = tls.take_file("cert"), tls.take_file("key"), tls.take_file("ca")
    key_passphrase = read_passphrase(tls)
    tls.finish()

    peer_tables = root.subs("peers")
    peers = {}
    for peer_role in peer_roles:
        if peer_role not in peer_tables:
            raise ConfigError(f"{root.file}: missing table [peers.{peer_role}]")
        t = peer_tables[peer_role]
        fingerprint = t.take("fingerprint", str, None)
        if fingerprint is not None and not fingerprint.startswith("sha256:"):
            raise t.error("fingerprint", "must look like 'sha256:<64 hex digits>'")
        address = t.take("address", str)
        check_address(t, "address", address)
        peers[peer_role] = PeerConfig(
            role=peer_role,
            address=address,
            name=t.take("name", str, peer_role),
            ca=t.take_file("ca") if "ca" in t.data else ca,
            fingerprint=fingerprint,
        )
        t.finish()
    extra = sorted(set(peer_tables) - set(peer_roles))
    if extra:
        raise ConfigError(f"{root.file}: [peers.{extra[0]}] is not a role this process talks to "
                          f"({', '.join(peer_roles)})")
    require_pins_across_cas(root.file, peers)
    return NetworkConfig(role, run_id, listen, cert, key, key_passphrase, ca, peers, receive_timeout, peer_timeout,
                         connect_timeout, max_message_bytes, record_dir)


def check_address(t: Table, key: str, address: str) -> None:
    """`address` must be host:port with a port from 1 to 65535 (an IPv6 host in brackets: "[::1]:50051")."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise t.error(key, f"expected host:port with a port from 1 to 65535, e.g. \"127.0.0.1:50051\", "
                           f"got {address!r}")


def require_pins_across_cas(file: Path, peers: dict[str, PeerConfig]) -> None:
    """Every peer must be pinned when a peer's CA file holds several certificates (a bundle: any of its CAs could
    issue a certificate under any peer's name) or when the peers' CAs differ (each could issue the others' names).
    CA files are compared by the certificates they hold, not by their bytes."""
    bundles = {role: ca_certificates(peer.ca) for role, peer in peers.items()}
    several = {role: len(cas) for role, cas in bundles.items() if len(cas) > 1}
    differ = len({frozenset(cert_fingerprint(ca) for ca in cas) for cas in bundles.values()}) > 1
    for role, peer in peers.items():
        if peer.fingerprint is not None:
            continue
        if several:
            bundle = next(iter(several))
            raise ConfigError(f"{file}: [peers.{role}] fingerprint: required, because the CA file of "
                              f"[peers.{bundle}] ({peers[bundle].ca}) holds {several[bundle]} certificates and any "
                              f"of them could issue a certificate named {peer.name!r}")
        if differ:
            cas = ", ".join(f"{r}: {p.ca}" for r, p in peers.items())
            raise ConfigError(f"{file}: [peers.{role}] fingerprint: required, because the peers' CAs differ "
                              f"({cas}) and any of them could issue a certificate named {peer.name!r}")


@dataclass(frozen=True)
class Compute:
    """Where a role's heavy work runs: its own worker processes, or its own organisation's Ray cluster."""

    backend: str = "local"  # local | ray
    workers: int | None = None  # None: one per core (local) or per CPU of the Ray cluster; 0: inline
    address: str = ""  # ray: the cluster's address ("host:port", "auto"), or "local" for one in this process
    max_in_flight: int | None = None  # tasks submitted and unfinished at once; None: two per worker


@dataclass(frozen=True)
class PartyBasics:
    """What both parties' configs share besides their data."""

    network: NetworkConfig
    workdir: Path
    public_key_pin: str | None
    compute: Compute
    observe: tuple[str, int] | None = None  # [observe] listen: where /metrics and /healthz are served



def read_compute(root: Table) -> Compute:
    """`workers` and [compute]: the role's pool size and what runs it (docs/operations.md, "Compute backends")."""
    workers = root.take("workers", int, None)
    if workers is not None and workers < 0:
        raise root.error("workers", "must be 0 (work inline) or more")
    t = root.sub("compute")
    backend = t.take_choice("backend", ("local", "ray"), "local")
    address = t.take("address", str, "")
    if backend == "ray" and not address:
        raise t.error("address", 'required with backend = "ray": the address of this organisation\'s own Ray '
                                 'cluster ("host:port" or "auto"), or "local" to start one in this process')
    if backend == "local" and address:
        raise t.error("address", 'only with backend = "ray"')
    max_in_flight = t.take("max_in_flight", int, None)
    if max_in_flight is not None and max_in_flight < 1:
        raise t.error("max_in_flight", f"must be positive, got {max_in_flight}")
    t.finish()
    return Compute(backend, workers, address, max_in_flight)


def read_record(root: Table) -> bool:
    """[audit] record: write what this party receives per user to <workdir>/audit/ (protocol/layer/received.py)."""
    t = root.sub("audit")
    record = t.take("record", bool, False)
    t.finish()
    return record


def split_address(address: str) -> tuple[str, int]:
    """A checked "host:port" as (host, port); "[::1]:9464" gives ("::1", 9464)."""
    host, _, port = address.rpartition(":")
    return host.removeprefix("[").removesuffix("]"), int(port)


def read_observe(root: Table) -> tuple[str, int] | None:
    """[observe] listen: the local address of the role's /metrics and /healthz (protocol/observe.py), or None
    (absent or empty: not served)."""
    t = root.sub("observe")
    listen = t.take("listen", str, "")
    if listen:
        check_address(t, "listen", listen)
    t.finish()
    return split_address(listen) if listen else None


def read_party_basics(root: Table, role: Role) -> PartyBasics:
    workdir = root.take_path("workdir")
    network = read_network(root, role)
    coordinator = root.sub("coordinator")
    pin = coordinator.take("public_key_fingerprint", str, None) or None
    coordinator.finish()
    return PartyBasics(network, workdir, pin, read_compute(root), read_observe(root))
