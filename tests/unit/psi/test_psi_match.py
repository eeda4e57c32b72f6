"""The party's own (serial) PSI work outside the pool: matching, ordering, the files it writes and what it measures."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from protocol.compute.workers import WorkerPool
from protocol.keys.keyfiles import Passphrase
from psi.align import read_aligned_rows, run_phase
from psi.ids import Normalizer, stream_ids
from psi.session import ExchangeCpu, PsiSettings, intersect, run_psi, value_order
from tests.support.fakes import MemoryNetwork, run_roles


def random_values(n: int, seed: int) -> np.ndarray:
    return np.frombuffer(np.random.default_rng(seed).bytes(16 * n), dtype="S16").copy()


def test_value_order_is_the_byte_order_even_when_prefixes_tie() -> None:
    values = random_values(500, 1)
    assert (value_order(values) == np.argsort(values, kind="stable")).all()
    tied = values.view(np.uint8).reshape(-1, 16).copy()
    tied[::3, :8] = 7  # a third share their first 8 bytes
    tied = tied.reshape(-1).view("S16")
    assert (value_order(tied) == np.argsort(tied, kind="stable")).all()


def test_intersect_finds_the_shared_values_in_value_order() -> None:
    own, other = random_values(400, 2), random_values(300, 3)
    peer = np.concatenate([own[::2], other])
    np.random.default_rng(4).shuffle(peer)
    shared = intersect(own, peer)
    assert sorted(shared.tolist()) == list(range(0, 400, 2))
    assert (own[shared][1:] > own[shared][:-1]).all() and (peer[1:] > peer[:-1]).all()  # the peer's sorted in place
    assert intersect(own, np.empty(0, dtype="S16")).size == 0


def test_intersect_when_the_peer_has_values_with_the_same_first_8_bytes() -> None:
    own, peer = random_values(50, 5), random_values(60, 6)
    for values in (own, peer):
        values.view(np.uint8).reshape(-1, 16)[::2, :8] = 9  # half of each side share one prefix
    peer[:30:3] = own[::5]  # 10 shared, some of them among the tied
    shared = intersect(own, peer.copy())
    assert sorted(shared.tolist()) == [i for i, v in enumerate(own) if v in set(peer.tolist())]
    assert (own[shared][1:] > own[shared][:-1]).all()


def test_aligned_rows_are_what_savetxt_wrote(tmp_path) -> None:
    """The file format training and older readers know: a header and "position,row" per line."""
    from psi.align import _write_aligned_rows

    (tmp_path / "psi").mkdir()
    for rows in (np.array([], dtype=np.int64), np.array([41, 0, 7, 123456789012])):
        _write_aligned_rows(tmp_path / "psi" / "aligned_rows.csv", rows)
        np.savetxt(tmp_path / "old.csv", np.column_stack([np.arange(rows.size), rows]), fmt="%d", delimiter=",",
                   header="position,row", comments="")
        assert (tmp_path / "psi" / "aligned_rows.csv").read_bytes() == (tmp_path / "old.csv").read_bytes()
    assert read_aligned_rows(tmp_path).tolist() == rows.tolist()


def test_summary_names_the_serial_and_overlapped_cpu_seconds(tmp_path) -> None:
    path = tmp_path / "a.csv"
    pd.DataFrame({"id": [f"u{i}" for i in range(40)]}).to_csv(path, index=False)
    store = stream_ids(path, "id", Normalizer())
    assert 0 < store.cpu_seconds < 60
    store.cpu_seconds = 1000.0  # stands for a long read: the summary adds it to the phase's own CPU seconds
    net, key, settings = MemoryNetwork(), Passphrase(b"correct horse battery staple", "test"), PsiSettings(8, False)
    pool = WorkerPool(0)
    out, _ = run_roles((run_phase, net.endpoint("party_a"), "party_b", store, pool, settings, tmp_path / "a", key),
                       (run_phase, net.endpoint("party_b"), "party_a", [f"u{i}" for i in range(20, 60)], pool,
                        settings, tmp_path / "b", key))
    assert out.summary["intersection_size"] == 20
    assert 1000 < out.summary["serial_cpu_seconds"] < 1000 + os.times().user + os.times().system + 1
    assert 1000 < out.summary["process_cpu_seconds"] < 1000 + os.times().user + os.times().system + 1
    assert 0 < out.summary["overlapped_cpu_seconds"] < out.summary["process_cpu_seconds"] - 1000


def test_the_exchange_counts_both_threads_cpu_seconds() -> None:
    """With the curve work inline (a pool of 0 workers) both threads of the exchange do some of it."""
    net, pool, settings = MemoryNetwork(), WorkerPool(0), PsiSettings(8, False)
    ra, _ = run_roles((run_psi, net.endpoint("party_a"), "party_b", [f"u{i}" for i in range(200)], pool, settings),
                      (run_psi, net.endpoint("party_b"), "party_a", [f"u{i}" for i in range(100, 300)], pool, settings))
    assert ra.positions.size == 100 and 0 < ra.exchange_cpu.sender < ra.seconds and 0 < ra.exchange_cpu.caller


def test_the_exchange_is_not_serial() -> None:
    from psi.align import _Cpu

    figures = _Cpu().figures([], ExchangeCpu(caller=5.0, sender=2.0))
    assert figures["serial_cpu_seconds"] < -4.9 and figures["overlapped_cpu_seconds"] == 7.0
