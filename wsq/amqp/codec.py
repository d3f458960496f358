"""The AMQP 1.0 type system (OASIS AMQP 1.0, part 1): bytes to Python values and back.

Decoding is for hostile input: every length is checked against what is left of the buffer,
nesting is bounded, and anything malformed raises ``AmqpDecodeError`` (the connection answers
``amqp:decode-error``). Values come back as plain Python values, with ``Symbol`` for symbols,
``Described`` for described types and ``uuid.UUID`` for uuids; every integer width is an int.

Encoding takes plain values too; where AMQP needs a width or kind that Python does not say,
the caller wraps the value: ``Uint``, ``Ulong``, ``Ubyte``, ``Ushort``, ``Symbol``,
``Timestamp``, ``SymbolArray``. A plain int is a ``long``, a str a ``string``, bytes a
``binary``, a float a ``double``.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable
from typing import Any

__all__ = [
    "AmqpDecodeError",
    "Described",
    "Symbol",
    "SymbolArray",
    "Timestamp",
    "Ubyte",
    "Uint",
    "Ulong",
    "Ushort",
    "decode",
    "decode_all",
    "encode",
]

# Compound values nested deeper than this are refused: the decoder recurses once per level.
MAX_DEPTH = 32
# Containers (lists, maps, described values) one decode may make: one per CONTAINER_BYTES of
# its input, and CONTAINER_FLOOR more. An empty list is one byte on the wire and 64 in Python,
# a described boolean in an array one and 56: without this a 1 MiB frame of them held 61 MiB
# while it was decoded. With it the worst (empty lists among nulls) is about 22 bytes per byte.
CONTAINER_BYTES = 4
CONTAINER_FLOOR = 64


class AmqpDecodeError(ValueError):
    """The bytes are not a valid AMQP encoding."""


class Symbol(str):
    """An AMQP symbol (ASCII), as opposed to a string."""

    __slots__ = ()


class Uint(int):
    __slots__ = ()


class Ulong(int):
    __slots__ = ()


class Ubyte(int):
    __slots__ = ()


class Ushort(int):
    __slots__ = ()


class Timestamp(int):
    """Milliseconds since the Unix epoch."""

    __slots__ = ()


class SymbolArray(tuple[str, ...]):
    """An array of symbols (capabilities, mechanisms)."""

    __slots__ = ()


class Described:
    """A described value: ``descriptor`` (a code or a symbol) and ``value``."""

    __slots__ = ("descriptor", "value")

    def __init__(self, descriptor: Any, value: Any) -> None:
        self.descriptor = descriptor
        self.value = value

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Described)
            and self.descriptor == other.descriptor
            and self.value == other.value
        )

    def __hash__(self) -> int:
        return hash((self.descriptor, repr(self.value)))

    def __repr__(self) -> str:
        return f"Described({self.descriptor!r}, {self.value!r})"


# -- decoding --------------------------------------------------------------------------------


def _as_char(v: int) -> str:
    return chr(min(v, 0x10FFFF))


def _as_uuid(v: bytes) -> uuid.UUID:
    return uuid.UUID(bytes=v)


# Fixed-width values: (width, unpack_from, what to make of the number; None: itself).
_FIXED: dict[int, tuple[int, Callable[[bytes, int], tuple[Any, ...]], Callable[[Any], Any] | None]]
_FIXED = {
    code: (struct.calcsize(fmt), struct.Struct(fmt).unpack_from, post)
    for code, fmt, post in (
        (0x50, ">B", None),
        (0x51, ">b", None),
        (0x52, ">B", None),
        (0x53, ">B", None),
        (0x54, ">b", None),
        (0x55, ">b", None),
        (0x56, ">B", bool),
        (0x60, ">H", None),
        (0x61, ">h", None),
        (0x70, ">I", None),
        (0x71, ">i", None),
        (0x72, ">f", None),
        (0x73, ">I", _as_char),
        (0x74, ">4s", None),  # decimal32, kept as its bytes
        (0x80, ">Q", None),
        (0x81, ">q", None),
        (0x82, ">d", None),
        (0x83, ">q", Timestamp),
        (0x84, ">8s", None),  # decimal64
        (0x94, ">16s", None),  # decimal128
        (0x98, ">16s", _as_uuid),
    )
}
_EMPTY: dict[int, Any] = {0x40: None, 0x41: True, 0x42: False, 0x43: 0, 0x44: 0}
_U32 = struct.Struct(">I").unpack_from
_PAST_END = "value runs past the end of its frame"


def _value(buf: bytes, pos: int, end: int, depth: int, left: list[int]) -> tuple[Any, int]:
    """The value at ``pos`` (``end``: where its frame or compound ends) and where it ends."""
    if pos >= end:
        raise AmqpDecodeError(_PAST_END)
    return _constructed(buf, buf[pos], pos + 1, end, depth, left)


def _constructed(
    buf: bytes, code: int, pos: int, end: int, depth: int, left: list[int]
) -> tuple[Any, int]:
    """The value of type ``code`` whose data starts at ``pos``. Hot: the common codes first."""
    if code == 0x40:
        return None, pos
    if 0xA0 <= code <= 0xB3 and code & 0x0F in (0, 1, 3):  # binary, string, symbol
        if code & 0x10:
            if pos + 4 > end:
                raise AmqpDecodeError(_PAST_END)
            n = _U32(buf, pos)[0]
            pos += 4
        else:
            if pos >= end:
                raise AmqpDecodeError(_PAST_END)
            n = buf[pos]
            pos += 1
        stop = pos + n
        if stop > end:
            raise AmqpDecodeError(_PAST_END)
        kind = code & 0x0F
        if kind == 0:
            return buf[pos:stop], stop
        try:
            if kind == 1:
                return buf[pos:stop].decode("utf-8"), stop
            return Symbol(buf[pos:stop].decode("ascii")), stop
        except UnicodeDecodeError:
            raise AmqpDecodeError("string or symbol is not valid text") from None
    fixed = _FIXED.get(code)
    if fixed is not None:
        width, unpack, post = fixed
        if pos + width > end:
            raise AmqpDecodeError(_PAST_END)
        number = unpack(buf, pos)[0]
        return (number if post is None else post(number)), pos + width
    if code in _EMPTY:
        return _EMPTY[code], pos
    if code == 0x45:
        _spend(left)
        return [], pos
    if code == 0x00:
        if depth >= MAX_DEPTH:
            raise AmqpDecodeError("described values nested too deeply")
        _spend(left)
        descriptor, pos = _value(buf, pos, end, depth + 1, left)
        if isinstance(descriptor, Described):
            raise AmqpDecodeError("a descriptor may not be described")
        value, pos = _value(buf, pos, end, depth + 1, left)
        return Described(descriptor, value), pos
    if code in (0xC0, 0xD0, 0xC1, 0xD1, 0xE0, 0xF0):
        _spend(left)
        return _decode_compound(buf, code, pos, end, depth, left)
    raise AmqpDecodeError(f"unknown type code 0x{code:02x}")


def _spend(left: list[int]) -> None:
    left[0] -= 1
    if left[0] < 0:
        raise AmqpDecodeError("more lists, maps and described values than the bytes allow")


def _decode_compound(
    buf: bytes, code: int, pos: int, end: int, depth: int, left: list[int]
) -> tuple[Any, int]:
    """A list, map or array: its size and count checked against its bytes."""
    if depth >= MAX_DEPTH:
        raise AmqpDecodeError("compound values nested too deeply")
    if code & 0x10:
        if pos + 8 > end:
            raise AmqpDecodeError(_PAST_END)
        size = _U32(buf, pos)[0]
        count = _U32(buf, pos + 4)[0]
        start, first = pos + 4, pos + 8
    else:
        if pos + 2 > end:
            raise AmqpDecodeError(_PAST_END)
        size, count = buf[pos], buf[pos + 1]
        start, first = pos + 1, pos + 2
    stop = start + size
    if stop > end or first > stop:
        raise AmqpDecodeError("compound value runs past the end of its frame")
    # Every element takes at least a byte: a count beyond the bytes is a lie.
    if count > size:
        raise AmqpDecodeError("compound value counts more elements than it has bytes")
    items: list[Any] = []
    pos = first
    if code in (0xE0, 0xF0):
        pos = _array(buf, pos, stop, count, depth + 1, items, left)
    else:
        for _ in range(count):
            value, pos = _value(buf, pos, stop, depth + 1, left)
            items.append(value)
    if pos != stop:
        raise AmqpDecodeError("compound value size does not match its elements")
    if code in (0xC1, 0xD1):
        if count % 2:
            raise AmqpDecodeError("a map needs an even number of elements")
        try:
            return {items[i]: items[i + 1] for i in range(0, count, 2)}, stop
        except TypeError:
            raise AmqpDecodeError("a map key must be a simple value") from None
    return items, stop


def _array(
    buf: bytes, pos: int, end: int, count: int, depth: int, items: list[Any], left: list[int]
) -> int:
    if pos >= end:
        raise AmqpDecodeError(_PAST_END)
    code = buf[pos]
    pos += 1
    descriptor = None
    if code == 0x00:
        descriptor, pos = _value(buf, pos, end, depth, left)
        if pos >= end:
            raise AmqpDecodeError(_PAST_END)
        code = buf[pos]
        pos += 1
    for _ in range(count):
        value, pos = _constructed(buf, code, pos, end, depth, left)
        if descriptor is not None:
            _spend(left)
            value = Described(descriptor, value)
        items.append(value)
    return pos


def decode(
    buf: bytes | memoryview, pos: int = 0, end: int | None = None, left: list[int] | None = None
) -> tuple[Any, int]:
    """The value that starts at ``pos``, and where the next one starts. ``left``: how many
    containers it may still make (spent in place; by default, what its bytes allow)."""
    data = buf if isinstance(buf, bytes) else bytes(buf)
    if end is None:
        end = len(data)
    if left is None:
        left = [CONTAINER_FLOOR + (end - pos) // CONTAINER_BYTES]
    try:
        return _value(data, pos, end, 0, left)
    except (struct.error, ValueError, RecursionError) as exc:
        if isinstance(exc, AmqpDecodeError):
            raise
        raise AmqpDecodeError(str(exc)) from None


def decode_all(buf: bytes | memoryview) -> list[Any]:
    """Every value of ``buf``, in order (a message's sections)."""
    values = []
    pos = 0
    left = [CONTAINER_FLOOR + len(buf) // CONTAINER_BYTES]  # one budget for all of them
    while pos < len(buf):
        value, pos = decode(buf, pos, left=left)
        values.append(value)
    return values


# -- encoding --------------------------------------------------------------------------------


def _sized(small: int, large: int, payload: bytes) -> bytes:
    n = len(payload)
    if n <= 255:
        return bytes((small, n)) + payload
    return bytes((large,)) + struct.pack(">I", n) + payload


def _compound(small: int, large: int, count: int, body: bytes) -> bytes:
    if len(body) + 1 <= 255 and count <= 255:
        return bytes((small, len(body) + 1, count)) + body
    return bytes((large,)) + struct.pack(">II", len(body) + 4, count) + body


def encode(value: Any) -> bytes:
    """The AMQP encoding of ``value`` (see the module's note for which Python type is which)."""
    kind = type(value)
    if value is None:
        return b"\x40"
    if kind is bool:
        return b"\x41" if value else b"\x42"
    if kind is str:
        return _sized(0xA1, 0xB1, value.encode("utf-8"))
    if kind is Symbol:
        return _sized(0xA3, 0xB3, value.encode("ascii"))
    if kind is int:
        if -128 <= value <= 127:
            return b"\x55" + struct.pack(">b", value)
        return b"\x81" + struct.pack(">q", value)
    if kind is Uint:
        if value == 0:
            return b"\x43"
        if value <= 255:
            return bytes((0x52, value))
        return b"\x70" + struct.pack(">I", value)
    if kind is Ulong:
        if value == 0:
            return b"\x44"
        if value <= 255:
            return bytes((0x53, value))
        return b"\x80" + struct.pack(">Q", value)
    if kind is Ubyte:
        return bytes((0x50, value))
    if kind is Ushort:
        return b"\x60" + struct.pack(">H", value)
    if kind is Timestamp:
        return b"\x83" + struct.pack(">q", value)
    if kind is float:
        return b"\x82" + struct.pack(">d", value)
    if kind is bytes:
        return _sized(0xA0, 0xB0, value)
    if kind is Described:
        return b"\x00" + encode(value.descriptor) + encode(value.value)
    if kind is list:
        if not value:
            return b"\x45"
        return _compound(0xC0, 0xD0, len(value), b"".join(map(encode, value)))
    if kind is dict:
        body = b"".join(encode(k) + encode(v) for k, v in value.items())
        return _compound(0xC1, 0xD1, 2 * len(value), body)
    if kind is SymbolArray:
        payloads = [s.encode("ascii") for s in value]
        if all(len(p) <= 255 for p in payloads):
            body = b"\xa3" + b"".join(bytes((len(p),)) + p for p in payloads)
        else:
            body = b"\xb3" + b"".join(struct.pack(">I", len(p)) + p for p in payloads)
        return _compound(0xE0, 0xF0, len(value), body)
    if kind is uuid.UUID:
        raw: bytes = value.bytes
        return b"\x98" + raw
    raise TypeError(f"no AMQP encoding for {kind.__name__}")
