"""Delta PSI: the shared list after any chain of changes equals a full rerun's set, with stable positions.

The logic (`diff_ids`, `apply_delta`) is checked over random chains with a stand-in for
the doubly-blinded values (a keyed hash: what matters to it is that both sides hold the
same value per ID); the protocol (psi/align.py `run_phase`) over the memory network
with the real curve work, state files and refusals.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import messages
from protocol.compute.workers import WorkerPool
from protocol.errors import DataError, ProtocolError, StateError
from protocol.keys.keyfiles import Passphrase
from protocol.messages.psi import PsiDeltaHello, PsiOpen, PsiRemoved
from psi.align import run_phase
from psi.delta import apply_delta, diff_ids, exchange_delta_hello, receive_removed
from psi.ids import digests_of
from psi.mode import DELTA, FULL, Wish, choose, confirm
from psi.session import VERSION, PsiSettings
from psi.shared import read_shared
from psi.state import PsiState, load_state, state_dir
from tests.support.fakes import MemoryNetwork, run_roles

POOL = WorkerPool(0)
KEY = Passphrase(b"correct horse battery staple", "test")
SETTINGS = PsiSettings(chunk_size=5, show_progress=False)
A, B = "party_a", "party_b"


# ---- the logic, over random chains ---------------------------------------------------------------------------


def value(ident: str) -> bytes:
    """Stand-in for a·b·H(id): the same at both parties, unrelated to the ID's digest."""
    return hashlib.blake2b(ident.encode(), key=b"both secrets", digest_size=16).digest()


def values(ids: list[str]) -> np.ndarray:
    return np.array([value(i) for i in ids], dtype="S16")


def digests(ids: list[str]) -> np.ndarray:
    return digests_of([i.encode() for i in ids])


def full_state(own: list[str], peer: list[str]) -> PsiState:
    """What a full run leaves a party: its sets, and the shared users in value order, all active."""
    by_value = np.argsort(values(own), kind="stable")
    shared = np.sort(values(sorted(set(own) & set(peer))))
    return PsiState(b"s" * 32, b"t" * 32, 0.0, digests(own)[by_value], values(own)[by_value],
                    np.sort(values(peer)), shared, np.ones(len(shared), dtype=bool))


def delta_step(state: PsiState, before: list[str], now: list[str], peer_before: list[str], peer_now: list[str]):
    """One side's delta given both sides' lists before and now (the peer's change as it would arrive)."""
    diff = diff_ids(state, digests(now))
    added = [now[r] for r in diff.added]
    assert set(added) == set(now) - set(before)
    peer_removed = sorted(set(peer_before) - set(peer_now))
    peer_added = sorted(set(peer_now) - set(peer_before))
    change = apply_delta(state, diff.removed, digests(added), values(added), values(peer_removed),
                         values(peer_added), "peer")
    joined_rows = diff.rows_of(change.joined)
    return change, [now[r] for r in joined_rows]


def id_of(ids: list[str]) -> dict[bytes, str]:
    return {value(i): i for i in ids}


universe = [f"user{i}@example.com" for i in range(40)]
subsets = st.lists(st.sampled_from(universe), unique=True)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chain=st.lists(st.tuples(subsets, subsets), min_size=2, max_size=5))
def test_a_chain_of_deltas_ends_where_a_full_rerun_does(chain: list[tuple[list[str], list[str]]]) -> None:
    (a, b), everyone = chain[0], id_of(universe)
    state_a, state_b = full_state(a, b), full_state(b, a)
    for a_now, b_now in chain[1:]:
        change_a, joined_a = delta_step(state_a, a, a_now, b, b_now)
        change_b, joined_b = delta_step(state_b, b, b_now, a, a_now)
        old = state_a
        state_a, state_b = change_a.state, change_b.state
        # both sides hold the same list and arrive at the same state ID
        assert np.array_equal(state_a.shared_values, state_b.shared_values)
        assert np.array_equal(state_a.active, state_b.active)
        assert state_a.state_id(A, B) == state_b.state_id(B, A)
        assert joined_a == joined_b
        # the active users are the intersection a full rerun would find
        active = {everyone[v] for v in state_a.shared_values[state_a.active].tolist()}
        assert active == set(a_now) & set(b_now)
        # positions are stable and never reused: the old list is a prefix, only active flags turned off
        n = len(old.shared_values)
        assert np.array_equal(state_a.shared_values[:n], old.shared_values)
        assert not (state_a.active[:n] & ~old.active).any()
        left = set(change_a.left.tolist())
        assert left == {p for p in range(n) if old.active[p] and everyone[old.shared_values[p]] not in active}
        assert not state_a.active[sorted(left)].any()
        # joiners are appended in value order, all active
        tail = state_a.shared_values[n:]
        assert [everyone[v] for v in tail.tolist()] == joined_a and list(tail) == sorted(tail)
        assert state_a.active[n:].all()
        a, b = a_now, b_now


