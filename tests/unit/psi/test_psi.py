"""PSI in one process over the memory network: the result is the normalised intersection."""

from __future__ import annotations

import os
import unicodedata

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import messages
from protocol.compute.workers import WorkerPool
from protocol.errors import DataError, ProtocolError
from protocol.messages.psi import PsiBlinded, PsiHello
from protocol.settings.config import load
from psi.ecdh import MATCH_BYTES, POINT_BYTES, blind_ids, hash_to_point, new_secret, reblind, session_salt
from psi.ids import Normalizer, normalize_ids, stream_ids
from psi.session import MIN_PEER_LIMIT, VERSION, PsiSettings, run_psi
from tests.support.fakes import MemoryNetwork, run_roles

POOL = WorkerPool(0)
TEXT = Normalizer(kind="text")


def psi_both(ids_a: list[str], ids_b: list[str], chunk: int = 7) -> tuple[list[str], list[str]]:
    net = MemoryNetwork()
    a, b = net.endpoint("party_a"), net.endpoint("party_b")
    ra, rb = run_roles((run_psi, a, "party_b", ids_a, POOL, PsiSettings(chunk, False)),
                       (run_psi, b, "party_a", ids_b, POOL, PsiSettings(chunk, False)))
    return [ids_a[i] for i in ra.positions], [ids_b[i] for i in rb.positions]


def variant(s: str, how: int) -> str:
    """The same ID as another system might write it: case, padding, or a compatibility form."""
    forms = [s, s.upper(), f"  {s}\t", s.title(), unicodedata.normalize("NFKD", s), f"\n{s.lower()} "]
    return forms[how % len(forms)]


base_ids = st.lists(st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=12),
                    max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(universe=base_ids, data=st.data())
def test_psi_equals_normalised_intersection(universe: list[str], data: st.DataObject) -> None:
    picks_a = data.draw(st.lists(st.sampled_from(universe), unique=True) if universe else st.just([]))
    picks_b = data.draw(st.lists(st.sampled_from(universe), unique=True) if universe else st.just([]))
    raw_a = [variant(s, data.draw(st.integers(0, 5))) for s in picks_a]
    raw_b = [variant(s, data.draw(st.integers(0, 5))) for s in picks_b]
    # each side keeps one row per normalised, non-empty ID, as its input checks demand
    ids_a = list(dict.fromkeys(x for x in map(TEXT, raw_a) if x))
    ids_b = list(dict.fromkeys(x for x in map(TEXT, raw_b) if x))
    shared_a, shared_b = psi_both(ids_a, ids_b)
    assert shared_a == shared_b
    assert set(shared_a) == set(ids_a) & set(ids_b)
    assert len(shared_a) == len(set(shared_a))


@pytest.mark.parametrize("overlap", ["full", "zero", "empty_a", "both_empty"])
def test_psi_edge_overlaps(overlap: str) -> None:
    ids = [f"user{i}@example.com" for i in range(50)]
    cases = {"full": (ids, ids[::-1]), "zero": (ids[:25], ids[25:]), "empty_a": ([], ids), "both_empty": ([], [])}
    ids_a, ids_b = cases[overlap]
    shared_a, shared_b = psi_both(ids_a, ids_b)
    assert shared_a == shared_b
    assert set(shared_a) == set(ids_a) & set(ids_b)


def test_canonical_order_is_not_input_order() -> None:
    ids = [f"id{i}" for i in range(200)]
    shared_a, shared_b = psi_both(ids, list(reversed(ids)), chunk=33)
    assert shared_a == shared_b
    assert shared_a != ids and shared_a != sorted(ids)  # ordered by blinded value, so it reveals no input order


def test_reblind_commutes_and_rejects_garbage() -> None:
    salt, a, b = b"s" * 32, new_secret(), new_secret()
    ab = reblind(blind_ids(["x", "y"], salt, a), b)
    ba = reblind(blind_ids(["y", "x"], salt, b), a)
    assert ab[:16] == ba[16:] and ab[16:] == ba[:16]
    with pytest.raises(ProtocolError, match="position 1"):
        reblind(blind_ids(["x"], salt, a) + bytes(POINT_BYTES), b)
    with pytest.raises(ProtocolError, match="multiple"):
        reblind(b"short", b)


