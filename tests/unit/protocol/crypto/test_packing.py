"""The packed fixed-point Paillier engine against exact integer arithmetic.

Property tests use a 1024-bit key (they test logic; fewer slots per ciphertext also
exercise vectors spread over several ciphertexts); the protocol-shaped tests use the
default 2048 bits.
"""

from __future__ import annotations

import gmpy2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from party_a.config import ModelSettings, SecureSettings, TrainSettings, layer_plan
from protocol.compute.workers import WorkerPool
from protocol.crypto import fixedpoint, packing
from protocol.crypto.multiexp import plan, power_products
from protocol.crypto.paillier import Encryptor, PrivateKey, generate_keypair
from protocol.errors import ProtocolError
from protocol.wire.codec import decode, encode

KEY_1024: PrivateKey = generate_keypair(1024)
ENC_1024 = Encryptor(KEY_1024.public)
PROPS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def matrices(draw: st.DrawFn, max_rows: int = 4, max_len: int = 30) -> tuple[packing.Layout, int, np.ndarray]:
    """A layout, a value bound that fits it with room to spare, and values within the bound (edges included)."""
    length = draw(st.integers(1, max_len))
    slot_bits = draw(st.integers(40, 160))
    layout = packing.Layout.fit(length, slot_bits, KEY_1024.public)
    bound = draw(st.integers(0, 2 ** (slot_bits // 3)))
    rows = draw(st.integers(1, max_rows))
    edge = st.sampled_from([0, bound, -bound])
    values = draw(st.lists(st.lists(st.one_of(edge, st.integers(-bound, bound)), min_size=length, max_size=length),
                           min_size=rows, max_size=rows))
    return layout, bound, np.array(values, dtype=object).reshape(rows, length)


def enc(values: np.ndarray, layout: packing.Layout, bound: int, scale: int = 0) -> packing.Packed:
    return packing.encrypt(ENC_1024, values, layout, scale, bound)


def dec(p: packing.Packed) -> np.ndarray:
    return packing.decrypt(KEY_1024, p)


@PROPS
@given(matrices())
def test_encrypt_decrypt(m: tuple) -> None:
    layout, bound, x = m
    assert (dec(enc(x, layout, bound)) == x).all()


@PROPS
@given(matrices(), st.data())
def test_add_and_add_plain(m: tuple, data: st.DataObject) -> None:
    layout, bound, x = m
    y = np.array([[data.draw(st.integers(-bound, bound)) for _ in range(layout.length)] for _ in x], dtype=object)
    cx, cy = enc(x, layout, bound), enc(y, layout, bound)
    assert (dec(packing.add(cx, cy)) == x + y).all()
    assert (dec(packing.add_plain(cx, y, bound)) == x + y).all()
    assert packing.add(cx, cy).bound == 2 * bound


@PROPS
@given(matrices(), st.integers(-(2**20), 2**20))
def test_multiply(m: tuple, k: int) -> None:
    layout, bound, x = m
    assert (dec(packing.multiply(enc(x, layout, bound), k)) == x * k).all()


@PROPS
@given(matrices(max_rows=6), st.data())
def test_lincomb(m: tuple, data: st.DataObject) -> None:
    layout, bound, x = m
    scalar_bound = data.draw(st.integers(0, 2**16))
    outputs = data.draw(st.integers(1, 5))
    s = np.array([[data.draw(st.one_of(st.sampled_from([0, scalar_bound, -scalar_bound]),
                                        st.integers(-scalar_bound, scalar_bound))) for _ in range(x.shape[0])]
                  for _ in range(outputs)], dtype=np.int64)
    out = packing.lincomb(s, scalar_bound, 7, enc(x, layout, bound, scale=3))
    assert (dec(out) == s.astype(object).dot(x)).all()
    assert out.scale == 10 and out.bound == x.shape[0] * scalar_bound * bound


@PROPS
@given(matrices(max_rows=5, max_len=20), st.data())
def test_protocol_shaped_chain(m: tuple, data: st.DataObject) -> None:
    """lincomb, then a scale change minus a second combination, masked and decrypted as the coordinator would."""
    _, bound, w = m
    reached = w.shape[0] * 2**10 * bound * (2**5 + 3)
    layout = packing.Layout.fit(w.shape[1], reached.bit_length() + packing.SIGMA + 2, KEY_1024.public)
    users = data.draw(st.integers(1, 4))
    e = np.array([[data.draw(st.integers(-(2**10), 2**10)) for _ in range(w.shape[0])] for _ in range(users)])
    cw = enc(w, layout, bound)
    u = packing.lincomb(e, 2**10, 10, cw)
    step = packing.add(packing.multiply(u, 2**5, extra_scale=5), packing.multiply(u, -3, extra_scale=5))
    masked, r = packing.mask(step, ENC_1024)
    plaintexts = [KEY_1024.raw_decrypt(c) for c in masked.flat()]
    expected = e.astype(object).dot(w) * (2**5 - 3)
    got = packing.unmask(plaintexts, packing.pack_flat(r, layout), layout, users, KEY_1024.public.n)
    assert (got == expected).all()


def test_overflow_is_refused_never_silent() -> None:
    layout = packing.Layout.fit(8, 24, KEY_1024.public)  # slots hold |v| < 2^23
    x = np.full((2, 8), 2**20, dtype=object)
    with pytest.raises(ProtocolError, match="exceeds the declared bound"):
        enc(x, layout, 2**19)
    with pytest.raises(ProtocolError, match="overflow 24-bit slots"):
        enc(x, layout, 2**23)
    cx = enc(x, layout, 2**20)
    four = packing.add(packing.add(cx, cx), packing.add(cx, cx))
    assert (dec(four) == 4 * x).all()  # 2^22 still fits
    with pytest.raises(ProtocolError, match="add: .*overflow"):
        packing.add(four, four)  # 2^23 would not
    with pytest.raises(ProtocolError, match="multiply: .*overflow"):
        packing.multiply(cx, 8)
    with pytest.raises(ProtocolError, match="lincomb: .*overflow"):
        packing.lincomb(np.ones((1, 2), dtype=np.int64), 4, 0, cx)
    with pytest.raises(ProtocolError, match="exceeds its bound"):
        packing.lincomb(np.full((1, 2), 5), 4, 0, cx)
    with pytest.raises(ProtocolError, match="mask: .*overflow"):
        packing.mask(cx, ENC_1024)  # no room for 60 bits of mask


def test_bad_matrices_from_the_wire_are_refused() -> None:
    layout = packing.Layout.fit(4, 64, KEY_1024.public)
    cx = enc(np.zeros((2, 4), dtype=object), layout, 5)
    msg = decode(encode(cx.to_wire().to_message()))
    assert (dec(packing.Packed.from_message(msg, KEY_1024.public, "t")) == 0).all()
    n2 = KEY_1024.public.n2
    for bad, match in [({**msg, "cts": [n2 + 1, 5]}, "out of range"),
                       ({**msg, "cts": [KEY_1024.p * 7, 5]}, "not invertible"),
                       ({**msg, "rows": 3}, "ciphertexts for 3 rows"),
                       ({**msg, "layout": {"length": 4, "slot_bits": 600, "slots": 4}}, "does not fit"),
                       ({**msg, "bound": 2**80}, "overflow"),
                       ({"layout": [1]}, "malformed")]:
        with pytest.raises(ProtocolError, match=match):
            packing.Packed.from_message(bad, KEY_1024.public, "t")


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(0, 24), st.data())
def test_power_products_against_naive(bases: int, outputs: int, bits: int, data: st.DataObject) -> None:
    mod = gmpy2.mpz(2**127 - 1)
    b = [gmpy2.mpz(data.draw(st.integers(1, 2**126))) for _ in range(bases)]
    s = np.array(data.draw(st.lists(st.lists(st.integers(0, 2**bits), min_size=bases, max_size=bases),
                                    min_size=outputs, max_size=outputs)), dtype=np.int64)
    expected = [int(np.prod([pow(int(b[k]), int(s[i, k]), int(mod)) for k in range(bases)], dtype=object) % mod)
                for i in range(outputs)]
    assert [int(x) for x in power_products(b, s, mod)] == expected


def test_plans_follow_the_shape_of_the_job() -> None:
    assert plan(16, 256, 17).method == "comb"  # step 1: many users over the rows of W
    assert plan(256, 16, 17).method == "buckets"  # step 6: rows of the gradient over many users


def test_pool_gives_the_same_answer() -> None:
    layout = packing.Layout.fit(16, 96, KEY_1024.public)
    w = np.random.default_rng(1).integers(-(2**16), 2**16, size=(16, 16)).astype(object)
    e = np.random.default_rng(2).integers(-(2**14), 2**14, size=(300, 16))
    cw = enc(w, layout, 2**16)
    with WorkerPool(2) as pool:
        out = packing.lincomb(e, 2**14, 14, cw, pool)
        many = packing.encrypt(ENC_1024, np.tile(w, (3, 1)), layout, 0, 2**16, pool)
    assert (dec(out) == e.astype(object).dot(w)).all()
    assert (dec(many) == np.tile(w, (3, 1))).all()


def test_fixed_point_round_trip() -> None:
    x = np.array([[0.5, -1.25, 3.0e-5, 0.0]])
    assert (fixedpoint.decode(fixedpoint.encode(x, 20), 20) == np.round(x * 2**20) / 2**20).all()
    assert fixedpoint.encode(np.array([5.0]), 4, bound=1.0)[0] == 16
    with pytest.raises(ValueError):
        fixedpoint.encode(np.array([np.nan]), 4)


def test_default_key_protocol_shape() -> None:
    """d = h = 16 at 2048 bits: one ciphertext per user and message, values back exactly."""
    key = generate_keypair(2048)
    e2048 = Encryptor(key.public)
    plan = layer_plan(ModelSettings(), TrainSettings(), SecureSettings())
    layout = plan.layouts(key.public)[0]
    assert layout.ciphertexts == 1
    w = np.random.default_rng(3).integers(-plan.w_bound, plan.w_bound, size=(16, 16)).astype(object)
    e = np.random.default_rng(4).integers(-plan.e_bound, plan.e_bound, size=(8, 16))
    u = packing.lincomb(e, plan.e_bound, plan.e_bits, packing.encrypt(e2048, w, layout, plan.w_bits, plan.w_bound))
    masked, r = packing.mask(u, e2048)
    got = packing.unmask([key.raw_decrypt(c) for c in masked.flat()], packing.pack_flat(r, layout), layout, 8,
                         key.public.n)
    assert (got == e.astype(object).dot(w)).all()


@pytest.mark.parametrize("value", ["x", 1.0, True, None, b"\x01", [3]])
def test_a_non_integer_ciphertext_is_a_protocol_error_naming_where(value: object) -> None:
    with pytest.raises(ProtocolError, match="where: ciphertext is a"):
        KEY_1024.public.check_ciphertext(value, "where")


def test_ciphertexts_without_randomness_are_refused() -> None:
    """c = 1 + m·n (mod n^2) is m in the clear; c = 1 is [0] with r = 1."""
    n = KEY_1024.public.n
    for c in (gmpy2.mpz(1), 1 + 12345 * n, 1 + (n - 1) * n):
        with pytest.raises(ProtocolError, match="where: ciphertext carries no randomness"):
            KEY_1024.public.check_ciphertext(c, "where")
    KEY_1024.public.check_ciphertext(ENC_1024.encrypt(12345), "where")


def test_every_malformed_matrix_field_is_a_protocol_error_naming_it() -> None:
    layout = packing.Layout.fit(4, 64, KEY_1024.public)
    msg = decode(encode(enc(np.zeros((2, 4), dtype=object), layout, 5).to_wire().to_message()))
    good_layout = msg["layout"]
    bad_fields = {"layout": ["4", [4, 64], None, {**good_layout, "length": "4"}, {**good_layout, "slot_bits": 0},
                            {**good_layout, "slot_bits": -64}, {**good_layout, "slots": True}],
                  "scale": ["x", 1.5, None, [1]], "bound": ["x", 5.0, -1, None, True], "rows": ["2", 2.0, -1, None],
                  "cts": ["x", None, 5, [1.5, 2.5], ["a", "b"], [None, None]]}
    for key, values in bad_fields.items():
        for value in values:
            with pytest.raises(ProtocolError) as caught:
                packing.Packed.from_message({**msg, key: value}, KEY_1024.public, "t", "party_b")
            assert key in str(caught.value), (key, value, caught.value)
    for missing in ("x", None, [1], {k: v for k, v in msg.items() if k != "rows"}):
        with pytest.raises(ProtocolError, match="^party_b sent (a malformed t|t without field 'rows')"):
            packing.Packed.from_message(missing, KEY_1024.public, "t", "party_b")
