"""The Paillier key a training run is under: the run's own (`<[key] dir>/<run_id>.sealed`, created when the run
first starts), or, for a warm start (`--from current`), the key of the model in service, under which the parties'
stored [W] is encrypted."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

from coordinator.config import CoordinatorConfig
from protocol.crypto.paillier import PrivateKey, load_or_create_private_key, read_private_key
from protocol.errors import StoreError
from protocol.roles import C
from protocol.runtime.store import current_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunKey:
    """A run's key, the config with `key_file` naming the file it is in, and the model a warm start starts from."""

    key: PrivateKey
    cfg: CoordinatorConfig
    start: str | None = None


def stored_key(directory: Path, manifest: dict, cfg: CoordinatorConfig) -> PrivateKey:
    """The key of the stored model in `directory`, read from the file its manifest names and checked to be the
    key it was trained under."""
    key_file = Path(manifest["key_file"])
    key = read_private_key(key_file, cfg.key_passphrase)
    if key.public.fingerprint != manifest["key_fingerprint"]:
        raise StoreError(f"{key_file} holds key {key.public.fingerprint}, but model {manifest['model_id']!r} "
                         f"({directory}) was trained under {manifest['key_fingerprint']}")
    return key


def run_key(cfg: CoordinatorConfig, warm: bool) -> RunKey:
    """The run's own key (created the first time), or with `warm` the key of the model in service."""
    if not warm:
        key, created = load_or_create_private_key(cfg.key_file, cfg.key_bits, cfg.key_passphrase)
        log.info("%s %d-bit Paillier key %s (%s)", "created" if created else "loaded", key.public.bits,
                 key.public.fingerprint, cfg.key_file)
        return RunKey(key, cfg)
    directory, manifest = current_model(cfg.workdir, C)
    key = stored_key(directory, manifest, cfg)
    log.info("warm start from model %s: its %d-bit Paillier key %s (%s), under which the parties' stored [W] is",
             manifest["model_id"], key.public.bits, key.public.fingerprint, manifest["key_file"])
    return RunKey(key, dataclasses.replace(cfg, key_file=Path(manifest["key_file"])), manifest["model_id"])
