"""The PSI phase of a party's run: settings, the choice of a full or a delta run, and what it writes.

After every PSI each party writes its state (psi/state.py) and the shared list
(psi/shared.py). A full run also writes `<workdir>/psi/aligned_rows.csv` (position in
the shared order, row index in its own user table; training reads it) and
`<workdir>/psi/summary.json` (sizes, time, bytes); a delta writes
`<workdir>/psi/delta_summary.json` and leaves both of those to the training run they
belong to. Row indices count data rows from 0. Nothing is written unless both
parties arrived at the same state (psi/mode.py `confirm`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from protocol.compute.workers import WorkerPool
from protocol.data.tables import TableSpec, read_table
from protocol.errors import ProtocolError, StateError
from protocol.keys.keyfiles import Passphrase
from protocol.net.transport import Endpoint
from protocol.settings.config import Table
from psi.delta import run_delta
from psi.ids import IdStore, Normalizer, id_digests, normalize_ids, pack, stream_ids, take_ids
from psi.mode import DELTA, FULL, Wish, agree, confirm, key_too_old
from psi.session import ExchangeCpu, PsiSettings, run_psi, value_order
from psi.shared import read_shared
from psi.state import PsiState, load_state, save_state

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PsiOutcome:
    """What a PSI phase ran and found: a full run's shared rows in the canonical order (empty after a delta): by
    the 16-byte digest of each normalised ID (`digests_of`), which both parties compute alike. The order depends on
    the shared IDs alone, not on the run's random secrets, so two runs over the same tables align the same users at
    the same positions (and, with the coordinator's `w0_seed`, train the same model)."""

    mode: str
    positions: np.ndarray
    summary: dict


def run_phase(endpoint: Endpoint, peer: str, ids: Sequence[str], pool: WorkerPool, settings: PsiSettings,
              workdir: Path, passphrase: Passphrase, wish: Wish = Wish()) -> PsiOutcome:
    """PSI with `peer`, full or delta as both parties agree (psi/mode.py), and its files; the state's secret is sealed
    under `passphrase`. A full run stops on an empty intersection."""
    role, loading, cpu = endpoint.cfg.role, time.perf_counter(), _Cpu()
    state, state_id, blocked = None, b"", ""
    if wish.want == DELTA:
        try:
            state, state_id = load_state(workdir, passphrase, role, peer)
            blocked = key_too_old(state, settings, role)
        except StateError as exc:
            blocked = " ".join(str(exc).split())[:1000]  # one line: it goes into the peer's log too
    loaded = time.perf_counter() - loading
    mode, reasons = agree(endpoint, peer, wish, state_id, blocked)
    started = time.perf_counter() - loaded  # the phase's time leaves out the wait for the peer to come up
    if reasons:
        log.warning("a full PSI instead of a delta (a fresh secret: every ID blinded again): %s", "; ".join(reasons))
    if mode == FULL:
        return _full(endpoint, peer, ids, pool, settings, workdir, passphrase, started, cpu)
    return _delta(endpoint, peer, ids, state, pool, settings, workdir, passphrase, started, cpu)


@dataclass(frozen=True)
class _Cpu:
    """This thread's and this process's CPU clocks when a phase began, for its summary."""

    thread: float = field(default_factory=time.thread_time)
    process: float = field(default_factory=time.process_time)

    def figures(self, ids: Sequence[str], exchange: ExchangeCpu) -> dict[str, float]:
        """CPU seconds of the phase so far. Serial: reading, normalising and checking `ids` (when `stream_ids` read
        them, before any transport ran) and this thread's work outside the exchange of blinded points, which nothing
        overlaps. Overlapped: this party's threads during the exchange, beside the pool's work. Process: all of this
        process, with the transport's threads (receiving, heartbeats, polling). The pool's workers are in none."""
        load = ids.cpu_seconds if isinstance(ids, IdStore) else 0.0
        return {"serial_cpu_seconds": round(load + time.thread_time() - self.thread - exchange.caller, 3),
                "overlapped_cpu_seconds": round(exchange.caller + exchange.sender, 3),
                "process_cpu_seconds": round(load + time.process_time() - self.process, 3)}


def _full(endpoint: Endpoint, peer: str, ids: Sequence[str], pool: WorkerPool, settings: PsiSettings,
          workdir: Path, passphrase: Passphrase, started: float, cpu: _Cpu) -> PsiOutcome:
    created = time.time()
    result = run_psi(endpoint, peer, ids, pool, settings)
    if result.positions.size == 0:
        raise ProtocolError(f"PSI with {peer} found no shared customers ({result.own_size} IDs here, "
                            f"{result.peer_size} at {peer}); check that both sides normalise IDs the same way "
                            f"([users.ids] kind, country_code)")
    digests = id_digests(ids, pool)
    shared = result.positions[value_order(digests[result.positions])]
    by_value = value_order(result.own_values)
    state = PsiState(result.secret, result.salt, created, digests[by_value], result.own_values[by_value],
                     result.peer_values, result.own_values[shared], np.ones(shared.size, dtype=bool))
    frame = pd.DataFrame({"position": np.arange(shared.size, dtype=np.int64),
                          "user_id": take_ids(ids, shared), "active": np.ones(shared.size, dtype=bool)})
    _finish(endpoint, peer, state, frame, workdir, passphrase)
    out = workdir / "psi"
    _write_aligned_rows(out / "aligned_rows.csv", shared)
    summary = {"intersection_size": int(shared.size), "own_size": result.own_size,
               "peer_size": result.peer_size, "seconds": round(result.seconds, 3),
               "bytes_sent": result.bytes_sent, "bytes_received": result.bytes_received,
               "phase_seconds": round(time.perf_counter() - started, 3),
               **cpu.figures(ids, result.exchange_cpu)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log.info("PSI with %s: %d shared of %d here and %d there, %.1fs, %.1f MB sent, %.1f MB received", peer,
             shared.size, result.own_size, result.peer_size, result.seconds,
             result.bytes_sent / 1e6, result.bytes_received / 1e6)
    return PsiOutcome(FULL, shared, summary)


def _delta(endpoint: Endpoint, peer: str, ids: Sequence[str], state: PsiState, pool: WorkerPool,
           settings: PsiSettings, workdir: Path, passphrase: Passphrase, started: float, cpu: _Cpu) -> PsiOutcome:
    result = run_delta(endpoint, peer, ids, state, pool, settings)
    change = result.change
    frame = read_shared(workdir)
    frame.loc[change.left, "active"] = False
    joined = pd.DataFrame({"position": np.arange(len(frame), len(frame) + len(change.joined), dtype=np.int64),
                           "user_id": take_ids(ids, result.diff.rows_of(change.joined)),
                           "active": np.ones(len(change.joined), dtype=bool)})
    frame = pd.concat([frame, joined], ignore_index=True)
    _finish(endpoint, peer, change.state, frame, workdir, passphrase)
    summary = {"own_added": len(result.diff.added), "own_removed": len(result.diff.removed),
               "peer_added": result.peer_added, "peer_removed": result.peer_removed, "joined": len(change.joined),
               "left": len(change.left), "shared_active": int(change.state.active.sum()), "own_size": len(ids),
               "peer_size": len(change.state.peer_values), "seconds": round(result.seconds, 3),
               "bytes_sent": result.bytes_sent, "bytes_received": result.bytes_received,
               "phase_seconds": round(time.perf_counter() - started, 3),
               **cpu.figures(ids, result.exchange_cpu)}
    (workdir / "psi" / "delta_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log.info("delta PSI with %s: %d joined, %d left, %d shared now; %.1fs, %.2f MB sent, %.2f MB received", peer,
             len(change.joined), len(change.left), summary["shared_active"], result.seconds, result.bytes_sent / 1e6,
             result.bytes_received / 1e6)
    return PsiOutcome(DELTA, np.empty(0, dtype=np.int64), summary)


def _finish(endpoint: Endpoint, peer: str, state: PsiState, frame: pd.DataFrame, workdir: Path,
            passphrase: Passphrase) -> None:
    """Check that both parties arrived at the same state, then write it and the shared list."""
    role = endpoint.cfg.role
    state_id = state.state_id(role, peer)
    confirm(endpoint, peer, state_id)
    save_state(workdir, state, state_id, frame, passphrase, role, peer)


def align(endpoint: Endpoint, peer: str, ids: Sequence[str], pool: WorkerPool, settings: PsiSettings,
          workdir: Path, passphrase: Passphrase) -> PsiOutcome:
    """A training run's PSI: a full run with `peer`; stop on an empty intersection; write the aligned row order."""
    return run_phase(endpoint, peer, ids, pool, settings, workdir, passphrase)


def _write_aligned_rows(path: Path, rows: np.ndarray) -> None:
    """Write "position,row" and a line "p,r" for each position p and the row r there (what np.savetxt wrote with
    fmt "%d", as Arrow strings: a Python call per row costs 2 µs)."""
    text = pa.large_string()
    line = pc.binary_join_element_wise(pc.cast(pa.array(np.arange(rows.size)), text), pa.scalar(",", text),
                                       pc.cast(pa.array(rows, pa.int64()), text), pa.scalar("\n", text),
                                       pa.scalar("", text))
    with open(path, "wb") as f:
        f.write(b"position,row\n")
        f.write(pack(line)[0])


def read_aligned_rows(workdir: Path) -> np.ndarray:
    """The row indices written by `align`, in the shared order."""
    rows = np.loadtxt(workdir / "psi" / "aligned_rows.csv", delimiter=",", skiprows=1, dtype=np.int64, ndmin=2)
    return rows[:, 1]


@dataclass(frozen=True)
class UserIds:
    """A party's user table as PSI needs it: the table, its ID column and how IDs are normalised."""

    table: TableSpec
    normalizer: Normalizer

    def load(self) -> tuple[pd.DataFrame, list[str]]:
        """The user table and its normalised IDs; bad IDs stop the run before any network traffic."""
        spec = self.table
        frame = read_table(spec.path, [spec.id_column, *spec.numeric, *spec.categorical], [spec.id_column])
        ids = normalize_ids(frame[spec.id_column].tolist(), self.normalizer, spec.path, spec.id_column)
        return frame, ids

    def ids(self) -> IdStore:
        """The normalised IDs alone, read in chunks as in `stream` (PSI on its own needs no feature column)."""
        return stream_ids(self.table.path, self.table.id_column, self.normalizer)

    def stream(self) -> tuple[pd.DataFrame, IdStore]:
        """The feature columns and the normalised IDs, read in chunks into an `IdStore` (for PSI at any size: the
        IDs are never all in memory as Python strings); bad IDs stop the run as in `load`."""
        spec = self.table
        ids = self.ids()
        features = [*spec.numeric, *spec.categorical]
        frame = read_table(spec.path, features, []) if features else pd.DataFrame(index=pd.RangeIndex(len(ids)))
        return frame, ids


def read_users_and_psi(root: Table) -> tuple[UserIds, PsiSettings]:
    """Read [users] (with [users.ids]) and [psi] from a party's config."""
    users = root.sub("users", required=True)
    normalizer = Normalizer.from_config(users.sub("ids"))
    spec = TableSpec.from_config(users)
    users.finish()
    return UserIds(spec, normalizer), PsiSettings.from_config(root.sub("psi"))
