"""B's warm start (`python -m party_b --config b.toml --from current`): the run starts from the model in service.

B encodes its table with the model's stored encoding (a category it never saw is the column's "other" level),
builds tower B with the model's state and takes the model's [W] by rows instead of a fresh [W0]. Both are
per column and per weight, not per user, so users who joined the intersection since are simply in the run.
The plan A sends must be the model's (the widths and fixed point [W] was packed with) and the coordinator's key
the model's (the one [W] is encrypted under); tower B's shape must be the config's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from party_b.config import PartyBConfig
from party_b.store import load_w_rows
from protocol.crypto.packing import Packed
from protocol.crypto.paillier import PublicKey
from protocol.data.stored import load_state
from protocol.data.tables import Encoding
from protocol.errors import ConfigError, ProtocolError, StoreError
from protocol.messages.plan import LayerPlan
from protocol.roles import A, B
from protocol.store.models import current_model


@dataclass(frozen=True)
class Start:
    """The model in service at B, as a warm start takes it."""

    model_id: str
    directory: Path
    plan: LayerPlan
    key_fingerprint: str
    encoding: Encoding
    tower: dict[str, torch.Tensor]

    def check_key(self, public: PublicKey) -> None:
        """The coordinator must announce the key the model's [W] is encrypted under."""
        if public.fingerprint != self.key_fingerprint:
            raise StoreError(f"the coordinator announced key {public.fingerprint}, but model {self.model_id!r} "
                             f"({self.directory}) was trained under {self.key_fingerprint}: start the coordinator "
                             f"with --from current too")

    def check_plan(self, plan: LayerPlan) -> None:
        """A's plan must be the one the model's [W] was packed with."""
        if plan != self.plan:
            raise ProtocolError(f"{A} sent the plan {plan}, but model {self.model_id!r} was trained with {self.plan}: "
                                f"a warm start keeps the plan ([model] d, h, [train] batch_users, lr_w and [secure] "
                                f"at A); train from scratch to change it")

    def w_rows(self, public: PublicKey) -> Packed:
        return load_w_rows(self.directory, public)


def model_in_service(cfg: PartyBConfig, config_path: Path) -> Start:
    """B's model in service, checked to fit this config's tower."""
    directory, manifest = current_model(cfg.basics.workdir, B)
    stored = manifest["tower_settings"]
    if (tuple(stored["hidden"]), stored["feature_dim"]) != (tuple(cfg.tower.hidden), cfg.tower.feature_dim):
        raise ConfigError(f"{config_path}: [model] hidden = {list(cfg.tower.hidden)}, feature_dim = "
                          f"{cfg.tower.feature_dim}, but model {manifest['model_id']!r} ({directory}) was trained with "
                          f"hidden = {list(stored['hidden'])}, feature_dim = {stored['feature_dim']}: a warm start "
                          f"keeps tower B's shape; train from scratch (without --from current) to change it")
    plan = LayerPlan.from_message(manifest["plan"], f"the model store {directory}")
    return Start(manifest["model_id"], directory, plan, manifest["key_fingerprint"],
                 Encoding.from_json(manifest["encoding"]), load_state(directory, "tower_b.pt"))
