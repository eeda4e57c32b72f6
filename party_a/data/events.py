"""A's positive events as per-user histories on disk, so that A's events need not fit in memory.

`party_a.data.tables.load_tables` reads the interactions table a chunk at a time and appends
each chunk's positives to a `Spill` (user row, item, timestamp: 16 bytes an event, on
disk, in the table's row order). `build_histories` then distributes them to buckets of
consecutive users (a stable bucket sort on disk, so each bucket keeps that order),
orders each bucket's events by (user, timestamp, row) in memory, several buckets at
once on threads, and keeps each item at its last occurrence, leaving `Histories`: per row of
A's user table its distinct positive items, oldest first, as an int32 file mapped
into memory and an int64 array of offsets. What stays in memory is 16 bytes per user
(the offsets and the counts) and about `BLOCK_EVENTS` events at a time;
training reads the histories of one batch's users at a time, and the kernel pages
the mapped file in and out as it needs.

The files live in a temporary directory (TMPDIR) that is deleted once they are mapped:
the mappings keep them readable, and nothing is left behind however the run ends.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

BLOCK_EVENTS = 1 << 20  # events sorted in memory at once (over all threads): 16 MB, and a few times that to sort
PACKED_LIMIT = 1 << 63  # sort keys packed into an int64 stay below this
EVENT = np.dtype([("users", "<i4"), ("items", "<i4"), ("stamps", "<f8")])  # 16 bytes; a spill keeps table order


class Spill:
    """Events (records of `EVENT`) appended chunk by chunk to one raw file, in the table's row order (which orders
    events of one user at one time), and read back a slice at a time with plain reads: never mapped, so pages read
    once stay in the kernel's cache, not in this process. Events that come through `add` are also counted per user
    and per item code, so nothing reads the file to count them."""

    def __init__(self, path: Path):
        self.path, self.size = path, 0
        self.per_user, self.per_item = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        path.write_bytes(b"")

    def add(self, **columns: np.ndarray) -> None:
        """Append events given as one array per field of `EVENT`."""
        records = np.empty(len(columns["users"]), dtype=EVENT)
        for name in EVENT.names:
            records[name] = columns[name]
        self.write(records)
        self.per_user = _count(self.per_user, records["users"])
        self.per_item = _count(self.per_item, records["items"])

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


def build_histories(spill: Spill, n_rows: int, n_items: int, recode: np.ndarray | None = None,
                    threads: int | None = None) -> tuple[Histories, np.ndarray]:
    """Histories of `n_rows` users from the events in `spill`, and the events per item (repeats included).

    `recode` maps the spilled item codes to item indices when they differ. Within a user, events are ordered by
    timestamp, then by table row; an item bought again counts at its last occurrence only. With the counts `add`
    kept, one pass over the spill distributes the events to buckets of consecutive users of at most
    BLOCK_EVENTS / `threads` events (unless one user alone has more). `threads` buckets (default: one
    per core) are then sorted in memory at once, numpy's sorts running outside the GIL, so the events held in
    memory stay about BLOCK_EVENTS whatever the number of cores."""
    threads = threads or os.cpu_count() or 1
    per_user = np.zeros(n_rows, dtype=np.int64)
    per_user[: len(spill.per_user)] = spill.per_user
    codes = np.arange(len(spill.per_item)) if recode is None else recode[: len(spill.per_item)]
    per_item = np.bincount(codes, weights=spill.per_item, minlength=n_items)
    blocks = list(_blocks(np.concatenate([[0], np.cumsum(per_user)]), max(1, BLOCK_EVENTS // threads)))
    bucket_of = np.repeat(_narrow(np.arange(len(blocks)), len(blocks)), [b - a for a, b in blocks])
    with tempfile.TemporaryDirectory(prefix="vfrec-events-") as tmp, ThreadPoolExecutor(threads) as sorting:
        directory = Path(tmp)
        buckets = [Spill(directory / f"bucket{k}.bin") for k in range(len(blocks))]
        for part in spill.chunks(BLOCK_EVENTS):
            which = bucket_of[part["users"]]
            part = part[np.argsort(which, kind="stable")]  # a radix sort of narrow keys
            cuts = np.concatenate([[0], np.cumsum(np.bincount(which, minlength=len(blocks)))])
            for k in np.flatnonzero(np.diff(cuts)):
                buckets[k].write(part[cuts[k] : cuts[k + 1]])
        kept = np.zeros(n_rows, dtype=np.int64)
        with open(directory / "items.bin", "wb") as out:
            sorted_buckets = _bounded_map(sorting, threads, lambda job: _last_items(*job, n_items, recode),
                                          ((bucket, a, b) for (a, b), bucket in zip(blocks, buckets)))
            for (a, b), (items, counts) in zip(blocks, sorted_buckets):
                out.write(items.tobytes())
                kept[a:b] = counts
        ends = np.concatenate([[0], np.cumsum(kept)])
        return Histories(ends, _mapped(directory / "items.bin", int(ends[-1]))), per_item


def _last_items(bucket: Spill, a: int, b: int, n_items: int,
                recode: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The histories of users [a, b) from their bucket: every (user, item) at its last event, ordered by user, then
    time, then table row (int32 items), and how many each user keeps."""
    if bucket.size == 0:
        return np.empty(0, dtype=np.int32), np.zeros(b - a, dtype=np.int64)
    events = next(bucket.chunks(bucket.size))
    users = events["users"] - np.int64(a)  # int64 from here: packed sort keys
    order = _by_user_then_time(users, events["stamps"], b - a)
    items, users = events["items"][order], users[order]
    del events  # the bucket's records: only the sorted users and items from here on
    items = items if recode is None else recode[items]
    keys = users * n_items + items
    by_pair = _stable_order(keys, (b - a) * n_items)
    pairs = keys[by_pair]
    last = np.sort(by_pair[np.r_[pairs[1:] != pairs[:-1], True]])  # each (user, item) at its last
    return items[last].astype(np.int32), np.bincount(users[last], minlength=b - a)