def test_a_peer_removing_what_it_never_held_or_adding_what_it_holds_is_refused() -> None:
    a, b = universe[:10], universe[5:15]
    state = full_state(a, b)
    no_change = diff_ids(state, digests(a))
    with pytest.raises(ProtocolError, match="peer removed 1 IDs that are not in the state"):
        apply_delta(state, no_change.removed, digests([]), values([]), values([universe[30]]), values([]), "peer")
    with pytest.raises(ProtocolError, match="peer added 1 IDs that it held already"):
        apply_delta(state, no_change.removed, digests([]), values([]), values([]), values([universe[14]]), "peer")


# ---- the protocol over the memory network ----------------------------------------------------------------------


def phase(net: MemoryNetwork, root: Path, ids_a: list[str], ids_b: list[str], wish_a: Wish = Wish(),
          wish_b: Wish = Wish(), settings_a: PsiSettings = SETTINGS):
    """Both parties' PSI phase; each keeps its files under root/<role>."""
    return run_roles((run_phase, net.endpoint(A), B, ids_a, POOL, settings_a, root / A, KEY, wish_a),
                     (run_phase, net.endpoint(B), A, ids_b, POOL, SETTINGS, root / B, KEY, wish_b))


def shared_ids(root: Path, role: str, active_only: bool = True) -> list[str]:
    frame = read_shared(root / role)
    return frame.loc[frame["active"], "user_id"].tolist() if active_only else frame["user_id"].tolist()


def sent(net: MemoryNetwork) -> int:
    return sum(len(data) for *_, data in net.log)


DELTA_WISH = Wish(DELTA)
ids_a0 = [f"a{i}" for i in range(120)]
ids_b0 = [f"a{i}" for i in range(60, 200)]


def test_full_then_deltas_over_the_network_match_a_full_rerun(tmp_path: Path) -> None:
    net = MemoryNetwork()
    phase(net, tmp_path, ids_a0, ids_b0)
    full_bytes = sent(net)
    first = read_shared(tmp_path / A)
    assert first["position"].tolist() == list(range(60)) and first["active"].all()
    rows = np.loadtxt(tmp_path / A / "psi" / "aligned_rows.csv", delimiter=",", skiprows=1, dtype=np.int64)
    assert first["user_id"].tolist() == [ids_a0[r] for r in rows[:, 1]]  # the training order, position by position
    assert shared_ids(tmp_path, A) == shared_ids(tmp_path, B)

    # A drops a0..a4 (not shared) and a60 (shared: it leaves); B drops a70 and a71 (they leave) and adds a10, which
    # A kept (it joins); both add n1 and n2 (they join); each adds one ID the other lacks
    ids_a = [i for i in ids_a0[5:] if i != "a60"] + ["n1", "n2", "only_a"]
    ids_b = [i for i in ids_b0 if i not in ("a70", "a71")] + ["n1", "n2", "only_b", "a10"]
    net = MemoryNetwork()
    out_a, out_b = phase(net, tmp_path, ids_a, ids_b, DELTA_WISH, DELTA_WISH)
    assert out_a.mode == out_b.mode == DELTA
    assert out_a.summary["joined"] == 3 and out_a.summary["left"] == 3
    assert (out_a.summary["own_added"], out_a.summary["own_removed"]) == (3, 6)
    assert (out_a.summary["peer_added"], out_a.summary["peer_removed"]) == (4, 2)
    assert sent(net) < full_bytes / 5
    after = read_shared(tmp_path / A)
    assert read_shared(tmp_path / B).equals(after)
    assert after["user_id"].tolist()[:60] == first["user_id"].tolist()  # positions kept
    assert set(after.loc[~after["active"], "user_id"]) == {"a60", "a70", "a71"}
    assert set(after["user_id"][60:]) == {"n1", "n2", "a10"} and after["active"][60:].all()

    # B takes a70 back (A kept it: a new position, the old one stays inactive); A adds a150 (B holds it: it joins);
    # A drops n1 (it leaves)
    ids_a2, ids_b2 = [i for i in ids_a if i != "n1"] + ["a150"], ids_b + ["a70"]
    phase(MemoryNetwork(), tmp_path, ids_a2, ids_b2, DELTA_WISH, DELTA_WISH)
    rerun = tmp_path / "rerun"
    phase(MemoryNetwork(), rerun, ids_a2, ids_b2)
    assert set(shared_ids(tmp_path, A)) == set(shared_ids(rerun, A)) == set(ids_a2) & set(ids_b2)
    assert read_shared(tmp_path / A).equals(read_shared(tmp_path / B))
    every = read_shared(tmp_path / A)
    assert every["user_id"].tolist().count("a70") == 2  # it left and came back: a new position, the old one stays
    assert every["position"].tolist() == list(range(len(every)))


