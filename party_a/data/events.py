"""A's positive events as per-user histories on disk, so that A's events need not fit in memory.

`party_a.data.load_tables` reads the interactions table a chunk at a time and appends
each chunk's positives to a `Spill` (user row, item, timestamp, table row: 28 bytes an
event, on disk). `build_histories` then distributes them to buckets of consecutive
users (a bucket sort on disk), orders each bucket's events by (user, timestamp, row)
in memory and keeps each item at its last occurrence, leaving `Histories`: per row of
A's user table its distinct positive items, oldest first, as an int32 file mapped
into memory and an int64 array of offsets. What stays in memory is 16 bytes per user
(the offsets and the counts) and one bucket of events at a time (`BLOCK_EVENTS`);
training reads the histories of one batch's users at a time, and the kernel pages
the mapped file in and out as it needs.

The files live in a temporary directory (TMPDIR) that is deleted once they are mapped:
the mappings keep them readable, and nothing is left behind however the run ends.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

BLOCK_EVENTS = 1 << 20  # events sorted in memory at once (a block of users): about 30 MB, and a few times that to sort
PACKED_LIMIT = 1 << 63  # sort keys packed into an int64 stay below this
EVENT = np.dtype([("users", "<i8"), ("items", "<i4"), ("stamps", "<f8"), ("rows", "<i8")])  # 28 bytes


class Spill:
    """Events (records of `EVENT`) appended chunk by chunk to one raw file and read back a slice at a time with
    plain reads: never mapped, so pages read once stay in the kernel's cache, not in this process."""

    def __init__(self, path: Path):
        self.path, self.size = path, 0
        path.write_bytes(b"")

    def add(self, **columns: np.ndarray) -> None:
        """Append events given as one array per field of `EVENT`."""
        records = np.empty(len(columns["users"]), dtype=EVENT)
        for name in EVENT.names:
            records[name] = columns[name]
        self.write(records)

    def write(self, records: np.ndarray) -> None:
        with open(self.path, "ab") as f:
            records.tofile(f)
        self.size += len(records)

    def chunks(self, size: int) -> Iterator[np.ndarray]:
        """Every event written, `size` at a time."""
        for lo in range(0, self.size, size):
            yield np.fromfile(self.path, dtype=EVENT, count=min(size, self.size - lo), offset=lo * EVENT.itemsize)


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


def build_histories(spill: Spill, n_rows: int, n_items: int,
                    recode: np.ndarray | None = None) -> tuple[Histories, np.ndarray]:
    """Histories of `n_rows` users from the events in `spill`, and the events per item (repeats included).

    `recode` maps the spilled item codes to item indices when they differ. Within a user, events are ordered by
    timestamp, then by table row; an item bought again counts at its last occurrence only. Two passes over the
    spill: one counts events per user and per item, one distributes the events to buckets of consecutive users
    of at most BLOCK_EVENTS events (unless one user alone has more); each bucket is then sorted in memory."""
    per_user, per_item = np.zeros(n_rows, dtype=np.int64), np.zeros(n_items, dtype=np.int64)
    for part in spill.chunks(BLOCK_EVENTS):
        per_user += np.bincount(part["users"], minlength=n_rows)
        per_item += np.bincount(part["items"] if recode is None else recode[part["items"]], minlength=n_items)
    blocks = list(_blocks(np.concatenate([[0], np.cumsum(per_user)])))
    starts = np.array([a for a, _ in blocks], dtype=np.int64)
    with tempfile.TemporaryDirectory(prefix="vfrec-events-") as tmp:
        directory = Path(tmp)
        buckets = [Spill(directory / f"bucket{k}.bin") for k in range(len(blocks))]
        for part in spill.chunks(BLOCK_EVENTS):
            which = np.searchsorted(starts, part["users"], side="right") - 1
            order = _stable_order(which, len(blocks))
            part, cuts = part[order], np.searchsorted(which[order], np.arange(len(blocks) + 1))
            for k in np.flatnonzero(np.diff(cuts)):
                buckets[k].write(part[cuts[k] : cuts[k + 1]])
        kept = np.zeros(n_rows, dtype=np.int64)
        with open(directory / "items.bin", "wb") as out:
            for (a, b), bucket in zip(blocks, buckets):
                if bucket.size == 0:
                    continue
                events = next(bucket.chunks(bucket.size))
                if (np.diff(events["rows"]) < 0).any():  # the loader spills in row order; sorting by row is then moot
                    events = events[np.argsort(events["rows"], kind="stable")]
                users = events["users"] - a
                order = _by_user_then_time(users, events["stamps"], b - a)
                items, users = events["items"][order], users[order]
                del events  # the bucket's records: only the sorted users and items from here on
                items = items if recode is None else recode[items]
                by_pair = _stable_order(users * n_items + items, (b - a) * n_items)
                pairs = (users * n_items + items)[by_pair]
                last = np.sort(by_pair[np.r_[pairs[1:] != pairs[:-1], True]])  # each (user, item) at its last
                out.write(items[last].astype(np.int32).tobytes())
                kept[a:b] = np.bincount(users[last], minlength=b - a)
        ends = np.concatenate([[0], np.cumsum(kept)])
        return Histories(ends, _mapped(directory / "items.bin", int(ends[-1]))), per_item.astype(np.float64)


def _by_user_then_time(users: np.ndarray, stamps: np.ndarray, n_users: int) -> np.ndarray:
    """Positions ordering events by user (in [0, n_users)), then timestamp, then position: what
    `np.lexsort((stamps, users))` gives, from one sort by time and one of (user, rank in time, position) packed into
    an int64 when they fit. Equal timestamps (-0.0 and 0.0 too) share one rank."""
    n = len(users)
    by_time = np.argsort(stamps)
    ordered = stamps[by_time]
    ranks = np.cumsum(np.r_[False, ordered[1:] != ordered[:-1]])  # in time order
    del ordered
    n_ranks = int(ranks[-1]) + 1 if n else 1
    if n_users * n_ranks * n >= PACKED_LIMIT:
        return np.lexsort((stamps, users))
    packed = users[by_time] * n_ranks
    packed += ranks
    packed *= n
    packed += by_time
    packed.sort()
    packed %= n
    return packed


def _stable_order(keys: np.ndarray, bound: int) -> np.ndarray:
    """`np.argsort(keys, kind="stable")` for keys in [0, bound): one plain sort of key and position packed into
    an int64 when they fit, far quicker than numpy's stable sorts."""
    n = len(keys)
    if bound * n >= PACKED_LIMIT:
        return np.argsort(keys, kind="stable")
    packed = keys * n
    packed += np.arange(n)
    packed.sort()
    packed %= n
    return packed


def _mapped(path: Path, size: int) -> np.ndarray:
    """`size` int32 values in the file at `path`, mapped read-only (an empty array for size 0, which mmap refuses)."""
    if size == 0:
        return np.empty(0, dtype=np.int32)
    return np.memmap(path, dtype=np.int32, mode="r", shape=(size,))


def _blocks(offsets: np.ndarray) -> Iterator[tuple[int, int]]:
    """Consecutive user ranges [a, b) of at most BLOCK_EVENTS events each (or one user, if it alone has more)."""
    n, a = len(offsets) - 1, 0
    while a < n:
        b = int(np.searchsorted(offsets, offsets[a] + BLOCK_EVENTS, side="right")) - 1
        b = min(max(b, a + 1), n)
        yield a, b
        a = b


def spill_directory() -> tempfile.TemporaryDirectory:
    """A temporary directory (TMPDIR) for a `Spill`, removed when the context ends."""
    return tempfile.TemporaryDirectory(prefix="vfrec-spill-")
