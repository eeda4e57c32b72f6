"""The PSI phase of a party's run: settings, the exchange, and the aligned rows it writes.

Each party writes `<workdir>/psi/aligned_rows.csv` (position in the shared order,
row index in its own user table) and `<workdir>/psi/summary.json` (sizes, time,
bytes). Row indices count data rows from 0.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from protocol.data.tables import TableSpec, read_table
from protocol.errors import ProtocolError
from protocol.net.transport import Endpoint
from protocol.runtime.config import Table
from protocol.runtime.workers import WorkerPool
from psi.ids import IdStore, Normalizer, normalize_ids, stream_ids
from psi.session import PsiResult, PsiSettings, run_psi

log = logging.getLogger(__name__)


def align(endpoint: Endpoint, peer: str, ids: Sequence[str], pool: WorkerPool, settings: PsiSettings,
          workdir: Path) -> PsiResult:
    """Run PSI with `peer`; stop on an empty intersection; write the aligned row order."""
    result = run_psi(endpoint, peer, ids, pool, settings)
    if result.positions.size == 0:
        raise ProtocolError(f"PSI with {peer} found no shared customers ({result.own_size} IDs here, "
                            f"{result.peer_size} at {peer}); check that both sides normalise IDs the same way "
                            f"([users.ids] kind, country_code)")
    out = workdir / "psi"
    out.mkdir(parents=True, exist_ok=True)
    rows = np.column_stack([np.arange(result.positions.size), result.positions])
    np.savetxt(out / "aligned_rows.csv", rows, fmt="%d", delimiter=",", header="position,row", comments="")
    summary = {"intersection_size": int(result.positions.size), "own_size": result.own_size,
               "peer_size": result.peer_size, "seconds": round(result.seconds, 3),
               "bytes_sent": result.bytes_sent, "bytes_received": result.bytes_received}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log.info("PSI with %s: %d shared of %d here and %d there, %.1fs, %.1f MB sent, %.1f MB received", peer,
             result.positions.size, result.own_size, result.peer_size, result.seconds,
             result.bytes_sent / 1e6, result.bytes_received / 1e6)
    return result


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

    def stream(self) -> tuple[pd.DataFrame, IdStore]:
        """The feature columns and the normalised IDs, read in chunks into an `IdStore` (for PSI at any size: the
        IDs are never all in memory as Python strings); bad IDs stop the run as in `load`."""
        spec = self.table
        ids = stream_ids(spec.path, spec.id_column, self.normalizer)
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
