"""AMQP messages (part 3.2) and wsq messages, both ways (docs/amqp.md, "Messages").

In: a transfer's payload (its sections) becomes what a wsq.v1 transfer would publish, checked by
the same props validator (``wsq.core.props``). Out: the hub's cached wire tail of a delivery (the
same text every wsq.v1 socket gets) becomes the AMQP sections, encoded once per process for every
AMQP link that delivers it (``encoded_delivery``).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from typing import Any

from wsq.amqp.codec import (
    AmqpDecodeError,
    Described,
    Symbol,
    Timestamp,
    Uint,
    Ulong,
    decode_all,
    encode,
)
from wsq.amqp.frames import (
    AMQP_SEQUENCE,
    AMQP_VALUE,
    APPLICATION_PROPERTIES,
    DATA,
    HEADER,
    MESSAGE_ANNOTATIONS,
    PROPERTIES,
    descriptor_code,
    field,
)
from wsq.core import codec
from wsq.core.props import PropsError, parse_props
from wsq.protocol.events import PublishItem

JSON_TYPES = ("application/json",)
# Message annotations carrying what AMQP's properties have no field for ("x-opt-" is AMQP's
# prefix for annotations a peer may ignore).
ANNOTATION_ID = Symbol("x-opt-wsq-id")
ANNOTATION_PUBLISHER = Symbol("x-opt-wsq-publisher")
_INT64 = 2**63


class NotJson(ValueError):
    """An AMQP value with no JSON form (binary, described, a non-string map key …)."""


def to_json(value: Any) -> Any:
    """An AMQP value as JSON (symbols and uuids as strings, timestamps as ms)."""
    kind = type(value)
    if value is None or kind in (bool, int, str):
        return value
    if kind in (Symbol, Uint, Ulong, Timestamp) or isinstance(value, int):
        return str(value) if isinstance(value, str) else int(value)
    if kind is float:
        if not math.isfinite(value):
            raise NotJson("a number that is not finite")
        return value
    if kind is uuid.UUID:
        return str(value)
    if kind is list:
        return [to_json(v) for v in value]
    if kind is dict:
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise NotJson("a map key that is not a string")
            out[str(k)] = to_json(v)
        return out
    raise NotJson(f"an AMQP {kind.__name__} value")


def from_json(value: Any) -> Any:
    """A JSON value as AMQP (objects as maps with string keys, integers as long)."""
    kind = type(value)
    if kind is int and not -_INT64 <= value < _INT64:
        return float(value)
    if kind is list:
        return [from_json(v) for v in value]
    if kind is dict:
        return {k: from_json(v) for k, v in value.items()}
    return value


def _message_id(value: Any) -> str | None:
    """A message-id of any AMQP kind (string, uuid, ulong, binary) as wsq's string."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, uuid.UUID)):
        return str(value)
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value.hex()
    raise NotJson("a message-id that is not a string, uuid, ulong or binary")


def _name(key: str) -> str:
    return {
        "subject": "properties.subject",
        "message_id": "properties.message-id",
        "content_type": "properties.content-type",
        "headers": "application-properties",
        "ttl": "header.ttl",
    }.get(key, key)


