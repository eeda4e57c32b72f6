"""Both layouts of [W] hold one W against a cheating A: real coordinator and B processes, A played here.

A runs its real steps, except that in step 7 it adds Δ to the [Q] by rows it sends B (the issue's experiment:
B's rows become W + Δ, and the next forward would give A u = e_B(W + Δ), hence e_B). B's check through the
coordinator must refuse it, naming A, before B uses the rows; and the same A without the poison must pass.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

from protocol import messages
from protocol.crypto.paillier import Encryptor
from protocol.layer import steps
from protocol.layer.decryption import receive_public_key, register_layer, train_label
from protocol.layer.steps import INIT, TRAINING_STEP, Sequence, Side, ATurn
from protocol.messages.commands import Finish, Init, TrainStep
from protocol.messages.plan import LayerPlan
from protocol.messages.run import RunDone
from protocol.roles import A, B, C
from scenarios.launch import start, wait_all
from tests.support.played_roles import IDS, play_psi, small_run

pytestmark = pytest.mark.integration


@dataclass
class PoisoningSide(Side):
    """A's side, adding Δ = 2^21·I to the next d x h matrix it encrypts by rows at W's scale while `poison` is on."""

    poison: bool = False

    def encrypt(self, values, layout, scale, bound):  # type: ignore[override]
        if self.poison and layout == self.rows and len(values) == self.plan.d and scale == self.plan.w_bits:
            values = values + np.eye(self.plan.d, self.plan.h, dtype=np.int64).astype(object) * 2**21
            self.poison = False
        return super().encrypt(values, layout, scale, bound)


class RandomTop:
    """A top model that answers any u with a small random δ."""

    def learn(self, u: np.ndarray) -> np.ndarray:
        return np.random.default_rng(0).normal(0, 0.01, size=u.shape)


def poisoned(sequence: Sequence) -> Sequence:
    """`sequence` with A's step 7 run while its side poisons the [Q] by rows it sends."""
    def refresh(a: PoisoningSide, turn: ATurn) -> None:
        a.poison = True
        steps.a_refresh_weights(a, turn)

    return Sequence(sequence.name, tuple(replace(s, a=refresh) if s.a is steps.a_refresh_weights else s
                                         for s in sequence.stages))


def play_a(tmp_path: Path, poison: bool) -> tuple[str, str]:
    """A's side of PSI, init and two training steps against real B and C processes; their outputs."""
    run = small_run(tmp_path, train=True)
    procs = {B: start(run, B), C: start(run, C)}
    a = run.endpoint(A).start()
    try:
        public = receive_public_key(a, None)
        play_psi(run, a, B)
        plan = LayerPlan(d=16, h=16, batch_users=len(IDS), lr_w=0.05, key_fingerprint=public.fingerprint)
        messages.send(a, B, Init(plan))
        register_layer(a, plan, len(IDS), init=True)
        side = PoisoningSide(a, public, Encryptor(public), None, plan)
        steps.walk(INIT, side, ATurn("init", np.empty(0, np.int64)))
        users = np.arange(len(IDS))
        for batch, sequence in enumerate((poisoned(TRAINING_STEP) if poison else TRAINING_STEP, TRAINING_STEP)):
            label = train_label(1 + batch, 0)
            messages.send(a, B, TrainStep(label, users))
            steps.walk(sequence, side, ATurn(label, users, RandomTop()))
        messages.send(a, B, Finish(None, None))
        messages.send(a, C, RunDone(None))
    except Exception as exc:  # the poisoned run must end in B's refusal, which reaches A as B's stop
        if not poison:
            raise
        assert "party_b" in str(exc), exc
    finally:
        outcome = wait_all(run, procs, timeout=60)
        a.close()
    return outcome[B].output, outcome[C].output


def test_a_poisoned_q_by_rows_is_refused_naming_a(tmp_path: Path) -> None:
    b_out, c_out = play_a(tmp_path, poison=True)
    assert "party_a sent B a [Q] by rows that is not the refresh of [W] (step 7, train/e1/b0)" in b_out, b_out
    assert "Traceback" not in b_out
    assert "check of train/e1/b0 from party_b failed" in c_out, c_out


def test_an_honest_q_by_rows_passes_the_check(tmp_path: Path) -> None:
    b_out, _ = play_a(tmp_path, poison=False)
    assert "run finished (announced by party_a) after 2 training steps" in b_out, b_out
