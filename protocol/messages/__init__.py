"""Every message the roles exchange: its fields, its tag, and who may send it to whom.

A tag names a stream between two roles; messages on one stream arrive in order.
Tags are a fixed set, so the transport keeps a bounded inbox and refuses any tag
this module does not route from that sender to that receiver. A message that
belongs to a protocol step carries the step's `label`, and the receiver checks it
against the label it expects (`expect_label`).

The step-by-step meaning of each message is in docs/design.md; the functions that
send and receive them are in psi/session.py, protocol/layer/ and coordinator/.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from protocol.crypto.packing import EncryptedMatrix
from protocol.errors import ProtocolError
from protocol.messages.plan import LayerPlan
from protocol.names import check_name
from protocol.roles import A, B, C, Role
from protocol.wire.message import WHILE_UP, BigIntList, IntVector, Message

M = TypeVar("M", bound=Message)


# ---- the coordinator's key and its decryption service ------------------------------------


@dataclass(frozen=True)
class PublicKeyAnnouncement(Message):
    """C → A, B: the Paillier public key every ciphertext of the run is under."""

    TAG: ClassVar[str] = "coordinator/public_key"
    n: int
    fingerprint: str


@dataclass(frozen=True)
class DecryptRequest(Message):
    """A or B → C: masked ciphertexts the sender computed in one protocol step, to be decrypted for the step's
    other party (never for the sender: protocol/layer/decryption.py ROUTE)."""

    TAG: ClassVar[str] = "coordinator/decrypt"
    step: str
    label: str
    ciphertexts: BigIntList


@dataclass(frozen=True)
class DecryptReply(Message):
    """C → the step's receiving party: the plaintexts in [0, n), or why the request was refused."""

    TAG: ClassVar[str] = "coordinator/decrypted"
    step: str
    label: str
    plaintexts: BigIntList | None
    error: str | None


@dataclass(frozen=True)
class Registration(Message):
    """A, B → C: the layer plan and the number of shared users, from each party; the coordinator serves
    decryptions only once both have registered the same, and only what that plan's schedule allows."""

    TAG: ClassVar[str] = "coordinator/register"
    plan: LayerPlan
    shared_users: int
    init: bool = False  # a new layer: the coordinator draws W0 (training); False: [W] exists (a refresh session)


@dataclass(frozen=True)
class InitialWeights(Message):
    """C → A, B: [W0] in the receiver's layout (by columns to A, by rows to B), drawn and encrypted by the
    coordinator once both parties registered a new layer, so that each layout of W0 comes from neither party."""

    TAG: ClassVar[str] = "coordinator/weights"
    label: str
    w: EncryptedMatrix


@dataclass(frozen=True)
class RefreshCheck(Message):
    """B → C, after step 7: Σ_i ρ_i·[Q_i] over the ciphertexts of the [Q] by rows A sent, with B's secret
    random weights ρ; the coordinator compares its decryption with the same combination of ⌊(W' + M)/2^s⌋
    from the refresh it decrypted."""

    TAG: ClassVar[str] = "coordinator/check"
    label: str
    combined: int
    weights: BigIntList


@dataclass(frozen=True)
class RefreshChecked(Message):
    """C → B: whether A's [Q] by rows holds what the coordinator decrypted (error None) or why not."""

    TAG: ClassVar[str] = "coordinator/checked"
    label: str
    error: str | None


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


# ---- PSI (both parties run the same steps, psi/session.py) ------------------------------


@dataclass(frozen=True)
class PsiHello(Message):
    """Step 1: a fresh nonce for the session salt, the set size and the chunk size the sender will use."""

    TAG: ClassVar[str] = "psi/hello"
    version: int
    nonce: bytes
    size: int
    chunk: int


@dataclass(frozen=True)
class PsiBlinded(Message):
    """Step 2: one chunk of the sender's blinded IDs, 32 bytes each."""

    TAG: ClassVar[str] = "psi/blinded"
    points: bytes


@dataclass(frozen=True)
class PsiDoubled(Message):
    """Step 3: the receiver's chunk blinded again, in the order received, cut to the match length."""

    TAG: ClassVar[str] = "psi/double"
    values: bytes


@dataclass(frozen=True)
class PsiOpen(Message):
    """Before any PSI step: the PSI version, whether the sender asks for a full or a delta run (and may fall back to
    a full one), the ID of the state it kept from the last PSI (empty: none it can use) and why it cannot run a
    delta (empty: it can). Both sides choose from the two the same way (psi/mode.py)."""

    TAG: ClassVar[str] = "psi/open"
    version: int
    want: str
    fallback: bool
    state: bytes
    blocked: str

    def __post_init__(self) -> None:
        if self.want not in ("full", "delta"):
            raise ValueError(f"field 'want' = {self.want!r}, expected 'full' or 'delta'")
        if len(self.state) not in (0, 32):
            raise ValueError(f"field 'state' of {len(self.state)} bytes, expected 0 or 32")
        if len(self.blocked) > 1000 or not self.blocked.isprintable():  # it goes into the receiver's log
            raise ValueError("field 'blocked' must be one printable line of at most 1000 characters")


@dataclass(frozen=True)
class PsiDeltaHello(Message):
    """Delta step 1: how many IDs the sender added and removed since the state both kept, and its chunk size."""

    TAG: ClassVar[str] = "psi/delta"
    added: int
    removed: int
    chunk: int


@dataclass(frozen=True)
class PsiRemoved(Message):
    """Delta step 2: one chunk of the doubly-blinded values of the sender's removed IDs."""

    TAG: ClassVar[str] = "psi/removed"
    values: bytes


