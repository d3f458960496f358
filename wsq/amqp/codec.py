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

_FIXED: dict[int, tuple[int, Callable[[bytes], Any]]] = {
    0x50: (1, lambda b: b[0]),
    0x51: (1, lambda b: struct.unpack(">b", b)[0]),
    0x52: (1, lambda b: b[0]),
    0x53: (1, lambda b: b[0]),
    0x54: (1, lambda b: struct.unpack(">b", b)[0]),
    0x55: (1, lambda b: struct.unpack(">b", b)[0]),
    0x56: (1, lambda b: b[0] != 0),
    0x60: (2, lambda b: struct.unpack(">H", b)[0]),
    0x61: (2, lambda b: struct.unpack(">h", b)[0]),
    0x70: (4, lambda b: struct.unpack(">I", b)[0]),
    0x71: (4, lambda b: struct.unpack(">i", b)[0]),
    0x72: (4, lambda b: struct.unpack(">f", b)[0]),
    0x73: (4, lambda b: chr(min(struct.unpack(">I", b)[0], 0x10FFFF))),
    0x74: (4, bytes),  # decimal32, kept as its bytes
    0x80: (8, lambda b: struct.unpack(">Q", b)[0]),
    0x81: (8, lambda b: struct.unpack(">q", b)[0]),
    0x82: (8, lambda b: struct.unpack(">d", b)[0]),
    0x83: (8, lambda b: Timestamp(struct.unpack(">q", b)[0])),
    0x84: (8, bytes),  # decimal64
    0x94: (16, bytes),  # decimal128
    0x98: (16, lambda b: uuid.UUID(bytes=bytes(b))),
}
_EMPTY: dict[int, Any] = {0x40: None, 0x41: True, 0x42: False, 0x43: 0, 0x44: 0, 0x45: []}


class _Reader:
    __slots__ = ("buf", "end", "pos")

    def __init__(self, buf: bytes | memoryview, pos: int, end: int) -> None:
        self.buf = buf
        self.pos = pos
        self.end = end

    def take(self, n: int) -> bytes:
        pos = self.pos
        if n < 0 or pos + n > self.end:
            raise AmqpDecodeError("value runs past the end of its frame")
        self.pos = pos + n
        return bytes(self.buf[pos : pos + n])

    def byte(self) -> int:
        pos = self.pos
        if pos >= self.end:
            raise AmqpDecodeError("value runs past the end of its frame")
        self.pos = pos + 1
        return self.buf[pos]

    def size(self, wide: bool) -> int:
        return struct.unpack(">I", self.take(4))[0] if wide else self.byte()

    def value(self, depth: int = 0) -> Any:
        return self.constructed(self.byte(), depth)

    def constructed(self, code: int, depth: int) -> Any:
        if code == 0x00:
            if depth >= MAX_DEPTH:
                raise AmqpDecodeError("described values nested too deeply")
            descriptor = self.value(depth + 1)
            if isinstance(descriptor, Described):
                raise AmqpDecodeError("a descriptor may not be described")
            return Described(descriptor, self.value(depth + 1))
        if code in _EMPTY:
            empty = _EMPTY[code]
            return [] if code == 0x45 else empty
        fixed = _FIXED.get(code)
        if fixed is not None:
            width, convert = fixed
            return convert(self.take(width))
        if code in (0xA0, 0xB0):
            return self.take(self.size(code == 0xB0))
        if code in (0xA1, 0xB1, 0xA3, 0xB3):
            raw = self.take(self.size(code & 0x10 != 0))
            try:
                text = raw.decode("ascii" if code & 0x02 else "utf-8")
            except UnicodeDecodeError:
                raise AmqpDecodeError("string or symbol is not valid text") from None
            return Symbol(text) if code & 0x02 else text
        if code in (0xC0, 0xD0, 0xC1, 0xD1, 0xE0, 0xF0):
            if depth >= MAX_DEPTH:
                raise AmqpDecodeError("compound values nested too deeply")
            wide = code & 0x10 != 0
            size = self.size(wide)
            start = self.pos
            if start + size > self.end:
                raise AmqpDecodeError("compound value runs past the end of its frame")
            count = self.size(wide)
            inner = _Reader(self.buf, self.pos, start + size)
            # Every element takes at least a byte: a count beyond the bytes is a lie.
            if count > size:
                raise AmqpDecodeError("compound value counts more elements than it has bytes")
            if code in (0xE0, 0xF0):
                items = inner.array(count, depth + 1)
            else:
                items = [inner.value(depth + 1) for _ in range(count)]
            if inner.pos != start + size:
                raise AmqpDecodeError("compound value size does not match its elements")
            self.pos = start + size
            if code in (0xC1, 0xD1):
                if count % 2:
                    raise AmqpDecodeError("a map needs an even number of elements")
                try:
                    return {items[i]: items[i + 1] for i in range(0, count, 2)}
                except TypeError:
                    raise AmqpDecodeError("a map key must be a simple value") from None
            return items
        raise AmqpDecodeError(f"unknown type code 0x{code:02x}")

    def array(self, count: int, depth: int) -> list[Any]:
        code = self.byte()
        descriptor = None
        if code == 0x00:
            descriptor = self.value(depth)
            code = self.byte()
        items = []
        for _ in range(count):
            value = self.constructed(code, depth) if code not in _EMPTY else _EMPTY[code]
            items.append(value if descriptor is None else Described(descriptor, value))
        return items


def decode(buf: bytes | memoryview, pos: int = 0, end: int | None = None) -> tuple[Any, int]:
    """The value that starts at ``pos``, and where the next one starts."""
    reader = _Reader(buf, pos, len(buf) if end is None else end)
    try:
        value = reader.value()
    except (struct.error, ValueError, RecursionError) as exc:
        if isinstance(exc, AmqpDecodeError):
            raise
        raise AmqpDecodeError(str(exc)) from None
    return value, reader.pos


def decode_all(buf: bytes | memoryview) -> list[Any]:
    """Every value of ``buf``, in order (a message's sections)."""
    values = []
    pos = 0
    while pos < len(buf):
        value, pos = decode(buf, pos)
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
