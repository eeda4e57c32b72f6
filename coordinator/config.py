"""The coordinator's config: its endpoint, its key and where it keeps its decryption log (`audit_log`).

The Paillier key is one per run: `<[key] dir>/<run_id>.sealed`, created when a run
starts and loaded again only by the same run (a restart). A [W] saved by one run is
noise under the next run's key. A warm start (`--from current`) is the exception: it
runs under the key of the model it starts from (coordinator/keys.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from protocol.crypto.paillier import DEFAULT_BITS, DEPLOYABLE_BITS
from protocol.keys.keyfiles import Passphrase
from protocol.names import as_name
from protocol.roles import C
from protocol.runtime.checkpoint import CheckpointSettings, read_settings
from protocol.settings import config
from protocol.settings.config import Compute, NetworkConfig


def key_path(directory: Path, run_id: str) -> Path:
    """Where the key of run `run_id` is kept (the run ID made a safe name: protocol/names.py)."""
    return directory / (as_name(run_id) + ".sealed")


@dataclass(frozen=True)
class CoordinatorConfig:
    network: NetworkConfig
    workdir: Path
    key_bits: int
    key_file: Path
    key_passphrase: Passphrase
    audit_log: Path
    compute: Compute
    checkpoint: CheckpointSettings = CheckpointSettings()
    observe: tuple[str, int] | None = None  # [observe] listen: where /metrics and /healthz are served
    w0_seed: int | None = None  # seeds the draw of W0 (a reproducible run); None: the OS's randomness


def load(path: Path) -> CoordinatorConfig:
    root = config.load(path)
    workdir = root.take_path("workdir")
    network = config.read_network(root, C)
    key = root.sub("key")
    bits = key.take_choice("bits", DEPLOYABLE_BITS, DEFAULT_BITS)
    key_file = key_path(key.take_path("dir", str(workdir / "keys")), network.run_id)
    key_passphrase = config.read_passphrase(key)
    if key_passphrase.value == network.key_passphrase.value:
        raise key.error("passphrase_file" if "passphrase_file" in key.data else "passphrase_env",
                        f"the passphrase from {key_passphrase.source} is the [tls] key's too; the Paillier key "
                        f"needs its own, so that whoever learns the TLS key's passphrase cannot open it")
    key.finish()
    audit_log = root.take_path("audit_log", str(workdir / "audit.jsonl"))
    compute = config.read_compute(root)
    checkpoint = read_settings(root)
    observe = config.read_observe(root)
    w0_seed = root.take("w0_seed", int, None)
    root.finish()
    return CoordinatorConfig(network, workdir, bits, key_file, key_passphrase, audit_log, compute, checkpoint,
                             observe, w0_seed)
