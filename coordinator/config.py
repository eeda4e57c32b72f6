"""The coordinator's config: its endpoint, its key and where it keeps its audit log."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from protocol.crypto.paillier import DEFAULT_BITS, DEPLOYABLE_BITS
from protocol.roles import C
from protocol.runtime import config
from protocol.runtime.config import NetworkConfig


@dataclass(frozen=True)
class CoordinatorConfig:
    network: NetworkConfig
    workdir: Path
    key_bits: int
    key_file: Path
    audit_log: Path
    workers: int


def load(path: Path) -> CoordinatorConfig:
    root = config.load(path)
    workdir = root.take_path("workdir")
    network = config.read_network(root, C)
    key = root.sub("key")
    bits = key.take_choice("bits", DEPLOYABLE_BITS, DEFAULT_BITS)
    key_file = key.take_path("file", str(workdir / "paillier_private_key.json"))
    key.finish()
    audit_log = root.take_path("audit_log", str(workdir / "audit.jsonl"))
    workers = config.read_workers(root)
    root.finish()
    return CoordinatorConfig(network, workdir, bits, key_file, audit_log, workers)
