"""Party A's config: endpoint, tables, model, training, secure-layer and evaluation settings.

Without an [interactions] table, A only aligns customers with B (PSI) and stops.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from party_a.data.tables import InteractionsSpec
from protocol.crypto.paillier import ENCRYPTION_MODES
from protocol.data.tables import TableSpec
from protocol.messages.plan import LayerPlan
from protocol.privacy import RowPrivacy, epsilon, read_privacy
from protocol.roles import A
from protocol.runtime.checkpoint import CheckpointSettings, read_settings
from protocol.settings import config
from protocol.settings.config import PartyBasics, Table, read_record
from psi.align import UserIds, read_users_and_psi
from psi.session import PsiSettings


@dataclass(frozen=True)
class ModelSettings:
    d: int = 16  # width of e_B, B's tower output
    h: int = 16  # width of e_A, u and z
    id_dim: int = 8
    feature_dim: int = 8
    tower_hidden: tuple[int, ...] = (64,)
    seed: int = 1
    history: int = 32  # most recent training items a user is represented by; a step costs batch × history × items
    item_item_lambda: float = 300.0  # EASE's λ for the item-item scores fed to the scorer, unless chosen on validation
    item_item: bool = True  # the EASE part of the scorer; it holds an items × items matrix, so off for huge catalogues


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 12
    batch_users: int = 32
    lr: float = 0.005  # Adam, A's towers and top model
    weight_decay: float = 1e-4  # of that Adam: keeps the ID embeddings from overfitting
    lr_w: float = 0.05  # SGD on W, under encryption
    seed: int = 7
    progress: bool = True
    targets: int = 16  # training items predicted per user and step, each from the rest of its history
    patience: int = 3  # epochs without a better validation NDCG@k before training stops
    warm_epochs: int = 3  # the most epochs of a warm start (`--from current`), A alone's and the federated model's


@dataclass(frozen=True)
class SecureSettings:
    """[secure]: the layer plan's fixed point and bounds (defaults are the plan's) and A's encryption mode."""

    e_bits: int = LayerPlan.e_bits
    w_bits: int = LayerPlan.w_bits
    delta_bits: int = LayerPlan.delta_bits
    w_max: float = LayerPlan.w_max
    delta_max: float = LayerPlan.delta_max
    init_std: float = LayerPlan.init_std
    encryption: str = ENCRYPTION_MODES[0]


@dataclass(frozen=True)
class EvalSettings:
    negatives: int = 99
    k: int = 10
    cold_max_train: int = 2
    seed: int = 11


@dataclass(frozen=True)
class Training:
    interactions: InteractionsSpec
    items: TableSpec | None
    model: ModelSettings
    train: TrainSettings
    secure: SecureSettings
    eval: EvalSettings
    privacy: RowPrivacy = RowPrivacy()
    record: bool = False  # [audit] record: keep the u A receives, per user, under <workdir>/audit/

    def plan(self) -> LayerPlan:
        return layer_plan(self.model, self.train, self.secure)


def layer_plan(model: ModelSettings, train: TrainSettings, secure: SecureSettings) -> LayerPlan:
    """The plan A sends B, from A's settings (`layer_plan(ModelSettings(), ...)` is the default run's)."""
    return LayerPlan(d=model.d, h=model.h, batch_users=train.batch_users, lr_w=train.lr_w, e_bits=secure.e_bits,
                     w_bits=secure.w_bits, delta_bits=secure.delta_bits, w_max=secure.w_max,
                     delta_max=secure.delta_max, init_std=secure.init_std)


@dataclass(frozen=True)
class ServeSettings:
    """[serve]: party A's HTTP service (`python -m party_a serve`). The bearer token comes from `token_file`
    (mode 0600) or the environment variable `token_env`, read when the service starts; with neither, one is
    generated into `<workdir>/serve_token`, unless `require_token` is false (then the service is open)."""

    listen: str = "127.0.0.1:8080"
    token_file: Path | None = None
    token_env: str | None = None
    max_k: int = 100
    max_batch: int = 1000
    access_log: bool = False
    # take B's refresh sessions (party_a/serving/refresh.py) in the serving process, on [network] listen
    refresh: bool = True
    require_token: bool = True
    reuse_port: bool = False  # bind `listen` with SO_REUSEPORT, so that several service processes share the port

    @property
    def address(self) -> tuple[str, int]:
        """`listen` as (host, port); "[::1]:8080" gives ("::1", 8080)."""
        return config.split_address(self.listen)


