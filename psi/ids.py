"""Customer IDs as PSI sees them: normalised, checked for empties and duplicates.

Each party normalises its own IDs before any network traffic, so that
" Alice@Example.COM" on one side and "alice@example.com" on the other meet.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from protocol.data.tables import row_label
from protocol.errors import DataError
from protocol.runtime.config import Table

_SPACES = re.compile(r"\s+")
_NON_DIGITS = re.compile(r"\D")


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


def normalize_ids(raw_ids: list[str], normalizer: Normalizer, path: Path, column: str) -> list[str]:
    """Normalised IDs in row order; an empty or duplicated ID stops the run naming its rows."""
    ids = [normalizer(r) for r in raw_ids]
    empty = [i for i, v in enumerate(ids) if not v]
    if empty:
        raise DataError(f"{path}: column {column!r} {row_label(empty[0])} has an empty ID after normalisation "
                        f"({len(empty)} such rows)")
    rows_of: dict[str, list[int]] = defaultdict(list)
    for i, v in enumerate(ids):
        rows_of[v].append(i)
    dups = [rows for rows in rows_of.values() if len(rows) > 1]
    if dups:
        examples = "; ".join(" and ".join(row_label(r) for r in rows[:3]) for rows in dups[:3])
        raise DataError(f"{path}: column {column!r} has {len(dups)} duplicated IDs after normalisation "
                        f"({sum(len(r) for r in dups)} rows); first: {examples}")
    return ids
