"""Customer IDs as PSI sees them: normalised, checked for empties and duplicates.

Each party normalises its own IDs before any network traffic, so that
" Alice@Example.COM" on one side and "alice@example.com" on the other meet.
`Normalizer.__call__` defines the result for one ID; `normalize_many` gives the same
bytes for a whole column, vectorised with Arrow wherever that is provably the same
(ASCII-only values) and through `Normalizer.__call__` for every other value.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
import time
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from protocol.compute.workers import WorkerPool
from protocol.data.sql import SqlSource
from protocol.data.tables import NotPlainText, read_text_arrays, read_text_column, row_label
from protocol.errors import DataError
from protocol.settings.config import Table

_SPACES = re.compile(r"\s+")
_NON_DIGITS = re.compile(r"\D")
DIGEST = "S16"  # numpy compares these as byte strings; all are 16 bytes long, so equality is exact
_DIGESTS = "psi.ids:digest_packed"
_STRINGS = pa.large_string()
# What str.strip() and re's \s take among ASCII characters (tests/unit/psi/test_normalize_many.py checks both
# against Python)
ASCII_SPACE = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f "
_SPACE_RUNS = r"[\x09-\x0d\x1c-\x1f\x20]+"  # ASCII_SPACE as an RE2 class
_IS_SPACE = np.zeros(256, dtype=bool)
_IS_SPACE[[ord(c) for c in ASCII_SPACE]] = True
_NOT_DIGIT = np.ones(256, dtype=bool)
_NOT_DIGIT[ord("0") : ord("9") + 1] = False  # \d among ASCII characters


@dataclass(frozen=True)
class Normalizer:
    """How raw IDs become comparable strings; both parties must agree on the result."""

    kind: str = "text"  # text | email | phone
    unicode_form: str = "NFKC"  # NFC | NFKC | NFD | NFKD | none
    casefold: bool = True
    country_code: str = ""  # phone: prefix for national numbers, replaces a leading trunk 0

    @classmethod
    def from_config(cls, t: Table) -> "Normalizer":
        norm = cls(kind=t.take_choice("kind", ("text", "email", "phone"), "text"),
                   unicode_form=t.take_choice("unicode", ("NFKC", "NFC", "NFKD", "NFD", "none"), "NFKC"),
                   casefold=t.take("casefold", bool, True),
                   country_code=t.take("country_code", str, ""))
        if norm.country_code and not norm.country_code.isdigit():
            raise t.error("country_code", f"must be digits only, got {norm.country_code!r}")
        t.finish()
        return norm

    def __call__(self, raw: str) -> str:
        text = raw if self.unicode_form == "none" else unicodedata.normalize(self.unicode_form, raw)
        if self.kind == "phone":
            digits = _NON_DIGITS.sub("", text)
            if digits.startswith("00"):
                return digits[2:]
            if self.country_code and digits.startswith("0"):
                return self.country_code + digits[1:]
            if self.country_code and digits and not digits.startswith(self.country_code):
                return self.country_code + digits
            return digits
        text = _SPACES.sub("" if self.kind == "email" else " ", text.strip())
        return text.casefold() if self.casefold else text


def as_strings(values: Iterable[str] | pa.Array | pa.ChunkedArray) -> pa.LargeStringArray:
    """`values` as one Arrow array of large strings, a missing value as ""."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    array = values if isinstance(values, pa.Array) else pa.array(list(values), _STRINGS)
    array = pc.fill_null(array.cast(_STRINGS), "")
    ends, _ = _offsets_and_bytes(array)
    if not ends[0]:
        return array
    # Arrow 26's ascii_lower misreads offsets that do not start at 0 (a cast slice has them): start them there
    data = array.buffers()[2].slice(int(ends[0]), int(ends[-1] - ends[0]))
    return pa.LargeStringArray.from_buffers(len(array), pa.py_buffer(ends - ends[0]), data)


def _offsets_and_bytes(values: pa.LargeStringArray) -> tuple[np.ndarray, np.ndarray]:
    """The value offsets (len + 1 of them) and the whole data buffer of an array without nulls."""
    _, offsets, data = values.buffers()
    ends = np.frombuffer(offsets, dtype=np.int64, count=len(values) + 1, offset=8 * values.offset)
    return ends, np.frombuffer(data, dtype=np.uint8) if data is not None else np.empty(0, dtype=np.uint8)


