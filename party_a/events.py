"""A's positive events as per-user histories on disk, so that A's events need not fit in memory.

`party_a.data.load_tables` reads the interactions table a chunk at a time and appends
each chunk's positives to a `Spill` (user row, item, timestamp, table row: 28 bytes an
event, on disk). `build_histories` then groups them by user row with a counting sort,
orders each block of users' events by (timestamp, row) and keeps each item at its last
occurrence, leaving `Histories`: per row of A's user table its distinct positive items,
oldest first, as an int32 file mapped into memory and an int64 array of offsets. What
stays in memory is 8 bytes per user (the offsets) and one block of events at a time
(`BLOCK_EVENTS`); training reads the histories of one batch's users at a time, and the
kernel pages the rest in and out as it needs.

The files live in a temporary directory (TMPDIR) that is deleted once they are mapped:
the mappings keep them readable, and nothing is left behind however the run ends.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

BLOCK_EVENTS = 1 << 22  # events sorted in memory at once (about 100 MB of working arrays)
SPILLED = {"users": np.int64, "items": np.int32, "stamps": np.float64, "rows": np.int64}


def _mapped(path: Path, dtype: type, size: int, mode: str = "r") -> np.ndarray:
    """`size` values of `dtype` in the file at `path`, mapped (an empty array for size 0, which mmap refuses)."""
    if size == 0:
        return np.empty(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode=mode, shape=(size,))


class Spill:
    """The columns of `SPILLED`, appended chunk by chunk to raw files in `directory`."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.size = 0
        self._files = {name: open(directory / f"{name}.bin", "wb") for name in SPILLED}

    def add(self, **columns: np.ndarray) -> None:
        for name, dtype in SPILLED.items():
            self._files[name].write(np.ascontiguousarray(columns[name], dtype=dtype).tobytes())
        self.size += len(columns["users"])

    def columns(self) -> dict[str, np.ndarray]:
        """Every column written, mapped read-only."""
        for f in self._files.values():
            f.close()
        return {name: _mapped(self.directory / f"{name}.bin", dtype, self.size) for name, dtype in SPILLED.items()}


class Histories(Sequence[np.ndarray]):
    """Per row, its distinct items ordered by last occurrence (oldest first): `items[offsets[r]:offsets[r + 1]]`."""

    def __init__(self, offsets: np.ndarray, items: np.ndarray):
        self.offsets, self.items = offsets, items

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, row: int) -> np.ndarray:  # type: ignore[override] - single rows only
        if not -len(self) <= row < len(self):
            raise IndexError(row)
        row = int(row) % len(self)
        return np.asarray(self.items[self.offsets[row] : self.offsets[row + 1]], dtype=np.int64)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def last(self, rows: np.ndarray, back: int) -> np.ndarray:
        """For each of `rows`, its item `back` places from the most recent (0: the latest); -1 where it has none."""
        rows = np.asarray(rows, dtype=np.int64)
        has = self.lengths[rows] > back
        out = np.full(len(rows), -1, dtype=np.int64)
        out[has] = self.items[self.offsets[rows[has] + 1] - 1 - back]
        return out


def _by_user(columns: dict[str, np.ndarray], n_rows: int, directory: Path) -> tuple[np.ndarray, dict]:
    """The events grouped by user row, in table order within a user (a stable counting sort, block by block)."""
    users, size = columns["users"], len(columns["users"])
    counts = np.zeros(n_rows, dtype=np.int64)
    for lo in range(0, size, BLOCK_EVENTS):
        counts += np.bincount(users[lo : lo + BLOCK_EVENTS], minlength=n_rows)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    grouped = {name: _mapped(directory / f"grouped-{name}.bin", SPILLED[name], size, "w+")
               for name in ("items", "stamps", "rows")}
    cursor = offsets[:-1].copy()
    for lo in range(0, size, BLOCK_EVENTS):
        block = np.asarray(users[lo : lo + BLOCK_EVENTS])
        order = np.argsort(block, kind="stable")
        sorted_users = block[order]
        present, first, runs = np.unique(sorted_users, return_index=True, return_counts=True)
        rank = np.arange(len(block)) - np.repeat(first, runs)
        at = cursor[sorted_users] + rank
        for name, out in grouped.items():
            out[at] = np.asarray(columns[name][lo : lo + BLOCK_EVENTS])[order]
        cursor[present] += runs
    return offsets, grouped


def build_histories(columns: dict[str, np.ndarray], n_rows: int, n_items: int) -> Histories:
    """Histories of `n_rows` users from events given as the columns of `SPILLED` (arrays or a `Spill`'s maps).

    Within a user, events are ordered by timestamp, then by table row; an item bought again counts at its last
    occurrence only."""
    with tempfile.TemporaryDirectory(prefix="vfrec-events-") as tmp:
        directory = Path(tmp)
        offsets, grouped = _by_user(columns, n_rows, directory)
        kept = np.zeros(n_rows, dtype=np.int64)
        with open(directory / "items.bin", "wb") as out:
            for a, b in _blocks(offsets):
                lo, hi = offsets[a], offsets[b]
                local = np.repeat(np.arange(a, b), np.diff(offsets[a : b + 1]))
                order = np.lexsort((grouped["rows"][lo:hi], grouped["stamps"][lo:hi], local))
                items, owners = np.asarray(grouped["items"][lo:hi])[order], local[order]
                _, from_end = np.unique((owners * n_items + items)[::-1], return_index=True)
                last = np.sort(len(items) - 1 - from_end)  # each (user, item) at its last occurrence, in order
                out.write(items[last].astype(np.int32).tobytes())
                kept[a:b] = np.bincount(owners[last] - a, minlength=b - a)
        ends = np.concatenate([[0], np.cumsum(kept)])
        return Histories(ends, _mapped(directory / "items.bin", np.int32, int(ends[-1])))


def _blocks(offsets: np.ndarray) -> Iterator[tuple[int, int]]:
    """Consecutive user ranges [a, b) of at most BLOCK_EVENTS events each (or one user, if it alone has more)."""
    n, a = len(offsets) - 1, 0
    while a < n:
        b = int(np.searchsorted(offsets, offsets[a] + BLOCK_EVENTS, side="right")) - 1
        b = min(max(b, a + 1), n)
        yield a, b
        a = b


def spill_directory() -> tempfile.TemporaryDirectory:
    """A temporary directory for a `Spill`, removed when the context ends."""
    return tempfile.TemporaryDirectory(prefix="vfrec-spill-")
