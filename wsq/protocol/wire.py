"""Encoding of deliveries: each message is encoded once, only the per-link head varies.

A transfer on the wire is ``link.prefix + str(delivery) + "," + tail`` where ``tail`` is
``"id":"…","body":…,"props":{…}}``. Copy-mode tails are cached on the message and shared by every
link of the process; move-mode tails carry ``redelivered`` and are built per delivery.
"""

from __future__ import annotations

from wsq.broker.base import Message
from wsq.protocol import codec


def message_tail(message: Message, redelivered: int | None = None) -> str:
    props = message.props()
    if redelivered is not None:
        props["redelivered"] = redelivered
    return (
        '"id":"' + message.id + '","body":' + message.body + ',"props":' + codec.dumps(props) + "}"
    )


def copy_tail(message: Message) -> str:
    """The cached tail of a copy-mode delivery (computed on first use)."""
    tail = message.wire
    if tail is None:
        tail = message.wire = message_tail(message)
    return tail
