"""The shared list: every customer ever in the intersection, at a position kept for as long as it is shared.

`<workdir>/psi/shared.parquet` at each party, rewritten (atomically, mode 0600) after every PSI:

    position  int64  stable: a full PSI numbers the shared users 0..n-1 in the canonical order (that of
                     aligned_rows.csv); a delta appends those who joined and never reuses a position
    user_id   str    this party's normalised ID (the same string at both parties)
    active    bool   False once the user left the intersection

Both parties hold the same list; A's service and B's refresh read it.
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from protocol.errors import DataError
from protocol.store.models import atomic_write, private_dir

COLUMNS = ("position", "user_id", "active")


def shared_path(workdir: Path) -> Path:
    """Where a party's shared list is."""
    return workdir / "psi" / "shared.parquet"


def _checked(frame: pd.DataFrame, where: str) -> pd.DataFrame:
    if tuple(frame.columns) != COLUMNS:
        raise DataError(f"{where}: columns {list(frame.columns)}, expected {list(COLUMNS)}")
    positions = frame["position"]
    if positions.dtype != "int64" or frame["active"].dtype != "bool":
        raise DataError(f"{where}: column 'position' must be int64 and 'active' bool, got {positions.dtype} and "
                        f"{frame['active'].dtype}")
    if not positions.is_monotonic_increasing or not positions.is_unique:
        raise DataError(f"{where}: column 'position' must be unique and ascending")
    return frame


def write_shared(workdir: Path, frame: pd.DataFrame) -> None:
    """Replace the party's shared list with `frame` (columns position, user_id, active; ascending positions)."""
    path = shared_path(workdir)
    frame = _checked(frame.reset_index(drop=True), str(path))
    private_dir(path.parent)
    data = io.BytesIO()
    frame.to_parquet(data, index=False)
    atomic_write(path, data.getvalue())


def read_shared(workdir: Path) -> pd.DataFrame:
    """The party's shared list, by ascending position; a missing file is an error saying to run PSI first."""
    path = shared_path(workdir)
    if not path.is_file():
        raise DataError(f"{path} is missing: no PSI has run in {workdir} yet (run `python -m party_a psi` and "
                        f"`python -m party_b psi`, or a training run, first)")
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} cannot be read: {exc}") from None
    return _checked(frame, str(path))
