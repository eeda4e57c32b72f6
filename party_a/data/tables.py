"""Party A's tables: users, items and interactions, checked before any network traffic.

After PSI, interactions are restricted to the shared users (in the shared order) and
split by time over each user's distinct positive items (ordered by their last
occurrence, timestamp then row):
- test: the last item, for a user with at least two;
- validation: the second-last, for a user with at least three (leave-second-last-out);
  it chooses the epoch and every tuned setting, so the test items are scored once;
- training: all the others, so every evaluated user keeps at least one.
A's users outside the intersection keep all their positives (`others`): they are
never evaluated, and A may use them for item-item statistics (popularity, kNN,
EASE), which is what A alone could run on its own data.

The interactions are read a chunk at a time and kept on disk as per-user histories
(`party_a.data.events`): `train`, `seen` and `others` are views that read a user's items
when asked, so A's events need not fit in memory.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from party_a.data.events import Histories, Spill, build_histories, spill_directory
from party_a.data.raw_codes import RawCodes
from protocol.data.sql import SqlSource
from protocol.data.tables import (Encoding, Features, TableSpec, fit_encoding, numeric_column, plain, read_table,
                                  read_table_chunks, row_label, take_source)
from protocol.errors import DataError
from protocol.settings.config import Table
from psi.ids import Normalizer

CHUNK_ROWS = 1 << 20  # interaction rows read at a time


@dataclass(frozen=True)
class InteractionsSpec:
    path: Path | SqlSource
    user_column: str
    item_column: str
    label_column: str | None  # none: every row is a positive
    threshold: float  # a label >= threshold is a positive
    timestamp_column: str | None  # none: row order

    @classmethod
    def from_config(cls, t: Table) -> "InteractionsSpec":
        spec = cls(path=take_source(t), user_column=t.take("user_column", str),
                   item_column=t.take("item_column", str), label_column=t.take("label_column", str, None),
                   threshold=t.take("threshold", float, 1.0), timestamp_column=t.take("timestamp_column", str, None))
        t.finish()
        return spec


@dataclass(frozen=True)
class ActiveTables:
    """Everything A reads from disk, validated."""

    user_features: Features  # rows of A's user table
    items: list[str]
    item_features: Features
    histories: Histories  # per row of A's user table: its distinct positive items, oldest first
    item_counts: np.ndarray  # positive events per item, repeats included
    encodings: dict[str, Encoding] = field(default_factory=dict)  # how "users" and "items" columns were encoded


def encode(frame: pd.DataFrame, spec: TableSpec, encoding: Encoding | None) -> tuple[Features, Encoding]:
    """The spec's columns encoded with `encoding` (a stored model's), or with one fitted on `frame` when None."""
    encoding = fit_encoding(frame, spec) if encoding is None else encoding
    return encoding.apply(frame, spec), encoding


def _item_table(spec: TableSpec, encoding: Encoding | None) -> tuple[list[str], Features, Encoding]:
    frame = read_table(spec.path, [spec.id_column, *spec.numeric, *spec.categorical], [spec.id_column])
    ids = frame[spec.id_column].str.strip()
    if (ids == "").any():
        first = int(np.flatnonzero(ids == "")[0])
        raise DataError(f"{spec.path}: column {spec.id_column!r} {row_label(first)} is empty")
    dup = ids.duplicated(keep=False)
    if dup.any():
        rows = np.flatnonzero(dup)
        raise DataError(f"{spec.path}: column {spec.id_column!r} has duplicated item IDs, first at "
                        f"{row_label(int(rows[0]))} and {row_label(int(rows[1]))}")
    return ids.tolist(), *encode(frame, spec, encoding)


def _distinct(column: pd.Series) -> tuple[np.ndarray, list]:
    """Per row the index of its value among the column's distinct values, and those values in order of first
    appearance (so per-value work runs once per distinct value)."""
    codes, uniques = pd.factorize(column, use_na_sentinel=False)
    return codes, uniques.tolist()


def _user_codes(users: pd.DataFrame, user_ids: Sequence[str], users_spec: TableSpec,
                normalizer: Normalizer) -> RawCodes:
    """Rows of A's user table by an event's raw user ID: a raw ID spelt as in `users`' own ID column (row i's,
    whose normalised form is `user_ids[i]`) is that row; any other is normalised once and looked up."""
    row_of = functools.cache(lambda: {uid: i for i, uid in enumerate(user_ids)})
    raw = users[users_spec.id_column] if users_spec.id_column in users.columns else None
    known = raw if raw is not None and len(raw) == len(user_ids) and raw.is_unique else None
    return RawCodes(lambda value: row_of().get(normalizer(value), -1), known)


def _item_codes(item_of: dict[str, int], items_spec: TableSpec | None) -> RawCodes:
    """Item indices by raw name (stripped); without an items table every new item is given the next index
    (`item_of` grows), in the order the rows first name them."""
    def code(value: str) -> int:
        name = value.strip()
        j = item_of.get(name)
        if j is None:
            j = -1 if items_spec is not None else item_of.setdefault(name, len(item_of))
        return j
    return RawCodes(code)


def _coded(frame: pd.DataFrame, column: str, codes: RawCodes, path: Path | SqlSource, unknown: str) -> np.ndarray:
    """The column's codes; a value coded -1 stops the run naming its row ("... names `unknown`")."""
    out = codes(frame[column])
    bad = np.flatnonzero(out < 0)
    if bad.size:
        raise DataError(f"{path}: column {column!r} {row_label(frame.index[bad[0]])} names {unknown}")
    return out


