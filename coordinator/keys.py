"""The Paillier key a run is under: the run's own (`<[key] dir>/<run_id>.sealed`, created when the run first
starts), or that of the model in service, for a warm start (`--from current`: the parties' stored [W] is encrypted
under it) and for the refresh service. A model's key is the one its config names, so a line of warm starts keeps
the run_id (and [key] dir) of the run it began with."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from coordinator.config import CoordinatorConfig
from protocol.crypto.paillier import PrivateKey, load_or_create_private_key, read_private_key
from protocol.errors import ConfigError, StoreError
from protocol.roles import C
from protocol.store.models import current_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunKey:
    """A run's key, and the model a warm start starts from (None: from scratch)."""

    key: PrivateKey
    start: str | None = None


def model_key(cfg: CoordinatorConfig) -> tuple[str, PrivateKey]:
    """The model in service and its key, checked to be the key this config names and the model was trained under."""
    directory, manifest = current_model(cfg.workdir, C)
    key_file = Path(manifest["key_file"])
    if key_file != cfg.key_file:
        raise ConfigError(f"model {manifest['model_id']!r} was trained under key {key_file}, but this config's "
                          f"run_id and [key] dir name {cfg.key_file}")
    key = read_private_key(key_file, cfg.key_passphrase)
    if key.public.fingerprint != manifest["key_fingerprint"]:
        raise StoreError(f"{key_file} holds key {key.public.fingerprint}, but model {manifest['model_id']!r} "
                         f"({directory}) was trained under {manifest['key_fingerprint']}")
    return manifest["model_id"], key


def run_key(cfg: CoordinatorConfig, warm: bool) -> RunKey:
    """The run's own key (created the first time), or with `warm` the key of the model in service."""
    if warm:
        model_id, key = model_key(cfg)
        log.info("warm start from model %s: its %d-bit Paillier key %s (%s), under which the parties' stored [W] is",
                 model_id, key.public.bits, key.public.fingerprint, cfg.key_file)
        return RunKey(key, model_id)
    key, created = load_or_create_private_key(cfg.key_file, cfg.key_bits, cfg.key_passphrase)
    log.info("%s %d-bit Paillier key %s (%s)", "created" if created else "loaded", key.public.bits,
             key.public.fingerprint, cfg.key_file)
    return RunKey(key)
