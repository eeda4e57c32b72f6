"""The coordinator's decryption service as both sides see it: who may ask for what, and how much.

Both parties first register the layer with the coordinator (`register_layer`: the
plan and the number of shared users); it serves nothing before both have registered
the same. A party then sends a `DecryptRequest` (step, label, masked ciphertexts) and
the coordinator answers that party alone with a `DecryptReply`. Each step names the
one role that may ask for it (`POLICY`), so the plaintext of a step can only ever
reach the role docs/design.md gives it to. Labels name a step of the plan's schedule
(`train_label`, `eval_label`), which fixes how many ciphertexts the request holds
(`expected_count`); the coordinator serves each (step, label) once, in the order a
training step runs (coordinator/ledger.py). Everything a party sends here is masked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

import gmpy2
import numpy as np

from protocol import messages
from protocol.crypto import packing
from protocol.crypto.paillier import Encryptor, PublicKey
from protocol.errors import ProtocolError
from protocol.layer.plan import LayerPlan
from protocol.messages import DecryptReply, DecryptRequest, PublicKeyAnnouncement, Registration
from protocol.net.transport import Endpoint
from protocol.roles import A, B, C, Role
from protocol.runtime.workers import WorkerPool


class Step(StrEnum):
    """The protocol steps that end in a decryption."""

    FORWARD = "forward"  # steps 2-3 of a training step: u + R for A
    EVALUATE = "evaluate"  # steps 2-3 outside training (evaluation): u + R for A
    BACKWARD = "backward"  # step 5: g + R' for B
    REFRESH = "refresh"  # step 7: W' + M for A


POLICY: dict[Step, Role] = {Step.FORWARD: A, Step.EVALUATE: A, Step.BACKWARD: B, Step.REFRESH: A}
TRAINING = (Step.FORWARD, Step.BACKWARD, Step.REFRESH)  # the decryptions of one training step, in order
_LABEL = re.compile(r"(train|eval)/e([1-9][0-9]{0,8})/b(0|[1-9][0-9]{0,9})")


def train_label(epoch: int, batch: int) -> str:
    """The label of training step `batch` (from 0) of `epoch` (from 1)."""
    return f"train/e{epoch}/b{batch}"


def eval_label(epoch: int, batch: int) -> str:
    """The label of evaluation forward `batch` after `epoch`."""
    return f"eval/e{epoch}/b{batch}"


@dataclass(frozen=True)
class Label:
    training: bool
    epoch: int
    batch: int

    @classmethod
    def parse(cls, label: str) -> "Label | None":
        match = _LABEL.fullmatch(label)
        return None if match is None else cls(match[1] == "train", int(match[2]), int(match[3]))


def batch_users(plan: LayerPlan, shared_users: int, batch: int) -> int:
    """How many users batch `batch` of an epoch holds: full batches, then the rest (0 past the end)."""
    return max(0, min(plan.batch_users, shared_users - batch * plan.batch_users))


def expected_count(plan: LayerPlan, public: PublicKey, shared_users: int, step: Step, batch: int) -> int:
    """The number of ciphertexts a decryption of `step` for batch `batch` holds under `plan`."""
    rows, cols = plan.layouts(public)
    if step == Step.REFRESH:
        return plan.d * rows.ciphertexts
    users = batch_users(plan, shared_users, batch)
    return users * (cols.ciphertexts if step == Step.BACKWARD else rows.ciphertexts)


def register_layer(endpoint: Endpoint, plan: LayerPlan, shared_users: int) -> None:
    """Tell the coordinator the plan and the number of shared users; the other party tells it the same."""
    messages.send(endpoint, C, Registration(plan, shared_users))


def request_decryption(endpoint: Endpoint, step: Step, label: str, ciphertexts: list) -> list[gmpy2.mpz]:
    """Ask the coordinator to decrypt masked `ciphertexts`; returns plaintexts in [0, n)."""
    messages.send(endpoint, C, DecryptRequest(str(step), label, list(ciphertexts)))
    reply = messages.receive(endpoint, C, DecryptReply)
    if reply.error is not None:
        raise ProtocolError(f"coordinator refused to decrypt {step}/{label}: {reply.error}")
    if (reply.step, reply.label) != (step, label):
        raise ProtocolError(f"coordinator answered {reply.step}/{reply.label} to a request for {step}/{label}")
    if reply.plaintexts is None or len(reply.plaintexts) != len(ciphertexts):
        count = 0 if reply.plaintexts is None else len(reply.plaintexts)
        raise ProtocolError(f"coordinator returned {count} plaintexts for {len(ciphertexts)} ciphertexts")
    return reply.plaintexts


def receive_public_key(endpoint: Endpoint, pinned: str | None) -> PublicKey:
    """The coordinator's public key, checked against the config's pin when there is one."""
    announced = messages.receive(endpoint, C, PublicKeyAnnouncement)
    return PublicKey.announced(announced.n, announced.fingerprint, pinned)


def decrypt_masked(endpoint: Endpoint, step: Step, label: str, value: packing.Packed, enc: Encryptor,
                   pool: WorkerPool | None = None) -> np.ndarray:
    """The integer matrix behind `value`, learnt without the coordinator seeing it: mask, ask, unmask."""
    masked, r = packing.mask(value, enc, pool)
    return packing.unmask(request_decryption(endpoint, step, label, masked.flat()), masked, r)
