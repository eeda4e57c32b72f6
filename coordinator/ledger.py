"""What the coordinator has decrypted in this run, and what it may decrypt next.

Both parties register the layer plan and the number of shared users; from then on
a request is served only if its label names a step of that schedule, it holds
exactly the number of ciphertexts that step has, it was not served before, and it
comes in the order a training step runs: forward (A), backward (B), refresh (A) and
B's check of A's refresh, for one training label at a time, labels only ever moving
forward, and evaluation forwards only between training steps. So a party can have decrypted no more values
than the protocol gives it, each once; a replayed request, or a saved [W] sent as
one, does not fit. Labels carry the generation the run is in (protocol/runtime/resume.py): after
a resume the ledger is the one of the checkpoint, in the new generation, so a redone step's
fresh label is served while a label of an older generation is refused. What the
coordinator cannot see is whether the ciphertexts of a request that fits are the ones
the protocol meant: that is for the per-run key (old ciphertexts decrypt to noise) and
the masks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from protocol.crypto.paillier import PublicKey
from protocol.layer.decryption import TRAINING, Label, Step, batch_users, expected_count
from protocol.messages.plan import LayerPlan


class Refusal(str):
    """Why a request is refused, as the decryption log and the peer get it, with a short `reason` code for the metrics
    (`vfrec_decryptions_refused_total{reason}`)."""

    reason: str

    def __new__(cls, reason: str, text: str) -> "Refusal":
        refusal = super().__new__(cls, text)
        refusal.reason = reason
        return refusal


@dataclass
class Ledger:
    plan: LayerPlan
    shared_users: int
    public: PublicKey
    open: tuple[str, Step] | None = None  # the training step in progress and its last decryption
    last: dict[bool, tuple[int, int]] = field(default_factory=lambda: {True: (0, -1), False: (0, -1)})
    # (epoch, batch) of the latest training (True) and evaluation (False) label begun: labels only move forward,
    # so a repeated or replayed label is refused without keeping every label ever served
    generation: int = 0  # the generation every label must carry
    stopped: str | None = None  # a check failed: nothing more is served in this run

    @property
    def batches(self) -> int:
        return math.ceil(self.shared_users / self.plan.batch_users)

    def refusal(self, step: Step, label: str, count: int) -> Refusal | None:
        """Why (step, label) with `count` ciphertexts may not be served now, or None."""
        if self.stopped is not None:
            return Refusal("stopped", f"the run stopped: {self.stopped}")
        parsed = Label.parse(label)
        if parsed is None:
            return Refusal("schedule", f"label {label[:80]!r} names no step of the schedule")
        if parsed.generation != self.generation:
            return Refusal("generation", f"label {label} is of generation {parsed.generation}, but the run is in "
                                         f"generation {self.generation}")
        if parsed.training != (step in TRAINING):
            return Refusal("schedule", f"{step} is not a decryption of "
                                       f"{'training' if parsed.training else 'evaluation'} label {label}")
        if batch_users(self.plan, self.shared_users, parsed.batch) == 0:
            return Refusal("schedule", f"label {label} names batch {parsed.batch}, but an epoch has {self.batches}")
        expected = expected_count(self.plan, self.public, self.shared_users, step, parsed.batch)
        if count != expected:
            return Refusal("count", f"{count} ciphertexts for {step} {label}; the plan has {expected}")
        if step in (Step.FORWARD, Step.EVALUATE):
            if self.open is not None:
                return Refusal("order", f"{step} {label} while training step {self.open[0]} has not finished")
            last = self.last[parsed.training]
            if (parsed.epoch, parsed.batch) <= last:
                return Refusal("order", f"{step} {label} repeats or goes back: labels only move forward, and "
                                        f"e{last[0]}/b{last[1]} was served")
            return None
        before = TRAINING[TRAINING.index(step) - 1]
        if self.open != (label, before):
            return Refusal("order", f"{step} {label} was served already or comes before {before} {label}")
        return None

    def evaluated_all(self, epoch: int) -> bool:
        """Whether every evaluation forward of `epoch` was served (a refresh session is epoch 1's)."""
        return self.last[False] == (epoch, self.batches - 1)

    def record(self, step: Step, label: str) -> None:
        """Note that (step, label) was served."""
        if step in (Step.FORWARD, Step.EVALUATE):
            parsed = Label.parse(label)
            self.last[parsed.training] = (parsed.epoch, parsed.batch)
        if step in TRAINING:
            self.open = None if step == TRAINING[-1] else (label, step)
