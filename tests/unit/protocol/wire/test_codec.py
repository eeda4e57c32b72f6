"""The message codec round-trips every payload type and refuses anything else."""

from __future__ import annotations

import tracemalloc

import gmpy2
import msgpack
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from protocol.wire.codec import BigInts, CodecError, budget, decode, decode_bounded, encode, split_map

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(), st.binary())
payloads = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(st.text(max_size=5), inner, max_size=4)),
                        max_leaves=20)


@given(payloads)
def test_roundtrip(payload: object) -> None:
    assert decode(encode(payload)) == payload


@given(hnp.arrays(st.sampled_from([np.int64, np.float32, np.uint8, np.bool_]),
                  hnp.array_shapes(min_dims=0, max_dims=3)))
def test_arrays_roundtrip(arr: np.ndarray) -> None:
    out = decode(encode({"a": arr}))["a"]
    assert out.dtype == arr.dtype and out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)


@given(st.lists(st.integers(min_value=0, max_value=2**4096), max_size=20))
def test_bigints_roundtrip(values: list[int]) -> None:
    out = decode(encode(BigInts([gmpy2.mpz(v) for v in values])))
    assert [int(v) for v in out] == values


def test_refuses_object_arrays_and_foreign_types() -> None:
    with pytest.raises(CodecError):
        encode(np.array([object()], dtype=object))
    with pytest.raises(CodecError):
        encode({1, 2})
    with pytest.raises(CodecError):
        encode(BigInts([-1]))


def test_refuses_garbage_and_lying_headers() -> None:
    with pytest.raises(CodecError):
        decode(b"\xc1")
    good = encode(np.arange(4, dtype=np.int64))
    with pytest.raises(CodecError):
        decode(good[:-3])
    pickled = b"\x80\x04\x95"  # a pickle header is just garbage to the codec
    with pytest.raises(CodecError):
        decode(pickled + b"\x00" * 8)


def test_refuses_msgpack_timestamps_wherever_they_sit() -> None:
    """msgpack decodes its Timestamp extension (type -1) past ext_hook; the codec must still refuse it."""
    stamp = msgpack.Timestamp(1, 0)
    for payload in (stamp, [1, stamp], {"body": {"at": stamp}}, {stamp: 1}):
        with pytest.raises(CodecError, match="Timestamp"):
            decode(msgpack.packb(payload))


def test_adversarial_bigints_stay_within_the_stated_memory_bound() -> None:
    """64 MiB of 1-byte-wide values would be ~56 bytes each as gmpy2 integers (3.6 GB): refused within 5·S + 64 KiB."""
    count = 64 * 2**20
    narrow = msgpack.packb(msgpack.ExtType(3, msgpack.packb([count, 1]) + bytes(count)))
    wide_values = [gmpy2.mpz(2) ** 2047 + i for i in range(4096)]  # ciphertext-like: 256 bytes each
    wide = encode(BigInts(wide_values))
    for data, refused in ((narrow, True), (wide, False)):
        tracemalloc.start()
        try:
            if refused:
                with pytest.raises(CodecError, match="budget"):
                    decode(data)
            else:
                assert decode(data) == wide_values
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak <= 5 * len(data) + 64 * 1024, (len(data), peak)


ADVERSARIAL = {  # cheap to send, expensive to decode: 1-3 bytes each that become 50-70-byte objects
    "3.8 MiB of empty lists in one list": msgpack.packb([[]] * (4 * 10**6)),
    "empty lists, nested": msgpack.packb([[[[]] * 200] * 200] * 20),
    "short strings, nested": msgpack.packb([[["ab"] * 200] * 200] * 10),
    "small maps, nested": msgpack.packb([[[{}] * 100] * 100] * 20),
    "list headers promising slots": b"\xdc\x00\x80" * 1000,  # 128 items each, 1000 deep, never sent
}


@pytest.mark.parametrize("shape", ADVERSARIAL)
def test_a_peers_message_is_refused_within_its_decode_budget_whatever_its_shape(shape: str) -> None:
    """3.8 MiB of empty lists once decoded into 276 MiB. What a peer sends is budgeted at 4 bytes per byte + 64 KiB,
    and refused having allocated at most 1.5 times that (or that + 1.1 MiB) plus the input (codec docstring)."""
    data = ADVERSARIAL[shape]
    limit = budget(len(data))
    tracemalloc.start()
    try:
        with pytest.raises(CodecError, match="decode budget|incomplete input"):
            decode_bounded(data, limit)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= max(1.5 * limit, limit + 1.1 * 2**20) + len(data), (len(data), limit, peak)


def test_protocol_payloads_decode_within_their_budget_and_as_before() -> None:
    """Arrays, ciphertext vectors and maps of fields cost about their size; the estimate is returned."""
    payload = {"op": "step", "label": "t/0/1", "users": np.arange(10_000),
               "share": {"layout": {"rows": 3}, "scale": 2**20, "bound": 2**40, "rows": 3,
                         "cts": BigInts([gmpy2.mpz(2) ** 2047 + i for i in range(1_000)])}}
    data = encode(payload)
    value, cost = decode_bounded(data, budget(len(data)))
    assert value["share"]["cts"] == payload["share"]["cts"].values and list(value["users"]) == list(range(10_000))
    assert len(data) <= cost <= 2 * len(data)


def test_an_envelope_is_split_before_its_body_is_decoded() -> None:
    body = msgpack.packb([[]] * 10)
    head, rest = split_map(encode({"run": "r", "tag": "t", "seq": 3, "gen": None, "body": None})[:-1] + body, "body")
    assert head == {"run": "r", "tag": "t", "seq": 3, "gen": None} and bytes(rest) == body
    for bad in ({"body": 1, "tag": "t"}, {"tag": ["t"], "body": 1}, {"tag": "t"}, [1], {"tag": "x" * 5000, "body": 1}):
        with pytest.raises(CodecError):
            split_map(encode(bad), "body")