def load_tables(users: pd.DataFrame, user_ids: list[str], users_spec: TableSpec, normalizer: Normalizer,
                spec: InteractionsSpec, items_spec: TableSpec | None, chunk_rows: int = CHUNK_ROWS,
                encodings: dict[str, Encoding] | None = None) -> ActiveTables:
    """Read and check interactions and items against A's user table; every problem names file, column, row.

    `user_ids` are the normalised IDs of `users`' rows (which may hold the raw ID column too, see `_user_codes`).
    The interactions are read `chunk_rows` rows at a time and A's events kept on disk (`party_a.data.events`). The user
    and item columns are encoded with `encodings` (a stored model's, by "users" and "items"), else fitted here."""
    columns = [spec.user_column, spec.item_column] + [c for c in (spec.label_column, spec.timestamp_column) if c]
    user_codes = _user_codes(users, user_ids, users_spec, normalizer)
    given = encodings or {}
    fitted: dict[str, Encoding] = {}
    item_names, item_features = [], None
    if items_spec:
        item_names, item_features, fitted["items"] = _item_table(items_spec, given.get("items"))
    item_of = {name: j for j, name in enumerate(item_names)}
    item_codes = _item_codes(item_of, items_spec)
    with spill_directory() as tmp:
        spill, rows = Spill(Path(tmp) / "events.bin"), 0
        for frame in read_table_chunks(spec.path, columns, [spec.user_column, spec.item_column], chunk_rows):
            rows += len(frame)
            user_rows = _coded(frame, spec.user_column, user_codes, spec.path,
                               f"a user that is not in {users_spec.path} (column {users_spec.id_column!r})")
            items = _coded(frame, spec.item_column, item_codes, spec.path,
                           f"an item that is not in {items_spec.path if items_spec else ''}")
            positive = np.ones(len(frame), dtype=bool)
            if spec.label_column:
                positive = numeric_column(frame, spec.label_column, spec.path) >= spec.threshold
            stamps = _timestamps(frame, spec.timestamp_column, spec.path) if spec.timestamp_column else \
                np.zeros(len(frame))
            keep = np.flatnonzero(positive)
            spill.add(users=user_rows[keep], items=items[keep], stamps=stamps[keep])
            pa.default_memory_pool().release_unused()  # else Arrow's allocator keeps the chunk's pages
        if rows == 0:
            raise DataError(f"{spec.path}: no interactions")
        recode = None
        if items_spec is None:  # the catalogue is the items named, in sorted order
            item_names = sorted(item_of)
            recode = np.argsort(np.argsort(list(item_of))).astype(np.int64)
            item_features = Features(np.zeros((len(item_names), 0), np.float32),
                                     np.zeros((len(item_names), 0), np.int64), [])
        histories, counts = build_histories(spill, len(user_ids), len(item_names), recode)
    user_features, fitted["users"] = encode(users, users_spec, given.get("users"))
    return ActiveTables(user_features, item_names, item_features, histories, counts, fitted)


