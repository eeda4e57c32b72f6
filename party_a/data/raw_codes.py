"""Codes of a text column's raw values computed once per distinct value for a whole table read in chunks.

A's events name users and items by their raw text, repeated in millions of rows. `RawCodes`
gives each distinct raw value its code with a Python function once (normalising a user ID and
finding its row, stripping an item name and finding or giving its index), in the order the rows
first show the values, and finds every later row's code by one Arrow hash lookup per chunk.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


class RawCodes:
    """`code(raw)` for every row of a text column, `code` called once per distinct raw value of the whole table."""

    def __init__(self, code: Callable[[str], int], known: pd.Series | None = None):
        """`known`: raw values (unique) whose codes are their positions, found without calling `code`."""
        self.code = code
        self.known = pa.array([], pa.string()) if known is None else _arrow(known)
        self.codes = np.append(np.arange(len(self.known), dtype=np.int64), -1)  # per known value, then -1: unseen

    def __call__(self, column: pd.Series) -> np.ndarray:
        """The code of each row of `column` (strings), in row order."""
        values = _arrow(column)
        if self.known.type != values.type:
            self.known = self.known.cast(values.type)
        at = pc.fill_null(pc.index_in(values, value_set=self.known), len(self.known)).to_numpy()
        out = self.codes[at]
        missed = np.flatnonzero(at == len(self.known))
        if missed.size:
            rest = values.take(missed)
            new = pc.unique(rest)  # in the order of first appearance, as the rows would have met them
            codes = np.fromiter(map(self.code, new.to_pylist()), dtype=np.int64, count=len(new))
            out[missed] = codes[pc.index_in(rest, value_set=new).to_numpy()]
            self.known = pa.concat_arrays([self.known, new])
            self.codes = np.concatenate([self.codes[:-1], codes, [-1]])
        return out


def _arrow(column: pd.Series) -> pa.Array | pa.ChunkedArray:
    return pa.array(column.array)  # no copy for pandas' Arrow-backed strings
