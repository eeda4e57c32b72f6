"""Message codec: msgpack with typed extensions for numpy arrays and big integers.

Nothing here ever unpickles: a decoded message holds only None, bool, int, float,
str, bytes, lists, dicts, numpy arrays of plain numeric dtypes and big integers.
msgpack's own Timestamp extension (type -1) is refused like any unlisted type.

Memory bound of `decode` (a role's own data: its worker frames, its checkpoints):
the extensions of a message of S bytes (arrays, big integers and big-integer
vectors) decode into at most 4·S + 64 KiB in all, and msgpack holds a copy of at
most one extension's bytes at a time, so decoding allocates at most 5·S + 64 KiB
for them. A big-integer vector is costed at 72 bytes per value plus its width (the
gmpy2 object, its list slot and allocator rounding), so a vector of wide values
(ciphertexts: 256-768 bytes each) costs about 1.1-1.3 times its body, while a
vector of 1-byte values would cost 73 times its body and is refused before
anything is allocated. Plain lists and maps are not budgeted there.

`decode_bounded` (everything a peer sends) budgets the whole message: besides the
extensions, each list costs 56 bytes plus 8 per item, each map what CPython
allocates for it, and each string, bytes, float or int inside them its object
size (ints from -5 to 256, None and booleans are shared objects and cost only
their slot). This is an estimate charged as each list or map is completed, so
what a container holds exists before it is counted: msgpack allocates a list's
slots from its header, before its items, and nests up to 1024 deep. So no list or
map from a peer may hold more than max(128, budget / 16 KiB) items (protocol
messages hold no plain lists and maps of at most a dozen fields), which keeps what
exists uncounted within half the budget (or 1.1 MiB: 1024 nested lists of 128
slots). Decoding S bytes of anything from a peer thus allocates at most 1.5 ×
`budget(S)` (4·S + 64 KiB), or `budget(S)` + 1.1 MiB if more, plus the input and
msgpack's copy of one extension, whatever the shape (tests/unit/protocol/net/test_codec.py measures
it): 3.8 MiB of empty lists, which decode into 276 MiB, are refused at once by
their list's length, and nested ones after about 16 MiB.
`split_map` reads a message's envelope without touching its body, so a receiver
refuses a message by its header (tag, run) before decoding anything else.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from functools import partial
from typing import Any

import gmpy2
import msgpack
import numpy as np

_EXT_NDARRAY = 1
_EXT_BIGINT = 2
_EXT_BIGINTS = 3

_ALLOWED_DTYPES = {
    np.dtype(t).str
    for t in ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float32", "float64")
}
_INT64 = (-(2**63), 2**63 - 1)
_EXPANSION = 4  # bytes the extensions of a message may decode into, per byte of the message
_SLACK = 64 * 1024  # plus this much, so that small messages never hit the budget
_VALUE_COST = 72  # a decoded big integer beyond its width: gmpy2 object, list slot, allocator rounding
_HEADER_MAX = 256  # an extension's msgpack header is far shorter
_DEPTH = 1024  # msgpack nests containers this deep at most
_MIN_ITEMS = 128  # a list or map from a peer may always hold this many items (a message has at most a dozen fields)
_HEAD_MAX = 4096  # bytes of an envelope's fields before its body (split_map)
_LIST_COST, _SLOT = 56, 8  # an empty list, and each of its items' pointers
_FLOAT_COST, _INT_COST = 24, 32  # a float object; an int object up to 64 bits (bigger ones are extensions)


class CodecError(ValueError):
    """A message that is not a well-formed payload of this protocol."""


@dataclass(frozen=True)
class BigInts:
    """A vector of non-negative big integers (ciphertexts) sent as one fixed-width block."""

    values: list


def _default(obj: Any) -> msgpack.ExtType:
    if isinstance(obj, np.ndarray):
        if obj.dtype.str not in _ALLOWED_DTYPES:
            raise CodecError(f"numpy dtype {obj.dtype} cannot be sent")
        arr = obj if obj.flags.c_contiguous else obj.copy(order="C")
        header = msgpack.packb([arr.dtype.str, list(arr.shape)])
        return msgpack.ExtType(_EXT_NDARRAY, header + arr.tobytes())
    if isinstance(obj, BigInts):
        return msgpack.ExtType(_EXT_BIGINTS, _pack_bigints(obj.values))
    if isinstance(obj, (int, type(gmpy2.mpz(0)))):
        value = int(obj)
        sign = b"-" if value < 0 else b"+"
        magnitude = abs(value)
        return msgpack.ExtType(_EXT_BIGINT, sign + magnitude.to_bytes((magnitude.bit_length() + 7) // 8, "big"))
    if isinstance(obj, np.generic):
        return obj.item()
    raise CodecError(f"type {type(obj).__name__} cannot be sent")


def _pack_bigints(values: list) -> bytes:
    width = max([1] + [(int(v).bit_length() + 7) // 8 for v in values])
    for v in values:
        if v < 0:
            raise CodecError("BigInts holds non-negative integers only")
    body = b"".join(gmpy2.mpz(v).to_bytes(width, "big") for v in values)
    return msgpack.packb([len(values), width]) + body


def budget(size: int) -> int:
    """Bytes a message of `size` bytes may decode into: 4·size + 64 KiB (module docstring)."""
    return _EXPANSION * size + _SLACK


class _Budget:
    """Bytes one message may still decode into (see the module docstring)."""

    def __init__(self, limit: int):
        self.limit = self.left = limit

    def spend(self, cost: int, what: str) -> None:
        if cost > self.left:
            raise CodecError(f"{what} would decode into {cost} bytes, over the {self.left} left of its message's "
                             f"decode budget of {self.limit} bytes ({_EXPANSION} bytes per message byte + {_SLACK})")
        self.left -= cost

    def list_hook(self, items: list) -> list:
        _no_timestamp(items)
        self.spend(_LIST_COST + _SLOT * len(items) + sum(map(_object_cost, items)), f"a list of {len(items)} items")
        return items

    def map_hook(self, items: dict) -> dict:
        _no_timestamp(items.keys())
        _no_timestamp(items.values())
        self.spend(sys.getsizeof(items) + sum(map(_object_cost, items.keys())) + sum(map(_object_cost, items.values())),
                   f"a map of {len(items)} entries")
        return items


def _object_cost(value: Any) -> int:
    """What a decoded scalar costs beyond its slot; containers and extensions are charged where they are built."""
    kind = type(value)
    if kind is str or kind is bytes:
        return sys.getsizeof(value)
    if kind is float:
        return _FLOAT_COST
    if kind is int and not -5 <= value <= 256 and _INT64[0] <= value <= _INT64[1]:
        return _INT_COST
    return 0


def _header(data: bytes, what: str) -> tuple[list, memoryview]:
    """Split an extension into its msgpack header (a two-item list) and its raw body (not copied)."""
    unpacker = msgpack.Unpacker(max_buffer_size=_HEADER_MAX)
    unpacker.feed(data[:_HEADER_MAX])
    try:
        header = next(unpacker)
    except (StopIteration, ValueError) as exc:
        raise CodecError(f"malformed {what} header") from exc
    if not isinstance(header, list) or len(header) != 2:
        raise CodecError(f"malformed {what} header")
    return header, memoryview(data)[unpacker.tell():]


def _ext_hook(budget: _Budget, code: int, data: bytes) -> Any:
    if code == _EXT_NDARRAY:
        (dtype, shape), body = _header(data, "array")
        if dtype not in _ALLOWED_DTYPES or not isinstance(shape, list) or \
                not all(isinstance(s, int) and s >= 0 for s in shape):
            raise CodecError(f"array of dtype {dtype!r} shape {shape!r} is not allowed")
        if int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize != len(body):
            raise CodecError("array body does not match its shape")
        budget.spend(len(body) + 128, "array")
        return np.frombuffer(body, dtype=np.dtype(dtype)).reshape(tuple(shape)).copy()
    if code == _EXT_BIGINT:
        if not data or data[:1] not in (b"+", b"-"):
            raise CodecError("malformed big integer")
        budget.spend(len(data) + _VALUE_COST, "big integer")
        value = int.from_bytes(data[1:], "big")
        return -value if data[:1] == b"-" else value
    if code == _EXT_BIGINTS:
        (count, width), body = _header(data, "big-integer vector")
        if not (isinstance(count, int) and isinstance(width, int)) or count < 0 or width < 1:
            raise CodecError("malformed big-integer vector header")
        if len(body) != count * width:
            raise CodecError("big-integer vector body does not match its header")
        budget.spend(64 + count * (_VALUE_COST + width), f"big-integer vector of {count} values {width} bytes wide")
        from_bytes = gmpy2.mpz.from_bytes
        return [from_bytes(body[i : i + width], "big") for i in range(0, count * width, width)]
    raise CodecError(f"unknown extension type {code}")


def _no_timestamp(values: Any) -> None:
    """msgpack decodes its Timestamp extension itself, past `ext_hook`; refuse it where it lands."""
    if any(type(v) is msgpack.Timestamp for v in values):
        raise CodecError("msgpack Timestamp (extension type -1) is not a type of this protocol")


def _checked_list(items: list) -> list:
    _no_timestamp(items)
    return items


def _checked_map(items: dict) -> dict:
    _no_timestamp(items.keys())
    _no_timestamp(items.values())
    return items


def encode(obj: Any) -> bytes:
    """Serialise a payload; ints beyond 64 bits and gmpy2 integers travel as big integers."""
    return msgpack.packb(_lift_bigints(obj), default=_default, use_bin_type=True, datetime=False)


def _lift_bigints(obj: Any) -> Any:
    # msgpack handles int64 natively and raises on larger ints before calling `default`.
    if isinstance(obj, int) and not isinstance(obj, bool) and not (_INT64[0] <= obj <= _INT64[1]):
        return _default(obj)
    if isinstance(obj, dict):
        return {k: _lift_bigints(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_lift_bigints(v) for v in obj]
    return obj


def decode(data: bytes) -> Any:
    """Parse a payload produced by `encode` (a role's own data; a peer's goes through `decode_bounded`); anything
    else raises CodecError."""
    try:
        decoded = msgpack.unpackb(data, ext_hook=partial(_ext_hook, _Budget(budget(len(data)))),
                                  list_hook=_checked_list, object_hook=_checked_map, raw=False, strict_map_key=False)
    except CodecError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise CodecError(f"undecodable message: {exc}") from exc
    _no_timestamp([decoded])
    return decoded


def decode_bounded(data: bytes | memoryview, limit: int) -> tuple[Any, int]:
    """Parse a payload from a peer, refusing (CodecError) one whose decoded size, estimated as the module docstring
    says, would exceed `limit` bytes; returns the payload and that estimate."""
    tally = _Budget(limit)
    most = max(_MIN_ITEMS, limit // (2 * _SLOT * _DEPTH))  # slots allocated before they are charged: limit / 2
    try:
        decoded = msgpack.unpackb(data, ext_hook=partial(_ext_hook, tally), list_hook=tally.list_hook,
                                  object_hook=tally.map_hook, raw=False, strict_map_key=False,
                                  max_array_len=most, max_map_len=most)
        tally.spend(_object_cost(decoded), "the message")
    except CodecError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types on garbage, and ValueError past max_*_len
        over = re.match(r"(\d+) exceeds max_(array|map)_len", str(exc))
        if over:
            kind = "list" if over[2] == "array" else "map"
            raise CodecError(f"a {kind} of {over[1]} items is over the {most} that the message's decode budget of "
                             f"{limit} bytes allows") from None
        raise CodecError(f"undecodable message: {exc}") from exc
    _no_timestamp([decoded])
    return decoded, limit - tally.left


def split_map(data: bytes, last: str) -> tuple[dict[str, Any], memoryview]:
    """The fields of a msgpack map that come before its field `last`, which must be the map's last, and the bytes of
    that field's value, not decoded (nor copied). The fields before it must be scalars (str, int, float, bool,
    None) within the map's first 4 KiB; anything else raises CodecError."""
    unpacker = msgpack.Unpacker(max_buffer_size=_HEAD_MAX, max_str_len=_HEAD_MAX, max_bin_len=0, max_array_len=0,
                                max_map_len=0, max_ext_len=0, raw=False)
    unpacker.feed(data[:_HEAD_MAX])
    head: dict[str, Any] = {}
    try:
        count = unpacker.read_map_header()
        for i in range(count):
            key = unpacker.unpack()
            if key == last:
                if i != count - 1:
                    raise CodecError(f"field {last!r} is not the message's last")
                return head, memoryview(data)[unpacker.tell():]
            if not isinstance(key, str) or key in head:
                raise CodecError(f"field name {key!r} is not a string, or repeated")
            head[key] = unpacker.unpack()
    except CodecError:
        raise
    except Exception as exc:  # not a map, a container or extension before `last`, or past the first 4 KiB
        raise CodecError(f"malformed message header: {exc}") from exc
    raise CodecError(f"message without field {last!r}")
