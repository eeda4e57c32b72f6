"""The coordinator's decryption service as both sides see it: who submits what, for whom, and how much.

A value that must be decrypted is submitted, masked, by the party that computed it,
and the coordinator returns the plaintext to the step's other party alone (`ROUTE`);
the submitter sends that party its mask directly (`send_masked`, `receive_unmasked`).
So no party ever chooses what is decrypted for itself: what it learns is what the
other party computed for it, and the coordinator only ever sees masked values.

Both parties first register the layer with the coordinator (`register_layer`: the
plan and the number of shared users); it serves nothing before both have registered
the same. Labels name a step of the plan's schedule (`train_label`, `eval_label`),
which fixes how many ciphertexts a request holds (`expected_count`); the coordinator
serves each (step, label) once, in the order a training step runs
(coordinator/ledger.py).

One request is not a decryption for anyone: after step 7, B has the coordinator check
that the [Q] by rows A sent is ⌊(W' + M)/2^s⌋ of the refresh the coordinator decrypted
(`check_refresh`, `refresh_check`). The coordinator answers B with a verdict only.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from enum import StrEnum

import gmpy2
import numpy as np

from protocol import messages
from protocol.compute.workers import WorkerPool
from protocol.crypto import packing
from protocol.crypto.paillier import Encryptor, PublicKey
from protocol.errors import ProtocolError
from protocol.messages.coordinator import (DecryptReply, DecryptRequest, PublicKeyAnnouncement, RefreshCheck,
                                           RefreshChecked, Registration)
from protocol.messages.layer import MaskShare
from protocol.messages.plan import LayerPlan
from protocol.net.transport import Endpoint
from protocol.roles import A, B, C, Role


class Step(StrEnum):
    """The protocol steps that end in a decryption."""

    FORWARD = "forward"  # steps 1-3 of a training step: B submits [u + R], A receives u + R
    EVALUATE = "evaluate"  # steps 1-3 outside training (evaluation): the same
    BACKWARD = "backward"  # steps 4-5: A submits [g + R'], B receives g + R'
    REFRESH = "refresh"  # step 7: B submits [W' + M], A receives W' + M
    CHECK = "check"  # after step 7: B submits Σ ρ_i·[Q_i], the coordinator tells B whether it fits the refresh


ROUTE: dict[Step, tuple[Role, Role]] = {  # step -> (the one role that may submit it, the one that receives it)
    Step.FORWARD: (B, A), Step.EVALUATE: (B, A), Step.BACKWARD: (A, B), Step.REFRESH: (B, A),
}
TRAINING = (Step.FORWARD, Step.BACKWARD, Step.REFRESH, Step.CHECK)  # the requests of one training step, in order
_CHECK_WEIGHT_BITS = 64  # a wrong [Q] passes the check with probability at most 2^-64
_LABEL = re.compile(r"(train|eval)/e(0|[1-9][0-9]{0,8})/b(0|[1-9][0-9]{0,9})(?:/g([1-9][0-9]{0,8}))?")


@dataclass(frozen=True)
class Label:
    """A step of the schedule: training step `batch` of `epoch`, or evaluation forward `batch` after it, in
    `generation` (0 until the first resume: a step redone after a resume gets a fresh label, "/g<generation>").
    Evaluation has an epoch 0 too: a warm start's model as it starts, before any training."""

    training: bool
    epoch: int  # from 1; from 0 for evaluation
    batch: int  # from 0
    generation: int = 0

    def __str__(self) -> str:
        again = f"/g{self.generation}" if self.generation else ""
        return f"{'train' if self.training else 'eval'}/e{self.epoch}/b{self.batch}{again}"

    @classmethod
    def parse(cls, label: str) -> "Label | None":
        match = _LABEL.fullmatch(label)
        if match is None or (match[1] == "train" and match[2] == "0"):
            return None
        return cls(match[1] == "train", int(match[2]), int(match[3]), int(match[4] or 0))


def train_label(epoch: int, batch: int, generation: int = 0) -> str:
    return str(Label(True, epoch, batch, generation))


def eval_label(epoch: int, batch: int, generation: int = 0) -> str:
    return str(Label(False, epoch, batch, generation))


def refresh_batches(users: np.ndarray, plan: LayerPlan) -> list[tuple[str, np.ndarray]]:
    """A refresh session's evaluation forwards: (label, users) per batch of the plan's size, in order."""
    return [(eval_label(1, k), users[start:start + plan.batch_users])
            for k, start in enumerate(range(0, len(users), plan.batch_users))]


def batch_users(plan: LayerPlan, shared_users: int, batch: int) -> int:
    """How many users batch `batch` of an epoch holds: full batches, then the rest (0 past the end)."""
    return max(0, min(plan.batch_users, shared_users - batch * plan.batch_users))


def expected_count(plan: LayerPlan, public: PublicKey, shared_users: int, step: Step, batch: int) -> int:
    """The number of ciphertexts a decryption of `step` for batch `batch` holds under `plan`."""
    rows, cols = plan.layouts(public)
    if step == Step.REFRESH:
        return plan.d * rows.ciphertexts
    if step == Step.CHECK:
        return 1
    users = batch_users(plan, shared_users, batch)
    return users * (cols.ciphertexts if step == Step.BACKWARD else rows.ciphertexts)


