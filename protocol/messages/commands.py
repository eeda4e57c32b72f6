"""A's commands to B, on one stream, in order (party_b/follow.py).

Their tags and routes: protocol/messages/__init__.py; their meaning: docs/design.md."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from protocol.errors import ProtocolError
from protocol.messages.plan import LayerPlan
from protocol.names import check_name
from protocol.wire.message import IntVector, Message


@dataclass(frozen=True)
class Command(Message):
    """Base of A's commands; the body carries `op` to tell them apart on their one stream."""

    TAG: ClassVar[str] = "layer/command"
    OP: ClassVar[str] = ""

    def to_message(self) -> dict:
        return {"op": self.OP, **super().to_message()}


@dataclass(frozen=True)
class Init(Command):
    """Build the layer with A's plan and exchange shares of W0."""

    OP: ClassVar[str] = "init"
    plan: LayerPlan


@dataclass(frozen=True)
class TrainStep(Command):
    """One training step (steps 1-7) for these shared users."""

    OP: ClassVar[str] = "step"
    label: str
    users: IntVector


@dataclass(frozen=True)
class Forward(Command):
    """Steps 1-3 only, for these shared users (evaluation)."""

    OP: ClassVar[str] = "forward"
    label: str
    users: IntVector


@dataclass(frozen=True)
class Keep(Command):
    """The federated model validated best so far after this epoch: keep B's state of it (to save and serve)."""

    OP: ClassVar[str] = "keep"
    epoch: int


@dataclass(frozen=True)
class Finish(Command):
    """The run is over: store the kept state as model `model_id` (None: nothing was trained), in service if
    `promote`, and stop."""

    OP: ClassVar[str] = "done"
    model_id: str | None
    epoch: int | None
    promote: bool = True

    def __post_init__(self) -> None:
        if self.model_id is not None:
            check_name(self.model_id, "model_id")  # it names B's model directory


@dataclass(frozen=True)
class Checkpoint(Command):
    """Write B's checkpoint of this step boundary (training steps done) and confirm with CheckpointDone."""

    OP: ClassVar[str] = "checkpoint"
    step: int


COMMANDS: dict[str, type[Command]] = {c.OP: c for c in (Init, TrainStep, Forward, Keep, Finish, Checkpoint)}


def command_from_message(body: Any, peer: str) -> Command:
    """The command behind `body`, chosen by its `op`."""
    op = body.get("op") if isinstance(body, dict) else None
    if not isinstance(op, str) or op not in COMMANDS:
        shown = "no field 'op'" if not isinstance(body, dict) or "op" not in body else f"op {op!r}"
        raise ProtocolError(f"{peer} sent a command with {shown}; expected one of {', '.join(COMMANDS)}")
    return COMMANDS[op].from_message({k: v for k, v in body.items() if k != "op"}, peer)
