"""Stream entries: a new message as the fields of an entry, and an entry read back as a Message.

Entry fields are one letter: ``b`` body (its JSON text), ``x`` the props as they go on the wire
without ``ts`` and ``expires`` (``wsq.core.wire.stored_props``), and for the Lua scripts ``s``
subject (filters) and ``t`` ttl in ms (expiry); entries written before ``retention_max_bytes``
also have ``z``, the headers' size, no longer read.
A reader builds each delivery's wire tail by concatenation (no encoding) and decodes ``x`` only
when something asks for the publisher, message_id, content_type or headers. Entries of the
first format (``p`` publisher, ``m`` message_id, ``c`` content_type, ``h`` headers as separate
fields) are still read, so that an upgrade keeps what Redis holds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from wsq.core.messages import Message, NewMessage
from wsq.core.wire import stored_message, stored_props


def entry_fields(nm: NewMessage) -> list[str]:
    """The fields of a new entry: ``b`` body, ``x`` the props as they go on the wire (without
    ``ts`` and ``expires``: readers concatenate the tail instead of encoding it), and for the Lua
    scripts ``s`` subject (filters) and ``t`` ttl (expiry). What the entry costs the address
    (``retention_max_bytes``, reads' byte budgets) is the length of ``b`` and ``x``
    (``wsq.core.messages.stored_size``), which the scripts take with ``#``."""
    out = [
        "b",
        nm.body,
        "x",
        stored_props(nm.publisher, nm.subject, nm.message_id, nm.content_type, nm.headers),
    ]
    if nm.subject is not None:
        out += ("s", nm.subject)
    if nm.ttl_ms is not None:
        out += ("t", str(nm.ttl_ms))
    return out


def entry_message(id_: str, flat: Sequence[str]) -> Message:
    """An entry -> Message, its wire tail already built (``entry_fields``' format)."""
    n = len(flat)
    if n < 4 or flat[2] != "x":
        return _old_message(id_, flat)
    subject = ttl = None
    for i in range(4, n - 1, 2):
        name = flat[i]
        if name == "s":
            subject = flat[i + 1]
        elif name == "t":
            ttl = flat[i + 1]
    return stored_message(id_, flat[1], flat[3], subject, None if ttl is None else int(ttl))


def _old_message(id_: str, flat: Sequence[str]) -> Message:
    """An entry written before ``x`` (``p`` publisher, ``m`` message_id, ``c`` content_type,
    ``h`` headers as JSON): still read, so that an upgrade keeps what Redis holds."""
    f = dict(zip(flat[::2], flat[1::2], strict=True))
    ms = int(id_.partition("-")[0])
    ttl = f.get("t")
    headers = f.get("h")
    return Message(
        id_,
        f.get("b", "null"),
        ts=ms,
        publisher=f.get("p", ""),
        subject=f.get("s"),
        message_id=f.get("m"),
        content_type=f.get("c"),
        headers=json.loads(headers) if headers is not None else None,
        expires_at=ms + int(ttl) if ttl is not None else None,
    )


def raw_reply(response: Any, **options: Any) -> Any:
    """A response callback that keeps Redis's reply as it is (no dict per entry)."""
    return response


def flat_row(row: Any) -> tuple[str, list[str]]:
    """An XRANGE row (id, [field, value, …]) -> (id, flat fields); (id, {field: value}) too,
    as redis-py parses it by default."""
    id_, fields = row
    if isinstance(fields, dict):
        flat: list[str] = []
        for k, v in fields.items():
            flat += (k, v)
        return str(id_), flat
    return str(id_), fields
