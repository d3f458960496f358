"""Encoding of deliveries: each message is encoded once, only the per-link head varies.

A transfer on the wire is ``link.prefix + str(delivery) + "," + tail`` where ``tail`` is
``"id":"…","body":…,"props":{…}}``. Tails are cached on the message and shared by every link of
the process; a move-mode tail adds ``redelivered`` to the cached one (a slice, not an encoding).

A broker that stores messages may keep their props pre-encoded (``stored_props``, without ``ts``
and ``expires``, which follow from the position and the ttl) and rebuild the tail by
concatenation when it reads them back (``stored_tail``): the same text as ``message_tail``.
"""

from __future__ import annotations

from wsq.core import codec
from wsq.core.messages import Message, stored_props

__all__ = ["copy_tail", "message_tail", "stored_message", "stored_props", "stored_tail"]


def message_tail(message: Message, redelivered: int | None = None) -> str:
    """The tail of a delivery of ``message``; ``redelivered`` for a move-mode delivery."""
    tail = copy_tail(message)
    if redelivered is None:
        return tail
    # The cached tail ends with the props' and the transfer's closing braces.
    return tail[:-2] + ',"redelivered":' + str(redelivered) + "}}"


def copy_tail(message: Message) -> str:
    """The cached tail of a delivery (computed on first use, then the message's only copy of its
    body and props: ``Message.hold_in_wire``)."""
    tail = message.wire
    if tail is None:
        tail = (
            '"id":"'
            + message.id
            + '","body":'
            + message.body
            + ',"props":'
            + codec.dumps(message.props())
            + "}"
        )
        message.hold_in_wire(tail)
    return tail


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


def stored_message(
    id_: str,
    body: str,
    props: str,
    subject: str | None,
    ttl_ms: int | None,
    size: int | None = None,
) -> Message:
    """A stored message from its id, its body's JSON text and its ``stored_props``: its wire
    tail concatenated (never encoded), which holds body and props from then on. ``size``: its
    ``stored_size`` where the broker counted it."""
    ms_text, _, seq = id_.partition("-")
    ms = int(ms_text)
    expires_at = None if ttl_ms is None else ms + ttl_ms
    return Message(
        id_,
        body,
        ts=ms,
        publisher="",
        subject=subject,
        expires_at=expires_at,
        pos=(ms, int(seq)),
        wire=stored_tail(id_, ms_text, body, props, expires_at),
        size=size,
    )