def register_layer(endpoint: Endpoint, plan: LayerPlan, shared_users: int, init: bool = False) -> None:
    """Tell the coordinator the plan and the number of shared users; the other party tells it the same. `init`:
    a new layer, whose [W0] the coordinator draws and sends each party in its layout."""
    messages.send(endpoint, C, Registration(plan, shared_users, init))


def submit(endpoint: Endpoint, step: Step, label: str, ciphertexts: list) -> None:
    """Have the coordinator decrypt masked `ciphertexts` of `step` for the step's other party."""
    messages.send(endpoint, C, DecryptRequest(str(step), label, list(ciphertexts)))


def receive_plaintexts(endpoint: Endpoint, step: Step, label: str, count: int) -> list[gmpy2.mpz]:
    """The coordinator's decryption of what the other party submitted for `step` and `label`, in [0, n)."""
    reply = messages.receive(endpoint, C, DecryptReply)
    if reply.error is not None:
        raise ProtocolError(f"coordinator refused the decryption of {reply.step}/{reply.label}: {reply.error}")
    if (reply.step, reply.label) != (step, label):
        raise ProtocolError(f"coordinator sent the decryption of {reply.step}/{reply.label} while this role "
                            f"waits for {step}/{label}")
    if reply.plaintexts is None or len(reply.plaintexts) != count:
        got = 0 if reply.plaintexts is None else len(reply.plaintexts)
        raise ProtocolError(f"coordinator sent {got} plaintexts for {step}/{label}; the plan has {count}")
    return reply.plaintexts


def send_masked(endpoint: Endpoint, step: Step, label: str, value: packing.Packed, enc: Encryptor,
                pool: WorkerPool | None = None) -> None:
    """Submitter: mask `value` with a fresh encryption of R, have the coordinator decrypt it for the other party,
    and send that party R (packed as plaintexts, one per ciphertext)."""
    masked, r = packing.mask(value, enc, pool)
    submit(endpoint, step, label, masked.flat())
    messages.send(endpoint, ROUTE[step][1], MaskShare(label, packing.pack_flat(r, value.layout)))


def receive_unmasked(endpoint: Endpoint, step: Step, label: str, layout: packing.Layout, rows: int,
                     public: PublicKey) -> np.ndarray:
    """Receiver: the integer matrix the other party submitted for `step`, its mask removed."""
    count = rows * layout.ciphertexts
    plaintexts = receive_plaintexts(endpoint, step, label, count)
    submitter = ROUTE[step][0]
    share = messages.receive(endpoint, submitter, MaskShare)
    messages.expect_label(share, label, submitter)
    if len(share.packed) != count:
        raise ProtocolError(f"{submitter} sent MaskShare with field 'packed' of {len(share.packed)} values for "
                            f"{count} ciphertexts")
    return packing.unmask(plaintexts, share.packed, layout, rows, public.n)


def receive_public_key(endpoint: Endpoint, pinned: str | None) -> PublicKey:
    """The coordinator's public key, checked against the config's pin when there is one."""
    announced = messages.receive(endpoint, C, PublicKeyAnnouncement)
    return PublicKey.announced(announced.n, announced.fingerprint, pinned)


def check_refresh(endpoint: Endpoint, label: str, q_rows: packing.Packed) -> None:
    """B, after step 7: have the coordinator check that A's [Q] by rows holds ⌊(W' + M)/2^s⌋ of the refresh it
    decrypted, through one combination Σ_i ρ_i·[Q_i] with secret random weights ρ that A never sees (so A cannot
    fit a wrong [Q] to them); refuse the step, naming A, when it does not."""
    cts = q_rows.flat()
    weights = [secrets.randbits(_CHECK_WEIGHT_BITS) | 1 for _ in cts]
    n2 = q_rows.public.n2
    combined = gmpy2.mpz(1)
    for c, rho in zip(cts, weights):
        combined = combined * gmpy2.powmod(c, rho, n2) % n2
    messages.send(endpoint, C, RefreshCheck(label, int(combined), weights))
    verdict = messages.receive(endpoint, C, RefreshChecked)
    messages.expect_label(verdict, label, C)
    if verdict.error is not None:
        raise ProtocolError(f"{A} sent B a [Q] by rows that is not the refresh of [W] (step 7, {label}), so B's "
                            f"[W] would not be the W both hold: {verdict.error}")


def refresh_check(plan: LayerPlan, public: PublicKey, refresh: list, weights: list) -> int:
    """Coordinator: Σ_i ρ_i·Q_i mod n, the plaintext a correct check combines to, where Q_i are the plaintexts of
    ⌊(W' + M)/2^s⌋ by rows for the refresh plaintexts `refresh` it decrypted (the same Q A computed)."""
    rows, _ = plan.layouts(public)
    q = packing.unpack(refresh, rows, plan.d, public.n)
    n = int(public.n)
    q_plain = packing.pack_flat(np.array([[v >> plan.shift for v in row] for row in q], dtype=object), rows)
    return sum(int(rho) * (p % n) for rho, p in zip(weights, q_plain)) % n