def test_state_files_are_private_sealed_and_checked(tmp_path: Path) -> None:
    out_a, _ = phase(MemoryNetwork(), tmp_path, ids_a0, ids_b0)
    directory = state_dir(tmp_path / A)
    assert directory.stat().st_mode & 0o777 == 0o700
    assert all(f.stat().st_mode & 0o777 == 0o600 for f in directory.iterdir())
    assert (tmp_path / A / "psi" / "shared.parquet").stat().st_mode & 0o777 == 0o600
    state, state_id = load_state(tmp_path / A, KEY, A, B)
    assert state.secret.hex().encode() not in (directory / "secret.sealed").read_bytes()
    assert state_id == state.state_id(A, B) == load_state(tmp_path / B, KEY, B, A)[1]
    with pytest.raises(StateError, match="cannot be opened with the passphrase"):
        load_state(tmp_path / A, Passphrase(b"wrong", "a test"), A, B)
    values_file = directory / "peer_values.npy"
    data = bytearray(values_file.read_bytes())
    data[-1] ^= 1
    values_file.write_bytes(bytes(data))
    with pytest.raises(StateError, match=r"incomplete or altered: .*peer_values.npy does not match"):
        load_state(tmp_path / A, KEY, A, B)


@pytest.mark.parametrize("damage", ["lost", "other_full_run"])
def test_a_delta_on_states_that_do_not_belong_together_is_refused(tmp_path: Path, damage: str) -> None:
    phase(MemoryNetwork(), tmp_path, ids_a0, ids_b0)
    if damage == "lost":
        (state_dir(tmp_path / B) / "meta.json").unlink()
        expected = r"party_b holds no PSI state"
    else:  # B ran a full PSI (a fresh secret) that A did not keep: A's old state against B's new one
        kept = {f.name: f.read_bytes() for f in state_dir(tmp_path / A).iterdir()}
        shared = (tmp_path / A / "psi" / "shared.parquet").read_bytes()
        phase(MemoryNetwork(), tmp_path, ids_a0, ids_b0)
        for name, data in kept.items():
            (state_dir(tmp_path / A) / name).write_bytes(data)
        (tmp_path / A / "psi" / "shared.parquet").write_bytes(shared)
        expected = r"the PSI states of party_\w and party_\w differ"
    before = read_shared(tmp_path / A)
    with pytest.raises(StateError, match=f"no delta PSI with party_.: .*{expected}.*A full PSI is needed") as refused:
        phase(MemoryNetwork(), tmp_path, ids_a0, ids_b0, DELTA_WISH, DELTA_WISH)
    assert refused.value.exit_code == 2
    assert read_shared(tmp_path / A).equals(before)  # nothing written

    fallback = Wish(DELTA, fallback=True)
    out_a, out_b = phase(MemoryNetwork(), tmp_path, ids_a0, ids_b0, fallback, fallback)
    assert out_a.mode == out_b.mode == FULL
    out_a, out_b = phase(MemoryNetwork(), tmp_path, ids_a0, ids_b0, DELTA_WISH, DELTA_WISH)
    assert out_a.mode == out_b.mode == DELTA


