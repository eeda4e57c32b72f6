"""B's side of training: it follows A's commands, one at a time, in order, one method per command.

init     build tower B and the layer, receive [W0] by rows from the coordinator (protocol/layer/steps.py INIT);
         a warm start (party_b/warm.py) takes the stored model's tower and [W] by rows instead
step     one training step for a batch of users (TRAINING_STEP)
forward  steps 1-3 only, for evaluation (FORWARD_ONLY)
keep     the federated model validated best so far: keep B's state of this epoch
checkpoint  write B's checkpoint of this step boundary (party_b/checkpoint.py) and confirm
done     store the kept state as the model A names (in service if A says so), save the last state, stop

After a resume (protocol/runtime/resume.py) B rebuilds its state from its checkpoint
(`Follower.restore`) and follows A's commands from there.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from party_b import checkpoint
from party_b.checkpoint import Kept
from party_b.config import TowerSettings
from party_b.store import save_passive_model
from party_b.tower import TowerB, passive_step
from party_b.warm import Start
from protocol import messages, observe
from protocol.compute.workers import WorkerPool
from protocol.crypto.packing import Packed
from protocol.crypto.paillier import Encryptor, PublicKey
from protocol.data.stored import state_bytes
from protocol.data.tables import Encoding, Features
from protocol.errors import ProtocolError
from protocol.layer import steps
from protocol.layer.decryption import Label, Step, register_layer
from protocol.layer.defence import Defence
from protocol.layer.steps import FORWARD_ONLY, INIT, TRAINING_STEP, Side, BTurn
from protocol.layer.timing import StepClock
from protocol.messages.commands import Checkpoint, Command, Finish, Forward, Init, Keep, TrainStep
from protocol.messages.plan import LayerPlan
from protocol.messages.run import CheckpointDone
from protocol.net.transport import Endpoint
from protocol.privacy import release_key
from protocol.roles import A
from protocol.runtime.checkpoint import remove_all
from protocol.store.models import atomic_write, private_dir
from protocol.store.releases import remove_ledgers
from protocol.wire.codec import encode

log = logging.getLogger(__name__)


@dataclass
class TowerTurn:
    """Tower B for one step: e_B for the step's users (through the defence, when it is on), then
    back-propagation of g through the clean e_B."""

    tower: TowerB
    optimizer: torch.optim.Optimizer | None  # None: forward only, no gradient kept
    defence: Defence = Defence()
    label: str = ""
    step: int = 0
    e_b: torch.Tensor | None = None
    users: np.ndarray | None = None

    def embed(self, users: np.ndarray) -> np.ndarray:
        self.users = users
        with torch.set_grad_enabled(self.optimizer is not None):
            self.e_b = self.tower(torch.from_numpy(users.astype(np.int64)))
        if self.defence.noise is None:
            return self.e_b.detach().numpy()
        if self.optimizer is not None:  # a training step: the rows released for it, if it is redone
            return self.defence.noise(users, self.e_b.detach().numpy(), release_key(self.label))
        released = self.defence.noise.again(users)
        return released if released is not None else self.defence.noise(users, self.e_b.detach().numpy())

    def learn(self, g: np.ndarray) -> None:
        if self.defence.received is not None:
            label = Label.parse(self.label)
            self.defence.received.add("g", label.epoch if label else 0, self.step, self.users, g)
        passive_step(self.optimizer, self.e_b, torch.from_numpy(g).float())


def save_state(workdir: Path, tower: TowerB, w_rows: Packed, name: str) -> None:
    out = workdir / "model"
    private_dir(out)
    atomic_write(out / "tower_b.pt", state_bytes(tower.state_dict()))
    atomic_write(out / f"{name}.msgpack", encode(w_rows.to_wire().to_message()))


@dataclass(frozen=True)
class SharedUsers:
    """B's side of the shared users, in the aligned order: IDs, encoded columns, and how they were encoded."""

    ids: list[str]
    features: Features
    encoding: Encoding


