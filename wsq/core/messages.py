"""Messages as every layer sees them: offered for publishing, stored and read back, leased to
a consumer, and the outcomes that settle a lease.

``Message`` is read far more often than it is written: a broker builds it once per read and the
hub shares it between every link of the process, so it caches its own wire encoding (``wire``)
and keeps its rarely read props undecoded (``stored``) until someone asks.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from wsq.core import codec
from wsq.core.positions import parse_position


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message offered for publishing. ``body`` is the JSON text of the body, encoded once."""

    body: str
    publisher: str
    subject: str | None = None
    message_id: str | None = None
    content_type: str | None = None
    headers: Mapping[str, Any] | None = None
    ttl_ms: int | None = None


class Message:
    """A stored message as read back. ``wire`` caches its encoding for the hub (encode once).

    ``stored``: the props as a broker stored them, JSON text of ``publisher``, ``message_id``,
    ``content_type`` and ``headers`` (``wsq.core.wire.stored_props``), decoded only when one
    of them is asked for: live fan-out needs none of them once ``wire`` is built.
    """

    __slots__ = (
        "_content_type",
        "_headers",
        "_message_id",
        "_publisher",
        "_stored",
        "body",
        "expires_at",
        "id",
        "pos",
        "subject",
        "ts",
        "wire",
    )

    def __init__(
        self,
        id: str,
        body: str,
        *,
        ts: int,
        publisher: str,
        subject: str | None = None,
        message_id: str | None = None,
        content_type: str | None = None,
        headers: Mapping[str, Any] | None = None,
        expires_at: int | None = None,
        pos: tuple[int, int] | None = None,
        wire: str | None = None,
        stored: str | None = None,
    ) -> None:
        self.id = id
        # ``pos`` when the caller has parsed ``id`` already (a broker reading its own ids).
        self.pos = parse_position(id) if pos is None else pos
        self.body = body
        self.ts = ts
        self._publisher = publisher
        self.subject = subject
        self._message_id = message_id
        self._content_type = content_type
        self._headers = headers
        self.expires_at = expires_at
        self.wire = wire
        self._stored = stored

    def _decode(self, stored: str) -> None:
        props = codec.loads(stored)
        if not isinstance(props, dict):
            props = {}
        self._stored = None
        self._publisher = str(props.get("publisher", ""))
        self._message_id = props.get("message_id")
        self._content_type = props.get("content_type")
        self._headers = props.get("headers")

    @property
    def publisher(self) -> str:
        if self._stored is not None:
            self._decode(self._stored)
        return self._publisher

    @property
    def message_id(self) -> str | None:
        if self._stored is not None:
            self._decode(self._stored)
        return self._message_id

    @property
    def content_type(self) -> str | None:
        if self._stored is not None:
            self._decode(self._stored)
        return self._content_type

    @property
    def headers(self) -> Mapping[str, Any] | None:
        if self._stored is not None:
            self._decode(self._stored)
        return self._headers

    def props(self) -> dict[str, Any]:
        """The ``props`` object of the wire (absent fields left out)."""
        props: dict[str, Any] = {"ts": self.ts, "publisher": self.publisher}
        if self.subject is not None:
            props["subject"] = self.subject
        if self.message_id is not None:
            props["message_id"] = self.message_id
        if self.content_type is not None:
            props["content_type"] = self.content_type
        if self.headers is not None:
            props["headers"] = dict(self.headers)
        if self.expires_at is not None:
            props["expires"] = self.expires_at
        return props

    def __repr__(self) -> str:
        return f"Message({self.id!r}, subject={self.subject!r})"


def message_size(m: Message) -> int:
    """What a read's byte budget counts of a message: the JSON text of its body and of its
    headers (the parts that can be large; each is bounded by max_frame_bytes on the way in)."""
    size = len(m.body)
    if m.headers is not None:
        size += len(codec.dumps(dict(m.headers)))
    return size


@dataclass(frozen=True, slots=True)
class Published:
    """The answer to one published message: its position, and whether it was a duplicate."""

    id: str
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class PublishedOnce:
    """The answer to a publish under an idempotency key: the results of the first publish with
    that key, and whether this call only replayed them (stored and delivered nothing)."""

    results: list[Published]
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class ReadResult:
    """History after a position. ``recovered`` is False when retention dropped messages after it."""

    messages: list[Message]
    recovered: bool = True


@dataclass(frozen=True, slots=True)
class Delivery:
    """A message leased to one consumer of a group. ``redelivered``: failed deliveries before."""

    message: Message
    redelivered: int


class Outcome(enum.Enum):
    ACCEPTED = "accepted"  # done: removed from the group
    RELEASED = "released"  # not processed: available again at once, not counted
    REJECTED = "rejected"  # never again: dead-lettered where the tenant configures it
    MODIFIED = "modified"  # failed: available again after the redelivery delay, counted