def publish_item(delivery: int, settled: bool, payload: bytes) -> PublishItem:
    """The message of a client transfer, as wsq.v1's ``transfer`` would publish it; a message
    that breaks a rule is an item with ``error`` (answered ``rejected``), never a link error."""
    try:
        sections = decode_all(payload)
    except AmqpDecodeError as exc:
        return PublishItem(delivery, settled, "null", error=f"message: {exc}")
    fields: dict[str, Any] = {}
    body: Any = None
    data: list[bytes] = []
    sequence: list[Any] = []
    has_value = False
    try:
        for section in sections:
            code = descriptor_code(section)
            value = section.value if isinstance(section, Described) else None
            if code == HEADER and isinstance(value, list):
                ttl = field(value, 2)
                if ttl is not None:
                    fields["ttl"] = ttl
            elif code == PROPERTIES and isinstance(value, list):
                fields["message_id"] = _message_id(field(value, 0))
                fields["subject"] = field(value, 3)
                content_type = field(value, 6)
                fields["content_type"] = None if content_type is None else str(content_type)
            elif code == APPLICATION_PROPERTIES and isinstance(value, dict):
                fields["headers"] = to_json(value)
            elif code == AMQP_VALUE:
                body = to_json(value)
                has_value = True
            elif code == DATA and isinstance(value, bytes):
                data.append(value)
            elif code == AMQP_SEQUENCE and isinstance(value, list):
                sequence.extend(to_json(value))
            elif code is None or code not in (0x71, MESSAGE_ANNOTATIONS, 0x78):
                raise NotJson("a section that is not a message section")
        if data:
            content_type = fields.get("content_type")
            if content_type is not None and not _is_json_type(content_type):
                raise NotJson("a data body whose content-type is not application/json")
            try:
                body = codec.loads(b"".join(data))
            except codec.DecodeError:
                raise NotJson("a data body that is not JSON") from None
        elif sequence and not has_value:
            body = sequence
        text = codec.dumps(body)
        props = parse_props(fields, _name)
    except NotJson as exc:
        return PublishItem(delivery, settled, "null", error=f"the message has {exc}")
    except PropsError as exc:
        return PublishItem(delivery, settled, "null", error=exc.description)
    except (TypeError, ValueError):
        return PublishItem(delivery, settled, "null", error="the body is nested too deeply")
    return PublishItem(delivery, settled, text, props)


def _is_json_type(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media in JSON_TYPES or media.endswith("+json")


def message_sections(tail: str) -> bytes:
    """A delivery's wire tail (``"id":…,"body":…,"props":{…}}``) as an AMQP message."""
    value = codec.loads("{" + tail)
    props: Mapping[str, Any] = value.get("props") or {}
    out = []
    redelivered = props.get("redelivered")
    if redelivered is not None:
        out.append(
            encode(
                Described(Ulong(HEADER), [None, None, None, redelivered == 0, Uint(redelivered)])
            )
        )
    annotations: dict[Any, Any] = {ANNOTATION_ID: value["id"]}
    if props.get("publisher"):
        annotations[ANNOTATION_PUBLISHER] = props["publisher"]
    out.append(encode(Described(Ulong(MESSAGE_ANNOTATIONS), annotations)))
    content_type = props.get("content_type")
    expires = props.get("expires")
    ts = props.get("ts")
    fields: list[Any] = [
        props.get("message_id"),
        None,
        None,
        props.get("subject"),
        None,
        None,
        None if content_type is None else Symbol(content_type),
        None,
        None if expires is None else Timestamp(expires),
        None if ts is None else Timestamp(ts),
    ]
    while fields and fields[-1] is None:
        fields.pop()
    if fields:
        out.append(encode(Described(Ulong(PROPERTIES), fields)))
    headers = props.get("headers")
    if headers:
        out.append(encode(Described(Ulong(APPLICATION_PROPERTIES), from_json(headers))))
    out.append(encode(Described(Ulong(AMQP_VALUE), from_json(value.get("body")))))
    return b"".join(out)


# Deliveries encoded as AMQP, by their wire tail: a message fanned out to many AMQP links is
# converted once per process, as its tail is encoded once. Bounded in entries and bytes; the
# oldest go first (a fan-out uses an entry within one batch).
_CACHE: dict[str, bytes] = {}
_CACHE_MAX_ENTRIES = 4096
_CACHE_MAX_BYTES = 16 * 1024 * 1024
_cache_bytes = 0


def encoded_delivery(tail: str) -> bytes:
    """``message_sections(tail)``, from the process's cache when another link had it."""
    global _cache_bytes
    cached = _CACHE.get(tail)
    if cached is not None:
        return cached
    encoded = message_sections(tail)
    size = len(encoded) + len(tail)
    if size <= _CACHE_MAX_BYTES // 4:
        while _CACHE and (
            len(_CACHE) >= _CACHE_MAX_ENTRIES or _cache_bytes + size > _CACHE_MAX_BYTES
        ):
            old_tail = next(iter(_CACHE))
            _cache_bytes -= len(_CACHE.pop(old_tail)) + len(old_tail)
        _CACHE[tail] = encoded
        _cache_bytes += size
    return encoded