def test_key_rotation_is_a_full_run_with_a_fresh_secret(tmp_path: Path) -> None:
    phase(MemoryNetwork(), tmp_path, ids_a0, ids_b0)
    old, _ = load_state(tmp_path / A, KEY, A, B)
    young = PsiSettings(chunk_size=5, show_progress=False, key_max_age_days=1e-9)
    with pytest.raises(StateError, match=r"party_a's PSI secret is 0.0 days old, past its \[psi\] key_max_age_days"):
        phase(MemoryNetwork(), tmp_path, ids_a0, ids_b0, DELTA_WISH, DELTA_WISH, settings_a=young)
    fallback = Wish(DELTA, fallback=True)
    out_a, out_b = phase(MemoryNetwork(), tmp_path, ids_a0, ids_b0, fallback, fallback, settings_a=young)
    assert out_a.mode == out_b.mode == FULL
    new, _ = load_state(tmp_path / A, KEY, A, B)
    assert new.secret != old.secret and new.salt != old.salt and new.created > old.created


def open_(want: str, fallback: bool = False, state: bytes = b"s" * 32, blocked: str = "") -> PsiOpen:
    return PsiOpen(VERSION, want, fallback, state, blocked)


@pytest.mark.parametrize("own, theirs, expected", [
    (open_(DELTA), open_(DELTA), DELTA),
    (open_(FULL), open_(FULL), FULL),
    (open_(DELTA, True), open_(FULL), FULL),
    (open_(DELTA), open_(FULL), "party_b asked for a full PSI"),
    (open_(DELTA, True), open_(DELTA, True, state=b"x" * 32), FULL),
    (open_(DELTA), open_(DELTA, True, state=b"x" * 32), "the PSI states of party_a and party_b differ"),
    (open_(DELTA, True), open_(DELTA, blocked="party_b holds no PSI state"), "party_b holds no PSI state"),
])
def test_both_sides_choose_alike(own: PsiOpen, theirs: PsiOpen, expected: str) -> None:
    for mine, other, role, peer in ((own, theirs, A, B), (theirs, own, B, A)):
        if expected in (DELTA, FULL):
            assert choose(mine, other, role, peer)[0] == expected
        else:
            with pytest.raises(StateError, match=f"{expected}.*A full PSI is needed"):
                choose(mine, other, role, peer)


def test_a_peer_is_held_to_its_announced_delta() -> None:
    state = full_state(universe[:10], universe[5:15])
    net = MemoryNetwork()
    a, b = net.endpoint(A), net.endpoint(B)
    no_change = diff_ids(state, digests(universe[:10]))
    messages.send(b, A, PsiDeltaHello(0, 11, 4))
    with pytest.raises(ProtocolError, match=r"party_b announced 11 removed IDs \(field 'removed'\); the state both "
                                            r"parties kept holds 10"):
        exchange_delta_hello(a, B, no_change, state, 10, SETTINGS)
    messages.send(b, A, PsiDeltaHello(991, 0, 4))
    with pytest.raises(ProtocolError, match=r"party_b announced 991 added IDs \(field 'added'\), which would make "
                                            r"its set 1001 IDs; this party accepts 0 to 1000"):
        exchange_delta_hello(a, B, no_change, state, 10, SETTINGS)
    messages.send(b, A, PsiRemoved(bytes(16 * 5)))
    with pytest.raises(ProtocolError, match="PsiRemoved with field 'values' of 80 bytes; its PsiDeltaHello "
                                            "announced 4 values"):
        receive_removed(a, B, 6, 4)


def test_read_shared_names_the_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"psi/shared.parquet is missing: no PSI has run in .* \(run `python -m "
                                        r"party_a psi`"):
        read_shared(tmp_path)


def test_parties_that_arrive_at_different_states_write_nothing() -> None:
    net = MemoryNetwork()
    with pytest.raises(ProtocolError, match="party_. arrived at another PSI state than this party; nothing was "
                                            "written"):
        run_roles((confirm, net.endpoint(A), B, b"a" * 32), (confirm, net.endpoint(B), A, b"b" * 32))


@pytest.mark.parametrize("blocked", ["two\nlines", "x" * 1001])
def test_a_peer_cannot_write_lines_into_this_partys_log(blocked: str) -> None:
    body = open_(DELTA).to_message() | {"blocked": blocked}
    with pytest.raises(ProtocolError, match="party_b sent an invalid PsiOpen: field 'blocked' must be one printable"):
        PsiOpen.from_message(body, B)