def _bounded_map(executor: ThreadPoolExecutor, window: int, fn: Callable, jobs: Iterator) -> Iterator:
    """`fn` of each job on `executor`, results in order, at most `window` jobs submitted and not yet taken."""
    pending: deque[Future] = deque()
    for job in jobs:
        if len(pending) == window:
            yield pending.popleft().result()
        pending.append(executor.submit(fn, job))
    while pending:
        yield pending.popleft().result()


def _count(counts: np.ndarray, values: np.ndarray) -> np.ndarray:
    """`counts` (by value) with `values` (non-negative integers) counted too, grown as far as they need."""
    more = np.bincount(values)
    if len(more) > len(counts):
        more[: len(counts)] += counts
        return more
    counts[: len(more)] += more
    return counts


def _narrow(values: np.ndarray, bound: int) -> np.ndarray:
    """Values in [0, bound) as the narrowest unsigned type, for which numpy's stable sort is a radix sort."""
    return values.astype(np.uint8 if bound <= 1 << 8 else np.uint16 if bound <= 1 << 16 else np.int64)


def _by_user_then_time(users: np.ndarray, stamps: np.ndarray, n_users: int) -> np.ndarray:
    """Positions ordering events by user (in [0, n_users)), then timestamp, then position: what
    `np.lexsort((stamps, users))` gives, from one sort by time and one of (user, rank in time, position) packed into
    an int64 when they fit. Equal timestamps (-0.0 and 0.0 too) share one rank."""
    n = len(users)
    by_time = _time_order(stamps)
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


def _time_order(stamps: np.ndarray) -> np.ndarray:
    """Positions ordering `stamps` by value, equal ones by position. Whole numbers whose span packs with a position
    into an int64 (seconds or milliseconds since 1970 do) take one plain sort; others an argsort of int64 keys."""
    n = len(stamps)
    if n:
        lo, hi = float(stamps.min()), float(stamps.max())
        if math.isfinite(hi - lo) and (hi - lo + 1) * n < PACKED_LIMIT and not np.modf(stamps)[0].any():
            return _stable_order((stamps - lo).astype(np.int64), int(hi - lo) + 1)
    return np.argsort(_float_order(stamps))


def _float_order(values: np.ndarray) -> np.ndarray:
    """Int64 keys that sort as the float64 `values` do (-0.0 with 0.0; no NaN): numpy sorts these faster."""
    bits = (values + 0.0).view(np.int64)  # + 0.0 makes -0.0 0.0
    return bits ^ ((bits >> 63) & np.int64(0x7FFFFFFFFFFFFFFF))


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


def _blocks(offsets: np.ndarray, size: int) -> Iterator[tuple[int, int]]:
    """Consecutive user ranges [a, b) of at most `size` events each (or one user, if it alone has more)."""
    n, a = len(offsets) - 1, 0
    while a < n:
        b = int(np.searchsorted(offsets, offsets[a] + size, side="right")) - 1
        b = min(max(b, a + 1), n)
        yield a, b
        a = b


def spill_directory() -> tempfile.TemporaryDirectory:
    """A temporary directory (TMPDIR) for a `Spill`, removed when the context ends."""
    return tempfile.TemporaryDirectory(prefix="vfrec-spill-")
