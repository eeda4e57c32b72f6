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
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from protocol.data.tables import Features, TableSpec, encode_features, numeric_column, plain, read_table, row_label
from protocol.errors import DataError
from protocol.runtime.config import Table
from psi.ids import Normalizer


@dataclass(frozen=True)
class InteractionsSpec:
    path: Path
    user_column: str
    item_column: str
    label_column: str | None  # none: every row is a positive
    threshold: float  # a label >= threshold is a positive
    timestamp_column: str | None  # none: row order

    @classmethod
    def from_config(cls, t: Table) -> "InteractionsSpec":
        spec = cls(path=t.take_path("table"), user_column=t.take("user_column", str),
                   item_column=t.take("item_column", str), label_column=t.take("label_column", str, None),
                   threshold=t.take("threshold", float, 1.0), timestamp_column=t.take("timestamp_column", str, None))
        t.finish()
        return spec


@dataclass(frozen=True)
class Interactions:
    """Positive interactions as row indices into A's user table and item indices."""

    user_rows: np.ndarray
    items: np.ndarray
    order: np.ndarray  # sort key within a user: timestamp, then row


@dataclass(frozen=True)
class ActiveTables:
    """Everything A reads from disk, validated."""

    user_features: Features  # rows of A's user table
    items: list[str]
    item_features: Features
    interactions: Interactions


def _item_table(spec: TableSpec | None, interaction_items: pd.Series) -> tuple[list[str], Features]:
    if spec is None:
        ids = sorted(set(interaction_items))
        empty = Features(np.zeros((len(ids), 0), np.float32), np.zeros((len(ids), 0), np.int64), [])
        return ids, empty
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
    return ids.tolist(), encode_features(frame, spec)


def load_tables(users: pd.DataFrame, user_ids: list[str], users_spec: TableSpec, normalizer: Normalizer,
                spec: InteractionsSpec, items_spec: TableSpec | None) -> ActiveTables:
    """Read and check interactions and items against A's user table; every problem names file, column, row."""
    columns = [spec.user_column, spec.item_column] + [c for c in (spec.label_column, spec.timestamp_column) if c]
    frame = read_table(spec.path, columns, [spec.user_column, spec.item_column])
    if frame.empty:
        raise DataError(f"{spec.path}: no interactions")
    row_of = {uid: i for i, uid in enumerate(user_ids)}
    user_rows = np.empty(len(frame), dtype=np.int64)
    for i, raw in enumerate(frame[spec.user_column]):
        r = row_of.get(normalizer(raw))
        if r is None:
            raise DataError(f"{spec.path}: column {spec.user_column!r} {row_label(i)} names a user that is not in "
                            f"{users_spec.path} (column {users_spec.id_column!r})")
        user_rows[i] = r
    item_names, item_features = _item_table(items_spec, frame[spec.item_column].str.strip())
    item_of = {name: j for j, name in enumerate(item_names)}
    items = np.empty(len(frame), dtype=np.int64)
    for i, raw in enumerate(frame[spec.item_column].str.strip()):
        j = item_of.get(raw)
        if j is None:
            where = items_spec.path if items_spec else "the items"
            raise DataError(f"{spec.path}: column {spec.item_column!r} {row_label(i)} names an item that is not in "
                            f"{where}")
        items[i] = j
    positive = np.ones(len(frame), dtype=bool)
    if spec.label_column:
        positive = numeric_column(frame, spec.label_column, spec.path) >= spec.threshold
    order = np.arange(len(frame), dtype=np.float64)
    if spec.timestamp_column:
        stamps = _timestamps(frame, spec.timestamp_column, spec.path)
        order = stamps + order / (10 * len(frame))  # ties keep row order
    keep = np.flatnonzero(positive)
    users_frame = encode_features(users, users_spec)
    return ActiveTables(users_frame, item_names, item_features,
                        Interactions(user_rows[keep], items[keep], order[keep]))


def _timestamps(frame: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    raw = frame[column]
    numbers = pd.to_numeric(raw, errors="coerce")
    if numbers.notna().all():
        values = numbers.to_numpy(dtype=np.float64)
    else:
        parsed = pd.to_datetime(raw, errors="coerce", utc=True, format="mixed")
        bad = np.flatnonzero(parsed.isna().to_numpy())
        if bad.size:
            i = int(bad[0])
            raise DataError(f"{path}: column {column!r} {row_label(i)} holds {plain(raw.iloc[i])!r}, neither a number "
                            f"nor a date ({bad.size} such rows)")
        values = (parsed - pd.Timestamp("1970-01-01", tz="UTC")).dt.total_seconds().to_numpy()
    return values - values.min()


@dataclass(frozen=True)
class ActiveData:
    """A's side of the shared users, in the order PSI agreed on."""

    user_features: Features
    item_features: Features
    train: list[np.ndarray]  # per shared user: training positive items, oldest first
    seen: list[frozenset]  # per shared user: every positive item, never drawn as an evaluation negative
    valid_item: np.ndarray  # per shared user: validation item, or -1
    test_item: np.ndarray  # per shared user: test item, or -1
    others: list[np.ndarray]  # per user of A outside the intersection: every positive item, oldest first

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


def _distinct_by_user(users: np.ndarray, items: np.ndarray, order: np.ndarray, n_users: int) -> list[list[int]]:
    """Per user, its distinct items ordered by their last occurrence (order, then position)."""
    out: list[list[int]] = [[] for _ in range(n_users)]
    for i in np.lexsort((order, users)):
        out[int(users[i])].append(int(items[i]))
    return [list(dict.fromkeys(reversed(seq)))[::-1] for seq in out]


def histories(tables: ActiveTables) -> list[list[int]]:
    """Per row of A's user table, every positive item, distinct, ordered by last occurrence (oldest first)."""
    inter = tables.interactions
    return _distinct_by_user(inter.user_rows, inter.items, inter.order, tables.user_features.numeric.shape[0])


def align(tables: ActiveTables, aligned_rows: np.ndarray) -> ActiveData:
    """Restrict to the shared users (row `aligned_rows[s]` of A's user table is shared user s) and split."""
    by_row = histories(tables)
    n_rows = len(by_row)
    shared = np.zeros(n_rows, dtype=bool)
    shared[aligned_rows] = True
    train, seen = [], []
    valid = np.full(len(aligned_rows), -1, dtype=np.int64)
    test = np.full(len(aligned_rows), -1, dtype=np.int64)
    for s, row in enumerate(aligned_rows):
        ordered = by_row[row]
        seen.append(frozenset(ordered))
        if len(ordered) >= 2:
            test[s] = ordered.pop()
        if len(ordered) >= 2:
            valid[s] = ordered.pop()
        train.append(np.array(ordered, dtype=np.int64))
    others = [np.array(by_row[r], dtype=np.int64) for r in np.flatnonzero(~shared) if by_row[r]]
    return ActiveData(tables.user_features.take(aligned_rows), tables.item_features, train, seen, valid, test, others)