class Follower:
    """B's command loop. A decides; B checks each command and runs its part of the named sequence."""

    def __init__(self, endpoint: Endpoint, public: PublicKey, pool: WorkerPool, shared: SharedUsers,
                 settings: TowerSettings, encryption: str, workdir: Path, keep: int, defence: Defence = Defence(),
                 start: Start | None = None):
        self.endpoint, self.public, self.pool, self.defence, self.start = endpoint, public, pool, defence, start
        self.shared, self.settings, self.encryption, self.workdir = shared, settings, encryption, workdir
        self.keep_checkpoints = keep
        self.features = shared.features
        self.side: Side | None = None
        self.tower: TowerB | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.kept: Kept | None = None
        self.clock = StepClock(endpoint)
        self.steps = 0

    @property
    def n_users(self) -> int:
        return self.features.numeric.shape[0]

    def follow(self, first: Command) -> None:
        """Run A's commands, starting with `first`, until A says it is done."""
        handlers = {Init: self.init, TrainStep: self.step, Forward: self.forward, Keep: self.keep,
                    Checkpoint: self.save_checkpoint, Finish: self.finish}
        command = first
        while True:
            self.clock.restart()
            if self.side is None and isinstance(command, (TrainStep, Forward, Keep, Checkpoint)):
                raise ProtocolError(f"{A} sent {command.OP!r} before 'init'")
            handlers[type(command)](command)
            if isinstance(command, Finish):
                return
            command = messages.receive_command(self.endpoint, A)

    def init(self, command: Init) -> None:
        if self.side is not None:
            raise ProtocolError(f"{A} sent 'init' twice")
        plan = command.plan
        plan.check_key(self.public.fingerprint)
        if self.start is not None:
            self.start.check_plan(plan)
        register_layer(self.endpoint, plan, self.n_users, init=self.start is None)
        self._build(plan)
        if self.start is None:
            steps.walk(INIT, self.side, BTurn("init", np.empty(0, np.int64)))
        else:
            self.tower.load_state_dict(self.start.tower)
            self.side.w = self.start.w_rows(self.public)
        save_state(self.workdir, self.tower, self.side.w, "w_rows_init")
        log.info("%s", plan.describe(self.public))

    def _build(self, plan: LayerPlan) -> None:
        self.side = Side(self.endpoint, self.public, Encryptor(self.public, self.encryption), self.pool, plan)
        torch.manual_seed(self.settings.seed)
        self.tower = TowerB(self.features, plan.d, list(self.settings.hidden), self.settings.feature_dim)
        self.optimizer = torch.optim.Adam(self.tower.parameters(), lr=self.settings.lr)

    def restore(self, state: checkpoint.State) -> None:
        """B's state from its checkpoint (the plan, tower, optimiser, RNG, [W] by rows, steps, kept state); the noise
        keeps its ledger's releases, rows and generator, only raising a count the checkpoint holds higher."""
        self._build(state.plan)
        self.tower.load_state_dict(state.tower)
        self.optimizer.load_state_dict(state.optimizer)
        torch.set_rng_state(state.rng)
        self.side.w, self.steps, self.kept = state.w_rows, state.steps, state.kept
        if self.defence.noise is not None and state.noise is not None:
            self.defence.noise.restore(state.noise)

    def save_checkpoint(self, command: Checkpoint) -> None:
        noise = None if self.defence.noise is None else self.defence.noise.state()
        state = checkpoint.State(self.side.plan, self.public, self.tower.state_dict(), self.optimizer.state_dict(),
                                 torch.get_rng_state(), self.side.w, self.steps, self.kept, noise)
        checkpoint.save(self.workdir, self.endpoint.cfg.run_id, command.step, self.keep_checkpoints, state)
        messages.send(self.endpoint, A, CheckpointDone(command.step))

    def step(self, command: TrainStep) -> None:
        users = self._users(command)
        label = Label.parse(command.label)
        observe.at(None if label is None else label.epoch, self.steps)
        tower = TowerTurn(self.tower, self.optimizer, self.defence, command.label, self.steps)
        steps.walk(TRAINING_STEP, self.side, BTurn(command.label, users, tower), self.clock)
        observe.secure_step(users.size)
        self.steps += 1

    def forward(self, command: Forward) -> None:
        turn = BTurn(command.label, self._users(command), TowerTurn(self.tower, None, self.defence),
                     decrypt_as=Step.EVALUATE)
        steps.walk(FORWARD_ONLY, self.side, turn, self.clock)

    def keep(self, command: Keep) -> None:
        state = {name: t.detach().clone() for name, t in self.tower.state_dict().items()}
        self.kept = Kept(command.epoch, state, self.side.w)

    def finish(self, command: Finish) -> None:
        if self.tower is not None:
            save_state(self.workdir, self.tower, self.side.w, "w_rows")
        if command.model_id is not None:
            self.store(command)
        self.clock.write(self.workdir / "timing.json")
        remove_all(self.workdir, self.endpoint.cfg.run_id)
        remove_ledgers(self.workdir, self.endpoint.cfg.run_id)
        spent = self.defence.spent()
        if self.defence.received is not None:
            log.info("what B received per user written to %s", self.defence.received.write(self.workdir, spent))
        if self.defence.noise is not None:
            log.info("noise on e_B: %d releases per user spend ε = %.3f at δ = %g", spent["releases_per_user"],
                     spent["epsilon"], spent["dp_delta"])
        log.info("run finished (announced by %s) after %d training steps", A, self.steps)

    def store(self, command: Finish) -> None:
        """Store the state A chose as model `command.model_id`."""
        if self.kept is None or self.kept.epoch != command.epoch:
            held = "no epoch" if self.kept is None else f"epoch {self.kept.epoch}"
            raise ProtocolError(f"{A} named epoch {command.epoch} as the model to store, but told B to keep {held}")
        plan = self.side.plan
        manifest = {"run_id": self.endpoint.cfg.run_id, "created": time.time(), "epoch": self.kept.epoch,
                    "key_fingerprint": self.public.fingerprint, "plan": plan.to_message(),
                    "tower_settings": dataclasses.asdict(self.settings), "encoding": self.shared.encoding.to_json(),
                    "privacy": self.defence.privacy(),
                    "started_from": None if self.start is None else self.start.model_id}
        save_passive_model(self.workdir, command.model_id, manifest, self.kept.tower, self.kept.w_rows,
                           self.shared.ids, self.shared.features, self.defence.releases(self.n_users), command.promote)
        log.info("model %s stored (epoch %d)%s", command.model_id, self.kept.epoch,
                 "" if command.promote else f", not put in service (model {self.start.model_id} stays)")

    def _users(self, command: TrainStep | Forward) -> np.ndarray:
        """The command's users: distinct shared-user positions, at most a batch of them."""
        users = command.users
        if not 0 < users.size <= self.side.plan.batch_users:
            raise ProtocolError(f"{A} sent {type(command).__name__} with field 'users' holding {users.size} users; "
                                f"expected 1 to {self.side.plan.batch_users}")
        if users.min() < 0 or users.max() >= self.n_users or np.unique(users).size != users.size:
            raise ProtocolError(f"{A} sent {type(command).__name__} with field 'users' naming users outside the "
                                f"{self.n_users} shared ones, or one twice")
        return users
