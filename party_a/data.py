"""Party A's tables: users, items and interactions, checked before any network traffic.

After PSI, interactions are restricted to the shared users (in the shared order) and
split leave-last-out: for a user with at least two distinct positive items the last
one (by timestamp, then row) is held out for evaluation; all others are training
positives. Users with fewer positives are trained on, never evaluated.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from protocol.data.tables import Features, TableSpec, encode_features, numeric_column, read_table, row_label
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
            raise DataError(f"{path}: column {column!r} {row_label(int(bad[0]))} holds {raw.iloc[int(bad[0])]!r}, "
                            f"neither a number nor a date ({bad.size} such rows)")
        values = (parsed - pd.Timestamp("1970-01-01", tz="UTC")).dt.total_seconds().to_numpy()
    return values - values.min()


@dataclass(frozen=True)
class ActiveData:
    """A's side of the shared users, in the order PSI agreed on."""

    user_features: Features
    item_features: Features
    train: list[np.ndarray]  # per shared user: training positive items
    seen: list[frozenset]  # per shared user: every positive item, never drawn as a negative
    test_item: np.ndarray  # per shared user: held-out item, or -1

    @property
    def n_users(self) -> int:
        return len(self.train)

    @property
    def n_items(self) -> int:
        return self.item_features.numeric.shape[0]


def align(tables: ActiveTables, aligned_rows: np.ndarray) -> ActiveData:
    """Restrict to the shared users (row `aligned_rows[s]` of A's user table is shared user s) and split."""
    shared_of = np.full(tables.user_features.numeric.shape[0], -1, dtype=np.int64)
    shared_of[aligned_rows] = np.arange(len(aligned_rows))
    inter = tables.interactions
    users = shared_of[inter.user_rows]
    keep = users >= 0
    users, items, order = users[keep], inter.items[keep], inter.order[keep]
    by_user = np.lexsort((order, users))
    train: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * len(aligned_rows)
    seen: list[frozenset] = [frozenset()] * len(aligned_rows)
    test = np.full(len(aligned_rows), -1, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, users[by_user][1:] != users[by_user][:-1]]) if users.size else []
    bounds = list(starts) + [users.size]
    for a, b in zip(bounds[:-1], bounds[1:]):
        idx = by_user[a:b]
        s = int(users[idx[0]])
        ordered = list(dict.fromkeys(reversed(items[idx].tolist())))[::-1]  # distinct items, by last occurrence
        seen[s] = frozenset(ordered)
        if len(ordered) >= 2:
            test[s] = ordered[-1]
            ordered = ordered[:-1]
        train[s] = np.array(ordered, dtype=np.int64)
    return ActiveData(tables.user_features.take(aligned_rows), tables.item_features, train, seen, test)