def _timestamps(frame: pd.DataFrame, column: str, path: Path | SqlSource) -> np.ndarray:
    """Seconds (a number as given, a date since 1970): only their order matters. Text is parsed once per distinct
    value of the chunk."""
    raw = frame[column]
    codes, values = (np.arange(len(raw)), raw) if pd.api.types.is_numeric_dtype(raw) else _distinct(raw)
    values = pd.Series(values, dtype=raw.dtype)
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.notna().all():
        return numbers.to_numpy(dtype=np.float64)[codes]
    parsed = pd.to_datetime(values, errors="coerce", utc=True, format="mixed")
    bad = np.flatnonzero(parsed.isna().to_numpy()[codes])
    if bad.size:
        i = int(bad[0])
        raise DataError(f"{path}: column {column!r} {row_label(frame.index[i])} holds {plain(raw.iloc[i])!r}, neither "
                        f"a number nor a date ({bad.size} such rows)")
    return (parsed - pd.Timestamp("1970-01-01", tz="UTC")).dt.total_seconds().to_numpy()[codes]


@dataclass(frozen=True)
class ActiveData:
    """A's side of the shared users, in the order PSI agreed on."""

    user_features: Features
    item_features: Features
    train: Sequence[np.ndarray]  # per shared user: training positive items, oldest first
    seen: Sequence[Iterable[int]]  # per shared user: every positive item, never drawn as an evaluation negative
    valid_item: np.ndarray  # per shared user: validation item, or -1
    test_item: np.ndarray  # per shared user: test item, or -1
    others: Sequence[np.ndarray]  # per user of A outside the intersection: every positive item, oldest first

    @property
    def n_users(self) -> int:
        return len(self.train)

    @property
    def n_items(self) -> int:
        return self.item_features.numeric.shape[0]

    def history(self, user: int, split: str) -> np.ndarray:
        """What A knows of `user` before the held-out item of `split` ("valid" or "test"), oldest first.

        The validation item precedes the test item in time, so it is history for the test."""
        if split == "test" and self.valid_item[user] >= 0:
            return np.append(self.train[user], self.valid_item[user])
        return self.train[user]


class Rows(Sequence[np.ndarray]):
    """The histories of chosen rows, the i-th without its `drop[i]` most recent items; read when indexed."""

    def __init__(self, histories: Histories, rows: np.ndarray, drop: np.ndarray | None = None):
        self.histories, self.rows = histories, np.asarray(rows, dtype=np.int64)
        self.drop = np.zeros(len(self.rows), dtype=np.int64) if drop is None else drop

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int | slice) -> "np.ndarray | Rows":  # type: ignore[override]
        if isinstance(i, slice):
            return Rows(self.histories, self.rows[i], self.drop[i])
        items = self.histories[self.rows[i]]
        return items[: items.size - self.drop[i]]


def align(tables: ActiveTables, aligned_rows: np.ndarray) -> ActiveData:
    """Restrict to the shared users (row `aligned_rows[s]` of A's user table is shared user s) and split."""
    histories = tables.histories
    aligned_rows = np.asarray(aligned_rows, dtype=np.int64)
    lengths = histories.lengths[aligned_rows]
    test = np.where(lengths >= 2, histories.last(aligned_rows, 0), -1)
    valid = np.where(lengths >= 3, histories.last(aligned_rows, 1), -1)
    held_out = (lengths >= 2).astype(np.int64) + (lengths >= 3)
    shared = np.zeros(len(histories), dtype=bool)
    shared[aligned_rows] = True
    others = np.flatnonzero(~shared & (histories.lengths > 0))
    return ActiveData(tables.user_features.take(aligned_rows), tables.item_features,
                      Rows(histories, aligned_rows, held_out), Rows(histories, aligned_rows), valid, test,
                      Rows(histories, others))