@dataclass(frozen=True)
class PsiDone(Message):
    """Last PSI step: the ID of the state the sender arrived at; both must arrive at the same."""

    TAG: ClassVar[str] = "psi/done"
    state: bytes


# ---- A's commands to B, one stream, in order (party_b/follow.py) -------------------------


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


# ---- the secure layer between the parties (protocol/layer/steps.py) ---------------------


@dataclass(frozen=True)
class MaskShare(Message):
    """Steps 1 and 4: the mask the sender added to what it had the coordinator decrypt for the receiver,
    packed as the plaintexts of the ciphertexts it masked, so the receiver can remove it."""

    TAG: ClassVar[str] = "layer/mask"
    label: str
    packed: BigIntList


@dataclass(frozen=True)
class EncryptedDelta(Message):
    """Step 4, A → B: [δ] by rows, for B's update of [W]."""

    TAG: ClassVar[str] = "layer/delta"
    label: str
    delta: EncryptedMatrix


@dataclass(frozen=True)
class RefreshMask(Message):
    """Step 7, B → A: [M'] by columns, the part of B's refresh mask A removes from its own [W]."""

    TAG: ClassVar[str] = "layer/refresh"
    label: str
    m_cols: EncryptedMatrix


@dataclass(frozen=True)
class RefreshedRows(Message):
    """Step 7, A → B: [Q] = [(W' + M) / 2^s] by rows, freshly encrypted."""

    TAG: ClassVar[str] = "layer/q_rows"
    label: str
    q_rows: EncryptedMatrix


# ---- refreshing B's contribution for serving (party_b/refresh.py) ---------------------------


@dataclass(frozen=True)
class RefreshRequest(Message):
    """B → A, C: a refresh session for stored model `model_id`: u recomputed for these shared users (positions
    in the model's roster: its users in the aligned order, then those who joined the intersection since, as
    psi/membership.py derives them), in batches of the plan's size, each an evaluation forward (steps 1-3).
    `roster_size` and `roster_digest` let A check that it derived the same roster."""

    TAG: ClassVar[str] = "serve/refresh"
    model_id: str
    users: IntVector
    roster_size: int
    roster_digest: str

    def __post_init__(self) -> None:
        check_name(self.model_id, "model_id")  # it becomes part of the session's run ID


@dataclass(frozen=True)
class RefreshDone(Message):
    """A → B: the refreshed u of `users` users are in A's u store (swapped in whole)."""

    TAG: ClassVar[str] = "serve/refreshed"
    model_id: str
    users: int

    def __post_init__(self) -> None:
        check_name(self.model_id, "model_id")


# ---- checkpoints and the resume handshake (protocol/runtime/checkpoint.py, protocol/runtime/resume.py) ----------


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


# ---- routes --------------------------------------------------------------------------------

ROUTES: dict[type[Message], tuple[tuple[Role, Role], ...]] = {
    PublicKeyAnnouncement: ((C, A), (C, B)),
    Registration: ((A, C), (B, C)),
    InitialWeights: ((C, A), (C, B)),
    RefreshCheck: ((B, C),),
    RefreshChecked: ((C, B),),
    DecryptRequest: ((A, C), (B, C)),
    DecryptReply: ((C, A), (C, B)),
    RunDone: ((A, C),),
    Starting: ((B, A), (C, A)),
    PsiHello: ((A, B), (B, A)),
    PsiBlinded: ((A, B), (B, A)),
    PsiDoubled: ((A, B), (B, A)),
    PsiOpen: ((A, B), (B, A)),
    PsiDeltaHello: ((A, B), (B, A)),
    PsiRemoved: ((A, B), (B, A)),
    PsiDone: ((A, B), (B, A)),
    Command: ((A, B),),
    MaskShare: ((B, A), (A, B)),
    EncryptedDelta: ((A, B),),
    RefreshMask: ((B, A),),
    RefreshedRows: ((A, B),),
    RefreshRequest: ((B, A), (B, C)),
    RefreshDone: ((A, B),),
    CoordinatorCheckpoint: ((A, C),),
    CheckpointDone: ((B, A), (C, A)),
    ResumeCall: ((A, B), (A, C)),
    Resume: ((B, A), (C, A)),
    Resumed: ((A, B), (A, C)),
}


def inbox_tags(receiver: str) -> Mapping[str, frozenset[str]]:
    """For each sender, the tags `receiver` accepts from it; the transport refuses every other tag."""
    tags: dict[str, set[str]] = {}
    for cls, routes in ROUTES.items():
        for sender, to in routes:
            if to == receiver:
                tags.setdefault(str(sender), set()).add(cls.TAG)
    return {sender: frozenset(t) for sender, t in tags.items()}


def send(endpoint: Any, peer: str, message: Message) -> None:
    """Send `message` to `peer` under its tag."""
    endpoint.send(peer, message.TAG, message.to_message())


def receive(endpoint: Any, peer: str, kind: type[M], timeout: float | None = None, idle: bool = False) -> M:
    """The next `kind` message from `peer`, checked field by field (`idle`: transport.Endpoint.recv)."""
    return kind.from_message(endpoint.recv(peer, kind.TAG, timeout=timeout, idle=idle), peer)


def receive_command(endpoint: Any, peer: str) -> Command:
    """A's next command, waited for as long as A is up: between steps A may work for long (evaluation, A alone's
    epoch at scale)."""
    return command_from_message(endpoint.recv(peer, Command.TAG, timeout=WHILE_UP), peer)


def expect_label(message: Message, label: str, peer: str) -> None:
    """Refuse a step message that belongs to another step than the one the receiver is in."""
    got = getattr(message, "label")
    if got != label:
        raise ProtocolError(f"{peer} sent {type(message).__name__} with field 'label' = {got!r} while this role "
                            f"is in step {label!r}")
