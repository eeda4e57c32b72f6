"""Typed messages: a frozen dataclass travels as a msgpack map of its fields and is checked on arrival.

`Message.from_message(body, peer)` checks every field against its annotation and
raises a ProtocolError naming the peer, the message and the field, so a malformed or
hostile body never surfaces as a KeyError or TypeError deep inside a protocol step.
Unknown fields are refused too. Field annotations may be str, int, float, bool,
bytes, `IntVector` (a 1-D integer numpy array), `BigIntList` (non-negative big
integers, sent as one fixed-width block), another Message (nested), or `X | None`.

Every concrete message of the protocol is in protocol/messages/; this module only
knows how to check and convert them.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from functools import cache
from typing import Any, ClassVar, NewType, TypeVar

import gmpy2
import numpy as np

from protocol.errors import ProtocolError
from protocol.wire.codec import BigInts

WHILE_UP = math.inf  # a receive timeout: wait as long as the peer is up (answers the heartbeat), however long

IntVector = NewType("IntVector", np.ndarray)
BigIntList = NewType("BigIntList", list)

_MPZ = type(gmpy2.mpz(0))
M = TypeVar("M", bound="Message")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


_CHECKS: dict[Any, tuple[str, typing.Callable[[Any], bool]]] = {
    str: ("a string", lambda v: isinstance(v, str)),
    int: ("an integer", _is_int),
    float: ("a number", lambda v: isinstance(v, float) or _is_int(v)),
    bool: ("a boolean", lambda v: isinstance(v, bool)),
    bytes: ("bytes", lambda v: isinstance(v, bytes)),
    IntVector: ("a 1-D integer array", lambda v: isinstance(v, np.ndarray) and v.ndim == 1 and v.dtype.kind in "iu"),
    BigIntList: ("a list of non-negative integers",
                 lambda v: isinstance(v, list) and all((_is_int(x) or isinstance(x, _MPZ)) and x >= 0 for x in v)),
}


@dataclasses.dataclass(frozen=True)
class Message:
    """Base of every message; subclasses are frozen dataclasses and may set TAG (see protocol/messages/)."""

    TAG: ClassVar[str] = ""

    def to_message(self) -> dict:
        """The body to send: a map of the fields, nested messages as maps, big-integer lists as one block."""
        hints = _hints(type(self))
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Message):
                value = value.to_message()
            elif value is not None and BigIntList in _options(hints[f.name]):
                value = BigInts(list(value))
            out[f.name] = value
        return out

    @classmethod
    def from_message(cls: type[M], body: Any, peer: str, where: str = "") -> M:
        """The message behind `body` sent by `peer`; anything malformed raises ProtocolError naming the field."""
        what = where or cls.__name__
        if not isinstance(body, dict):
            raise ProtocolError(f"{peer} sent a malformed {what}: expected a map of fields, got "
                                f"{type(body).__name__}")
        hints = _hints(cls)
        values = {}
        for f in dataclasses.fields(cls):
            if f.name not in body:
                raise ProtocolError(f"{peer} sent {what} without field {f.name!r}")
            values[f.name] = _field(hints[f.name], body[f.name], peer, f"{what}.{f.name}")
        unknown = sorted(set(body) - set(values), key=str)
        if unknown:
            raise ProtocolError(f"{peer} sent {what} with unexpected field {unknown[0]!r}")
        try:
            return cls(**values)
        except (TypeError, ValueError, ProtocolError) as exc:
            raise ProtocolError(f"{peer} sent an invalid {what}: {exc}") from None


def _options(kind: Any) -> tuple:
    """The types a field may hold: the members of a union, or the one type."""
    return typing.get_args(kind) if typing.get_origin(kind) in (typing.Union, types.UnionType) else (kind,)


def _field(kind: Any, value: Any, peer: str, where: str) -> Any:
    options = _options(kind)
    if value is None and type(None) in options:
        return None
    for option in options:
        if isinstance(option, type) and issubclass(option, Message):
            return option.from_message(value, peer, where)
        if option in _CHECKS and _CHECKS[option][1](value):
            return float(value) if option is float else value
    expected = " or ".join("None" if o is type(None) else _CHECKS[o][0] if o in _CHECKS else o.__name__
                           for o in options)
    raise ProtocolError(f"{peer} sent {where} as {type(value).__name__}, expected {expected}")


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)