def _marked(values: pa.LargeStringArray, table: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The value offsets from 0, the values' bytes and which of them `table` (a bool per byte value) marks."""
    ends, data = _offsets_and_bytes(values)
    body = data[ends[0] : ends[-1]]
    return ends - ends[0], body, table[body]


def _hits_per_value(values: pa.LargeStringArray, table: np.ndarray) -> np.ndarray:
    """How many bytes of each value `table` marks (the work grows with the marked bytes, beyond one pass)."""
    ends, _, marked = _marked(values, table)
    return np.bincount(np.searchsorted(ends, np.flatnonzero(marked), side="right") - 1, minlength=len(values))


def _drop_bytes(values: pa.LargeStringArray, table: np.ndarray) -> pa.LargeStringArray:
    """Each value without the bytes `table` marks (ASCII bytes only, so what is left is still UTF-8)."""
    dropped = _hits_per_value(values, table)
    if not dropped.any():
        return values
    ends, body, marked = _marked(values, table)
    return pa.LargeStringArray.from_buffers(len(values), pa.py_buffer(ends - np.r_[0, np.cumsum(dropped)]),
                                            pa.py_buffer(body[~marked]))


def _ascii_phones(values: pa.LargeStringArray, country_code: str) -> pa.LargeStringArray:
    """`Normalizer.__call__` of a phone number, right for every ASCII-only value."""
    digits = _drop_bytes(values, _NOT_DIGIT)
    international = pc.starts_with(digits, "00")
    out = pc.if_else(international, pc.utf8_slice_codeunits(digits, 2), digits)
    if not country_code:
        return out
    code = pa.scalar(country_code, _STRINGS)
    national = pc.binary_join_element_wise(code, pc.utf8_slice_codeunits(digits, 1), pa.scalar("", _STRINGS))
    bare = pc.and_(pc.greater(pc.binary_length(digits), 0), pc.invert(pc.starts_with(digits, country_code)))
    prefixed = pc.binary_join_element_wise(code, digits, pa.scalar("", _STRINGS))
    return pc.if_else(international, out,
                      pc.if_else(pc.starts_with(digits, "0"), national, pc.if_else(bare, prefixed, digits)))


def _ascii_texts(values: pa.LargeStringArray, normalizer: Normalizer) -> pa.LargeStringArray:
    """`Normalizer.__call__` of a text or e-mail ID, right for every ASCII-only value (casefold is lower there)."""
    if normalizer.kind == "email":  # strip, then drop every inner run: no whitespace byte is left
        out = _drop_bytes(values, _IS_SPACE)
    else:
        out = pc.ascii_trim(values, characters=ASCII_SPACE)
        inner = _hits_per_value(out, _IS_SPACE) > 0
        if inner.any():
            mask = pa.array(inner)
            out = pc.replace_with_mask(out, mask, pc.replace_substring_regex(out.filter(mask), _SPACE_RUNS, " "))
    return pc.ascii_lower(out) if normalizer.casefold else out


def normalize_many(values: Iterable[str] | pa.Array | pa.ChunkedArray, normalizer: Normalizer
                   ) -> pa.LargeStringArray:
    """`normalizer` applied to every value, in order, byte for byte what `Normalizer.__call__` gives: vectorised for
    ASCII-only values (no Unicode form changes them, casefold is lower, whitespace is `ASCII_SPACE`), one
    `Normalizer.__call__` each for the others. A missing value is ""."""
    raw = as_strings(values)
    fast = _ascii_phones(raw, normalizer.country_code) if normalizer.kind == "phone" else _ascii_texts(raw, normalizer)
    other = pc.invert(pc.string_is_ascii(raw))
    if not pc.any(other).as_py():
        return fast
    slow = pa.array([normalizer(v) for v in raw.filter(other).to_pylist()], _STRINGS)
    return pc.replace_with_mask(fast, other, slow)


def pack(values: pa.Array) -> tuple[bytes, np.ndarray]:
    """A chunk of IDs as a worker task takes them: their UTF-8 bytes one after another and where each ends."""
    ends, data = _offsets_and_bytes(as_strings(values))
    return data[ends[0] : ends[-1]].tobytes(), ends[1:] - ends[0]


def unpack(data: bytes, ends: np.ndarray) -> list[bytes]:
    """The IDs of a `pack`ed chunk, each UTF-8 encoded."""
    starts = [0, *ends[:-1].tolist()]
    return [data[a:b] for a, b in zip(starts, ends.tolist())]


def digests_of(encoded: Sequence[bytes]) -> np.ndarray:
    """A 16-byte hash of each UTF-8 encoded ID (fixed-width, so millions compare and sort as numpy arrays)."""
    digest = b"".join(hashlib.blake2b(v, digest_size=16).digest() for v in encoded)
    return np.frombuffer(digest, dtype=DIGEST)


def digest_packed(data: bytes, ends: np.ndarray) -> bytes:
    """`digests_of` a `pack`ed chunk of IDs, concatenated (a worker task)."""
    return digests_of(unpack(data, ends)).tobytes()


def as_arrow(ids: Sequence[str]) -> pa.Array | pa.ChunkedArray:
    """The IDs of a list or an `IdStore` as Arrow strings, without copying a store's."""
    return ids.values if isinstance(ids, IdStore) else as_strings(ids)


def take_ids(ids: Sequence[str], rows: np.ndarray) -> list[str]:
    """The IDs at `rows` of a list or an `IdStore`, in the order of `rows`."""
    return pc.take(as_arrow(ids), pa.array(rows, pa.int64())).to_pylist()


def id_digests(ids: Sequence[str], pool: WorkerPool, chunk: int = 1 << 15) -> np.ndarray:
    """`digests_of` every normalised ID in `ids`, in order, `chunk` IDs per task on `pool`."""
    values = as_arrow(ids)
    tasks = (pack(values.slice(k, chunk)) for k in range(0, len(values), chunk))
    return np.frombuffer(b"".join(pool.map(_DIGESTS, tasks)), dtype=DIGEST)


class _Checks:
    """Empty and duplicated IDs over a stream of chunks; `finish` stops the run naming the first bad rows."""

    def __init__(self, path: Path | SqlSource, column: str):
        self.path, self.column = path, column
        self.rows = 0
        self.empty: list[int] = []  # the first empty row, then a count stands for the rest
        self.empty_count = 0

    def add(self, ids: pa.Array) -> None:
        """The next chunk of normalised IDs."""
        empty = np.flatnonzero(pc.equal(pc.binary_length(ids), 0).to_numpy(zero_copy_only=False))
        self.empty = self.empty or [self.rows + int(i) for i in empty[:1]]
        self.empty_count += empty.size
        self.rows += len(ids)

    def finish(self, ids: pa.Array) -> None:
        """Stop the run if any ID was empty or any ID is in `ids` (all chunks added, in order) more than once."""
        where = f"{self.path}: column {self.column!r}"
        if self.empty_count:
            raise DataError(f"{where} {row_label(self.empty[0])} has an empty ID after normalisation "
                            f"({self.empty_count} such rows)")
        order = pc.sort_indices(ids).to_numpy()  # a stable sort: equal IDs together, each group's rows ascending
        ordered = pc.take(ids, order)
        same = pc.equal(ordered.slice(1), ordered.slice(0, max(len(ordered) - 1, 0))).to_numpy(zero_copy_only=False)
        starts = np.flatnonzero(np.r_[True, ~same]) if order.size else order
        sizes = np.diff(np.r_[starts, order.size])
        dup_starts, dup_sizes = starts[sizes > 1], sizes[sizes > 1]
        if dup_starts.size:
            first = np.argsort(order[dup_starts], kind="stable")[:3]  # the groups whose first row comes first
            examples = "; ".join(" and ".join(row_label(int(r)) for r in order[dup_starts[g]:][:min(3, dup_sizes[g])])
                                 for g in first)
            raise DataError(f"{where} has {dup_starts.size} duplicated IDs after normalisation "
                            f"({int(dup_sizes.sum())} rows); first: {examples}")


def normalize_ids(raw_ids: list[str], normalizer: Normalizer, path: Path | SqlSource, column: str) -> list[str]:
    """Normalised IDs in row order; an empty or duplicated ID stops the run naming its rows."""
    ids = normalize_many(raw_ids, normalizer)
    checks = _Checks(path, column)
    checks.add(ids)
    checks.finish(ids)
    return ids.to_pylist()


class IdStore(Sequence[str]):
    """Normalised IDs as one Arrow array over a memory-mapped file (UTF-8, one after another) and their offsets.

    Takes 8 bytes of memory per ID for the offsets; the IDs themselves are file-backed pages the kernel can drop and
    read again, so millions of IDs are never all in memory, nor ever Python strings."""

    def __init__(self, directory: Path):
        offsets = np.load(directory / "offsets.npy")
        blob = pa.memory_map(str(directory / "ids.bin")).read_buffer() if offsets[-1] else pa.py_buffer(b"")
        self.values = pa.LargeStringArray.from_buffers(len(offsets) - 1, pa.py_buffer(offsets), blob)
        self.cpu_seconds = 0.0  # CPU time of this process (all threads) on reading, normalising and checking them

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, i: int) -> str:  # type: ignore[override] - single IDs only
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self.values[i].as_py()


