"""AMQP 1.0 framing (part 2.3) and the performatives' descriptors: a frame's header, its body as
a described list, and the wsq errors as AMQP error conditions.
"""

from __future__ import annotations

import struct
from typing import Any

from wsq.amqp.codec import Described, Symbol, Ubyte, Ulong, encode
from wsq.core.errors import WsqError

# The protocol headers (part 2.2 and 5.3.1): "AMQP", a protocol id, version 1.0.0.
AMQP_HEADER = b"AMQP\x00\x01\x00\x00"
SASL_HEADER = b"AMQP\x03\x01\x00\x00"
HEADER_SIZE = 8
# The smallest max-frame-size AMQP allows (part 2.7.1).
MIN_MAX_FRAME_SIZE = 512

FRAME_AMQP = 0
FRAME_SASL = 1

# Performatives and SASL frames (part 2.7, 5.3.3).
OPEN, BEGIN, ATTACH, FLOW, TRANSFER, DISPOSITION, DETACH, END, CLOSE = range(0x10, 0x19)
ERROR = 0x1D
SASL_MECHANISMS, SASL_INIT, SASL_CHALLENGE, SASL_RESPONSE, SASL_OUTCOME = range(0x40, 0x45)
# Delivery states (part 3.4) and terminus types (part 3.5).
RECEIVED, ACCEPTED, REJECTED, RELEASED, MODIFIED = range(0x23, 0x28)
SOURCE, TARGET = 0x28, 0x29
DELETE_ON_CLOSE = 0x2B
# Message sections (part 3.2).
HEADER, DELIVERY_ANNOTATIONS, MESSAGE_ANNOTATIONS, PROPERTIES = 0x70, 0x71, 0x72, 0x73
APPLICATION_PROPERTIES, DATA, AMQP_SEQUENCE, AMQP_VALUE, FOOTER = 0x74, 0x75, 0x76, 0x77, 0x78

# The same descriptors by name: a peer may use either form.
_NAMES = {
    "amqp:open:list": OPEN,
    "amqp:begin:list": BEGIN,
    "amqp:attach:list": ATTACH,
    "amqp:flow:list": FLOW,
    "amqp:transfer:list": TRANSFER,
    "amqp:disposition:list": DISPOSITION,
    "amqp:detach:list": DETACH,
    "amqp:end:list": END,
    "amqp:close:list": CLOSE,
    "amqp:error:list": ERROR,
    "amqp:sasl-mechanisms:list": SASL_MECHANISMS,
    "amqp:sasl-init:list": SASL_INIT,
    "amqp:sasl-challenge:list": SASL_CHALLENGE,
    "amqp:sasl-response:list": SASL_RESPONSE,
    "amqp:sasl-outcome:list": SASL_OUTCOME,
    "amqp:received:list": RECEIVED,
    "amqp:accepted:list": ACCEPTED,
    "amqp:rejected:list": REJECTED,
    "amqp:released:list": RELEASED,
    "amqp:modified:list": MODIFIED,
    "amqp:source:list": SOURCE,
    "amqp:target:list": TARGET,
    "amqp:delete-on-close:list": DELETE_ON_CLOSE,
    "amqp:header:list": HEADER,
    "amqp:delivery-annotations:map": DELIVERY_ANNOTATIONS,
    "amqp:message-annotations:map": MESSAGE_ANNOTATIONS,
    "amqp:properties:list": PROPERTIES,
    "amqp:application-properties:map": APPLICATION_PROPERTIES,
    "amqp:data:binary": DATA,
    "amqp:amqp-sequence:list": AMQP_SEQUENCE,
    "amqp:amqp-value:*": AMQP_VALUE,
    "amqp:footer:map": FOOTER,
}

# SASL outcome codes (part 5.3.3.6).
SASL_OK = 0
SASL_AUTH = 1
SASL_SYS = 2

