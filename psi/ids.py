"""Customer IDs as PSI sees them: normalised, checked for empties and duplicates.

Each party normalises its own IDs before any network traffic, so that
" Alice@Example.COM" on one side and "alice@example.com" on the other meet.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import re
import tempfile
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from protocol.data.tables import read_text_column, row_label
from protocol.errors import DataError
from protocol.runtime.config import Table

_SPACES = re.compile(r"\s+")
_NON_DIGITS = re.compile(r"\D")
DIGEST = "S16"  # numpy compares these as byte strings; all are 16 bytes long, so equality is exact


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


def digests_of(encoded: Sequence[bytes]) -> np.ndarray:
    """A 16-byte hash of each UTF-8 encoded ID (fixed-width, so millions compare and sort as numpy arrays)."""
    digest = b"".join(hashlib.blake2b(v, digest_size=16).digest() for v in encoded)
    return np.frombuffer(digest, dtype=DIGEST)


def id_digests(ids: Sequence[str]) -> np.ndarray:
    """`digests_of` every normalised ID in `ids`, in order (an `IdStore` kept them when it was written)."""
    kept = getattr(ids, "digests", None)
    return kept if kept is not None else digests_of([i.encode("utf-8") for i in ids])


class _Checks:
    """Empty and duplicated IDs over a stream of chunks; `finish` stops the run naming the first bad rows.

    Duplicates are found on a 16-byte hash of each ID (a false match has odds 2^-128 per pair), so
    checking 10M IDs takes 160 MB, not the IDs themselves."""

    def __init__(self, path: Path, column: str):
        self.path, self.column = path, column
        self.rows = 0
        self.empty: list[int] = []  # the first empty row, then a count stands for the rest
        self.empty_count = 0
        self.digests: list[np.ndarray] = []

    def add(self, ids: list[bytes]) -> None:
        """The next chunk of normalised IDs, UTF-8 encoded."""
        empty = [self.rows + i for i, v in enumerate(ids) if not v]
        self.empty = self.empty or empty[:1]
        self.empty_count += len(empty)
        self.digests.append(digests_of(ids))
        self.rows += len(ids)

    def finish(self) -> np.ndarray:
        """Every ID's digest in row order, once the IDs passed the checks."""
        where = f"{self.path}: column {self.column!r}"
        if self.empty_count:
            raise DataError(f"{where} {row_label(self.empty[0])} has an empty ID after normalisation "
                            f"({self.empty_count} such rows)")
        digests = np.concatenate(self.digests) if self.digests else np.empty(0, dtype=DIGEST)
        self.digests = []
        order = np.argsort(digests, kind="stable")  # equal IDs together, each group's rows ascending
        sorted_digests = digests[order]
        starts = np.flatnonzero(np.r_[True, sorted_digests[1:] != sorted_digests[:-1]]) if order.size else order
        sizes = np.diff(np.r_[starts, order.size])
        dup_starts, dup_sizes = starts[sizes > 1], sizes[sizes > 1]
        if dup_starts.size:
            first = np.argsort(order[dup_starts], kind="stable")[:3]  # the groups whose first row comes first
            examples = "; ".join(" and ".join(row_label(int(r)) for r in order[dup_starts[g]:][:min(3, dup_sizes[g])])
                                 for g in first)
            raise DataError(f"{where} has {dup_starts.size} duplicated IDs after normalisation "
                            f"({int(dup_sizes.sum())} rows); first: {examples}")
        return digests


def normalize_ids(raw_ids: list[str], normalizer: Normalizer, path: Path, column: str) -> list[str]:
    """Normalised IDs in row order; an empty or duplicated ID stops the run naming its rows."""
    ids = [normalizer(r) for r in raw_ids]
    checks = _Checks(path, column)
    checks.add([v.encode("utf-8") for v in ids])
    checks.finish()
    return ids


class IdStore(Sequence[str]):
    """Normalised IDs in a memory-mapped file (UTF-8, one after another) and their offsets.

    Takes 8 bytes of memory per ID for the offsets and 16 for its digest (`digests_of`, kept for a delta PSI); the
    IDs themselves are file-backed pages the kernel can drop and read again."""

    def __init__(self, directory: Path, digests: np.ndarray):
        self.offsets = np.load(directory / "offsets.npy")
        self.digests = digests
        with open(directory / "ids.bin", "rb") as f:
            size = os.fstat(f.fileno()).st_size
            self._blob = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> str:  # type: ignore[override] - single IDs only
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self._blob[self.offsets[i] : self.offsets[i + 1]].decode("utf-8")


def stream_ids(path: Path, column: str, normalizer: Normalizer, chunk_rows: int = 1 << 18) -> IdStore:
    """Read, normalise and check a table's ID column `chunk_rows` at a time into an `IdStore`.

    Its files are written to a temporary directory (TMPDIR) and deleted once mapped: the mapping keeps them
    readable, and nothing is left behind however the run ends."""
    with tempfile.TemporaryDirectory(prefix="vfrec-ids-") as tmp:
        directory = Path(tmp)
        checks = _Checks(path, column)
        offsets, end = [np.zeros(1, dtype=np.int64)], 0
        with open(directory / "ids.bin", "wb") as blob:
            for raw in read_text_column(path, column, chunk_rows):
                encoded = [normalizer(r).encode("utf-8") for r in raw]
                checks.add(encoded)
                ends = end + np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)))
                offsets.append(ends)
                end = int(ends[-1]) if ends.size else end
                blob.write(b"".join(encoded))
        digests = checks.finish()
        np.save(directory / "offsets.npy", np.concatenate(offsets))
        return IdStore(directory, digests)