def stream_ids(path: Path | SqlSource, column: str, normalizer: Normalizer, chunk_rows: int = 1 << 18) -> IdStore:
    """Read, normalise and check a table's ID column at most `chunk_rows` at a time into an `IdStore`.

    Its files are written to a temporary directory (TMPDIR) and deleted once mapped: the mapping keeps them
    readable, and nothing is left behind however the run ends."""
    cpu_started = time.process_time()
    try:
        store = _store(read_text_arrays(path, column, chunk_rows), normalizer, path, column)
    except NotPlainText:
        store = _store(read_text_column(path, column, chunk_rows), normalizer, path, column)
    store.cpu_seconds = time.process_time() - cpu_started
    return store


def _store(chunks: Iterable[pa.Array | list[str]], normalizer: Normalizer, path: Path | SqlSource,
           column: str) -> IdStore:
    """`stream_ids` from the column's raw chunks."""
    with tempfile.TemporaryDirectory(prefix="vfrec-ids-") as tmp:
        directory = Path(tmp)
        checks = _Checks(path, column)
        offsets, end = [np.zeros(1, dtype=np.int64)], 0
        with open(directory / "ids.bin", "wb") as blob:
            for raw in chunks:
                ids = normalize_many(raw, normalizer)
                checks.add(ids)
                ends, data = _offsets_and_bytes(ids)
                offsets.append(end + ends[1:] - ends[0])
                end += int(ends[-1] - ends[0])
                blob.write(data[ends[0] : ends[-1]])
        np.save(directory / "offsets.npy", np.concatenate(offsets))
        store = IdStore(directory)
        checks.finish(store.values)
        return store