# wsq's conditions as AMQP's (part 2.8.15 ff.): what an AMQP client's library knows how to read.
# The wsq condition travels beside it, in the error's info map.
_CONDITIONS = {
    "wsq:unauthorized": "amqp:unauthorized-access",
    "wsq:token-expired": "amqp:unauthorized-access",
    "wsq:forbidden": "amqp:unauthorized-access",
    "wsq:invalid-frame": "amqp:invalid-field",
    "wsq:frame-too-large": "amqp:connection:framing-error",
    "wsq:resource-limit-exceeded": "amqp:resource-limit-exceeded",
    "wsq:transfer-limit-exceeded": "amqp:link:transfer-limit-exceeded",
    "wsq:idle-timeout": "amqp:resource-limit-exceeded",
    "wsq:not-found": "amqp:not-found",
    "wsq:internal-error": "amqp:internal-error",
    "wsq:going-away": "amqp:connection:forced",
}


def amqp_condition(error: WsqError) -> str:
    """The AMQP condition of a wsq error (an AMQP-specific error names its own)."""
    own = getattr(error, "amqp_condition", None)
    if isinstance(own, str):
        return own
    return _CONDITIONS.get(error.condition, "amqp:internal-error")


def error_value(error: WsqError) -> Described:
    """``error`` as an AMQP error (condition, description, info with the wsq condition)."""
    info = {Symbol("wsq-condition"): Symbol(error.condition)}
    return Described(Ulong(ERROR), [Symbol(amqp_condition(error)), error.description[:1000], info])


def descriptor_code(value: Any) -> int | None:
    """The numeric descriptor of a described value (named or numbered), None if unknown."""
    if not isinstance(value, Described):
        return None
    d = value.descriptor
    if type(d) is int:
        return d
    if isinstance(d, Symbol):
        return _NAMES.get(d)
    return None


def frame(channel: int, code: int, fields: list[Any], payload: bytes = b"", kind: int = 0) -> bytes:
    """One frame: a performative (its list, trailing nulls dropped) and a payload."""
    while fields and fields[-1] is None:
        fields.pop()
    body = encode(Described(Ulong(code), fields)) + payload
    return struct.pack(">IBBH", len(body) + 8, 2, kind, channel) + body


def frame_head(body_size: int, channel: int) -> bytes:
    """The 8 bytes in front of an AMQP frame body of ``body_size`` bytes."""
    return struct.pack(">IBBH", body_size + 8, 2, FRAME_AMQP, channel)


EMPTY_FRAME = struct.pack(">IBBH", 8, 2, FRAME_AMQP, 0)

# A transfer to the client, encoded by hand with fixed widths (every delivery of a link has a
# head of the same length, packed at once): the frame header, the descriptor, a list8 of
# handle (uint), delivery-id (uint), delivery-tag (4-byte binary: the delivery-id),
# message-format (uint 0) and settled.
_TRANSFER_HEAD = struct.Struct(">IBBH3sBBBBIBIBBIBB")
TRANSFER_HEAD_SIZE = _TRANSFER_HEAD.size
_TRANSFER_DESCRIPTOR = b"\x00\x53\x14"


def transfer_head(ch: int, handle: int, delivery: int, settled: bool, payload: int) -> bytes:
    """The head of a one-frame transfer of ``payload`` bytes (what follows is the message)."""
    d = delivery & 0xFFFFFFFF
    return _TRANSFER_HEAD.pack(
        TRANSFER_HEAD_SIZE + payload,
        2,
        FRAME_AMQP,
        ch,
        _TRANSFER_DESCRIPTOR,
        0xC0,
        TRANSFER_HEAD_SIZE - 13,  # the list's size: its count byte and its fields
        5,
        0x70,
        handle,
        0x70,
        d,
        0xA0,
        4,
        d,
        0x43,  # message-format 0
        0x41 if settled else 0x42,
    )


def field(fields: list[Any], i: int, default: Any = None) -> Any:
    """Field ``i`` of a performative's list (absent or null: ``default``)."""
    if i < len(fields) and fields[i] is not None:
        return fields[i]
    return default


def outcome_value(code: int, fields: list[Any] | None = None) -> Described:
    return Described(Ulong(code), fields or [])


def sasl_outcome(code: int) -> bytes:
    return frame(0, SASL_OUTCOME, [Ubyte(code)], kind=FRAME_SASL)
