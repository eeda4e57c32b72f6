"""A's events on disk: histories built block by block and read chunk by chunk equal the in-memory answer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from party_a.data import events
from party_a.data.tables import InteractionsSpec, align, load_tables
from party_a.data.sampler import Sampler
from protocol.data.tables import TableSpec
from protocol.errors import DataError
from psi.ids import Normalizer

USERS, ITEMS, EVENTS = 40, 15, 1500


def random_events(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"user": [f"u{k}" for k in rng.integers(0, USERS, EVENTS)],
                         "item": [f"i{k:02d}" for k in rng.integers(0, ITEMS, EVENTS)],
                         "ts": rng.integers(0, 50, EVENTS),  # many ties: the row breaks them
                         "rating": rng.integers(1, 6, EVENTS)})


def expected_histories(frame: pd.DataFrame) -> list[list[str]]:
    """Per user (u0, u1, ...): distinct items with rating >= 4 by last occurrence (time, then row), oldest first."""
    out = []
    for k in range(USERS):
        mine = frame[(frame["user"] == f"u{k}") & (frame["rating"] >= 4)]
        ordered = mine.assign(row=np.arange(len(mine))).sort_values(["ts", "row"], kind="stable")["item"].tolist()
        out.append(list(dict.fromkeys(reversed(ordered)))[::-1])
    return out


def load(path: Path, chunk_rows: int):
    users = pd.DataFrame({"id": [f"u{k}" for k in range(USERS)]})
    spec = InteractionsSpec(path, "user", "item", "rating", 4.0, "ts")
    return load_tables(users, users["id"].tolist(), TableSpec(path, "id"), Normalizer(), spec, None,
                       chunk_rows)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_histories_read_in_chunks_and_sorted_in_blocks_equal_the_in_memory_answer(tmp_path: Path, suffix: str,
                                                                                  monkeypatch) -> None:
    frame = random_events(1)
    path = tmp_path / f"events{suffix}"
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path, index=False)
    whole = load(path, 10 * EVENTS)
    monkeypatch.setattr(events, "BLOCK_EVENTS", 37)  # many blocks, and users split across chunks
    chunked = load(path, 64)
    expected = expected_histories(frame)
    for tables in (whole, chunked):
        assert tables.items == sorted(frame["item"].unique())
        assert [[tables.items[j] for j in tables.histories[r]] for r in range(USERS)] == expected
        positives = frame[frame["rating"] >= 4]["item"].value_counts()
        assert tables.item_counts.tolist() == [positives.get(name, 0) for name in tables.items]
    data = align(chunked, np.array([3, 0, 7]))
    assert [tables.items[j] for j in data.test_item] == [expected[r][-1] for r in (3, 0, 7)]
    assert [list(data.seen[s]) for s in range(3)] == [list(chunked.histories[r]) for r in (3, 0, 7)]
    assert all(data.train[s].tolist() == list(chunked.histories[r])[:-2] for s, r in enumerate((3, 0, 7)))


def test_an_epoch_reads_one_batch_at_a_time_and_covers_every_user(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    random_events(2).to_parquet(path, index=False)
    data = align(load(path, 100), np.arange(USERS))
    sampler = Sampler(data, batch_users=16, history=5, targets=2, seed=3)
    batches = sampler.epoch(1)
    first = next(batches)  # a generator: later batches are not built yet
    assert len(first.users) == 16
    rest = list(batches)
    assert 1 + len(rest) == sampler.batches_per_epoch == 3
    assert sorted(np.concatenate([first.users, *[b.users for b in rest]]).tolist()) == list(range(USERS))
    again = list(sampler.epoch(1))
    assert np.array_equal(again[2].history, rest[1].history) and np.array_equal(again[2].targets, rest[1].targets)


def test_a_bad_row_in_a_later_chunk_is_named_by_its_row_in_the_table(tmp_path: Path) -> None:
    frame = random_events(3).astype({"ts": object})
    frame.loc[1234, "user"] = "stranger"
    frame.loc[1300, "ts"] = "not a time"
    path = tmp_path / "events.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"column 'user' row 1235 names a user that is not in"):
        load(path, 100)
    frame.loc[1234, "user"] = "u1"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"column 'ts' row 1301 holds 'not a time', neither a number nor a date"):
        load(path, 100)


def test_later_chunks_name_an_unknown_item_and_a_bad_label_by_their_row_in_the_table(tmp_path: Path) -> None:
    frame = random_events(4).astype({"rating": object})
    frame.loc[987, "item"] = "i99"
    frame.loc[1111, "rating"] = "five"
    path, items = tmp_path / "events.csv", tmp_path / "items.csv"
    frame.to_csv(path, index=False)
    pd.DataFrame({"item": [f"i{k:02d}" for k in range(ITEMS)]}).to_csv(items, index=False)
    users = pd.DataFrame({"id": [f"u{k}" for k in range(USERS)]})
    spec = InteractionsSpec(path, "user", "item", "rating", 4.0, "ts")
    with pytest.raises(DataError, match=r"column 'item' row 988 names an item that is not in"):
        load_tables(users, users["id"].tolist(), TableSpec(path, "id"), Normalizer(), spec, TableSpec(items, "item"),
                    100)
    with pytest.raises(DataError, match=r"column 'rating' row 1112 holds 'five', not a finite number \(1 such rows\)"):
        load_tables(users, users["id"].tolist(), TableSpec(path, "id"), Normalizer(), spec, None, 100)


class CountingNormalizer(Normalizer):
    def __call__(self, raw: str) -> str:
        CALLS.append(raw)
        return super().__call__(raw)


CALLS: list[str] = []


def test_a_raw_user_id_is_its_row_as_the_user_table_spells_it_else_normalised_once_for_the_whole_table(
        tmp_path: Path) -> None:
    spellings = {"Ann": "ann", " ANN ": "ann", "Bob  Lee": "bob lee", "bob lee": "bob lee"}
    rng = np.random.default_rng(5)
    raw = rng.choice(list(spellings), 200)
    frame = pd.DataFrame({"user": raw, "item": [f"i{k}" for k in rng.integers(0, 9, 200)], "ts": np.arange(200)})
    path = tmp_path / "events.parquet"
    frame.to_parquet(path, index=False)
    users = pd.DataFrame({"id": ["Ann", "Bob Lee"]})  # normalised: "ann", "bob lee"
    spec = InteractionsSpec(path, "user", "item", None, 1.0, "ts")
    CALLS.clear()
    tables = load_tables(users, ["ann", "bob lee"], TableSpec(path, "id"), CountingNormalizer(), spec, None, 16)
    assert sorted(CALLS) == sorted(set(raw) - {"Ann"})  # each other spelling once, over 13 chunks
    for row, name in enumerate(["ann", "bob lee"]):
        mine = frame[[spellings[r] == name for r in frame["user"]]]
        expected = list(dict.fromkeys(mine["item"][::-1]))[::-1]
        assert [tables.items[j] for j in tables.histories[row]] == expected


def test_histories_order_by_time_then_row_with_ties_signed_zeros_and_infinities(tmp_path: Path,
                                                                                   monkeypatch) -> None:
    rng = np.random.default_rng(6)
    n, rows, n_items = 3000, 50, 12
    users, items = rng.integers(0, rows, n), rng.integers(0, n_items, n)
    stamps = rng.choice([-np.inf, -1.5, -0.0, 0.0, 2.0, 2.5, np.inf, 1e300], n)
    expected = []
    for r in range(rows):
        mine = np.flatnonzero(users == r)
        ordered = items[mine[np.lexsort((mine, stamps[mine]))]].tolist()
        expected.append(list(dict.fromkeys(ordered[::-1]))[::-1])
    for packed in (True, False):  # the packed int64 sorts, and numpy's stable sorts when keys could overflow
        if not packed:
            monkeypatch.setattr(events, "PACKED_LIMIT", 0)
        with events.spill_directory() as tmp:
            spill = events.Spill(Path(tmp) / "events.bin")
            spill.add(users=users, items=items, stamps=stamps)
            histories, counts = events.build_histories(spill, rows, n_items)
            assert [histories[r].tolist() for r in range(rows)] == expected
            assert counts.tolist() == np.bincount(items, minlength=n_items).tolist()


def test_packed_sorts_equal_numpy_stable_sorts_and_fall_back_to_them_when_keys_would_overflow() -> None:
    rng = np.random.default_rng(7)
    keys, users, stamps = rng.integers(0, 40, 5000), rng.integers(0, 30, 5000), rng.integers(0, 9, 5000) * 0.5
    assert np.array_equal(events._stable_order(keys, 40), np.argsort(keys, kind="stable"))
    assert np.array_equal(events._stable_order(keys, 1 << 62), np.argsort(keys, kind="stable"))
    assert np.array_equal(events._by_user_then_time(users, stamps, 30), np.lexsort((stamps, users)))
    assert np.array_equal(events._by_user_then_time(users, stamps, 1 << 50), np.lexsort((stamps, users)))
    for whole in (rng.integers(-5, 5, 5000) * 1.0, rng.integers(0, 2, 5000) * 1e18):  # one sort; a span too wide
        assert np.array_equal(events._by_user_then_time(users, whole, 30), np.lexsort((whole, users)))


def test_dates_given_as_text_order_events_as_their_times_do(tmp_path: Path) -> None:
    frame = random_events(8)
    dated = frame.assign(ts=(pd.Timestamp("2025-01-01") + pd.to_timedelta(frame["ts"], unit="h")).dt.strftime(
        "%Y-%m-%dT%H:%M:%S"))  # the same order, repeated values in every chunk
    path = tmp_path / "events.csv"
    dated.to_csv(path, index=False)
    tables = load(path, 64)
    assert [[tables.items[j] for j in tables.histories[r]] for r in range(USERS)] == expected_histories(frame)
