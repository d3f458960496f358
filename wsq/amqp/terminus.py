"""An AMQP ``attach`` as the wsq.v1 ``attach`` it means (docs/amqp.md, "Links").

The translation is all this module does: the result goes through wsq.v1's own link checks
(``wsq.protocol.frames.configure_link``), so an address, a pattern, a position or a lease is
judged by the same rule whichever protocol carried it.

- A receiver's source address is a wsq address; ``address::group`` names a consumer group
  (as ActiveMQ Artemis names a queue of an address) and means a queue link.
- ``distribution-mode`` ``move`` is a queue link, ``copy`` a feed link; the source capability
  ``queue`` or ``topic`` says the same for clients that cannot set a distribution mode.
- Filters (by descriptor): a subject pattern (``wsq:subject-filter:string`` or the legacy
  topic and direct bindings), a start position (``wsq:position-filter:string``: ``$``, ``^``
  or a position) and a rewind (``wsq:rewind-filter:uint``). Other filters are left out of our
  answer, which AMQP reads as "not applied".
- Link properties: ``wsq-lease`` (ms) for a queue link.
"""

from __future__ import annotations

from typing import Any

from wsq.amqp.codec import Described, Symbol, Ulong
from wsq.amqp.frames import SOURCE, TARGET, descriptor_code, field
from wsq.protocol.frames import invalid

SUBJECT_FILTERS = frozenset(
    {
        "wsq:subject-filter:string",
        "apache.org:legacy-amqp-topic-binding:string",
        "apache.org:legacy-amqp-direct-binding:string",
        0x0000468C00000000,
        0x0000468C00000001,
    }
)
POSITION_FILTER = "wsq:position-filter:string"
REWIND_FILTER = "wsq:rewind-filter:uint"
GROUP_SEPARATOR = "::"


def terminus_fields(value: Any, code: int, what: str) -> list[Any]:
    """The fields of a source or target (an absent one has none)."""
    if value is None:
        return []
    if descriptor_code(value) != code or not isinstance(value.value, list):
        raise invalid(f"attach: the {what} is not an AMQP {what}")
    fields: list[Any] = value.value
    return fields


def _properties(fields: list[Any]) -> dict[Any, Any]:
    properties = field(fields, 13, {})
    if not isinstance(properties, dict):
        raise invalid("attach: 'properties' must be a map")
    return properties


def sender_attach(fields: list[Any]) -> dict[str, Any]:
    """The wsq.v1 attach of a client's sender link (it publishes to its target's address)."""
    target = terminus_fields(field(fields, 6), TARGET, "target")
    if field(target, 4) is True:
        raise invalid("attach: dynamic targets are not supported")
    return {"op": "attach", "role": "sender", "address": field(target, 0)}


def receiver_attach(fields: list[Any]) -> tuple[dict[str, Any], dict[Any, Any]]:
    """The wsq.v1 attach of a client's receiver link, and the filters it applies (for the
    source of our answer)."""
    source = terminus_fields(field(fields, 5), SOURCE, "source")
    if field(source, 4) is True:
        raise invalid("attach: dynamic sources are not supported")
    address = field(source, 0)
    frame: dict[str, Any] = {"op": "attach", "role": "receiver"}
    mode = field(source, 6)
    capabilities = field(source, 10)
    if isinstance(capabilities, str):
        capabilities = [capabilities]
    if mode is None and isinstance(capabilities, list):
        if "queue" in capabilities:
            mode = "move"
        elif "topic" in capabilities:
            mode = "copy"
    if isinstance(address, str) and GROUP_SEPARATOR in address:
        address, _, group = address.partition(GROUP_SEPARATOR)
        if mode not in (None, "move"):
            raise invalid("attach: 'address::group' names a queue: distribution-mode move")
        mode = "move"
        frame["group"] = group
    frame["address"] = address
    frame["mode"] = mode if mode is not None else "copy"
    if mode not in (None, "move", "copy"):
        raise invalid("attach: 'distribution-mode' must be move or copy")
    snd_settle_mode = field(fields, 3, 2)
    frame["settled"] = snd_settle_mode == 1
    applied: dict[Any, Any] = {}
    filters = field(source, 7, {})
    if not isinstance(filters, dict):
        raise invalid("attach: the source's filter must be a map")
    for name, value in filters.items():
        if not isinstance(value, Described):
            continue
        descriptor = value.descriptor
        if descriptor in SUBJECT_FILTERS:
            frame["filter"] = {"subject": value.value}
        elif descriptor == POSITION_FILTER:
            frame["from"] = value.value
        elif descriptor == REWIND_FILTER:
            frame["rewind"] = value.value
        else:
            continue
        applied[name] = value
    properties = _properties(fields)
    lease = properties.get(Symbol("wsq-lease"))
    if lease is not None:
        frame["lease"] = lease
    return frame, applied


def answer_source(fields: list[Any], mode: str, applied: dict[Any, Any]) -> Described:
    """Our answer's source for a client's receiver link: its own, with the mode we serve and
    only the filters we apply."""
    source = list(terminus_fields(field(fields, 5), SOURCE, "source"))
    source += [None] * (11 - len(source))
    source[6] = Symbol(mode)
    source[7] = applied or None
    return Described(Ulong(SOURCE), source[:11])
