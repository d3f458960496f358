"""Messages as every layer sees them: offered for publishing, stored and read back, leased to
a consumer, and the outcomes that settle a lease.

``Message`` is read far more often than it is written: a broker builds it once per read and the
hub shares it between every link of the process, so it caches its own wire encoding (``wire``),
which then holds its body and its rarely read props (decoded only when someone asks).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
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


#: A delivery's tail starts ``"id":"<id>","body":``, its body follows at this plus len(id)...
_BODY_AT = len('"id":"","body":')
#: ... and its props object this far after the body.
_PROPS_GAP = len(',"props":')


def utf8_len(text: str) -> int:
    """The UTF-8 length of ``text`` (O(1) for ASCII)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


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


def stored_size(body: str, props: str) -> int:
    """What a message costs an address (``retention_max_bytes``, reads' byte budgets): the UTF-8
    bytes of its body's JSON text and of its ``stored_props``; both brokers count this."""
    return utf8_len(body) + utf8_len(props)


class Message:
    """A stored message as read back. ``wire`` caches its encoding for the hub (encode once).

    Once ``wire`` is set (a broker builds it when it stores or reads the message, or the first
    delivery encodes it), the wire text is the only copy: ``body`` is sliced out of it and the
    props (publisher, message_id, content_type, headers) are decoded from it each time one is
    asked for, never kept decoded. So a message costs its wire text once, not its body twice and
    its headers as a dict (which costs ~7x their JSON text); live fan-out needs none of them.
    """

    __slots__ = (
        "_blen",
        "_body",
        "_content_type",
        "_headers",
        "_message_id",
        "_publisher",
        "expires_at",
        "id",
        "pos",
        "size",
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
        size: int | None = None,
    ) -> None:
        """``wire``: the message's delivery tail (``wsq.core.wire``), built from ``body`` and
        the props, which it then holds: the props given here are ignored. ``size``: its
        ``stored_size`` when the broker counted it."""
        self.id = id
        # ``pos`` when the caller has parsed ``id`` already (a broker reading its own ids).
        self.pos = parse_position(id) if pos is None else pos
        self.ts = ts
        self.subject = subject
        self.expires_at = expires_at
        self.size = size
        self._blen = len(body)
        self.wire = wire
        if wire is not None:
            self._body: str | None = None
            self._publisher = ""
            self._message_id = self._content_type = None
            self._headers: Mapping[str, Any] | None = None
        else:
            self._body = body
            self._publisher = publisher
            self._message_id = message_id
            self._content_type = content_type
            self._headers = headers

    def hold_in_wire(self, wire: str) -> None:
        """``wire`` (built from this message) becomes its only copy: body and props go."""
        body = self._body
        if body is not None:
            self._blen = len(body)
        self.wire = wire
        self._body = None
        self._headers = None

    def wire_parts(self, wire: str) -> tuple[str, str]:
        """The body's and the props' JSON texts, sliced out of ``wire``, this message's tail."""
        start = _BODY_AT + len(self.id)
        end = start + self._blen
        return wire[start:end], wire[end + _PROPS_GAP : -1]

    def _wire_props(self) -> dict[str, Any]:
        wire = self.wire
        assert wire is not None
        props = codec.loads(wire[_BODY_AT + len(self.id) + self._blen + _PROPS_GAP : -1])
        return props if isinstance(props, dict) else {}

    @property
    def body(self) -> str:
        body = self._body
        if body is None:
            wire = self.wire
            assert wire is not None
            start = _BODY_AT + len(self.id)
            return wire[start : start + self._blen]
        return body

    @property
    def publisher(self) -> str:
        if self._body is None:
            return str(self._wire_props().get("publisher", ""))
        return self._publisher

    @property
    def message_id(self) -> str | None:
        if self._body is None:
            return self._wire_props().get("message_id")
        return self._message_id

    @property
    def content_type(self) -> str | None:
        if self._body is None:
            return self._wire_props().get("content_type")
        return self._content_type

    @property
    def headers(self) -> Mapping[str, Any] | None:
        if self._body is None:
            return self._wire_props().get("headers")
        return self._headers

    def props(self) -> dict[str, Any]:
        """The ``props`` object of the wire (absent fields left out)."""
        if self._body is None:
            return self._wire_props()
        props: dict[str, Any] = {"ts": self.ts, "publisher": self._publisher}
        if self.subject is not None:
            props["subject"] = self.subject
        if self._message_id is not None:
            props["message_id"] = self._message_id
        if self._content_type is not None:
            props["content_type"] = self._content_type
        if self._headers is not None:
            props["headers"] = dict(self._headers)
        if self.expires_at is not None:
            props["expires"] = self.expires_at
        return props

    def __repr__(self) -> str:
        return f"Message({self.id!r}, subject={self.subject!r})"


def message_size(m: Message) -> int:
    """What a message costs (``stored_size``): the UTF-8 bytes of its body's JSON text and of
    its stored props. Counted once per message."""
    size = m.size
    if size is None:
        props = m.props()
        props.pop("ts", None)
        props.pop("expires", None)
        size = m.size = stored_size(m.body, codec.dumps(props))
    return size


@dataclass(frozen=True, slots=True)
class Published:
    """The answer to one published message: its position, and whether it was a duplicate."""

    id: str
    duplicate: bool = False


def published_text(results: Sequence[Published]) -> str:
    """``results`` as compact text, for an idempotency key's record: comma-separated items,
    ``<ms>-<seq>+<k>`` for a run of k + 1 new positions (seq, seq + 1, ...), ``=<id>`` for a
    duplicate. A batch of 1,000 new messages is one item. The Redis publish script writes the
    same (``lua/publish.lua``); ``published_from_text`` reads both."""
    items: list[str] = []
    ms = ""
    seq = k = -1
    for r in results:
        if not r.duplicate:
            m, _, s = r.id.partition("-")
            n = int(s)
            if m == ms and n == seq + k + 1:
                k += 1
                continue
        if k >= 0:
            items.append(f"{ms}-{seq}+{k}" if k else f"{ms}-{seq}")
            k = -1
        if r.duplicate:
            items.append("=" + r.id)
        else:
            ms, seq, k = m, n, 0
    if k >= 0:
        items.append(f"{ms}-{seq}+{k}" if k else f"{ms}-{seq}")
    return ",".join(items)


def published_from_text(text: str) -> list[Published]:
    """The results ``published_text`` wrote."""
    out: list[Published] = []
    for item in text.split(",") if text else ():
        if item[0] == "=":
            out.append(Published(item[1:], duplicate=True))
            continue
        first, _, k = item.partition("+")
        ms, _, seq = first.partition("-")
        n = int(seq)
        out += (Published(f"{ms}-{n + i}") for i in range(int(k or 0) + 1))
    return out


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