@dataclass(frozen=True)
class PartyAConfig:
    basics: PartyBasics
    users: UserIds
    psi: PsiSettings
    training: Training | None
    serve: ServeSettings = ServeSettings()
    checkpoint: CheckpointSettings = CheckpointSettings()


def read_training(root: Table) -> Training | None:
    if "interactions" not in root.data:
        for section in ("items", "model", "train", "secure", "eval", "privacy", "audit"):
            if section in root.data:
                raise root.error(section, "needs an [interactions] table to train on")
        return None
    interactions = InteractionsSpec.from_config(root.sub("interactions", required=True))
    items = None
    if "items" in root.data:
        t = root.sub("items")
        items = TableSpec.from_config(t)
        t.finish()
    model = root.sub("model").take_settings(ModelSettings, ("d", "h", "id_dim", "feature_dim"))
    train = root.sub("train").take_settings(TrainSettings, ("epochs", "batch_users", "lr", "lr_w", "targets",
                                                            "patience", "warm_epochs"))
    secure_table = root.sub("secure")
    secure = secure_table.take_settings(SecureSettings, ("e_bits", "w_bits", "delta_bits", "w_max", "delta_max"))
    if secure.encryption not in ENCRYPTION_MODES:
        raise secure_table.error("encryption", f"must be one of {', '.join(map(repr, ENCRYPTION_MODES))}, got "
                                               f"{secure.encryption!r}")
    evaluation = root.sub("eval").take_settings(EvalSettings, ("negatives", "k"))
    if train.weight_decay < 0:
        raise root.error("train", "weight_decay must be 0 or more")
    privacy = read_privacy(root, "δ")
    limit = privacy.max_releases()
    if limit is not None and train.epochs > limit:  # each epoch releases each user's δ row once
        raise root.error("privacy", f"max_epsilon = {privacy.max_epsilon:g} allows {limit} releases of a user's δ "
                                    f"row, but [train] epochs = {train.epochs} releases it {train.epochs} times: "
                                    f"ε = {epsilon(privacy.noise_multiplier, train.epochs, privacy.dp_delta):.3f}")
    return Training(interactions, items, model, train, secure, evaluation, privacy, read_record(root))


def read_serve(root: Table) -> ServeSettings:
    """[serve], every key optional; the token is only located here, and read when the service starts."""
    t = root.sub("serve")
    default = ServeSettings()
    settings = ServeSettings(
        listen=t.take("listen", str, default.listen),
        token_file=t.take_file("token_file") if "token_file" in t.data else None,
        token_env=t.take("token_env", str, None),
        max_k=t.take_positive("max_k", int, default.max_k),
        max_batch=t.take_positive("max_batch", int, default.max_batch),
        access_log=t.take("access_log", bool, default.access_log),
        refresh=t.take("refresh", bool, default.refresh),
        require_token=t.take("require_token", bool, default.require_token),
        reuse_port=t.take("reuse_port", bool, default.reuse_port),
    )
    t.finish()
    if settings.token_file is not None and settings.token_env is not None:
        raise t.error("token_file", "give at most one of token_file and token_env")
    try:
        host, port = settings.address
    except ValueError:
        host, port = "", 0
    if not host or not 0 < port < 65536:
        raise t.error("listen", f"expected host:port, e.g. \"127.0.0.1:8080\", got {settings.listen!r}")
    return settings


def load(path: Path) -> PartyAConfig:
    root = config.load(path)
    basics = config.read_party_basics(root, A)
    users, psi = read_users_and_psi(root)
    training = read_training(root)
    serve = read_serve(root)
    checkpoint = read_settings(root)
    root.finish()
    if training is not None:
        training.plan()  # a plan that cannot work stops the run here, before any traffic
    return PartyAConfig(basics, users, psi, training, serve, checkpoint)
