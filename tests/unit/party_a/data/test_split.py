"""A's split by time: test = last distinct positive, validation = second-last, training = the rest."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from party_a.data.tables import ActiveTables, align
from party_a.data.events import Spill, build_histories
from protocol.data.tables import Features


def features(rows: int) -> Features:
    return Features(np.zeros((rows, 0), np.float32), np.zeros((rows, 0), np.int64), [])


def test_split_holds_out_validation_and_test_items(tmp_path: Path) -> None:
    # (user row, item, time); user 0 buys item 5 again last, so 5 counts at its last time
    events = [(0, 5, 1), (0, 6, 2), (0, 7, 3), (0, 8, 4), (0, 5, 5), (1, 1, 1), (1, 2, 2), (2, 3, 1),
              (3, 0, 1), (3, 1, 2)]
    users, items, stamps = (np.array(c, dtype=np.int64) for c in zip(*events))
    spill = Spill(tmp_path / "events.bin")
    spill.add(users=users, items=items, stamps=stamps)
    tables = ActiveTables(features(4), [str(j) for j in range(9)], features(9), *build_histories(spill, 4, 9))
    data = align(tables, np.array([2, 0, 1]))  # shared users in PSI order: rows 2, 0, 1; row 3 is not shared
    assert [t.tolist() for t in data.train] == [[3], [6, 7], [1]]
    assert data.valid_item.tolist() == [-1, 8, -1]
    assert data.test_item.tolist() == [-1, 5, 2]
    assert set(data.seen[1]) == {5, 6, 7, 8}
    assert data.history(1, "valid").tolist() == [6, 7] and data.history(1, "test").tolist() == [6, 7, 8]
    assert [o.tolist() for o in data.others] == [[0, 1]]
