"""Write a local three-process deployment (certificates, configs) and run it.

A `LocalRun` lays each role out as it would be on its own host: `<root>/<role>/`
holds its config (`<role>.toml`), its `passphrase` (mode 0600: it unlocks the role's
TLS key; the coordinator's Paillier key has its own, `key_passphrase`), `certs/` with its own
certificate, its encrypted key and the CA certificate, its tables (placed there by
the caller), `work/` and the process's output. The development CA's key lives only
in memory while the certificates are issued; it is never written. Each role is
started as its own OS process with `python -m <role> --config <role>.toml`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from prometheus_client.parser import text_string_to_metric_families

from protocol import messages
from protocol.keys.certs import make_role_cert, new_ca, passphrase_for
from protocol.keys.keyfiles import Passphrase, read_passphrase_file
from protocol.net.transport import Endpoint
from protocol.roles import PEERS, C, Role
from protocol.settings import config

ROOT = Path(__file__).resolve().parent.parent


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (str, Path)):
        text = str(value).replace("\\", "\\\\").replace('"', '\\"')
        return f'"{text}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def to_toml(data: dict, prefix: str = "") -> str:
    """A small TOML writer for configs: scalars, lists and nested tables."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for k, v in data.items():
        if isinstance(v, dict):
            name = f"{prefix}.{k}" if prefix else k
            if not v or any(not isinstance(x, dict) for x in v.values()):  # a header only where keys follow
                lines.append(f"\n[{name}]")
            lines.append(to_toml(v, name))
    return "\n".join(line for line in lines if line != "")


@dataclass
class LocalRun:
    root: Path
    configs: dict[str, Path] = field(default_factory=dict)
    log_format: str = "text"  # each role's --log-format
    observed: dict[str, str] = field(default_factory=dict)  # role: its [observe] listen, where observe_all set one

    def dir(self, role: str) -> Path:
        return self.root / role

    def workdir(self, role: str) -> Path:
        return self.root / role / "work"

    def output(self, role: str) -> Path:
        return self.root / role / "output.log"

    def command(self, role: str, *args: str) -> list[str]:
        """`python -m <role> [args] --config <its config>`; args name a command such as `serve` and its options."""
        return [sys.executable, "-m", role, "--log-format", self.log_format, *args, "--config",
                str(self.configs[role])]

    def scrape(self, role: str, timeout: float = 2.0) -> dict[str, float]:
        """The role's /metrics now, parsed with prometheus-client's parser: each sample as `name{label="value",…}`
        (labels sorted; `name` alone without labels)."""
        with urllib.request.urlopen(f"http://{self.observed[role]}/metrics", timeout=timeout) as answer:
            text = answer.read().decode()
        return {sample_key(sample.name, sample.labels): sample.value
                for family in text_string_to_metric_families(text) for sample in family.samples}


    def endpoint(self, role: Role) -> Endpoint:
        """An endpoint for `role` in this process (not started), for a test that plays that role itself."""
        return Endpoint(config.read_network(config.load(self.configs[role]), role), messages.inbox_tags(role))


def sample_key(name: str, labels: dict[str, str]) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}" if inner else name


def passphrase(run: LocalRun, role: str) -> Passphrase:
    """The passphrase of a role's TLS key."""
    return read_passphrase_file(run.dir(role) / "passphrase")


def write_local_run(root: Path, sections: dict[str, dict], run_id: str = "local", record: bool = False,
                    peer_timeout: float | None = None, connect_timeout: float | None = None,
                    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None) -> LocalRun:
    """Certificates, passphrases and configs for the three roles on loopback; `sections` adds each role's own
    settings (relative paths in them are relative to that role's directory, where its config is written).
    The CA (`ca`, or a fresh one) signs every role's certificate; its key is never written."""
    ca_cert, ca_key = ca or new_ca()
    ports = dict(zip(Role, free_ports(len(Role))))
    run = LocalRun(root)
    for role in Role:  # paths relative to the config's directory, so a role's directory can move
        certs = run.dir(role) / "certs"
        secret = passphrase_for(run.dir(role) / "passphrase")
        make_role_cert(certs, role, ca_cert, ca_key, secret)
        (certs / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        network = {"listen": f"127.0.0.1:{ports[role]}"}
        network.update({k: v for k, v in (("peer_timeout", peer_timeout), ("connect_timeout", connect_timeout))
                        if v is not None})
        if record:
            network["record_dir"] = "wire"
        data = {
            "run_id": run_id,
            "workdir": "work",
            "network": network,
            "tls": {"cert": f"certs/{role}.pem", "key": f"certs/{role}.key", "ca": "certs/ca.pem",
                    "passphrase_file": "passphrase"},
            "peers": {p: {"address": f"127.0.0.1:{ports[p]}"} for p in PEERS[role]},
            **sections.get(role, {}),
        }
        if role == C:
            passphrase_for(run.dir(role) / "key_passphrase")
            data["key"] = {"passphrase_file": "key_passphrase", **data.get("key", {})}
        path = run.dir(role) / f"{role}.toml"
        path.write_text(to_toml(data) + "\n")
        run.configs[role] = path
    return run


def observe_all(run: LocalRun) -> None:
    """Give every role of `run` an [observe] listen on a free loopback port (its /metrics and /healthz)."""
    for role, port in zip(Role, free_ports(len(Role))):
        run.observed[role] = f"127.0.0.1:{port}"
        with open(run.configs[role], "a") as config_file:
            config_file.write(f'\n[observe]\nlisten = "{run.observed[role]}"\n')


def set_compute(sections: dict[str, dict], workers: int | None = None, compute: dict | None = None) -> None:
    """Give every role of `sections` the same `workers` and [compute] section, where given."""
    for role in Role:
        section = sections.setdefault(role, {})
        if workers is not None:
            section["workers"] = workers
        if compute:
            section["compute"] = compute


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
                PYTHONUNBUFFERED="1")


def _tee(source: object, log: object) -> None:
    while chunk := source.read1(4096):
        log.write(chunk)
        log.flush()
        sys.stderr.buffer.write(chunk)
        sys.stderr.buffer.flush()


def start(run: LocalRun, role: str, *args: str, stream: bool = False) -> subprocess.Popen:
    """Start one role (`args`: a command and its options); its output goes to `run.output(role)` (and, with
    `stream`, to our stderr too)."""
    run.output(role).parent.mkdir(parents=True, exist_ok=True)
    log = open(run.output(role), "ab")
    command = run.command(role, *args)
    if not stream:
        return subprocess.Popen(command, cwd=str(ROOT), env=_env(), stdout=log, stderr=subprocess.STDOUT)
    proc = subprocess.Popen(command, cwd=str(ROOT), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    threading.Thread(target=_tee, args=(proc.stdout, log), daemon=True).start()
    return proc


@dataclass(frozen=True)
class Outcome:
    returncode: int
    output: str


def wait_all(run: LocalRun, procs: dict[str, subprocess.Popen], timeout: float) -> dict[str, Outcome]:
    """Wait for every role; kill what is left at `timeout` (never leaves an orphan)."""
    deadline = time.monotonic() + timeout
    try:
        for proc in procs.values():
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return {role: Outcome(proc.returncode, run.output(role).read_text(errors="replace"))
            for role, proc in procs.items()}


def run_all(run: LocalRun, timeout: float = 600.0, stream: str | None = None) -> dict[str, Outcome]:
    """Start all three roles and wait for them; `stream` names a role whose stderr shows live."""
    procs = {role: start(run, role, stream=(role == stream)) for role in Role}
    return wait_all(run, procs, timeout)
