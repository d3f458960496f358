"""Encoding of deliveries: each message is encoded once, only the per-link head varies.

A transfer on the wire is ``link.prefix + str(delivery) + "," + tail`` where ``tail`` is
``"id":"…","body":…,"props":{…}}``. Tails are cached on the message and shared by every link of
the process; a move-mode tail adds ``redelivered`` to the cached one (a slice, not an encoding).

A broker that stores messages may keep their props pre-encoded (``stored_props``, without ``ts``
and ``expires``, which follow from the position and the ttl) and rebuild the tail by
concatenation when it reads them back (``stored_tail``): the same text as ``message_tail``.
"""

from __future__ import annotations

from typing import Any

from wsq.core import codec
from wsq.core.messages import Message


def message_tail(message: Message, redelivered: int | None = None) -> str:
    """The tail of a delivery of ``message``; ``redelivered`` for a move-mode delivery."""
    tail = copy_tail(message)
    if redelivered is None:
        return tail
    # The cached tail ends with the props' and the transfer's closing braces.
    return tail[:-2] + ',"redelivered":' + str(redelivered) + "}}"


def copy_tail(message: Message) -> str:
    """The cached tail of a delivery (computed on first use)."""
    tail = message.wire
    if tail is None:
        tail = message.wire = (
            '"id":"'
            + message.id
            + '","body":'
            + message.body
            + ',"props":'
            + codec.dumps(message.props())
            + "}"
        )
    return tail


def stored_props(
    publisher: str,
    subject: str | None = None,
    message_id: str | None = None,
    content_type: str | None = None,
    headers: Any = None,
) -> str:
    """The props object of a message as stored, without ``ts`` and ``expires`` (the order of
    ``Message.props``). Raises TypeError / ValueError for headers JSON cannot hold."""
    props: dict[str, Any] = {"publisher": publisher}
    if subject is not None:
        props["subject"] = subject
    if message_id is not None:
        props["message_id"] = message_id
    if content_type is not None:
        props["content_type"] = content_type
    if headers is not None:
        props["headers"] = dict(headers)
    return codec.dumps(props)


def stored_tail(id_: str, ms: str, body: str, props: str, expires_at: int | None) -> str:
    """``message_tail`` of a stored message, from its id, the id's ms part, its body's JSON
    text and its ``stored_props``: concatenated, not encoded."""
    head = '"id":"' + id_ + '","body":' + body + ',"props":{"ts":' + ms
    rest = props[1:-1]
    if rest:
        head += "," + rest
    if expires_at is not None:
        head += ',"expires":' + str(expires_at)
    return head + "}}"
