"""A run's start and end, checkpoints and the resume handshake (protocol/runtime/checkpoint.py,
protocol/runtime/resume.py).

Their tags and routes: protocol/messages/__init__.py; their meaning: docs/design.md."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from protocol.names import check_name
from protocol.wire.message import IntVector, Message


@dataclass(frozen=True)
class RunDone(Message):
    """A → C: the run is over; the coordinator stores the key's link to the trained model (if any), puts it in
    service if `promote` (a warm start's model only when it validated better than the one in service), and stops."""

    TAG: ClassVar[str] = "control/done"
    model_id: str | None
    promote: bool = True

    def __post_init__(self) -> None:
        if self.model_id is not None:
            check_name(self.model_id, "model_id")  # it names the coordinator's model directory


@dataclass(frozen=True)
class Starting(Message):
    """B, C → A, as a run starts: the stored model this role starts from (`--from current`: a warm start), or None
    (from scratch); A refuses to go on unless all three start from the same."""

    TAG: ClassVar[str] = "control/start"
    model_id: str | None

    def __post_init__(self) -> None:
        if self.model_id is not None:
            check_name(self.model_id, "model_id")


@dataclass(frozen=True)
class CoordinatorCheckpoint(Message):
    """A → C: write the coordinator's checkpoint of this step boundary and confirm with CheckpointDone."""

    TAG: ClassVar[str] = "coordinator/checkpoint"
    step: int


@dataclass(frozen=True)
class CheckpointDone(Message):
    """B, C → A: this role's checkpoint of `step` is written (fsynced and renamed into place)."""

    TAG: ClassVar[str] = "checkpoint/done"
    step: int


@dataclass(frozen=True)
class ResumeCall(Message):
    """A → B, C: A is resuming from a checkpoint; a role still in the old generation stops and answers with Resume."""

    TAG: ClassVar[str] = "resume/call"
    nonce: str


@dataclass(frozen=True)
class Resume(Message):
    """B, C → A: this role waits to resume run `run_id`: the plan its checkpoints are of, the steps it holds, the
    newest generation it was in; A answers `nonce` with Resumed."""

    TAG: ClassVar[str] = "resume/hello"
    run_id: str
    plan: str
    held: IntVector
    generation: int
    nonce: str


@dataclass(frozen=True)
class Resumed(Message):
    """A → B, C: the newest checkpoint all three hold and the generation to continue in (or why there is none)."""

    TAG: ClassVar[str] = "resume/agreed"
    step: int | None
    generation: int
    nonce: str
    error: str | None
