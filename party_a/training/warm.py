"""A's warm start (`python -m party_a --config a.toml --from current`): the run starts from the model in service.

From the stored model (party_a/serving/store.py) A takes the encodings of its user and item columns (its tables are
encoded as the model learnt them), both models' states, EASE's λ and the popularity prior's weight, and [W] by
columns of the stored epoch, under the stored model's key (B takes its tower and [W] by rows, the coordinator
the key). A alone trains on in plaintext from the stored A alone, and the federated model starts as the stored
federated model: its epoch 0 is the model in service, validated through the secure layer on this run's lists.

No parameter is per user, so users new to the intersection are simply in the run. Some are per item (the ID
embeddings of both item towers, the history embedding, the item bias): a known item keeps its stored row,
matched by item ID, and an item new to the catalogue keeps the row a new model would give it (A alone) or the
row of this run's A alone (the federated model, whose own part only A alone trains). EASE's P and its diagonal
are statistics of this run's training events, computed again with the stored λ; every other parameter and buffer
(the scale the EASE part is counted in among them) is taken as stored. The federated model's own part stays
as stored, as in a run from scratch it stays A alone's: only its part for B's u and tower B and W train.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from party_a.config import ModelSettings, Training
from party_a.data.tables import ActiveData
from party_a.models.model import ActiveModel
from party_a.serving.store import W_COLS, model_settings, stored_encodings
from protocol.crypto.packing import Packed
from protocol.crypto.paillier import PublicKey
from protocol.data.stored import load_state, read_frame
from protocol.data.tables import Encoding
from protocol.errors import ConfigError, StoreError
from protocol.roles import A
from protocol.store.models import current_model, model_file
from protocol.wire.codec import decode

ITEM_ROWS = ("item_part.id_embedding.weight", "partner_items.id_embedding.weight", "history_embedding.weight",
             "item_bias")  # one row per item, in the catalogue's order (the history embedding's last: padding)
REFITTED = ("p", "p_diag")  # EASE's statistics of the run's training events
SHAPE = ("d", "h", "id_dim", "feature_dim", "tower_hidden", "item_item")  # the settings a state's shapes follow


@dataclass(frozen=True)
class Start:
    """The model in service at A, as a warm start takes it."""

    model_id: str
    directory: Path
    manifest: dict
    items: list[str]  # the stored models' items, in their order
    encodings: dict[str, Encoding]

    @property
    def ease_lambda(self) -> float:
        return float(self.manifest["ease_lambda"])

    @property
    def prior_weight(self) -> float:
        return float(self.manifest["prior_weight"])

    def check_key(self, public: PublicKey) -> None:
        """The coordinator must announce the key the model's [W] is encrypted under."""
        if public.fingerprint != self.manifest["key_fingerprint"]:
            raise StoreError(f"the coordinator announced key {public.fingerprint}, but model {self.model_id!r} "
                             f"({self.directory}) was trained under {self.manifest['key_fingerprint']}")

    def w_cols(self, public: PublicKey) -> Packed:
        """[W] by columns of the stored epoch."""
        path = self.directory / W_COLS
        return Packed.from_message(decode(model_file(self.directory, W_COLS)), public, str(path))

    def alone(self, data: ActiveData, settings: ModelSettings, items: list[str]) -> ActiveModel:
        """The stored A alone carried over to this run's data and catalogue `items` (a new item: a fresh row)."""
        model = ActiveModel(data, settings, self.ease_lambda, self.prior_weight)
        return carried_over(model, load_state(self.directory, "alone.pt"), self.items, items)

    def federated(self, alone: ActiveModel, items: list[str]) -> ActiveModel:
        """The stored federated model carried over to this run's catalogue `items`, on a copy of this run's A alone
        `alone`: a new item takes A alone's rows, which A alone's training in this run may have learnt."""
        return carried_over(copy.deepcopy(alone), load_state(self.directory, "federated.pt"), self.items, items)


def model_in_service(workdir: Path, cfg: Training, config_path: Path) -> Start:
    """A's model in service, checked to be one a warm start can take with this config."""
    directory, manifest = current_model(workdir, A)
    model_id = manifest["model_id"]
    lacking = [what for what, there in (("the encodings of A's columns", "encodings" in manifest),
                                        ("the popularity prior's weight", "prior_weight" in manifest),
                                        (f"[W] by columns ({W_COLS})", W_COLS in manifest.get("files", [])))
               if not there]
    if lacking:
        raise StoreError(f"model {model_id!r} ({directory}) was stored before warm starts and lacks "
                         f"{', '.join(lacking)}: train once from scratch (without --from current)")
    stored = model_settings(manifest)
    differ = [f"{name} = {getattr(cfg.model, name)!r} (the model's: {getattr(stored, name)!r})" for name in SHAPE
              if getattr(cfg.model, name) != getattr(stored, name)]
    plan = cfg.plan()
    trained = dataclasses.replace(type(plan).from_message(manifest["plan"], f"the model store {directory}"),
                                  key_fingerprint=plan.key_fingerprint)
    differ += [f"the plan's {f.name} = {getattr(plan, f.name)!r} (the model's: {getattr(trained, f.name)!r})"
               for f in dataclasses.fields(plan) if getattr(plan, f.name) != getattr(trained, f.name)]
    if differ:
        raise ConfigError(f"{config_path}: {'; '.join(differ)}: a warm start from model {model_id!r} keeps its shape "
                          f"and its secure layer's plan ([model], [train] batch_users and lr_w, [secure]); train from "
                          f"scratch (without --from current) to change them")
    items = read_frame(directory, "items.parquet", ["item_id"])["item_id"].tolist()
    return Start(model_id, directory, manifest, items, stored_encodings(manifest))


def carried_over(model: ActiveModel, stored: dict[str, torch.Tensor], stored_items: list[str],
                 items: list[str]) -> ActiveModel:
    """`model`, built on this run's data and catalogue `items`, with the `stored` state of a model of catalogue
    `stored_items`: per-item rows by item ID (new items keep theirs), EASE's statistics as built, the rest as
    stored."""
    state = model.state_dict()
    old = {item: j for j, item in enumerate(stored_items)}
    known = np.array([old.get(item, -1) for item in items], dtype=np.int64)
    new_rows, old_rows = torch.from_numpy(np.flatnonzero(known >= 0)), torch.from_numpy(known[known >= 0])
    for name, value in stored.items():
        if name in REFITTED:
            continue
        if name in ITEM_ROWS:
            state[name] = state[name].clone()
            state[name][new_rows] = value[old_rows]
        elif name not in state or state[name].shape != value.shape:
            raise StoreError(f"the stored state's {name!r} has shape {tuple(value.shape)}, the model's "
                             f"{tuple(state[name].shape) if name in state else 'nothing'}")
        else:
            state[name] = value
    model.load_state_dict(state)
    return model
