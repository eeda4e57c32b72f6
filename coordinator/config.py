"""The coordinator's config: its endpoint, its key and where it keeps its audit log."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from protocol.crypto.keyfiles import Passphrase
from protocol.runtime import config
from protocol.runtime.config import NetworkConfig
from protocol.crypto.paillier import DEFAULT_BITS, DEPLOYABLE_BITS
from protocol.runtime.workers import default_size

ROLE = "coordinator"


@dataclass(frozen=True)
class CoordinatorConfig:
    network: NetworkConfig
    workdir: Path
    key_bits: int
    key_file: Path
    key_passphrase: Passphrase
    audit_log: Path
    workers: int


def load(path: Path) -> CoordinatorConfig:
    root = config.load(path)
    workdir = root.take_path("workdir")
    network = config.read_network(root, ROLE, ("party_a", "party_b"))
    key = root.sub("key")
    bits = key.take_choice("bits", DEPLOYABLE_BITS, DEFAULT_BITS)
    key_file = key.take_path("file", str(workdir / "paillier_private_key.sealed"))
    key_passphrase = config.read_passphrase(key)
    key.finish()
    audit_log = root.take_path("audit_log", str(workdir / "audit.jsonl"))
    workers = root.take("workers", int, default_size())
    if workers < 0:
        raise root.error("workers", "must be 0 (decrypt inline) or more")
    root.finish()
    return CoordinatorConfig(network, workdir, bits, key_file, key_passphrase, audit_log, workers)