def test_hash_lands_on_the_curve_not_the_twist() -> None:
    p = 2**255 - 19
    for i in range(200):
        u = int.from_bytes(hash_to_point(b"salt", f"id{i}".encode()), "little")
        rhs = (u**3 + 486662 * u**2 + u) % p
        assert pow(rhs, (p - 1) // 2, p) == 1


def chunks(blob: bytes, width: int) -> set[bytes]:
    return {blob[i : i + width] for i in range(0, len(blob), width)}


def session_view(ids: list[str], salt: bytes, secret_a: bytes, secret_b: bytes) -> dict[str, bytes]:
    """Every blinded value of one session: what each side sends, and what the other sends back."""
    blinded_a, blinded_b = blind_ids(ids, salt, secret_a), blind_ids(ids, salt, secret_b)
    return {"a": blinded_a, "b": blinded_b, "ab": reblind(blinded_a, secret_b), "ba": reblind(blinded_b, secret_a)}


def linkable(first: dict[str, bytes], second: dict[str, bytes], secrets: dict[str, list[bytes]]) -> bool:
    """Whether a value of one session equals one of the other (compared on the MATCH_BYTES that doubly-blinded
    values keep), as sent or after a party re-blinds the singly-blinded values with any secret it has held."""
    def reach(view: dict[str, bytes], party: str) -> set[bytes]:
        seen = {v[:MATCH_BYTES] for blob in (view["a"], view["b"]) for v in chunks(blob, POINT_BYTES)}
        seen |= chunks(view["ab"], MATCH_BYTES) | chunks(view["ba"], MATCH_BYTES)
        for secret in secrets[party]:
            seen |= chunks(reblind(view["a"] + view["b"], secret), MATCH_BYTES)
        return seen
    return any(reach(first, party) & reach(second, party) for party in ("a", "b"))


def test_sessions_are_unlinkable() -> None:
    """The same IDs in two sessions (fresh salt, fresh secrets) give unrelated blinded values: no value of one
    session equals one of the other, even after either party re-blinds with every secret it has held."""
    ids = [f"user{i}@example.com" for i in range(32)]
    salts = [session_salt("run", os.urandom(16), os.urandom(16)) for _ in range(2)]
    a1, b1, a2, b2 = (new_secret() for _ in range(4))
    first, second = session_view(ids, salts[0], a1, b1), session_view(ids, salts[1], a2, b2)
    assert not linkable(first, second, {"a": [a1, a2], "b": [b1, b2]})
    # negative control: a party that reused its secret and salt would be linked across sessions
    reused = session_view(ids, salts[0], a1, b2)
    assert linkable(first, reused, {"a": [a1], "b": [b1, b2]})


@pytest.mark.parametrize(("raw", "kind", "expected"), [
    ("  Alice@Example.COM ", "email", "alice@example.com"),
    ("alice @example.com", "email", "alice@example.com"),
    ("ＡＬＩＣＥ", "text", "alice"),
    ("Jean  Dupont", "text", "jean dupont"),
    ("STRASSE", "text", "strasse"),
    ("Straße", "text", "strasse"),
])
def test_normalisation(raw: str, kind: str, expected: str) -> None:
    assert Normalizer(kind=kind)(raw) == expected


@pytest.mark.parametrize("raw", ["+1 (555) 010-4477", "1-555-010-4477", "555.010.4477", "001 555 010 4477"])
def test_phone_formats_meet(raw: str) -> None:
    assert Normalizer(kind="phone", country_code="1")(raw) == "15550104477"


def test_duplicates_after_normalisation_name_rows(tmp_path) -> None:
    raw = ["a@x.com", "b@x.com", " A@X.com", "c@x.com", "B@x.com"]
    with pytest.raises(DataError, match=r"2 duplicated IDs .*row 1 and row 3; row 2 and row 5"):
        normalize_ids(raw, Normalizer(kind="email"), tmp_path / "users.csv", "email")


def test_empty_id_names_row(tmp_path) -> None:
    with pytest.raises(DataError, match=r"users.csv: column 'email' row 2 has an empty ID"):
        normalize_ids(["a@x.com", "  ", "b@x.com"], Normalizer(kind="email"), tmp_path / "users.csv", "email")


def write_ids(path, raw: list[str]) -> None:
    frame = pd.DataFrame({"email": raw, "x": range(len(raw))})
    frame.to_parquet(path, index=False) if path.suffix == ".parquet" else frame.to_csv(path, index=False)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_streamed_ids_are_the_normalised_list(tmp_path, suffix: str) -> None:
    raw = [f" User.{i}@Example.com" for i in range(23)] + ["ü@x.com", "ß@x.com"]
    write_ids(path := tmp_path / f"users{suffix}", raw)
    store = stream_ids(path, "email", Normalizer(kind="email"), chunk_rows=4)  # chunks of 4 rows
    assert len(store) == 25 and list(store) == normalize_ids(raw, Normalizer(kind="email"), path, "email")
    with pytest.raises(IndexError):
        store[25]


@pytest.mark.parametrize("raw, expected", [
    (["a@x.com", "b@x.com", "c@x.com", " A@X.com", "d@x.com", "B@x.com", "a@X.com"],
     "2 duplicated IDs after normalisation (5 rows); first: row 1 and row 4 and row 7; row 2 and row 6"),
    (["a@x.com", "b@x.com", "c@x.com", "d@x.com", " ", "e@x.com", "  "], "row 5 has an empty ID after "
                                                                        "normalisation (2 such rows)")])
def test_streamed_ids_refused_across_chunks_as_the_list_is(tmp_path, raw: list[str], expected: str) -> None:
    write_ids(path := tmp_path / "users.csv", raw)
    with pytest.raises(DataError) as listed:
        normalize_ids(raw, Normalizer(kind="email"), path, "email")
    with pytest.raises(DataError) as streamed:
        stream_ids(path, "email", Normalizer(kind="email"), chunk_rows=3)
    assert str(streamed.value) == str(listed.value) and expected in str(listed.value)


def test_psi_over_a_streamed_store_matches_the_list(tmp_path) -> None:
    ids_a = [f"id{i}" for i in range(60)]
    write_ids(path := tmp_path / "a.csv", ids_a)
    net = MemoryNetwork()
    ra, rb = run_roles((run_psi, net.endpoint("party_a"), "party_b", stream_ids(path, "email", TEXT, 7), POOL,
                        PsiSettings(5, False)),
                       (run_psi, net.endpoint("party_b"), "party_a", ids_a[30:] + ["x", "y"], POOL,
                        PsiSettings(9, False)))
    assert sorted(ids_a[i] for i in ra.positions) == ids_a[30:]
    assert [ids_a[i] for i in ra.positions] == [(ids_a[30:] + ["x", "y"])[i] for i in rb.positions]


def test_positions_index_the_party_list() -> None:
    ids_a = ["q", "w", "e", "r"]
    net = MemoryNetwork()
    ra, _ = run_roles((run_psi, net.endpoint("party_a"), "party_b", ids_a, POOL, PsiSettings(2, False)),
                      (run_psi, net.endpoint("party_b"), "party_a", ["e", "q"], POOL, PsiSettings(2, False)))
    assert sorted(ra.positions.tolist()) == [0, 2]
    assert ra.positions.dtype == np.int64


def cheating_peer(net: MemoryNetwork, hello: PsiHello, points: int) -> None:
    """party_b as a cheater: it announces `hello`, then streams `points` blinded points in one chunk."""
    b = net.endpoint("party_b")
    messages.send(b, "party_a", hello)
    messages.send(b, "party_a", PsiBlinded(bytes(POINT_BYTES) * points))


def test_a_peer_is_held_to_the_size_it_announced() -> None:
    net = MemoryNetwork()
    cheating_peer(net, PsiHello(VERSION, bytes(32), 10, 10), 1000)
    with pytest.raises(ProtocolError, match="party_b sent PsiBlinded with field 'points' of 32000 bytes; its hello "
                                            "announced 10 points"):
        run_psi(net.endpoint("party_a"), "party_b", ["a", "b"], POOL, PsiSettings(4, False))


@pytest.mark.parametrize("size, chunk, match", [(10**12, 1, "announced 1000000000000 IDs"),
                                                (100, 0, "field 'chunk' = 0"),
                                                (100, 2**21, "field 'chunk' = 2097152")])
def test_a_peer_cannot_announce_an_unbounded_session(size: int, chunk: int, match: str) -> None:
    net = MemoryNetwork()
    cheating_peer(net, PsiHello(VERSION, bytes(32), size, chunk), 0)
    with pytest.raises(ProtocolError, match=match):
        run_psi(net.endpoint("party_a"), "party_b", ["a", "b"], POOL, PsiSettings(4, False))


def test_a_peer_announcing_far_more_ids_than_this_party_holds_is_refused_by_default() -> None:
    """A peer announcing a country's phone numbers would learn which of them this party holds: by default it may
    announce at most 10× this party's own set (at least MIN_PEER_LIMIT)."""
    own = [f"id{i}" for i in range(500)]
    net = MemoryNetwork()
    cheating_peer(net, PsiHello(VERSION, bytes(32), 5001, 4), 0)
    with pytest.raises(ProtocolError, match=r"party_b announced 5001 IDs \(field 'size'\); this party accepts 0 to "
                                            r"5000 \(\[psi\] max_peer_ratio 10 × its own 500 IDs"):
        run_psi(net.endpoint("party_a"), "party_b", own, POOL, PsiSettings(4, False))
    assert PsiSettings().peer_limit(500) == 5000 and PsiSettings().peer_limit(3) == MIN_PEER_LIMIT
    assert PsiSettings().peer_limit(10**9) == PsiSettings().max_peer_ids == 10**8


def test_the_limit_follows_the_configured_ratio_and_cap(tmp_path) -> None:
    path = tmp_path / "a.toml"
    path.write_text("[psi]\nmax_peer_ratio = 2\nmax_peer_ids = 3000\n")
    settings = PsiSettings.from_config(load(path).sub("psi"))
    assert (settings.peer_limit(1200), settings.peer_limit(2000)) == (2400, 3000)
