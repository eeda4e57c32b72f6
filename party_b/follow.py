"""B's side of training: it follows A's commands, one at a time, in order.

init    build tower B, draw B's share of W0 (secure_layer.init_b_share_weights)
step    steps 1, 5, 6 and 7 for one batch of users
forward step 1 only (evaluation and serving)
done    save B's state and stop
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from party_b.config import TowerSettings
from party_b.tower import TowerB, passive_step
from protocol.crypto import fixedpoint
from protocol.net.codec import encode
from protocol.errors import ProtocolError
from protocol.crypto.packing import Packed
from protocol.crypto.paillier import Encryptor, PublicKey
from protocol.layer.steps import (COMMANDS, LayerPlan, Side, b_finish_refresh, b_forward_contribution,
                                   b_send_masked_update, b_unmask_gradient, b_update_weights, init_b_share_weights)
from protocol.data.tables import Features
from protocol.runtime.timing import StepClock
from protocol.net.transport import Endpoint
from protocol.runtime.workers import WorkerPool

log = logging.getLogger(__name__)
A = "party_a"


def _users(cmd: dict, n_users: int, limit: int) -> torch.Tensor:
    users = cmd.get("users")
    if not (isinstance(users, np.ndarray) and users.ndim == 1 and users.dtype.kind in "iu" and 0 < users.size <= limit):
        raise ProtocolError(f"party_a sent a malformed user batch for {cmd.get('label')!r}")
    if users.min() < 0 or users.max() >= n_users:
        raise ProtocolError(f"party_a named users outside the {n_users} shared ones")
    return torch.from_numpy(users.astype(np.int64))


def _quantise(e_b: torch.Tensor, plan: LayerPlan) -> np.ndarray:
    return fixedpoint.encode(e_b.detach().numpy(), plan.e_bits).astype(np.int64)


def save_state(workdir: Path, tower: TowerB, w_rows: Packed, name: str) -> None:
    out = workdir / "model"
    out.mkdir(parents=True, exist_ok=True)
    torch.save(tower.state_dict(), out / "tower_b.pt")
    (out / f"{name}.msgpack").write_bytes(encode(w_rows.to_message()))


def follow(endpoint: Endpoint, public: PublicKey, pool: WorkerPool, features: Features, settings: TowerSettings,
           encryption: str, workdir: Path, first: dict) -> None:
    """Run A's commands, starting with `first`, until A says 'done'."""
    torch.set_num_threads(1)
    n_users = features.numeric.shape[0]
    side = tower = optimizer = w_rows = None
    steps = 0
    clock = StepClock(endpoint)
    cmd = first
    while True:
        clock.restart()
        op = cmd.get("op") if isinstance(cmd, dict) else None
        if op == "done":
            if tower is not None:
                save_state(workdir, tower, w_rows, "w_rows")
            clock.write(workdir / "timing.json")
            log.info("run finished (announced by %s) after %d training steps", A, steps)
            return
        if op == "init":
            plan = LayerPlan.from_message(cmd["plan"])
            side = Side(endpoint, public, Encryptor(public, encryption), pool, plan)
            torch.manual_seed(settings.seed)
            tower = TowerB(features, plan.d, list(settings.hidden), settings.feature_dim)
            optimizer = torch.optim.Adam(tower.parameters(), lr=settings.lr)
            w_rows = init_b_share_weights(side, "init")
            save_state(workdir, tower, w_rows, "w_rows_init")
            log.info("%s", plan.describe(public))
        elif side is None:
            raise ProtocolError(f"party_a sent {op!r} before 'init'")
        elif op == "step":
            label = str(cmd["label"])
            e_b = tower(_users(cmd, n_users, side.plan.batch_users))
            e_q = _quantise(e_b, side.plan)
            b_forward_contribution(side, label, w_rows, e_q)
            clock.lap("step 1: tower B and [u] to A")
            g_int, delta = b_unmask_gradient(side, label)
            clock.lap("step 5: [g] masked, decrypted by C (waits on A's steps 2-4)")
            g = fixedpoint.decode(g_int, side.plan.delta_bits + side.plan.w_bits) / side.plan.batch_users
            passive_step(optimizer, e_b, torch.from_numpy(g).float())
            clock.lap("tower B backward and update")
            w_new = b_update_weights(side, w_rows, e_q, delta)
            clock.lap("step 6: [W'] from [e_B^T delta]")
            m_prime = b_send_masked_update(side, label, w_new)
            w_rows = b_finish_refresh(side, label, m_prime)
            clock.lap("step 7: refresh of [W]")
            steps += 1
        elif op == "forward":
            label = str(cmd["label"])
            with torch.no_grad():
                e_q = _quantise(tower(_users(cmd, n_users, side.plan.batch_users)), side.plan)
            b_forward_contribution(side, label, w_rows, e_q)
            clock.lap("forward: step 1 for evaluation")
        else:
            raise ProtocolError(f"party_a sent an unknown command {op!r}")
        cmd = endpoint.recv(A, COMMANDS)
